"""`vlm datasets`, `vlm datasets info` and `vlm evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from vlm.commands.common import (
    BootstrapOpt,
    DataRootOpt,
    DownloadOpt,
    FlagArg,
    JsonOpt,
    RunsDirOpt,
    SeedOpt,
    SizeOpt,
    SplitOpt,
    VerifyOpt,
    VlmGroup,
    out,
    print_json,
)


datasets_app = typer.Typer(cls=VlmGroup, help="The 18 MedMNIST datasets.", invoke_without_command=True)


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
