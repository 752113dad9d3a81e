"""The MedCLIP backend (Wang et al., EMNLP 2022): a Swin-tiny or ResNet-50 image encoder and a
Bio_ClinicalBERT text encoder with 512-d projections, loaded from the released `pytorch_model.bin`.

The modules are rebuilt here from transformers' `SwinModel` / `BertModel` (from their config.json) and
torchvision's `resnet50`, with the attribute names of the `medclip` package (0.0.3) -- `MedCLIPModel`
(`vision_model`, `text_model`, `logit_scale`), `MedCLIPVisionModelViT` (`model`, `projection_head`),
`MedCLIPVisionModel` (`model` = resnet50 with `fc` = Linear(2048, 512, bias=False)), `MedCLIPTextModel`
(`model`, `projection_head`) -- so that the released state dict loads strictly. The package itself is
not used: it does not import with transformers >= 5 (its processor subclasses `CLIPFeatureExtractor`).

What is reproduced from its source:

* text: `MedCLIPTextModel.forward` (the `last_n_layer = 4` attribute is unused there) stacks the
  hidden states of BERT layers 1, 2 and the last, averages them over all token positions (padding
  included, no mask) and over the three layers, then projects; tokenised as in its
  `process_class_prompts` (`model_max_length = 77`, truncation, padding to the longest text of the
  call -- so with the pooling over padding a prompt's embedding depends on its class's other prompts,
  and `vlm.zeroshot` encodes each class's prompts in their own call (`pads_per_class`), as MedCLIP does);
* logit scale: `exp(clamp(logit_scale, 0, 4.6052))`, as `MedCLIPModel.compute_logits` uses it;
* images: `MedCLIPFeatureExtractor` (see `MedCLIPPreprocess`);
* zero-shot: `PromptClassifier(ensemble=True)` averages a class's prompt logits, so MedCLIP's
  encoders default to `--ensemble logits` (`prompt_ensemble`, read by `vlm.zeroshot`).

Checkpoint keys: the released files were saved with transformers 4.x. Keys the current modules name
differently are renamed with transformers' own Swin conversion table (`attention.self.query` ->
`attention.q_proj`, ...); the buffers that are no longer saved (`text_model.model.embeddings.position_ids`,
Swin's `relative_position_index`) are dropped after checking that they equal the ones the modules
compute. Everything else must match: 0 missing, 0 unexpected keys, or a VlmError names them.

Offline layout (nothing is downloaded; the checkpoint is not on the Hugging Face hub)::

    FOLDER/pytorch_model.bin     # the released checkpoint, unzipped (see RELEASES)
    FOLDER/text/config.json      # emilyalsentzer/Bio_ClinicalBERT: config.json and vocab.txt
    FOLDER/text/vocab.txt        #   (or tokenizer.json); its weights are not needed
    FOLDER/vision/config.json    # microsoft/swin-tiny-patch4-window7-224 config.json (medclip-vit only)

Names: the aliases `medclip-vit` / `medclip-resnet` with `--weights FOLDER` (or `--weights FILE`, the
configs then next to FILE), `medclip-vit:FOLDER`, `medclip-resnet:FOLDER`, or `medclip:FOLDER` or just FOLDER (the variant read
from the checkpoint's keys).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from vlm.encoders.base import TEXT_BATCH, Backend, Encoder, EncoderAlias, register_backend
from vlm.encoders.checkpoints import load_strict, read_weights, weights_file_id
from vlm.errors import VlmError, exception_summary
from vlm.preprocess import Preprocess, grey_to_rgb, normalize, resize, to_float

WEIGHTS_NAME = "pytorch_model.bin"  # medclip.constants.WEIGHTS_NAME
TEXT_DIR, VISION_DIR = "text", "vision"
BERT_TYPE = "emilyalsentzer/Bio_ClinicalBERT"  # medclip.constants.BERT_TYPE
VIT_TYPE = "microsoft/swin-tiny-patch4-window7-224"  # medclip.constants.VIT_TYPE
IMG_SIZE, IMG_MEAN, IMG_STD = 224, 0.5862785803043838, 0.27950088968644304  # medclip.constants
CONTEXT_LENGTH = 77  # tokenizer.model_max_length in medclip's prompts / processor
LOGIT_SCALE_MAX = 4.6052  # MedCLIPModel.compute_logits clamps logit_scale to [0, 4.6052]
TEXT_LAYERS = (1, 2, -1)  # hidden states MedCLIPTextModel pools
VARIANTS = {"vit": "MedCLIP-ViT", "resnet": "MedCLIP-ResNet"}
RELEASES = {"vit": "https://github.com/RyanWangZf/MedCLIP/raw/main/medclip/medclip_vit_weight.txt",
            "resnet": "https://github.com/RyanWangZf/MedCLIP/raw/main/medclip/medclip_resnet_weight.txt"}
# transformers' "swin" WeightRenaming table (conversion_mapping.py): 4.x names -> current names, in order
SWIN_RENAMES = (("attention.self.query", "attention.q_proj"), ("attention.self.key", "attention.k_proj"),
                ("attention.self.value", "attention.v_proj"),
                ("attention.self.relative_position_bias_table",
                 "attention.relative_position_bias.relative_position_bias_table"),
                ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
                ("output.dense", "mlp.fc2"))


# ----------------------------------------------------------------------------- preprocessing
def pil_luma(images: torch.Tensor) -> torch.Tensor:
    """RGB -> one grey channel as PIL's `convert("L")` does it (ITU-R 601-2 in 16-bit fixed point) on
    uint8 batches, or with the same weights on [0, 1] float batches; grey batches pass unchanged."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise VlmError(f"Expected 1 or 3 channels, got {images.shape[1]}.")
    if images.dtype == torch.uint8:
        w = torch.tensor([19595, 38470, 7471], dtype=torch.int32, device=images.device).view(1, 3, 1, 1)
        return ((images.int() * w).sum(dim=1, keepdim=True) + 0x8000).div(1 << 16, rounding_mode="floor").byte()
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() * w).sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class MedCLIPPreprocess(Preprocess):
    """`MedCLIPFeatureExtractor` (medclip 0.0.3) as tensor ops, for a (B, C, H, W) uint8 or [0, 1] batch.

    Its steps, in order: no RGB conversion (`do_convert_rgb=False`); `pad_img` pastes the image centred
    (offsets `int((side - w) / 2)`) on a black 'L' canvas of side max(`size`, H, W) -- so RGB becomes PIL
    luma and a MedMNIST image smaller than 224 px is padded, not enlarged; `resize` to `size` by the
    shorter edge with PIL bicubic, a no-op unless the canvas is larger; a centre crop to `size` (a no-op
    on the square); `normalize` with MedCLIP's grey mean/std on [0, 1]. The one grey channel is then
    replicated to three, as `MedCLIPVisionModel(ViT).forward` does.
    """

    def __call__(self, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        x = pil_luma(images.to(device, non_blocking=True) if device is not None else images)
        if self.size is not None:
            h, w = x.shape[-2:]
            side = max(self.size, h, w)
            if (h, w) != (side, side):
                canvas = x.new_zeros(*x.shape[:-2], side, side)
                top, left = (side - h) // 2, (side - w) // 2
                canvas[..., top:top + h, left:left + w] = x
                x = canvas
            if side != self.size:
                x = resize(x, self.size, self.interpolation, self.resampler)
        return normalize(grey_to_rgb(to_float(x)), self.mean, self.std)

    @property
    def id(self) -> str:
        return (f"medclip:pad-square@{self.size or 'native'};fill=0;grey=pil-luma;interp={self.interpolation};"
                f"resampler={self.resampler};mean={self.mean[0]:.8g};std={self.std[0]:.8g}")


def medclip_preprocess() -> MedCLIPPreprocess:
    """MedCLIP's image preprocessing: 224 px canvas, PIL bicubic, grey mean/std."""
    return MedCLIPPreprocess(size=IMG_SIZE, mean=(IMG_MEAN,) * 3, std=(IMG_STD,) * 3, interpolation="bicubic",
                             resize_mode="none", resampler="pil",
                             source="medclip MedCLIPFeatureExtractor (pad_img, CLIPFeatureExtractor resize/crop)")


# ----------------------------------------------------------------------------- the modules
class MedCLIPTextModel(nn.Module):
    """BERT + `projection_head`; embedding = mean over layers 1, 2, last of the mean over all positions."""

    def __init__(self, bert: nn.Module, proj_dim: int) -> None:
        super().__init__()
        self.model = bert
        self.projection_head = nn.Linear(bert.config.hidden_size, proj_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i] for i in TEXT_LAYERS])  # (3, B, T, H)
        return self.projection_head(hidden.permute(1, 0, 2, 3).mean(2).mean(1))


class MedCLIPVisionModelViT(nn.Module):
    """Swin + `projection_head` on its pooled output; grey input is repeated to three channels."""

    def __init__(self, swin: nn.Module, proj_dim: int) -> None:
        super().__init__()
        self.model = swin
        self.projection_head = nn.Linear(swin.config.hidden_size, proj_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.repeat((1, 3, 1, 1))
        return self.projection_head(self.model(pixel_values).pooler_output)


class MedCLIPVisionModel(nn.Module):
    """torchvision ResNet-50 whose `fc` is the projection (2048 -> proj_dim, no bias)."""

    def __init__(self, proj_dim: int) -> None:
        super().__init__()
        import torchvision

        self.model = torchvision.models.resnet50(weights=None)
        self.model.fc = nn.Linear(self.model.fc.in_features, proj_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.repeat((1, 3, 1, 1))
        return self.model(pixel_values)


class MedCLIPModel(nn.Module):
    """`vision_model`, `text_model` and the learnable `logit_scale` (init log(1/0.07))."""

    def __init__(self, vision_model: nn.Module, text_model: MedCLIPTextModel,
                 logit_scale_init_value: float = 0.07) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.text_model = text_model
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / logit_scale_init_value)))

    def effective_logit_scale(self) -> float:
        """exp(clamp(logit_scale, 0, 4.6052)), the factor `compute_logits` applies."""
        return float(self.logit_scale.detach().clamp(0, LOGIT_SCALE_MAX).exp().float().cpu())


class MedCLIPEncoder(Encoder):
    """A MedCLIP model with its BERT tokenizer; zero-shot prompt ensembles average logits by default."""

    backend = "medclip"
    prompt_ensemble = "logits"  # vlm.zeroshot's default ensembling for it: PromptClassifier(ensemble=True)
    pads_per_class = True  # vlm.zeroshot encodes each class's prompts in their own call (padding matters)

    def __init__(self, model: MedCLIPModel, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.tokenizer = tokenizer

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """One tokenizer call for all `texts` (padded to the longest, as MedCLIP pads a class's prompts),
        then the text model in batches of TEXT_BATCH."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.embed_dim, device=self.device)
        enc = self.tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        with torch.inference_mode():
            out = [self.model.text_model(ids[i:i + TEXT_BATCH], mask[i:i + TEXT_BATCH]).float()
                   for i in range(0, len(texts), TEXT_BATCH)]
        return torch.cat(out)

    def image_tower(self) -> nn.Module:
        return self.model.vision_model


# ----------------------------------------------------------------------------- the folder
def expected_files(variant: str) -> list[str]:
    """The files a MedCLIP folder holds, relative to it."""
    files = [WEIGHTS_NAME, f"{TEXT_DIR}/config.json", f"{TEXT_DIR}/vocab.txt"]
    return files + [f"{VISION_DIR}/config.json"] if variant == "vit" else files


def layout_message(variant: str, problem: str) -> str:
    """One line: what is wrong, then which file goes where (and where from) and how to pass the folder."""
    parts = [f"FOLDER/{WEIGHTS_NAME} (the released checkpoint, unzipped; the zip is linked in {RELEASES[variant]})",
             f"FOLDER/{TEXT_DIR}/config.json and vocab.txt (`huggingface-cli download {BERT_TYPE} config.json vocab.txt "
             f"--local-dir FOLDER/{TEXT_DIR}`)"]
    if variant == "vit":
        parts.append(f"FOLDER/{VISION_DIR}/config.json (`huggingface-cli download {VIT_TYPE} config.json "
                     f"--local-dir FOLDER/{VISION_DIR}`)")
    return (f"{problem} {VARIANTS[variant]} loads offline from {', '.join(parts[:-1])} and {parts[-1]}; pass "
            f"--model medclip-{variant}:FOLDER (or --model medclip-{variant} --weights FOLDER).")


def check_folder(folder: Path, variant: str, checkpoint: Path) -> None:
    """A VlmError naming every expected file `folder` lacks (vocab.txt may be tokenizer.json)."""
    missing = []
    for rel in expected_files(variant):
        path = checkpoint if rel == WEIGHTS_NAME else folder / rel
        if rel.endswith("vocab.txt") and (folder / TEXT_DIR / "tokenizer.json").is_file():
            continue
        if not path.is_file():
            missing.append(str(path))
    if missing:
        raise VlmError(layout_message(variant, f"Missing {', '.join(missing)}."))


def checkpoint_variant(state: dict[str, torch.Tensor]) -> str | None:
    """'vit' or 'resnet' from a MedCLIP state dict's vision keys (None: neither)."""
    if "vision_model.projection_head.weight" in state:
        return "vit"
    if "vision_model.model.fc.weight" in state:
        return "resnet"
    return None


def fit_legacy_keys(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """The released (transformers 4.x) key layout -> `model`'s: Swin keys renamed (SWIN_RENAMES) where the
    model lacks them; buffers the model no longer saves dropped once they equal its own (else a VlmError)."""
    own = model.state_dict()
    buffers = dict(model.named_buffers())
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own and key.startswith("vision_model.model."):
            renamed = key
            for old, new in SWIN_RENAMES:
                renamed = renamed.replace(old, new)
            if renamed in own:
                key = renamed
        current = key.replace("attention.self.relative_position_index",
                              "attention.relative_position_bias.relative_position_index")
        if key not in own and current in buffers:
            expected = buffers[current]
            if value.numel() != expected.numel() or not torch.equal(value.reshape(-1).to(expected), expected.reshape(-1)):
                raise VlmError(f"{source}: {key} differs from the {tuple(expected.shape)} buffer the model "
                               f"computes; the checkpoint does not fit this architecture.")
            continue
        out[key] = value
    return out


# ----------------------------------------------------------------------------- loading
def build_model(variant: str, folder: Path, proj_dim: int) -> tuple[MedCLIPModel, Any]:
    """A randomly initialised MedCLIPModel from FOLDER's configs, and the tokenizer of FOLDER/text."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bert = AutoModel.from_config(AutoConfig.from_pretrained(folder / TEXT_DIR, local_files_only=True))
            tokenizer = AutoTokenizer.from_pretrained(folder / TEXT_DIR, local_files_only=True)
            vision: nn.Module = (MedCLIPVisionModel(proj_dim) if variant == "resnet" else MedCLIPVisionModelViT(
                AutoModel.from_config(AutoConfig.from_pretrained(folder / VISION_DIR, local_files_only=True)),
                proj_dim))
    except Exception as exc:  # noqa: BLE001 - config / tokenizer files that transformers cannot read
        raise VlmError(layout_message(variant, f"Cannot build {VARIANTS[variant]} from {folder} "
                                               f"({exception_summary(exc)}).")) from None
    if bert.config.num_hidden_layers < 2:
        raise VlmError(f"{folder / TEXT_DIR}/config.json has {bert.config.num_hidden_layers} layer(s); MedCLIP's "
                       f"text model pools layers 1, 2 and the last, so it needs at least 2.")
    tokenizer.model_max_length = CONTEXT_LENGTH
    return MedCLIPModel(vision, MedCLIPTextModel(bert, proj_dim)), tokenizer


def parse_target(target: str) -> tuple[str | None, Path | None]:
    """'vit' | 'resnet' | 'vit:FOLDER' | 'resnet:FOLDER' | 'FOLDER' -> (variant or None, folder or None)."""
    head, sep, rest = target.partition(":")
    if head in VARIANTS:
        return head, Path(rest).expanduser() if sep and rest else None
    return None, Path(target).expanduser() if target else None


def _load(target: str, weights: Path | None, device: torch.device, alias: EncoderAlias | None) -> MedCLIPEncoder:
    """Load a MedCLIP folder (or checkpoint file `weights` with the configs next to it), strictly."""
    variant, folder = parse_target(target)
    if weights is not None:
        folder, checkpoint = weights.parent, weights
    elif folder is not None:
        if not folder.is_dir():
            raise VlmError(layout_message(variant or "vit", f"MedCLIP folder {folder} not found."))
        checkpoint = folder / WEIGHTS_NAME
    else:
        raise VlmError(layout_message(variant or "vit", "No MedCLIP folder given: its checkpoint is not on the "
                                                        "Hugging Face hub."))
    if not checkpoint.is_file():
        raise VlmError(layout_message(variant or "vit", f"Missing {checkpoint}."))
    state = read_weights(checkpoint)
    found = checkpoint_variant(state)
    if found is None:
        raise VlmError(f"{checkpoint} is no MedCLIP checkpoint: it has neither vision_model.projection_head.weight "
                       f"(MedCLIP-ViT) nor vision_model.model.fc.weight (MedCLIP-ResNet).")
    if variant is not None and found != variant:
        raise VlmError(f"{checkpoint} is a {VARIANTS[found]} checkpoint, not {VARIANTS[variant]}: pass "
                       f"--model medclip-{found}:{folder}.")
    check_folder(folder, found, checkpoint)
    proj = next(state[k] for k in ("text_model.projection_head.weight", "vision_model.projection_head.weight",
                                   "vision_model.model.fc.weight") if k in state)
    model, tokenizer = build_model(found, folder, int(proj.shape[0]))
    load_strict(model, fit_legacy_keys(model, state, checkpoint), f"medclip-{found}", checkpoint)
    logit_scale = model.effective_logit_scale()
    if not math.isfinite(logit_scale):
        raise VlmError(f"{checkpoint}: logit_scale is not finite.")
    model = model.to(device, memory_format=torch.channels_last).eval()
    name = alias.name if alias else f"medclip-{found}"
    return MedCLIPEncoder(model, tokenizer, id=f"medclip:{found}", weights_id=weights_file_id(checkpoint),
                          preprocess=medclip_preprocess(), embed_dim=model.text_model.projection_head.out_features,
                          logit_scale=logit_scale, device=device, name=name,
                          description=alias.description if alias else VARIANTS[found])


def _match_variant_folder(raw: str) -> str | None:
    """`medclip-vit:FOLDER` / `medclip-resnet:FOLDER` -> 'vit:FOLDER' / 'resnet:FOLDER'."""
    m = re.fullmatch(r"medclip-(vit|resnet):(.+)", raw, flags=re.IGNORECASE)
    return f"{m.group(1).lower()}:{m.group(2)}" if m else None


def _match_folder(raw: str) -> str | None:
    """A local folder in the layout above (pytorch_model.bin and text/config.json, no config.json of its own)."""
    path = Path(raw).expanduser()
    if path.is_dir() and (path / WEIGHTS_NAME).is_file() and (path / TEXT_DIR / "config.json").is_file() \
            and not (path / "config.json").is_file():
        return str(path)
    return None


def _weights_folder(target: str, weights: str) -> str | None:
    """`--weights FOLDER` -> the target with that folder (the variant the name asked for, if any)."""
    if not Path(weights).expanduser().is_dir():
        return None
    variant, _ = parse_target(target)
    return f"{variant}:{weights}" if variant else weights


register_backend(Backend("medclip", _load, prefixes=("medclip:",), rules=((5, _match_variant_folder), (19, _match_folder)),
                         weights_as_tag=_weights_folder))
