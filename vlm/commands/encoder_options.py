"""Options of the commands that run a vision-language encoder over a split (`vlm zero-shot`,
`vlm prompts compare`), declared once: the encoder, the prompts, and two option groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vlm.commands.common import BootstrapOpt, CacheDirOpt, DataRootOpt, DownloadOpt, seed_opt

PromptsFileOpt = Annotated[
    Optional[Path],
    typer.Option("--prompts", help="A prompt-set YAML file to use instead of the shipped prompts/<flag>.yaml.",
                 show_default=False),
]
StyleOpt = Annotated[str, typer.Option("--style", help="Prompt style(s): a name, a comma list (clip,descriptive) "
                                                       "or 'all'.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Encoder: an alias (biomedclip, clip-vit-b-32, clip-vit-b-16, plip, pubmedclip, quiltnet, "
                          "medclip-vit, medclip-resnet), "
                          "an open_clip name (ViT-B-32, ViT-B-32:laion2b_s34b_b79k, hf-hub:ORG/REPO, local-dir:FOLDER) "
                          "or a transformers hub id / local folder.", show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="Local weights file (torch.save state dict or .safetensors) for the --model architecture; "
                      "for an open_clip architecture also a pretrained tag (openai, laion2b_s34b_b79k, ...).",
    show_default=False)]

EnsembleOpt = Annotated[Optional[str], typer.Option(
    "--ensemble", help="Prompt ensembling per class: embeddings (renormalised mean of the normalised prompt embeddings, "
                       "open_clip/CLIP) or logits (mean of the prompts' logits, MedCLIP's PromptClassifier). "
                       "Default: the encoder's own (logits for MedCLIP, embeddings otherwise).", show_default=False)]


@dataclass(frozen=True)
class EncodeOptions:
    """How images are encoded: batch size, device and the image-embedding cache."""

    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Images per forward pass when encoding (3D: slices).")] = 256
    device: Annotated[str, typer.Option("--device", help="auto (cuda if available), cpu, cuda or cuda:N.")] = "auto"
    cache_dir: CacheDirOpt = None


@dataclass(frozen=True)
class ScoringOptions:
    """How the split is read (data files), pooled (3D slices) and scored (bootstrap CIs)."""

    slice_axis: Annotated[int, typer.Option(
        "--slice-axis", help="3D only: encode volumes slice by slice along this axis, 0/1/2 = D/H/W.")] = 0
    pool: Annotated[str, typer.Option("--pool", help="3D only: pool slice embeddings per volume by mean or max.")] = "mean"
    data_root: DataRootOpt = None
    download: DownloadOpt = False
    bootstrap: BootstrapOpt = 1000
    seed: seed_opt("the bootstrap resampling") = 0


def encoder_kwargs(encode: EncodeOptions, scoring: ScoringOptions) -> dict[str, Any]:
    """The keyword arguments of `run_zero_shot` / `compare_prompts` the two groups set."""
    return {"batch_size": encode.batch_size, "device": encode.device, "cache_dir": encode.cache_dir,
            "slice_axis": scoring.slice_axis, "pool": scoring.pool, "data_root": scoring.data_root,
            "download": scoring.download, "n_bootstrap": scoring.bootstrap, "seed": scoring.seed}
