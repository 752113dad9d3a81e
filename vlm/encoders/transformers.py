"""The transformers backend: CLIP-style models (`get_image_features` / `get_text_features`) by hub id or folder.

transformers is imported inside the loader. A hub id is read from the local HF cache when the hub is
offline or unreachable; a local folder is the one `huggingface-cli download ID --local-dir DIR` writes.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from models.errors import ModelError
from models.weights import read_tensor
from vlm.encoders.base import (
    TEXT_BATCH,
    Backend,
    Encoder,
    EncoderAlias,
    interpolation_name,
    looks_like_path,
    per_channel,
    register_backend,
    square_size,
)
from vlm.encoders.checkpoints import load_strict, read_weights, weights_file_id
from vlm.encoders.hub import hub_local_only, tokenizer_files_id, transformers_offline_error
from vlm.errors import VlmError, exception_summary
from vlm.preprocess import Preprocess

HF_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from get_*_features (projected in pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out[0] if isinstance(out, (tuple, list)) else out["pooler_output"]
    return pooled


class _HFImageTower(nn.Module):
    """Preprocessed images -> projected image features of a transformers CLIP-style model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if hasattr(model, "vision_model") and hasattr(model, "visual_projection"):
            self.vision_model = model.vision_model
            self.visual_projection = model.visual_projection
            self.model = None
        else:
            self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is not None:
            return _features(self.model.get_image_features(pixel_values=x))
        return self.visual_projection(self.vision_model(pixel_values=x).pooler_output)


class TransformersEncoder(Encoder):
    """A transformers CLIP-style model with its tokenizer (texts padded and truncated to `context_length`).

    A lazy encoder (`load_encoder(FOLDER, lazy=True)`) builds the model on the first image or `model` use, and
    for texts of a CLIP checkpoint only its text tower (`CLIPTextModelWithProjection`) until then.
    """

    backend = "transformers"

    def __init__(self, model: nn.Module | None, tokenizer: Any, context_length: int | None,
                 folder: _Folder | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = model
        self._tokenizer = tokenizer
        self._folder = folder
        self._text_model: nn.Module | None = None
        self.context_length = context_length

    @property
    def model(self) -> nn.Module:
        """The whole model (built now if the encoder is lazy and has not built it yet)."""
        if self._model is None:
            assert self._folder is not None
            self._model, self._tokenizer = self._folder.pretrained(self.device)
            self._text_model = None
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            assert self._folder is not None
            self._tokenizer = self._folder.tokenizer()
        return self._tokenizer

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=x))

    def _text_features(self, **kwargs: torch.Tensor) -> torch.Tensor:
        """`get_text_features`, or the text tower alone while a lazy encoder has built no model."""
        if self._model is None and self._text_model is None and self._folder is not None:
            self._text_model = self._folder.text_model(self.device)
        if self._model is None and self._text_model is not None:
            return self._text_model(**kwargs).text_embeds
        return _features(self.model.get_text_features(**kwargs))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                enc = self.tokenizer(texts[i:i + TEXT_BATCH], padding=True, truncation=True,
                                     max_length=self.context_length, return_tensors="pt")
                kwargs = {"input_ids": enc["input_ids"].to(self.device)}
                if "attention_mask" in enc:
                    kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
                out.append(self._text_features(**kwargs).float())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)

    def image_tower(self) -> nn.Module:
        return _HFImageTower(self.model)


@dataclass
class _Folder:
    """A local model folder (and an optional weights file for it), read without building the model."""

    target: str
    path: Path
    weights: Path | None

    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def checkpoint(self) -> Path | None:
        """The weights file the model gets: `weights`, else the folder's own."""
        return self.weights or next((self.path / n for n in HF_WEIGHT_NAMES if (self.path / n).is_file()), None)

    def pretrained(self, device: torch.device) -> tuple[nn.Module, Any]:
        """(model, tokenizer), the model with `weights` loaded, in eval mode (channels-last) on `device`."""
        model, tokenizer = _from_pretrained(self.target, self.path, True, self.weights)
        return model.to(device, memory_format=torch.channels_last).eval(), tokenizer

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)

    def text_model(self, device: torch.device) -> nn.Module | None:
        """The text tower and projection of a CLIP checkpoint alone, or None (other models: build them whole)."""
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        config, ckpt = self.config(), self.checkpoint()
        if config.get("model_type") != "clip" or ckpt is None:
            return None
        text_cfg = CLIPTextConfig(**{**config.get("text_config", {}), "projection_dim": config.get("projection_dim")})
        model = CLIPTextModelWithProjection(text_cfg)
        state = {k: v for k, v in read_weights(ckpt).items() if k.startswith(("text_model.", "text_projection."))}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys or [k for k in result.missing_keys if not k.endswith("position_ids")]:
            return None
        return model.to(device).eval()


# ----------------------------------------------------------------------------- names
def _match_folder(raw: str) -> str | None:
    """A local folder with config.json."""
    path = Path(raw).expanduser()
    return str(path) if path.is_dir() and (path / "config.json").is_file() else None


def _match_hub_id(raw: str) -> str | None:
    """`ORG/NAME`: a hub id."""
    return raw if re.fullmatch(r"[\w.-]+/[\w.-]+", raw) else None


# ----------------------------------------------------------------------------- loading
def _image_processor(source: str, local_only: bool, image_size: int) -> Any:
    """The checkpoint's image processor (preprocessor_config.json); without one, CLIPImageProcessor's
    defaults at the vision tower's image size (with a warning)."""
    from transformers import AutoImageProcessor, CLIPImageProcessor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001 - no or unreadable preprocessor_config.json
        size = image_size
        warnings.warn(f"{source}: no image processor ({exception_summary(exc)}); using CLIPImageProcessor's "
                      f"defaults at {size} px.", stacklevel=4)
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _field(size: Any, key: str) -> Any:
    """A key of an HF size dict or SizeDict (None if absent)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def processor_preprocess(proc: Any, who: str) -> Preprocess:
    """A CLIPImageProcessor-style processor as tensor ops: resize (`size` as shortest_edge, or height/width:
    squash; `resample`), centre crop to `crop_size` (top/left offset floored, as transformers does), rescale
    by `rescale_factor`, normalise by `image_mean`/`image_std`, each step only when its `do_*` flag is set.
    Grey images are replicated to RGB whatever `do_convert_rgb` says: the vision tower takes three channels."""
    size, resize_mode, resize = proc.size, "none", None
    if proc.do_resize:
        if _field(size, "shortest_edge") and not _field(size, "longest_edge"):
            resize_mode, resize = "shortest", int(_field(size, "shortest_edge"))
        elif _field(size, "height") and _field(size, "width"):
            resize_mode, resize = "squash", square_size((_field(size, "height"), _field(size, "width")), who)
        else:
            raise VlmError(f"{who}: image processor size {size} is not supported (shortest_edge, or height and width).")
    crop = proc.crop_size if getattr(proc, "do_center_crop", False) else None
    out = square_size((_field(crop, "height"), _field(crop, "width")), who) if crop is not None else resize
    normalize = getattr(proc, "do_normalize", True)
    return Preprocess(size=out, resize=resize if crop is not None else None, resize_mode=resize_mode,
                      mean=per_channel(proc.image_mean) if normalize else (0.0,) * 3,
                      std=per_channel(proc.image_std) if normalize else (1.0,) * 3,
                      interpolation=interpolation_name(getattr(proc, "resample", 3), who), crop_offset="floor",
                      resampler="pil", rescale=float(proc.rescale_factor) if proc.do_rescale else 1.0,
                      source=f"transformers {type(proc).__name__}")


def _from_pretrained(target: str, path: Path, local: bool, weights: Path | None = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer) via AutoModel / AutoTokenizer, local files only when offline, `weights` loaded
    strictly into the model; clear errors."""
    from transformers import AutoModel, AutoTokenizer

    source = str(path) if local else target
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local_only = local or hub_local_only()
            model = AutoModel.from_pretrained(source, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001
        if local:
            raise VlmError(f"Cannot load the transformers model in {path} ({exception_summary(exc)}): it needs "
                           f"config.json, model.safetensors or pytorch_model.bin and the tokenizer files.") from None
        raise transformers_offline_error(target, exc) from None
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise VlmError(f"{target} is a {type(model).__name__}, not a CLIP-style model (no get_image_features / "
                       f"get_text_features). Image-only backbones load through timm.")
    if weights is not None:
        load_strict(model, read_weights(weights), target, weights, ignore_missing=("position_ids",))
    return model, tokenizer


def _text_id(path: Path | None, tokenizer: Any, context_length: int | None) -> str:
    """The tokenizer's id in text-cache keys: its files' digest (a local folder) or its class (a hub id, whose
    files the weights id pins by commit)."""
    files = tokenizer_files_id(path) if path is not None else ""
    fields = {"files": files} if files else {"tokenizer": type(tokenizer).__name__}
    return "transformers " + json.dumps({**fields, "context_length": context_length}, sort_keys=True)


def _load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> TransformersEncoder:
    """Load a transformers CLIP-style model from a hub id or local folder, optionally with a weights file."""
    path = Path(target).expanduser()
    local = path.is_dir()
    if not local and looks_like_path(target):
        raise VlmError(f"Model folder {path} not found.")
    model, tokenizer = _from_pretrained(target, path, local, weights)
    if weights is not None:
        weights_id = weights_file_id(weights)
    elif local:
        files = [path / n for n in HF_WEIGHT_NAMES if (path / n).is_file()]
        weights_id = weights_file_id(files[0]) if files else f"local:{path.resolve().name}"
    else:
        commit = getattr(model.config, "_commit_hash", None)
        weights_id = target + (f"@{commit[:12]}" if commit else "")
    enc_id = f"transformers:{path.resolve().name}" if local else f"transformers:{target}"
    vision = getattr(model.config, "vision_config", model.config)
    processor = _image_processor(str(path) if local else target, local or hub_local_only(),
                                 getattr(vision, "image_size", 224))
    model = model.to(device, memory_format=torch.channels_last).eval()
    cfg = model.config
    text_cfg = getattr(cfg, "text_config", None)
    context_length = getattr(text_cfg, "max_position_embeddings", None) if text_cfg is not None else None
    embed_dim = getattr(cfg, "projection_dim", None) or _probe_dim(model, device)
    scale = getattr(model, "logit_scale", None)
    logit_scale = float(scale.detach().exp().float().cpu().item()) if isinstance(scale, torch.Tensor) else 100.0
    encoder = TransformersEncoder(model, tokenizer, context_length, id=enc_id, weights_id=weights_id,
                                  preprocess=processor_preprocess(processor, target),
                                  embed_dim=int(embed_dim), logit_scale=logit_scale, device=device,
                                  name=alias.name if alias else target, description=alias.description if alias else "")
    encoder.text_id = _text_id(path if local else None, tokenizer, context_length)
    return encoder


def _lazy_load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None,
               ) -> TransformersEncoder:
    """A local folder's encoder from config.json, preprocessor_config.json and the checkpoint's `logit_scale`,
    its model built on first use; hub ids, and folders whose config lacks `projection_dim`, load now."""
    path = Path(target).expanduser()
    folder = _Folder(target, path, weights)
    try:
        config = folder.config() if path.is_dir() else {}
        ckpt = folder.checkpoint()
        scale = read_tensor(ckpt, "logit_scale") if ckpt is not None and config.get("projection_dim") else None
    except (OSError, ValueError, ModelError):  # no or unreadable files: the full load says what is wrong
        scale = None
    if scale is None or ckpt is None:
        return _load(target, weights, device, alias)
    text_cfg = config.get("text_config") or {}
    context_length = text_cfg.get("max_position_embeddings", 77)  # transformers' CLIPTextConfig default
    image_size = (config.get("vision_config") or config).get("image_size", 224)
    encoder = TransformersEncoder(None, None, context_length, folder, id=f"transformers:{path.resolve().name}",
                                  weights_id=weights_file_id(ckpt),
                                  preprocess=processor_preprocess(_image_processor(str(path), True, image_size), target),
                                  embed_dim=int(config["projection_dim"]),
                                  logit_scale=float(scale.detach().float().exp().reshape(-1)[0].item()), device=device,
                                  name=alias.name if alias else target, description=alias.description if alias else "")
    encoder.text_id = _text_id(path, None, context_length)
    return encoder


def _probe_dim(model: nn.Module, device: torch.device) -> int:
    """The image feature size, from one blank image on `device` (models whose config has no projection_dim)."""
    size = getattr(getattr(model.config, "vision_config", model.config), "image_size", 224)
    blank = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode():
        return int(_features(model.get_image_features(pixel_values=blank)).shape[-1])


register_backend(Backend("transformers", _load, prefixes=("transformers:",),
                         rules=((21, _match_folder), (50, _match_hub_id)), lazy_load=_lazy_load))
