"""`vlm datasets`, `vlm datasets info` and `vlm evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from vlm.commands.common import BootstrapOpt, DataRootOpt, DownloadOpt, FlagArg, RunsDirOpt, SizeOpt
from vlm.commands.common import SplitOpt, VerifyOpt, VlmGroup, command, seed_opt
from vlm.commands.output import Block, Line, Output, Styled, Table, columns
from vlm.commands.views import metrics_table

if TYPE_CHECKING:
    from vlm.tasks import TaskSpec

datasets_app = typer.Typer(cls=VlmGroup, invoke_without_command=True)  # help: the callback's docstring


def task_summary(task: TaskSpec, present: list[int]) -> dict[str, Any]:
    """The JSON/table row of a dataset for `vlm datasets`."""
    return {
        "flag": task.flag,
        "modality": task.modality,
        "task": task.kind,
        "medmnist_task": task.medmnist_task,
        "classes": task.num_classes,
        "channels": task.n_channels,
        "dims": task.dims,
        "sizes": list(task.sizes),
        "n_samples": task.n_samples,
        "present_sizes": present,
    }


def datasets_table(rows: list[dict[str, Any]], root: Path) -> Table:
    """One row per dataset: task, shape, sizes, split sizes and the sizes present under `root`."""
    cols = columns("flag", "modality", "task", "classes", "ch", "dims", "sizes", "train/val/test", "present",
                   right=("classes", "ch"))
    cells = []
    for r in rows:
        n = r["n_samples"]
        present = ",".join(map(str, r["present_sizes"])) or "-"
        cells.append([r["flag"], r["modality"], r["task"], str(r["classes"]), str(r["channels"]), r["dims"],
                      ",".join(map(str, r["sizes"])), f"{n['train']}/{n['val']}/{n['test']}",
                      Styled(present, style="green" if r["present_sizes"] else "dim")])
    return Table(cols, cells, title=f"MedMNIST datasets (data root: {root})")


def dataset_info_blocks(info: dict[str, Any]) -> list[Block]:
    """A heading, the per-split per-class counts (or the labels) and the local files of one dataset."""
    head = Line(f"[bold]{escape(info['flag'])}[/]  {escape(info['modality'])} · {escape(info['task'])} · "
                f"{info['dims']} · {info['n_channels']} channel(s) · {info['size']}px")
    splits = list(info["counts"]) if info["counts"] else []
    counts = [f"{s} ({info['counts'][s]['n']})" for s in splits]
    cols = columns("#", "label", *counts, right=("#", *counts))
    rows = [[str(i), label, *(str(info["counts"][s]["per_class"][i]) for s in splits)]
            for i, label in enumerate(info["labels"])]
    table = Table(cols, rows, title="per-split, per-class counts" if info["counts"] else "labels")
    files = "\n".join(f"  {size}px: {path}" for size, path in info["files"].items()) or "  none"
    note = "" if info["counts"] else (f"\nNo {info['size']}px file under {info['data_root']}: counts come from the "
                                      f"file (medmnist.INFO n_samples: {info['n_samples']}).")
    return [head, table, Line(escape(f"local files in {info['data_root']}:\n{files}{note}"))]


@datasets_app.callback()
@command
def datasets(
    ctx: typer.Context,
    data_root: DataRootOpt = None,
) -> Output | None:
    """List the 18 MedMNIST datasets and which files are present under the data root.

    Example: [bold]vlm datasets --data-root ../shared/data/medmnist[/]
    """
    if ctx.invoked_subcommand is not None:
        return None
    from vlm.data import local_sizes, resolve_root
    from vlm.tasks import all_tasks

    rows = [task_summary(t, local_sizes(t, data_root)) for t in all_tasks()]
    root = resolve_root(data_root)
    return Output({"data_root": str(root), "datasets": rows}, [datasets_table(rows, root)])


@datasets_app.command("info")
@command
def datasets_info(
    flag: FlagArg,
    size: SizeOpt = 28,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    verify: VerifyOpt = False,
) -> Output:
    """Label names, per-split per-class counts and local files of one dataset.

    Example: [bold]vlm datasets info breastmnist --data-root ../shared/data/medmnist[/]
    """
    from vlm.data import dataset_info

    info = dataset_info(flag, size, data_root, download=download, check_md5=verify)
    return Output(info, dataset_info_blocks(info))


# ----------------------------------------------------------------------------- evaluate
@command
def evaluate_cmd(
    flag: FlagArg,
    scores: Annotated[Path, typer.Option("--scores", help="A saved (N, K) .npy score array: softmax probabilities "
                                         "(multi-label: per-label probabilities), rows in split order.")],
    split: SplitOpt = "test",
    size: SizeOpt = 28,
    data_root: DataRootOpt = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Decision threshold for binary and multi-label ACC.")] = 0.5,
    bootstrap: BootstrapOpt = 1000,
    seed: seed_opt("the bootstrap resampling") = 0,
    record: Annotated[bool, typer.Option("--record", help="Also write a run record (JSON + scores) under --runs-dir.")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
) -> Output:
    """Score a saved score array against a split's labels with MedMNIST's AUC/ACC (+ 95% CIs).

    Example: [bold]vlm evaluate breastmnist --scores scores.npy --split test --data-root ../shared/data/medmnist[/]
    """
    from vlm.scoring import score_file

    result = score_file(flag, scores, split=split, size=size, data_root=data_root, threshold=threshold,
                        n_bootstrap=bootstrap, seed=seed, runs_dir=runs_dir if record else None)
    blocks: list[Block] = [metrics_table([result], title=f"{flag} · {split} · {size}px")]
    if result.get("run_dir"):
        blocks.append(Line(f"recorded in [bold]{escape(str(result['run_dir']))}[/]", highlight=True))
    return Output(result, blocks)

