"""What every `vlm` command shares: the consoles, the click group that turns user errors into one
line and exit code 2, help reflowing, the common options and progress helpers."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from vlm.errors import VlmError

out = Console()
err = Console(stderr=True)


def reflow(text: str | None) -> str | None:
    """Join the hard-wrapped lines of each help paragraph (rich would keep the breaks and wrap
    raggedly); a line that starts an example or a list item stays on its own line."""
    if not text:
        return text
    paragraphs = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in para.split("\n"):
            if lines and not line.startswith(("Example", "- ", "* ", " ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class VlmGroup(TyperGroup):
    """Runs a command and turns user errors into one stderr line and exit code 2; reflows help."""

    def get_command(self, ctx, cmd_name):  # type: ignore[override]
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            cmd.help = reflow(cmd.help)
        return cmd

    def format_help(self, ctx, formatter):  # type: ignore[override]
        self.help = reflow(self.help)
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):  # type: ignore[override]
        from models.errors import ModelError

        try:
            return super().invoke(ctx)
        except (VlmError, ModelError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
DataRootOpt = Annotated[
    Optional[Path],
    typer.Option("--data-root", help="Folder with MedMNIST .npz files \\[default: $VLM_DATA_ROOT, else ~/.medmnist].",
                 show_default=False),
]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download missing dataset files from Zenodo (MD5-checked).")]
VerifyOpt = Annotated[bool, typer.Option("--verify", help="Check the dataset file's MD5 against medmnist.INFO.")]
SizeOpt = Annotated[int, typer.Option("--size", help="Image size of the dataset file: 28/64/128/224 (2D), 28/64 (3D).")]
SplitOpt = Annotated[str, typer.Option("--split", help="Split to score: train, val or test.")]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds run records (one sub-folder per run).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (bootstrap resampling, training, sampling).")]
BootstrapOpt = Annotated[int, typer.Option("--bootstrap", help="Bootstrap rounds for 95% confidence intervals (0: none).")]
FlagArg = Annotated[str, typer.Argument(help="Dataset flag, e.g. breastmnist or vesselmnist3d (see `vlm datasets`).")]


def print_json(obj: Any) -> None:
    """One JSON object on stdout (plain print: no rich markup or wrapping)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


PromptsFileOpt = Annotated[
    Optional[Path],
    typer.Option("--prompts", help="A prompt-set YAML file to use instead of the shipped prompts/<flag>.yaml.",
                 show_default=False),
]
StyleOpt = Annotated[str, typer.Option("--style", help="Prompt style(s): a name, a comma list (clip,descriptive) "
                                                       "or 'all'.")]

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Encoder: an alias (biomedclip, clip-vit-b-32, clip-vit-b-16, plip, pubmedclip, quiltnet), "
                          "an open_clip name (ViT-B-32, ViT-B-32:laion2b_s34b_b79k, hf-hub:ORG/REPO, local-dir:FOLDER) "
                          "or a transformers hub id / local folder.", show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="Local weights file (torch.save state dict or .safetensors) for the --model architecture; "
                      "for an open_clip architecture also a pretrained tag (openai, laion2b_s34b_b79k, ...).",
    show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda if available), cpu, cuda or cuda:N.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass when encoding (3D: slices).")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Image-embedding cache folder (default: $VLM_CACHE_DIR, else ~/.cache/medvlm/embeddings).",
    show_default=False)]
SliceAxisOpt = Annotated[int, typer.Option(
    "--slice-axis", help="3D only: encode volumes slice by slice along this axis, 0/1/2 = D/H/W.")]
PoolOpt = Annotated[str, typer.Option("--pool", help="3D only: pool slice embeddings per volume by mean or max.")]


class EncodeProgress:
    """Drives a rich progress task from `image_embeddings(progress=...)` (set_total, then advances)."""

    def __init__(self, progress: Any, description: str, **fields: Any) -> None:
        self.progress = progress
        self.description = description
        self.fields = fields
        self.task: Any = None

    def set_total(self, total: int) -> None:
        if total:
            self.task = self.progress.add_task(self.description, total=total, **self.fields)

    def __call__(self, advance: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, advance)


def encode_progress(as_json: bool, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err if as_json else out, transient=True)
    return progress, EncodeProgress(progress, description)
