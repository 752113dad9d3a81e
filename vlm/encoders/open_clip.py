"""The open_clip backend: built-in architectures (with pretrained tags), `hf-hub:` repos and `local-dir:` folders.

open_clip is imported inside the functions that need it. A model is always built without weights (no
hub access) and its checkpoint loaded here, so that a file that does not fit gets a clear error. What to
build (the plan) and what a model is before it is built come from `vlm.encoders.open_clip_plan`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from models.errors import ModelError
from models.weights import read_tensor
from vlm.encoders.base import (
    TEXT_BATCH,
    Backend,
    Encoder,
    EncoderAlias,
    per_channel,
    register_backend,
    square_size,
)
from vlm.encoders.checkpoints import mismatch_message, read_weights
from vlm.encoders.hub import OPEN_CLIP_CONFIG, TEXT_SUBDIR, offline_reason
from vlm.encoders.open_clip_plan import (
    PREPROCESS_DEFAULTS,
    Plan,
    build_text_tower,
    context_length,
    parse_model_name,
    plan_architecture,
    plan_folder,
    preprocess_cfg,
    text_id,
)
from vlm.errors import VlmError, exception_summary
from vlm.preprocess import Preprocess


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model: `encode_image` / `encode_text` with its own tokenizer.

    A lazy encoder (`load_encoder(..., lazy=True)`) builds the model on the first image or `model` use, and
    for texts only the text tower (open_clip's own, with the checkpoint's text weights) until then.
    """

    backend = "open_clip"

    def __init__(self, model: nn.Module | None, tokenizer: Any, plan: Plan | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = model
        self._tokenizer = tokenizer
        self._plan = plan
        self._text_tower: nn.Module | None = None
        if plan is not None:
            self.text_id, self.context_length = text_id(plan), context_length(plan)

    @property
    def model(self) -> nn.Module:
        """The whole open_clip model (built now if the encoder is lazy and has not built it yet)."""
        if self._model is None:
            assert self._plan is not None
            self._model = _build(self._plan, self.name, self.device)
            self._text_tower = None
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            assert self._plan is not None
            self._tokenizer = _tokenizer(self._plan.create_name, self._plan.model_cfg, self._plan.text_cfg, self.name)
        return self._tokenizer

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def _text_encoder(self) -> Any:
        """`model.encode_text`, or the text tower alone while a lazy encoder has built no model."""
        if self._model is None and self._text_tower is None and self._plan is not None:
            tower = build_text_tower(self._plan)
            self._text_tower = tower.to(self.device) if tower is not None else None
        if self._model is None and self._text_tower is not None:
            return functools.partial(_tower_features, self._text_tower)
        return self.model.encode_text

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.embed_dim, device=self.device)
        encode = self._text_encoder()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(texts[i:i + TEXT_BATCH]).to(self.device)
                out.append(encode(tokens).float())
        return torch.cat(out)

    def image_tower(self) -> nn.Module:
        return self.model.visual


def _tower_features(tower: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A text tower's pooled features (towers built with `output_tokens` also return the tokens)."""
    out = tower(tokens)
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------------------- names
def _architectures() -> list[str]:
    import open_clip

    return open_clip.list_models()


def _match_name(raw: str) -> str | None:
    """`hf-hub:`, `local-dir:` or a built-in architecture (`ViT-B-32`, `ViT-B/32`, `ViT-B-32:TAG`)."""
    if raw.startswith(("hf-hub:", "local-dir:")):
        return raw
    models = _architectures()
    arch = raw.split(":", 1)[0]
    return raw if arch in models or arch.replace("/", "-") in models else None


def _match_folder(raw: str) -> str | None:
    """A local folder with open_clip_config.json, as `local-dir:FOLDER`."""
    path = Path(raw).expanduser()
    return f"local-dir:{path}" if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file() else None


def _weights_as_tag(target: str, weights: str) -> str | None:
    """`--model ViT-B-32 --weights openai` means the pretrained tag, when no such file exists."""
    if target.startswith(("hf-hub:", "local-dir:")):
        return None
    import open_clip

    arch, _, tag = target.partition(":")
    if not tag and weights in open_clip.list_pretrained_tags_by_model(arch.replace("/", "-")):
        return f"{arch}:{weights}"
    return None


# ----------------------------------------------------------------------------- loading
def _plan(target: str, weights: Path | None, alias: EncoderAlias | None) -> Plan:
    schema, ident = parse_model_name(target)
    return plan_folder(schema, ident, weights, alias) if schema in ("hf-hub", "local-dir") \
        else plan_architecture(ident, weights)


def _build(plan: Plan, target: str, device: torch.device) -> nn.Module:
    """The whole model of a plan, its checkpoint loaded, in eval mode (channels-last) on `device`."""
    model = _create(plan.create_name, target, plan.text_cfg, plan.create_kwargs)
    if plan.ckpt is not None:
        _load_checkpoint(model, plan.ckpt, target)
    return model.to(device, memory_format=torch.channels_last).eval()


def _load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None,
          plan: Plan | None = None) -> OpenClipEncoder:
    """Build an open_clip model for `target` (see `vlm.encoders.base`; or for `plan`) and load its weights."""
    plan = plan or _plan(target, weights, alias)
    model = _build(plan, target, device)
    tokenizer = _tokenizer(plan.create_name, plan.model_cfg, plan.text_cfg, target)
    embed_dim = int(plan.model_cfg.get("embed_dim") or model.text_projection.shape[-1])
    return OpenClipEncoder(model, tokenizer, plan, id=plan.enc_id, weights_id=plan.weights_id,
                           preprocess=_preprocess(model.visual.preprocess_cfg, target), embed_dim=embed_dim,
                           logit_scale=float(model.logit_scale.detach().exp().float().cpu().item()),
                           device=device, name=alias.name if alias else target,
                           description=alias.description if alias else "")


def _lazy_load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> OpenClipEncoder:
    """An encoder whose ids, preprocessing and logit scale come from the config files and the checkpoint's
    `logit_scale` tensor; its model is built on first use (random-initialised models: now)."""
    plan = _plan(target, weights, alias)
    try:
        scale = read_tensor(plan.ckpt, "logit_scale") if plan.ckpt is not None else None
    except ModelError:  # an unreadable file: the full load says so
        scale = None
    if scale is None or "embed_dim" not in plan.model_cfg:
        return _load(target, weights, device, alias, plan)
    return OpenClipEncoder(None, None, plan, id=plan.enc_id, weights_id=plan.weights_id,
                           preprocess=_preprocess(preprocess_cfg(plan), target), embed_dim=plan.model_cfg["embed_dim"],
                           logit_scale=float(scale.detach().float().exp().reshape(-1)[0].item()), device=device,
                           name=alias.name if alias else target, description=alias.description if alias else "")


def _preprocess(cfg: dict[str, Any], target: str) -> Preprocess:
    """The eval `preprocess` that `open_clip.create_model_and_transforms` returns for a model whose
    `model.visual.preprocess_cfg` is `cfg`, as tensor ops: `image_transform_v2(PreprocessCfg(**cfg),
    is_train=False)` is a PIL resize (shortest side + centre crop, longest side + crop-or-pad with
    `fill_color`, or squash), RGB, ToTensor and Normalize."""
    cfg = {**PREPROCESS_DEFAULTS, **cfg}
    interpolation = "bilinear" if cfg["interpolation"] == "bilinear" else "bicubic"  # open_clip's rule ('random' too)
    mode = cfg["resize_mode"] or "shortest"
    return Preprocess(size=square_size(cfg["size"], target), mean=per_channel(cfg["mean"]), std=per_channel(cfg["std"]),
                      interpolation=interpolation, resize_mode=mode, fill=(int(cfg["fill_color"]),), resampler="pil",
                      source=f"open_clip image_transform(resize_mode={mode}, interpolation={cfg['interpolation']})")


def _create(create_name: str, target: str, text_cfg: dict[str, Any] | None, create_kwargs: dict[str, Any]) -> nn.Module:
    """open_clip.create_model without loading anything (no hub access); failures name the text tower to place."""
    import open_clip

    try:
        with _quiet_open_clip():
            return open_clip.create_model(create_name, pretrained=None, load_weights=False, pretrained_image=False,
                                          pretrained_text=False, device="cpu", **create_kwargs)
    except VlmError:
        raise
    except Exception as exc:  # noqa: BLE001 - HF text config fetches etc.
        hint = ""
        if text_cfg and text_cfg.get("hf_model_name"):
            hint = (f" Its text tower is the Hugging Face model '{text_cfg['hf_model_name']}': for offline use "
                    f"put its config.json and tokenizer files in FOLDER/{TEXT_SUBDIR}/ and pass --model local-dir:FOLDER.")
        raise VlmError(f"Cannot build open_clip model {target} ({offline_reason(exc)}).{hint}") from None


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs a warning for every model built without weights; we load them right after."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_checkpoint(model: nn.Module, ckpt: Path, target: str) -> None:
    import open_clip

    try:
        incompatible = open_clip.load_checkpoint(model, str(ckpt), strict=False)
    except Exception as exc:  # noqa: BLE001 - unreadable file, size mismatches, open_clip's resize asserts, ...
        state = read_weights(ckpt)  # raises "Cannot read weights file" if the file is no state dict
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
        detail = f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}." if shapes else exception_summary(exc)
        raise VlmError(mismatch_message(target, ckpt, missing, unexpected, detail)) from None
    missing = list(getattr(incompatible, "missing_keys", []) or [])
    unexpected = list(getattr(incompatible, "unexpected_keys", []) or [])
    if missing or unexpected:
        raise VlmError(mismatch_message(target, ckpt, missing, unexpected))


def _tokenizer(create_name: str, model_cfg: dict, text_cfg: dict | None, target: str) -> Any:
    import open_clip
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    cfg_text = model_cfg.get("text_cfg", {}) if model_cfg else {}
    length = cfg_text.get("context_length", 77)
    try:
        if text_cfg and text_cfg.get("hf_tokenizer_name"):
            return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=length,
                               tokenizer_mode=cfg_text.get("tokenizer_mode"), **cfg_text.get("tokenizer_kwargs", {}))
        if create_name.startswith("local-dir:"):
            return SimpleTokenizer(context_length=length, **cfg_text.get("tokenizer_kwargs", {}))
        return open_clip.get_tokenizer(create_name)
    except Exception as exc:  # noqa: BLE001
        raise VlmError(f"Cannot load the tokenizer of {target} ({offline_reason(exc)}). For offline use put the "
                       f"tokenizer files in FOLDER/{TEXT_SUBDIR}/ of a local-dir:FOLDER.") from None


register_backend(Backend("open_clip", _load, prefixes=("open_clip:", "open-clip:"),
                         rules=((10, _match_name), (20, _match_folder)),
                         names=_architectures, weights_as_tag=_weights_as_tag, lazy_load=_lazy_load))
