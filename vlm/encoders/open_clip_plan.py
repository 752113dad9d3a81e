"""What an open_clip model is, worked out from its config files without building it: the plan (open_clip's
model name and kwargs, the checkpoint, the ids), its eval preprocessing config, its tokenizer's id, and
its text tower on its own.

Only built-in architecture names and `build_text_tower` import open_clip; `hf-hub:` and `local-dir:`
plans read JSON. The values reproduce what `open_clip.create_model` sets on a built model
(`tests/test_text_cache.py` checks them against built models).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm.encoders.aliases import EncoderAlias
from vlm.encoders.base import RANDOM_INIT, unknown_model_message
from vlm.encoders.checkpoints import read_weights, weights_file_id
from vlm.encoders.hub import (OPEN_CLIP_CONFIG, fetch_open_clip_hub, fetch_tag_weights, localize_text_config,
                              tokenizer_files_id)
from vlm.errors import VlmError, exception_summary

if TYPE_CHECKING:
    import torch.nn as nn

# open_clip.transform.PreprocessCfg() (mean/std: open_clip.constants.OPENAI_DATASET_MEAN/STD)
PREPROCESS_DEFAULTS: dict[str, Any] = {
    "size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
    "fill_color": 0}
DEFAULT_CONTEXT_LENGTH = 77  # open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH
# open_clip.factory._find_checkpoint_in_dir's preference among the weights files of a folder
_PREFERRED = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
              "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


@dataclass
class Plan:
    """What to build and load for one target: open_clip's model name and kwargs, checkpoint and ids."""

    create_name: str
    enc_id: str
    ckpt: Path | None
    weights_id: str
    model_cfg: dict[str, Any]
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    text_cfg: dict[str, Any] | None = None  # an HF text tower's (localised) text_cfg, for its tokenizer
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)  # the config file's preprocess_cfg


def parse_model_name(target: str) -> tuple[str | None, str]:
    """('hf-hub' | 'local-dir' | None, identifier), as `open_clip.factory.parse_model_name`."""
    for schema in ("local-dir", "hf-hub"):
        if target.startswith(f"{schema}:"):
            return schema, target[len(schema) + 1:]
    return None, target


def find_checkpoint(folder: Path) -> Path | None:
    """The weights file open_clip's `_find_checkpoint_in_dir` picks in a folder (safetensors first)."""
    found = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")])
    found.sort(key=lambda p: p.suffix == ".safetensors", reverse=True)
    preferred = sorted((p for p in found if p.name in _PREFERRED), key=lambda p: _PREFERRED.index(p.name))
    return (preferred or found or [None])[0]


def _folder_config(folder: Path) -> dict[str, Any]:
    """An hf-hub snapshot or local-dir folder's open_clip_config.json (with its 'model_cfg')."""
    config_file = folder / OPEN_CLIP_CONFIG
    if not config_file.is_file():
        raise VlmError(f"{folder} has no {OPEN_CLIP_CONFIG}: a local-dir: folder needs {OPEN_CLIP_CONFIG} and "
                       f"open_clip_pytorch_model.bin (or open_clip_model.safetensors).")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config["model_cfg"], dict):
            raise TypeError("'model_cfg' is no mapping")
        return config
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VlmError(f"{config_file} is not an open_clip config with a 'model_cfg' entry "
                       f"({exception_summary(exc)}).") from None


def plan_folder(schema: str, ident: str, weights: Path | None, alias: EncoderAlias | None) -> Plan:
    """`hf-hub:ORG/REPO` (from the HF cache or the hub) or `local-dir:FOLDER`."""
    ckpt, weights_id = weights, weights_file_id(weights) if weights else RANDOM_INIT
    if schema == "hf-hub":
        folder, hub_weights = fetch_open_clip_hub(ident, alias.text_model if alias else None)
        rev = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else ""
        enc_id = f"open_clip:hf-hub:{ident}"
        if ckpt is None:
            ckpt, weights_id = hub_weights, f"hf-hub:{ident}" + (f"@{rev[:12]}" if rev else "")
    else:
        folder = Path(ident).expanduser()
        if not folder.is_dir():
            raise VlmError(f"local-dir:{folder}: folder not found.")
        enc_id = f"open_clip:local-dir:{folder.resolve().name}"
    config = _folder_config(folder)
    model_cfg = config["model_cfg"]
    if ckpt is None:
        ckpt = find_checkpoint(folder)
        if ckpt is None:
            raise VlmError(f"No weights in {folder}: put open_clip_pytorch_model.bin or open_clip_model.safetensors "
                           f"(the CLIP checkpoint) next to {OPEN_CLIP_CONFIG}, or pass --weights FILE.")
        weights_id = weights_file_id(ckpt)
    text_cfg = localize_text_config(model_cfg.get("text_cfg", {}), folder, required=schema == "local-dir")
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_pretrained"] = False
    return Plan(f"local-dir:{folder}", enc_id, ckpt, weights_id, model_cfg, {"text_cfg": text_cfg}, text_cfg,
                dict(config.get("preprocess_cfg") or {}))


def plan_architecture(ident: str, weights: Path | None) -> Plan:
    """A built-in architecture, `ARCH` or `ARCH:TAG` (the tag's weights unless `weights` is given)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    arch, _, tag = ident.partition(":")
    arch = arch.replace("/", "-")
    if arch not in open_clip.list_models():
        raise VlmError(unknown_model_message(ident))
    ckpt, weights_id = weights, weights_file_id(weights) if weights else RANDOM_INIT
    create_kwargs: dict[str, Any] = {}
    if tag:
        tag_cfg = get_pretrained_cfg(arch, tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise VlmError(f"Unknown pretrained tag '{tag}' for {arch}. Known tags: {', '.join(tags) or 'none'}.")
        if tag_cfg.get("quick_gelu"):
            create_kwargs["force_quick_gelu"] = True
        create_kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation",
                                                                         "resize_mode") if k in tag_cfg}
        if ckpt is None:
            ckpt = fetch_tag_weights(arch, tag, tag_cfg)
            weights_id = tag
    elif ckpt is None:
        warnings.warn(f"{arch}: no pretrained tag and no --weights: the model is random-initialised.", stacklevel=5)
    model_cfg = open_clip.get_model_config(arch) or {}
    text_cfg = model_cfg.get("text_cfg", {})
    plan = Plan(arch, f"open_clip:{arch}", ckpt, weights_id, model_cfg, create_kwargs)
    if text_cfg.get("hf_model_name"):
        plan.text_cfg = create_kwargs["text_cfg"] = dict(text_cfg, hf_model_pretrained=False)
    return plan


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """open_clip's `merge_preprocess_dict`: PreprocessCfg keys only, None values skipped."""
    return {**base, **{k: v for k, v in overlay.items() if k in PREPROCESS_DEFAULTS and v is not None}}


def preprocess_cfg(plan: Plan) -> dict[str, Any]:
    """The `model.visual.preprocess_cfg` that `open_clip.create_model` would set: defaults, then the config
    file's preprocess_cfg, the vision tower's image size, then `force_preprocess_cfg`."""
    cfg = _merge(PREPROCESS_DEFAULTS, plan.preprocess_cfg)
    cfg["size"] = plan.model_cfg.get("vision_cfg", {}).get("image_size", PREPROCESS_DEFAULTS["size"])
    return _merge(cfg, plan.create_kwargs.get("force_preprocess_cfg") or {})


def _text_cfg(plan: Plan) -> dict[str, Any]:
    return plan.create_kwargs.get("text_cfg") or plan.model_cfg.get("text_cfg", {})


def context_length(plan: Plan) -> int:
    """The tokenizer's context length (the config's text_cfg, else open_clip's 77)."""
    return int(plan.model_cfg.get("text_cfg", {}).get("context_length", DEFAULT_CONTEXT_LENGTH))


def text_id(plan: Plan) -> str:
    """Which tokenizer turns a prompt into tokens, with its settings (and the files of a local one)."""
    cfg = plan.model_cfg.get("text_cfg", {})
    name = (plan.text_cfg or {}).get("hf_tokenizer_name") or cfg.get("hf_tokenizer_name") or ""
    if not name and plan.create_name.startswith("local-dir:"):
        name = "SimpleTokenizer"
    elif not name:
        name = "SigLipTokenizer" if "siglip" in plan.create_name.lower() else "SimpleTokenizer"
    folder = Path(str(name))
    digest = tokenizer_files_id(folder) if folder.is_dir() else ""
    try:
        lib = version("open_clip_torch")
    except PackageNotFoundError:  # pragma: no cover
        lib = "?"
    fields = {"tokenizer": folder.name if digest else name, "files": digest, "context_length": context_length(plan),
              "mode": cfg.get("tokenizer_mode"), "kwargs": cfg.get("tokenizer_kwargs", {}), "open_clip": lib}
    return "open_clip " + json.dumps(fields, sort_keys=True)


def build_text_tower(plan: Plan) -> nn.Module | None:
    """open_clip's own text tower of the plan's model alone (what `CLIP.encode_text` / `CustomTextCLIP.text`
    computes), with the checkpoint's text weights, in eval mode on the CPU; None where the checkpoint or
    model does not split cleanly (CoCa, converted or resized checkpoints): then build the whole model."""
    import open_clip.model as oc_model

    cfg = plan.model_cfg
    if plan.ckpt is None or "multimodal_cfg" in cfg or "embed_dim" not in cfg:
        return None
    text_cfg = _text_cfg(plan)
    custom = bool(cfg.get("custom_text") or "hf_model_name" in text_cfg)
    quick_gelu = bool(cfg.get("quick_gelu") or plan.create_kwargs.get("force_quick_gelu"))
    try:
        tower = oc_model._build_text_tower(cfg["embed_dim"], text_cfg, quick_gelu, None)
        state = read_weights(plan.ckpt)
        if custom:
            state = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
        else:
            state = {k: v for k, v in state.items() if not k.startswith("visual.") and not k.startswith("logit_")}
        own = tower.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.endswith("position_ids")}
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            return None
        tower.load_state_dict(state)
    except VlmError:
        raise
    except Exception:  # noqa: BLE001 - anything open_clip's full loader would handle differently
        return None
    return tower.eval()
