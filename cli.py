"""`vlm`: the medvlm command line (typer + rich). Parses options, calls the library, renders.

Every command takes `--json` (one JSON object on stdout, nothing else). Problems the user can fix
print one line on stderr and exit with code 2 (see `VlmGroup`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from vlm.errors import VlmError

out = Console()
err = Console(stderr=True)


class VlmGroup(TyperGroup):
    """Runs a command and turns user errors into one stderr line and exit code 2."""

    def invoke(self, ctx):  # type: ignore[override]
        from models.registry import ModelError

        try:
            return super().invoke(ctx)
        except (VlmError, ModelError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=VlmGroup,
    name="vlm",
    help="Medical image classification on MedMNIST: zero-shot VLMs, fine-tuning and transfer learning, one evaluator.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
datasets_app = typer.Typer(cls=VlmGroup, help="The 18 MedMNIST datasets.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")

# ----------------------------------------------------------------------------- shared options
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
DataRootOpt = Annotated[
    Optional[Path],
    typer.Option("--data-root", help="Folder with MedMNIST .npz files [default: $VLM_DATA_ROOT, else ~/.medmnist].",
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


# ----------------------------------------------------------------------------- datasets
@datasets_app.callback()
def datasets(
    ctx: typer.Context,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the 18 MedMNIST datasets and which files are present under the data root.

    Example: [bold]vlm datasets --data-root ../shared/data/medmnist[/]
    """
    if ctx.invoked_subcommand is not None:
        return
    from vlm import render
    from vlm.data import local_sizes, resolve_root
    from vlm.tasks import all_tasks

    rows = [render.task_summary(t, local_sizes(t, data_root)) for t in all_tasks()]
    if as_json:
        print_json({"data_root": str(resolve_root(data_root)), "datasets": rows})
    else:
        out.print(render.datasets_table(rows, resolve_root(data_root)))


@datasets_app.command("info")
def datasets_info(
    flag: FlagArg,
    size: SizeOpt = 28,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    verify: VerifyOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Label names, per-split per-class counts and local files of one dataset.

    Example: [bold]vlm datasets info breastmnist --data-root ../shared/data/medmnist[/]
    """
    from vlm import render
    from vlm.data import dataset_info

    info = dataset_info(flag, size, data_root, download=download, check_md5=verify)
    if as_json:
        print_json(info)
    else:
        out.print(render.dataset_info_view(info))


# ----------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate_cmd(
    flag: FlagArg,
    scores: Annotated[Path, typer.Option("--scores", help="A saved (N, K) .npy score array: softmax probabilities "
                                         "(multi-label: per-label probabilities), rows in split order.")],
    split: SplitOpt = "test",
    size: SizeOpt = 28,
    data_root: DataRootOpt = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Decision threshold for binary and multi-label ACC.")] = 0.5,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    record: Annotated[bool, typer.Option("--record", help="Also write a run record (JSON + scores) under --runs-dir.")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
    as_json: JsonOpt = False,
) -> None:
    """Score a saved score array against a split's labels with MedMNIST's AUC/ACC (+ 95% CIs).

    Example: [bold]vlm evaluate breastmnist --scores scores.npy --split test --data-root ../shared/data/medmnist[/]
    """
    from vlm import render
    from vlm.scoring import score_file

    result = score_file(flag, scores, split=split, size=size, data_root=data_root, threshold=threshold,
                        n_bootstrap=bootstrap, seed=seed, runs_dir=runs_dir if record else None)
    if as_json:
        print_json(result)
    else:
        out.print(render.metrics_table([result], title=f"{flag} · {split} · {size}px"))
        if result.get("run_dir"):
            out.print(f"recorded in [bold]{result['run_dir']}[/]")


if __name__ == "__main__":
    app()
