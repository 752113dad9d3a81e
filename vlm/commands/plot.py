"""`vlm plot roc|confusion|reliability|robustness|styles|montage|embeddings|fewshot`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from vlm.commands.common import CacheDirOpt, DataRootOpt, FlagArg, RunsDirOpt, SizeOpt, VlmGroup, command, seed_opt
from vlm.commands.common import split_opt
from vlm.commands.output import Line, Output
from vlm.errors import VlmError

plot_app = typer.Typer(cls=VlmGroup, no_args_is_help=True,
                       help="Figures (PNG or SVG by file suffix): ROC curves, confusion matrices, reliability "
                            "diagrams, MedMNIST-C robustness, prompt styles, data montages, embedding scatters, "
                            "few-shot curves.\n\n"
                            "Example: [bold]vlm plot montage breastmnist --data-root ../shared/data/medmnist "
                            "--out montage.png[/]")
RunsSplitOpt = split_opt("Split of the runs: train, val or test.")
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Figure file to write: .png or .svg (written atomically).")]


def _wrote(path: Path) -> Output:
    """The figure file written: {"file": path} (table: 'wrote PATH')."""
    return Output({"file": str(path)}, [Line(f"wrote [bold]{escape(str(path))}[/]", highlight=True)])


@plot_app.command("roc")
@command
def plot_roc_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    size: SizeOpt = 28,
    split: RunsSplitOpt = "test",
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", help="Only this run (id in --runs-dir or a run folder); repeatable \\[default: all runs of FLAG].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
) -> Output:
    """ROC curves of the runs on one test set, one curve per run, AUC in the legend.

    Multi-class and multi-label: a macro curve per run, plus per-class curves when one run is shown.

    Example: [bold]vlm plot roc breastmnist --runs-dir runs --data-root ../shared/data/medmnist --out roc.png[/]
    """
    from vlm.compare import resolve_run
    from vlm.plots import roc_figure
    from vlm.results import load_runs
    from vlm.tasks import get_task

    task = get_task(flag)
    if run:
        records = [resolve_run(r, runs_dir) for r in run]
        for r in records:
            if r.dataset != task.flag:
                raise VlmError(f"Run {r.run_id} is a run of {r.dataset}, not {task.flag}.")
            if (int(r.size), r.split) != (size, split):
                raise VlmError(f"Run {r.run_id} is on {r.dataset} {r.size}px {r.split}, not {size}px {split} "
                               f"(pass --size / --split).")
    else:
        records = [r for r in load_runs(runs_dir) if r.dataset == task.flag and int(r.size) == size and r.split == split]
        if not records:
            raise VlmError(f"No finished runs of {task.flag} ({size}px, {split} split) found in {runs_dir}.")
    return _wrote(roc_figure(records, out_file, data_root=data_root))


@plot_app.command("confusion")
@command
def plot_confusion_cmd(
    run: Annotated[str, typer.Argument(help="Run id in --runs-dir, or a run folder.")],
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
) -> Output:
    """Confusion matrix of a run: counts and row-normalised rates (multi-label: TN/FP/FN/TP per label).

    Example: [bold]vlm plot confusion runs/*_breastmnist_train_medmnist-resnet18 --out cm.svg[/]
    """
    from vlm.compare import resolve_run
    from vlm.plots import confusion_figure

    return _wrote(confusion_figure(resolve_run(run, runs_dir), out_file))


@plot_app.command("reliability")
@command
def plot_reliability_cmd(
    source: Annotated[str, typer.Argument(metavar="RUN_OR_SCORES", help="Run id in --runs-dir, a run folder, or a "
                                                                        "scores .npy file (with --dataset).")],
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", help="Scores file: the dataset flag of its labels.", show_default=False)] = None,
    split: split_opt("Scores file: the split of its rows (train, val or test).") = "test",
    size: SizeOpt = 28,
    data_root: DataRootOpt = None,
) -> Output:
    """Reliability diagram of a run or a scores file: top-label accuracy against confidence (15 bins), ECE in the
    title; a calibrated run is drawn before and after temperature scaling.

    Example: [bold]vlm plot reliability runs/*_breastmnist_train_medmnist-resnet18 --data-root ../shared/data/medmnist --out reliability.png[/]
    """
    from vlm.plots.reliability import reliability_figure

    return _wrote(reliability_figure(source, out_file, runs_dir=runs_dir, data_root=data_root, dataset=dataset,
                                     split=split, size=size))


@plot_app.command("robustness")
@command
def plot_robustness_cmd(
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Runs scored by `vlm robustness` (run ids in "
                                                                     "--runs-dir, run folders or robustness.json files); "
                                                                     "one panel each.")],
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    metric: Annotated[str, typer.Option("--metric", help="auc, acc or ece against severity.")] = "auc",
) -> Output:
    """MedMNIST-C robustness: AUC (or --metric) against severity, one line per corruption, one panel per run.

    Example: [bold]vlm plot robustness runs/*_breastmnist_train_medmnist-resnet18 --out robustness.png[/]
    """
    from vlm.plots.robustness import robustness_figure

    return _wrote(robustness_figure(runs, out_file, runs_dir=runs_dir, metric=metric.lower()))


@plot_app.command("styles")
@command
def plot_styles_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Encoder of the zero-shot runs: its recorded id (open_clip:ViT-B-32) or the --model name "
                        "given to `vlm zero-shot` \\[default: the only one].", show_default=False)] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    split: RunsSplitOpt = "test",
    size: Annotated[Optional[int], typer.Option(
        "--size", help="Image size of the runs \\[default: the only one].", show_default=False)] = None,
) -> Output:
    """Prompt styles of a dataset's zero-shot runs: AUC and ACC per style with 95% CI error bars.

    Example: [bold]vlm plot styles breastmnist --model open_clip:ViT-B-32 --out styles.png[/]
    """
    from vlm.plots import styles_figure
    from vlm.results import load_runs

    return _wrote(styles_figure(load_runs(runs_dir), flag, out_file, model=model, split=split, size=size))


@plot_app.command("montage")
@command
def plot_montage_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    data_root: DataRootOpt = None,
    size: SizeOpt = 28,
    split: Annotated[str, typer.Option("--split", help="Split the samples are drawn from: train, val or test.")] = "train",
    per_class: Annotated[int, typer.Option("--per-class", help="Samples shown per class.")] = 8,
    seed: seed_opt("the samples shown") = 0,
) -> Output:
    """Random samples per class (3D: middle slices along each axis) and class counts per split.

    Example: [bold]vlm plot montage vesselmnist3d --data-root ../shared/data/medmnist --out vessel.png[/]
    """
    from vlm.plots import montage_figure

    return _wrote(montage_figure(flag, out_file, data_root=data_root, size=size, split=split, per_class=per_class,
                                 seed=seed))


@plot_app.command("embeddings")
@command
def plot_embeddings_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    model: Annotated[str, typer.Option("--model", help="Encoder name, e.g. ViT-B-32 or an open_clip hf-hub id.")],
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Encoder weights: a pretrained tag or a local checkpoint file.", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="Projection: pca or tsne.")] = "pca",
    data_root: DataRootOpt = None,
    size: SizeOpt = 28,
    split: split_opt("Split to encode (or read from the cache): train, val or test.") = "test",
    limit: Annotated[int, typer.Option("--limit", help="Plot a random subset of this many images (0: all).")] = 2000,
    seed: seed_opt("the --limit subset and the t-SNE") = 0,
    device: Annotated[str, typer.Option("--device", help="Device that runs the encoder: auto, cpu, cuda or cuda:N.")] = "auto",
    cache_dir: CacheDirOpt = None,
) -> Output:
    """PCA or t-SNE scatter of an encoder's image embeddings of a split, coloured by class.

    The embeddings are the cached ones of `vlm zero-shot`/`finetune --mode linear-probe` (3D: slices along D,
    mean-pooled) when the cache has them; else the split is encoded once and cached.

    Example: [bold]vlm plot embeddings breastmnist --model ViT-B-32 --weights vitb32.pt --data-root ../shared/data/medmnist --method tsne --out emb.png[/]
    """
    from vlm.plots import embeddings_figure

    return _wrote(embeddings_figure(flag, model, out_file, weights=weights, method=method.lower(), split=split,
                                    size=size, data_root=data_root, limit=limit or None, seed=seed, device=device,
                                    cache_dir=cache_dir))


@plot_app.command("fewshot")
@command
def plot_fewshot_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder of the few-shot (and zero-shot) run records.",
                                             show_default=False)],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset flag of the curves, e.g. breastmnist.",
                                         show_default=False)],
    out_file: OutOpt,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Encoder of the runs (its id or the --model name given to `vlm fewshot`) \\[default: the "
                        "only one].", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option(
        "--size", help="Image size of the runs \\[default: the only one].", show_default=False)] = None,
    image_size: Annotated[Optional[int], typer.Option(
        "--image-size", help="Input size the runs' images were encoded at (`vlm fewshot --image-size`) "
                             "\\[default: the only one].", show_default=False)] = None,
) -> Output:
    """K-shot curves of `vlm fewshot` runs: test AUC and ACC against K (log2 axis), mean ± std bands over
    seeds, one curve per method; the encoder's zero-shot runs in the folder as horizontal lines and the
    full-data results (--shots all) as points at the right.

    Example: [bold]vlm plot fewshot runs --dataset breastmnist --model tf_efficientnet_lite0 --out fewshot.png[/]
    """
    from vlm.plots import fewshot_figure
    from vlm.results import load_runs

    if not runs_dir.is_dir():
        raise VlmError(f"Runs folder {runs_dir} not found.")
    return _wrote(fewshot_figure(load_runs(runs_dir), dataset, out_file, model=model, size=size,
                                       image_size=image_size))
