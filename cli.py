"""`vlm`: the medvlm command line (typer + rich). Parses options, calls the library, renders.

Every command takes `--json` (one JSON object on stdout, nothing else). Problems the user can fix
print one line on stderr and exit with code 2 (see `VlmGroup`).
"""

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
        from models.registry import ModelError

        try:
            return super().invoke(ctx)
        except (VlmError, ModelError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
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


# ----------------------------------------------------------------------------- prompts
prompts_app = typer.Typer(cls=VlmGroup, no_args_is_help=True,
                          help="Prompt-set files (prompts/<flag>.yaml): list, show and validate them.")
app.add_typer(prompts_app, name="prompts")

PromptsFileOpt = Annotated[
    Optional[Path],
    typer.Option("--prompts", help="A prompt-set YAML file to use instead of the shipped prompts/<flag>.yaml.",
                 show_default=False),
]
StyleOpt = Annotated[str, typer.Option("--style", help="Prompt style(s): a name, a comma list (clip,descriptive) "
                                                       "or 'all'.")]


@prompts_app.command("list")
def prompts_list(as_json: JsonOpt = False) -> None:
    """List the shipped prompt sets: dataset, task, styles and the number of prompts per style.

    Example: [bold]vlm prompts list[/]
    """
    from vlm import render
    from vlm.prompts import load_prompt_set, shipped_prompt_files

    rows = [render.prompt_set_summary(load_prompt_set(path)) for path in shipped_prompt_files()]
    if as_json:
        print_json({"prompt_sets": rows})
    else:
        out.print(render.prompt_sets_table(rows))


@prompts_app.command("show")
def prompts_show(
    flag: FlagArg,
    prompts: PromptsFileOpt = None,
    style: StyleOpt = "all",
    as_json: JsonOpt = False,
) -> None:
    """Show the expanded prompts of every class (templates filled with every name), style by style.

    Example: [bold]vlm prompts show pneumoniamnist --style clip,descriptive[/]
    """
    from vlm import render
    from vlm.prompts import load_prompt_set

    ps = load_prompt_set(prompts if prompts is not None else flag, dataset=flag)
    data = ps.to_json(style)
    if as_json:
        print_json(data)
    else:
        descriptions = {name: ps.styles[name].description for name in data["styles"]}
        out.print(render.prompt_set_view(data, descriptions, ps.path))


@prompts_app.command("validate")
def prompts_validate(
    files: Annotated[list[Path], typer.Argument(help="Prompt-set YAML files to check, e.g. prompts/*.yaml.",
                                                show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check prompt-set files: OK, or one error line naming the file and the field. Exit code 2 if any fails.

    Example: [bold]vlm prompts validate prompts/*.yaml my_prompts.yaml[/]
    """
    from vlm.prompts import validate_prompt_set

    results = []
    for path in files:
        try:
            ps = validate_prompt_set(path)
            results.append({"path": str(path), "ok": True, "dataset": ps.dataset, "styles": ps.style_names,
                            "error": None})
        except VlmError as exc:
            results.append({"path": str(path), "ok": False, "dataset": None, "styles": [], "error": str(exc)})
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print_json({"ok": not failed, "files": results})
    else:
        for r in results:
            if r["ok"]:
                out.print(f"[green]OK[/] {escape(r['path'])}  ({r['dataset']}: {', '.join(r['styles'])})",
                          highlight=False, soft_wrap=True)
            else:
                err.print(f"[bold red]error:[/] {escape(r['error'])}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


# ----------------------------------------------------------------------------- zero-shot
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


class _EncodeProgress:
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


def _encode_progress(as_json: bool, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err if as_json else out, transient=True)
    return progress, _EncodeProgress(progress, description)


def _per_class_cell(result: dict[str, Any]) -> str:
    rows = result.get("per_class") or []
    return "\n".join(f"{r['label']}: {'-' if r.get('acc') is None else format(r['acc'], '.3f')}" for r in rows)


def _zero_shot_table(results: list[dict[str, Any]], title: str):
    from rich.table import Table

    from vlm.render import fmt_ci

    table = Table(title=title, title_justify="left", show_lines=True)
    for col, justify in (("style", "left"), ("AUC [95% CI]", "right"), ("ACC [95% CI]", "right"),
                         ("bal. ACC", "right"), ("per-class ACC", "left"), ("n", "right")):
        table.add_column(col, justify=justify)
    for r in results:
        table.add_row(escape(str(r.get("style", ""))), fmt_ci(r["auc"], r.get("auc_ci")), fmt_ci(r["acc"], r.get("acc_ci")),
                      "-" if r.get("balanced_acc") is None else f"{r['balanced_acc']:.3f}",
                      escape(_per_class_cell(r)), str(r["n"]))
    return table


@app.command("zero-shot")
def zero_shot_cmd(
    flag: FlagArg,
    model: ModelOpt,
    weights: WeightsOpt = None,
    prompts: PromptsFileOpt = None,
    style: StyleOpt = "all",
    split: SplitOpt = "test",
    size: SizeOpt = 28,
    save_scores: Annotated[Optional[Path], typer.Option(
        "--save-scores", help="Also save the (N, K) scores as .npy; with several styles one file per style, "
                              "named FILE_<style>.npy.", show_default=False)] = None,
    batch_size: BatchSizeOpt = 256,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    slice_axis: SliceAxisOpt = 0,
    pool: PoolOpt = "mean",
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot classification of a split with a vision-language encoder and a prompt-set file.

    Scores are softmax(logit_scale * cosine) over the classes (multi-label: over each label's
    negative/positive prompt pair). Image embeddings are cached, so re-running with other prompts
    encodes nothing. Each style is recorded as a run under --runs-dir. Choose prompts on the val
    split (`vlm prompts compare`), then score test once.

    Example: [bold]vlm zero-shot breastmnist --model biomedclip --style clip --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm zero-shot breastmnist --model ViT-B-32 --weights vitb32.pt --prompts my.yaml --json[/]
    """
    from vlm.zeroshot import run_zero_shot

    progress, callback = _encode_progress(as_json, f"encoding {flag} {split}")
    with progress:
        results = run_zero_shot(flag, model, weights=weights, prompts=prompts, styles=style, split=split, size=size,
                                data_root=data_root, download=download, batch_size=batch_size, device=device,
                                cache_dir=cache_dir, runs_dir=runs_dir, slice_axis=slice_axis, pool=pool,
                                n_bootstrap=bootstrap, seed=seed, progress=callback, save_scores=save_scores)
    first = results[0]
    if as_json:
        print_json({"dataset": flag.lower(), "model": model, "encoder": first["model"],
                    "weights_id": first["weights_id"], "split": split, "size": size,
                    "images_encoded": first["images_encoded"], "results": results})
        return
    encoded = (f"encoded {first['images_encoded']} images in {first['encode_seconds']:.1f}s"
               if first["images_encoded"] else "image embeddings from the cache")
    out.print(_zero_shot_table(results, f"zero-shot · {flag} · {split} · {size}px · {first['model']} "
                                        f"({first['weights_id']})"))
    out.print(f"{encoded}; prompts: {escape(first['prompts'])}", highlight=False, soft_wrap=True)
    for r in results:
        if r.get("run_dir"):
            out.print(f"{escape('[' + r['style'] + ']')} recorded in [bold]{escape(r['run_dir'])}[/]", highlight=False,
                      soft_wrap=True)
        if r.get("scores_file"):
            out.print(f"{escape('[' + r['style'] + ']')} scores saved to [bold]{escape(r['scores_file'])}[/]", highlight=False,
                      soft_wrap=True)


@prompts_app.command("compare")
def prompts_compare(
    flag: FlagArg,
    model: ModelOpt,
    prompts: Annotated[Optional[list[Path]], typer.Option(
        "--prompts", help="Prompt-set YAML files to rank (--prompts A.yaml B.yaml ...; default: the shipped "
                          "prompts/<flag>.yaml).", show_default=False)] = None,
    more: Annotated[Optional[list[Path]], typer.Argument(
        help="More prompt files (so that `--prompts A.yaml B.yaml` takes both).", show_default=False)] = None,
    weights: WeightsOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to rank on; keep val for model selection "
                                                       "(score test once with `vlm zero-shot`).")] = "val",
    size: SizeOpt = 28,
    batch_size: BatchSizeOpt = 256,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    slice_axis: SliceAxisOpt = 0,
    pool: PoolOpt = "mean",
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Rank every style of every prompt file by zero-shot AUC on the val split (best first).

    Images are encoded once (and cached); nothing is recorded.

    Example: [bold]vlm prompts compare breastmnist --model biomedclip --prompts prompts/breastmnist.yaml mine.yaml[/]
    """
    from vlm.zeroshot import compare_prompts

    files = [*(prompts or []), *(more or [])]
    if not files:
        from vlm.prompts import shipped_prompt_file

        files = [shipped_prompt_file(flag)]
    progress, callback = _encode_progress(as_json, f"encoding {flag} {split}")
    with progress:
        rows = compare_prompts(flag, model, files, weights=weights, split=split, size=size, data_root=data_root,
                               download=download, batch_size=batch_size, device=device, cache_dir=cache_dir,
                               slice_axis=slice_axis, pool=pool, n_bootstrap=bootstrap, seed=seed, progress=callback)
    if as_json:
        print_json({"dataset": flag.lower(), "model": model, "split": split, "size": size, "ranking": rows})
        return
    from rich.table import Table

    from vlm.render import fmt_ci

    table = Table(title=f"prompt styles ranked by AUC · {flag} · {split} · {size}px · {model}", title_justify="left")
    for col, justify in (("#", "right"), ("file", "left"), ("style", "left"), ("#prompts", "right"),
                         ("AUC [95% CI]", "right"), ("ACC [95% CI]", "right"), ("bal. ACC", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(str(r["rank"]), escape(Path(r["prompts"]).name), escape(r["style"]), str(r["n_prompts"]),
                      fmt_ci(r["auc"], r.get("auc_ci")), fmt_ci(r["acc"], r.get("acc_ci")),
                      "-" if r.get("balanced_acc") is None else f"{r['balanced_acc']:.3f}")
    out.print(table)


# ----------------------------------------------------------------------------- compare
FormatOpt = Annotated[str, typer.Option("--format", help="Output format: table (rich), markdown, csv or json.")]


def _emit_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("compare")
def compare_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder that holds run records (one sub-folder per run).")] = Path("runs"),
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help="Only runs of this dataset flag (repeatable).", show_default=False)] = None,
    fmt: FormatOpt = "table",
    baselines: Annotated[Optional[str], typer.Option(
        "--baselines", help="Append published results to test columns: medmnist (MedMNIST v2 paper, Tables 3-4).",
        show_default=False)] = None,
    pair: Annotated[Optional[tuple[str, str]], typer.Option(
        "--pair", metavar="RUN_A RUN_B", show_default=False,
        help="Paired bootstrap of two runs (run ids in RUNS_DIR, or run folders) on the same test set: "
             "AUC/ACC differences with 95% CIs and p-values.")] = None,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="With --pair: decision threshold for binary/multi-label ACC \\[default: the runs' own].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare runs head to head: one row per method, one column per dataset/size/split.

    Cells show AUC and ACC with 95% bootstrap CIs (one run) or mean ± std over seeds; the best per
    column is marked. Runs of different sizes or splits are never merged.

    Example: [bold]vlm compare runs --dataset breastmnist --baselines medmnist --format markdown[/]
    Example: [bold]vlm compare runs --pair RUN_A RUN_B --bootstrap 2000 --data-root ../shared/data/medmnist[/]
    """
    from vlm import compare
    from vlm.results import load_runs

    fmt = "json" if as_json else fmt.lower()
    if fmt not in compare.FORMATS:
        raise VlmError(f"Unknown --format '{fmt}': choose one of {', '.join(compare.FORMATS)}.")
    if pair:
        result = compare.pair_compare(pair[0], pair[1], bootstrap, seed, data_root=data_root, runs_dir=runs_dir,
                                      threshold=threshold)
        if fmt == "json":
            print_json(result)
        elif fmt == "markdown":
            _emit_text(compare.pair_markdown(result))
        elif fmt == "csv":
            _emit_text(compare.pair_csv(result))
        else:
            out.print(compare.pair_rich(result))
        return
    if baselines is not None:
        from vlm.baselines import BASELINE_SETS

        if baselines not in BASELINE_SETS:
            raise VlmError(f"Unknown --baselines '{baselines}': choose one of {', '.join(BASELINE_SETS)}.")
    records = load_runs(runs_dir)
    if not records:
        raise VlmError(f"No finished runs found in {runs_dir}.")
    if dataset:
        from vlm.tasks import get_task

        flags = [get_task(d).flag for d in dataset]
        if not any(r.dataset in flags for r in records):
            present = sorted({r.dataset for r in records})
            raise VlmError(f"No runs of {', '.join(flags)} in {runs_dir}; runs there are on {', '.join(present)}.")
    table = compare.comparison_table(records, dataset, baselines=baselines or False)
    if fmt == "json":
        print_json(table.to_dict())
    elif fmt == "markdown":
        _emit_text(compare.to_markdown(table))
    elif fmt == "csv":
        _emit_text(compare.to_csv(table))
    else:
        out.print(compare.render_rich(table, title=f"Comparison of runs in {runs_dir}"))


# ----------------------------------------------------------------------------- plot
plot_app = typer.Typer(cls=VlmGroup, no_args_is_help=True,
                       help="Figures (PNG or SVG by file suffix): ROC curves, confusion matrices, prompt styles, "
                            "data montages, embedding scatters.")
app.add_typer(plot_app, name="plot")
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Figure file to write: .png or .svg (written atomically).")]


def _wrote(path: Path, as_json: bool) -> None:
    if as_json:
        print_json({"file": str(path)})
    else:
        from rich.markup import escape

        out.print(f"wrote [bold]{escape(str(path))}[/]")


@plot_app.command("roc")
def plot_roc_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    size: SizeOpt = 28,
    split: SplitOpt = "test",
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", help="Only this run (id in --runs-dir or a run folder); repeatable \\[default: all runs of FLAG].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
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
    _wrote(roc_figure(records, out_file, data_root=data_root), as_json)


@plot_app.command("confusion")
def plot_confusion_cmd(
    run: Annotated[str, typer.Argument(help="Run id in --runs-dir, or a run folder.")],
    out_file: OutOpt,
    runs_dir: RunsDirOpt = Path("runs"),
    as_json: JsonOpt = False,
) -> None:
    """Confusion matrix of a run: counts and row-normalised rates (multi-label: TN/FP/FN/TP per label).

    Example: [bold]vlm plot confusion 20240101-120000_breastmnist_train_resnet18 --out cm.svg[/]
    """
    from vlm.compare import resolve_run
    from vlm.plots import confusion_figure

    _wrote(confusion_figure(resolve_run(run, runs_dir), out_file), as_json)


@plot_app.command("styles")
def plot_styles_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Encoder of the zero-shot runs \\[default: the only one].", show_default=False)] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    split: SplitOpt = "test",
    size: Annotated[Optional[int], typer.Option(
        "--size", help="Image size of the runs \\[default: the only one].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prompt styles of a dataset's zero-shot runs: AUC and ACC per style with 95% CI error bars.

    Example: [bold]vlm plot styles breastmnist --model ViT-B-32 --out styles.png[/]
    """
    from vlm.plots import styles_figure
    from vlm.results import load_runs

    _wrote(styles_figure(load_runs(runs_dir), flag, out_file, model=model, split=split, size=size), as_json)


@plot_app.command("montage")
def plot_montage_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    data_root: DataRootOpt = None,
    size: SizeOpt = 28,
    split: Annotated[str, typer.Option("--split", help="Split the samples are drawn from: train, val or test.")] = "train",
    per_class: Annotated[int, typer.Option("--per-class", help="Samples shown per class.")] = 8,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Random samples per class (3D: middle slices along each axis) and class counts per split.

    Example: [bold]vlm plot montage vesselmnist3d --data-root ../shared/data/medmnist --out vessel.png[/]
    """
    from vlm.plots import montage_figure

    _wrote(montage_figure(flag, out_file, data_root=data_root, size=size, split=split, per_class=per_class,
                          seed=seed), as_json)


@plot_app.command("embeddings")
def plot_embeddings_cmd(
    flag: FlagArg,
    out_file: OutOpt,
    model: Annotated[str, typer.Option("--model", help="Encoder name, e.g. ViT-B-32 or an open_clip hf-hub id.")],
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Encoder weights: a pretrained tag or a local checkpoint file.", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help="Projection: pca or tsne.")] = "pca",
    data_root: DataRootOpt = None,
    size: SizeOpt = 28,
    split: SplitOpt = "test",
    limit: Annotated[int, typer.Option("--limit", help="Plot a random subset of this many images (0: all).")] = 2000,
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option("--device", help="Device that runs the encoder: auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """PCA or t-SNE scatter of an encoder's image embeddings of a split, coloured by class.

    Example: [bold]vlm plot embeddings breastmnist --model ViT-B-32 --weights openai --method tsne --out emb.png[/]
    """
    from vlm.plots import embeddings_figure

    _wrote(embeddings_figure(flag, model, out_file, weights=weights, method=method.lower(), split=split, size=size,
                             data_root=data_root, limit=limit or None, seed=seed, device=device), as_json)


# ----------------------------------------------------------------------------- train / finetune / models
TrainFlagArg = Annotated[Optional[str], typer.Argument(
    help="Dataset flag, e.g. breastmnist or vesselmnist3d (optional with --resume).", show_default=False)]
TrainSizeOpt = Annotated[Optional[int], typer.Option(
    "--size", help="Image size of the dataset file: 28/64/128/224 (2D), 28/64 (3D) \\[default: 28].", show_default=False)]
ImageSizeOpt = Annotated[Optional[int], typer.Option(
    "--image-size", help="Resize images to this many pixels on the device \\[default: the native size, or the "
                         "model's fixed input size (e.g. 224 for ViT); finetune: the encoder's own size].",
    show_default=False)]
TrainWeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Local checkpoint (.safetensors/.pt/.pth) loaded into the backbone; the head is re-initialised.",
    show_default=False)]
EpochsOpt = Annotated[Optional[int], typer.Option(
    "--epochs", help="Training epochs \\[default: 10; MedMNIST's baselines used 100].", show_default=False)]
TrainBatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Training batch size \\[default: 128]; evaluation uses twice this.", show_default=False)]
LrOpt = Annotated[Optional[float], typer.Option(
    "--lr", help="Learning rate (of the head when --backbone-lr is set) \\[default: 1e-3].", show_default=False)]
BackboneLrOpt = Annotated[Optional[float], typer.Option(
    "--backbone-lr", help="Own, lower learning rate for everything but the head \\[default: train: none (all at "
                          "--lr); finetune: 1e-5].", show_default=False)]
OptimizerOpt = Annotated[Optional[str], typer.Option(
    "--optimizer", help="adam, adamw, radam, nadam or sgd (momentum 0.9) \\[default: train adam, finetune adamw].",
    show_default=False)]
WeightDecayOpt = Annotated[Optional[float], typer.Option(
    "--weight-decay", help="Weight decay \\[default: 0.01 for adamw, else 0].", show_default=False)]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="none, multistep (x0.1 at 50% and 75% of the epochs, MedMNIST), exponential (x gamma per "
                        "epoch) or cosine (with --warmup-epochs) \\[default: train multistep, finetune cosine].",
    show_default=False)]
LrGammaOpt = Annotated[Optional[float], typer.Option(
    "--lr-gamma", help="LR factor: multistep's step [0.1] or exponential's per-epoch decay [0.95].", show_default=False)]
WarmupOpt = Annotated[Optional[float], typer.Option(
    "--warmup-epochs", help="Cosine schedule: linear warm-up epochs \\[default: train 0, finetune 1].", show_default=False)]
LossOpt = Annotated[Optional[str], typer.Option(
    "--loss", help="ce, bce (multi-label), focal (multi-label: focal BCE) or weighted (class-weighted CE) "
                   "\\[default: ce; bce for multi-label].", show_default=False)]
GammaOpt = Annotated[Optional[float], typer.Option(
    "--gamma", help="Focal loss exponent \\[default: 2.0].", show_default=False)]
SamplerOpt = Annotated[Optional[str], typer.Option(
    "--sampler", help="none (shuffle), balanced (inverse class frequency, with replacement) or oversample "
                      "(minority classes repeated to the majority count) \\[default: none].", show_default=False)]
AugmentOpt = Annotated[Optional[bool], typer.Option(
    "--augment/--no-augment", help="Training augmentation on the device: 2D flip + small affine + resized crop; "
                                   "3D see --augment-3d \\[default: off, as MedMNIST].", show_default=False)]
Augment3dOpt = Annotated[Optional[str], typer.Option(
    "--augment-3d", help="3D augmentations used with --augment: comma list of flip, rot90 \\[default: flip].",
    show_default=False)]
ShapeTransformOpt = Annotated[Optional[bool], typer.Option(
    "--shape-transform/--no-shape-transform",
    help="MedMNIST's shape-dataset transform: voxels x U(0,1) in training, x 0.5 at evaluation \\[default: on for "
         "adrenalmnist3d and vesselmnist3d only].", show_default=False)]
TrainSeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Seed of everything (init, order, augmentation, bootstrap) \\[default: 0].", show_default=False)]
PatienceOpt = Annotated[Optional[int], typer.Option(
    "--patience", help="Early stopping: stop after this many epochs without a better val AUC \\[default: off].",
    show_default=False)]
TrainDeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="auto (cuda if available), cpu or cuda; bf16 autocast on CUDA \\[default: auto].",
    show_default=False)]
AmpOpt = Annotated[Optional[bool], typer.Option(
    "--amp/--no-amp", help="bf16 autocast on CUDA (no effect on CPU) \\[default: on].", show_default=False)]
TrainBootstrapOpt = Annotated[Optional[int], typer.Option(
    "--bootstrap", help="Bootstrap rounds for the test 95% CIs (0: none) \\[default: 1000].", show_default=False)]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    "--resume", help="Continue an interrupted run folder from its last.pt with its saved settings (options given "
                     "again must match).", show_default=False)]
TrainRunsDirOpt = Annotated[Path, typer.Option(
    "--runs-dir", help="Folder that holds run folders (checkpoints, epochs.jsonl, record.json).")]
LogOpt = Annotated[Optional[list[str]], typer.Option(
    "--log", help="Also log to tensorboard and/or wandb (repeat the option; the package must be installed).",
    show_default=False)]


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (typer passes None for the others)."""
    return {k: v for k, v in options.items() if v is not None}


class _TrainProgress:
    """A rich progress bar per epoch (live loss, last val AUC) driven by `vlm.train` events."""

    def __init__(self, console: Console, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.label = label
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.task: Any = None
        self.last = ""
        self.embed = _EncodeProgress(self.progress, f"{label} encoding", stats="")

    def __enter__(self) -> "_TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def _stats(self, loss: float | None) -> str:
        return " · ".join(s for s in (f"loss {loss:.4f}" if loss is not None else "", self.last) if s)

    def __call__(self, event: Any) -> None:
        if event.stage == "batch":
            if self.task is None or event.batch == 1:
                self.task = self.progress.add_task(f"{self.label} epoch {event.epoch}/{event.epochs}",
                                                   total=event.batches, stats="")
            self.progress.update(self.task, completed=event.batch, stats=self._stats(event.loss))
        elif event.stage == "epoch":
            auc = "-" if event.val_auc is None else f"{event.val_auc:.4f}"
            best = "-" if event.best_auc is None else f"{event.best_auc:.4f}"
            self.last = f"val AUC {auc} (best {best} @ {event.best_epoch})"
            if self.task is not None:
                self.progress.update(self.task, stats=self._stats(event.loss))
        elif event.stage == "test":
            self.progress.add_task(f"{self.label} scoring test with epoch {event.best_epoch}", total=None, stats="")


def _report_training(result: Any, as_json: bool, title: str) -> None:
    from vlm import render

    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    out.print(render.metrics_table([result.metrics.to_dict()], title=title))
    if result.epochs_run:
        best = "-" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
        out.print(f"best epoch {result.best_epoch} of {result.epochs_run} (val AUC {best}, {result.stop_reason}); "
                  f"{result.seconds:.1f}s, {result.seconds_per_epoch:.2f}s/epoch", highlight=False)
    else:
        chosen = ", ".join(f"{k} {rec_cfg[k]}" for k in ("l2", "k") if k in (rec_cfg := result.record.config))
        best = "-" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
        out.print(f"chosen on val: {chosen} (val AUC {best}); {result.seconds:.1f}s", highlight=False)
    out.print(f"run folder [bold]{escape(str(result.run_dir))}[/]", highlight=False, soft_wrap=True)


@app.command("train")
def train_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Transfer model: a registered name (medmnist-resnet18, small-cnn, ...; see `vlm models`), "
                              "a 3D prefix (slices:NAME, acs:resnet18, 2.5d:resnet50, 3d:resnet18), vit3d, or any "
                              "timm 2D name.", show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    weights: TrainWeightsOpt = None,
    pretrained: Annotated[Optional[bool], typer.Option(
        "--pretrained/--scratch", help="Start from pretrained weights or from scratch \\[default: pretrained when "
                                       "--weights is given, else scratch].", show_default=False)] = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    backbone_lr: BackboneLrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    scheduler: SchedulerOpt = None,
    lr_gamma: LrGammaOpt = None,
    warmup_epochs: WarmupOpt = None,
    loss: LossOpt = None,
    gamma: GammaOpt = None,
    sampler: SamplerOpt = None,
    augment: AugmentOpt = None,
    augment_3d: Augment3dOpt = None,
    shape_transform: ShapeTransformOpt = None,
    seed: TrainSeedOpt = None,
    patience: PatienceOpt = None,
    device: TrainDeviceOpt = None,
    amp: AmpOpt = None,
    bootstrap: TrainBootstrapOpt = None,
    model_opt: Annotated[Optional[list[str]], typer.Option(
        "--model-opt", help="Architecture option KEY=VALUE, repeatable (e.g. slice_axis=1, head=mean, in_chans=1).",
        show_default=False)] = None,
    resume: ResumeOpt = None,
    runs_dir: TrainRunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    log: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a transfer model (2D or 3D) on a dataset: best epoch by val AUC, test scored once.

    Defaults are MedMNIST's recipe (Adam, lr 1e-3, batch 128, LR x0.1 at 50% and 75% of the epochs,
    no augmentation) with 10 epochs instead of 100. The run folder keeps best.safetensors, a resumable
    last.pt, epochs.jsonl and the test record. Ctrl-C keeps the last completed epoch: continue with
    --resume RUN_DIR.

    Example: [bold]vlm train breastmnist --model medmnist-resnet18 --epochs 20 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm train vesselmnist3d --model acs:resnet18 --augment --json[/]
    Example: [bold]vlm train --resume runs/20250101-120000_breastmnist_train_small-cnn[/]
    """
    from vlm.train import TrainConfig, parse_model_opts
    from vlm.train import resume as resume_run
    from vlm.train import train

    opts = _given(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, optimizer=optimizer,
                  weight_decay=weight_decay, scheduler=scheduler, lr_gamma=lr_gamma, warmup_epochs=warmup_epochs,
                  loss=loss, gamma=gamma, sampler=sampler, augment=augment, augment_3d=augment_3d,
                  shape_transform=shape_transform, image_size=image_size, seed=seed, patience=patience,
                  device=device, amp=amp, n_bootstrap=bootstrap)
    model_opts = parse_model_opts(model_opt) if model_opt else None
    console = err if as_json else out
    if resume is not None:
        overrides = {**opts, **_given(flag=flag.lower() if flag else None, model=model, size=size,
                                      weights=str(weights) if weights else None, pretrained=pretrained,
                                      model_opts=model_opts)}
        with _TrainProgress(console, "resumed") as bar:
            result = resume_run(resume, overrides=overrides, data_root=data_root, download=download, log=log or (),
                                progress=bar)
    else:
        if flag is None or model is None:
            raise VlmError("vlm train needs a dataset flag and --model NAME (or --resume RUN_DIR).")
        with _TrainProgress(console, f"{flag} {model}") as bar:
            result = train(flag, model, config=TrainConfig(**opts), size=size or 28, weights=weights,
                           pretrained=pretrained, model_opts=model_opts, data_root=data_root, download=download,
                           runs_dir=runs_dir, log=log or (), progress=bar)
    rec = result.record
    _report_training(result, as_json, f"{rec.dataset} · test · {rec.size}px · {rec.model} (trained)")


@app.command("finetune")
def finetune_cmd(
    flag: TrainFlagArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Encoder: a VLM alias (biomedclip, clip-vit-b-32, plip, ...), an open_clip/transformers "
                              "name, or any timm name (image-only backbone).", show_default=False)] = None,
    weights: TrainWeightsOpt = None,
    mode: Annotated[Optional[str], typer.Option(
        "--mode", help="linear-probe (frozen, cached embeddings, L2 chosen on val), knn, full (tower + head) or "
                       "zs-init (head from the zero-shot classifier, then --zs-then) \\[default: linear-probe].",
        show_default=False)] = None,
    style: Annotated[Optional[str], typer.Option(
        "--style", help="zs-init: the prompt style that initialises the head \\[default: clip, else the first].",
        show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option(
        "--prompts", help="zs-init: a prompt-set YAML file \\[default: the shipped prompts/<flag>.yaml].",
        show_default=False)] = None,
    zs_then: Annotated[Optional[str], typer.Option(
        "--zs-then", help="zs-init: then full (fine-tune tower + head) or linear-probe (frozen; L2 pulls toward the "
                          "zero-shot head) \\[default: full].", show_default=False)] = None,
    k: Annotated[Optional[str], typer.Option(
        "--k", help="knn: neighbours, a number or auto (chosen on val AUC) \\[default: auto].", show_default=False)] = None,
    knn_weighting: Annotated[Optional[str], typer.Option(
        "--knn-weighting", help="knn: uniform votes or similarity (exp(cos/0.07)) weights \\[default: uniform].",
        show_default=False)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Image-embedding cache (linear-probe/knn) \\[default: $VLM_CACHE_DIR, else "
                            "~/.cache/medvlm/embeddings].", show_default=False)] = None,
    slice_axis: Annotated[Optional[int], typer.Option(
        "--slice-axis", help="3D (linear-probe/knn): slice axis 0/1/2 = D/H/W \\[default: 0].", show_default=False)] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="3D (linear-probe/knn): pool slice embeddings by mean or max \\[default: mean].",
        show_default=False)] = None,
    size: TrainSizeOpt = None,
    image_size: ImageSizeOpt = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    lr: LrOpt = None,
    backbone_lr: BackboneLrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    scheduler: SchedulerOpt = None,
    lr_gamma: LrGammaOpt = None,
    warmup_epochs: WarmupOpt = None,
    loss: LossOpt = None,
    gamma: GammaOpt = None,
    sampler: SamplerOpt = None,
    augment: AugmentOpt = None,
    seed: TrainSeedOpt = None,
    patience: PatienceOpt = None,
    device: TrainDeviceOpt = None,
    amp: AmpOpt = None,
    bootstrap: TrainBootstrapOpt = None,
    resume: ResumeOpt = None,
    runs_dir: TrainRunsDirOpt = Path("runs"),
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    log: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vision-only fine-tuning of an image encoder with a linear head: linear-probe, knn, full or zs-init.

    linear-probe and knn run on cached embeddings (seconds after the first encoding; 3D via pooled
    slice embeddings). full and zs-init train with the `vlm train` loop (AdamW, cosine, tower at
    --backbone-lr 1e-5, head at --lr 1e-3, 10 epochs by default) and resume with --resume RUN_DIR.

    Example: [bold]vlm finetune breastmnist --model tf_efficientnet_lite0 --weights ../shared/weights/tf_efficientnet_lite0.safetensors --mode linear-probe[/]
    Example: [bold]vlm finetune breastmnist --model biomedclip --mode zs-init --style clip --epochs 5[/]
    """
    from vlm.finetune import finetune, finetune_config
    from vlm.train import resume as resume_run

    opts = _given(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, optimizer=optimizer,
                  weight_decay=weight_decay, scheduler=scheduler, lr_gamma=lr_gamma, warmup_epochs=warmup_epochs,
                  loss=loss, gamma=gamma, sampler=sampler, augment=augment, image_size=image_size, seed=seed,
                  patience=patience, device=device, amp=amp, n_bootstrap=bootstrap)
    k_value: Any = None if k is None else (k if k == "auto" else _int_or_error("--k", k))
    extra = _given(k=k_value, knn_weighting=knn_weighting, style=style, prompts=str(prompts) if prompts else None,
                   zs_then=zs_then, cache_dir=str(cache_dir) if cache_dir else None, slice_axis=slice_axis, pool=pool)
    console = err if as_json else out
    if resume is not None:
        overrides = {**opts, **extra, **_given(flag=flag.lower() if flag else None, model=model, mode=mode,
                                               size=size, weights=str(weights) if weights else None)}
        with _TrainProgress(console, "resumed") as bar:
            result = resume_run(resume, overrides=overrides, data_root=data_root, download=download, log=log or (),
                                progress=bar)
    else:
        if flag is None or model is None:
            raise VlmError("vlm finetune needs a dataset flag and --model ENCODER (or --resume RUN_DIR).")
        with _TrainProgress(console, f"{flag} {model}") as bar:
            result = finetune(flag, model, mode=mode or "linear-probe", config=finetune_config(**opts), size=size or 28,
                              weights=weights, data_root=data_root, download=download, runs_dir=runs_dir,
                              log=log or (), progress=bar, embed_progress=bar.embed, **extra)
    rec = result.record
    _report_training(result, as_json, f"{rec.dataset} · test · {rec.size}px · {rec.model} ({rec.method})")


def _int_or_error(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise VlmError(f"{name} takes a number or 'auto', got '{value}'.") from None


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List the registered transfer models and 3D prefixes (any timm 2D name works too) and the encoder aliases.

    Example: [bold]vlm models --json[/]
    """
    from models.registry import list_models
    from vlm.encoders import list_aliases

    rows = [{"name": e.name + (":" if _is_prefix(e.name) else ""), "dims": e.dims, "description": e.description}
            for e in list_models()]
    aliases = list_aliases()
    if as_json:
        print_json({"models": rows, "timm_fallback": "any timm 2D model name (e.g. resnet50, tf_efficientnet_lite0)",
                    "encoders": aliases})
        return
    from rich.table import Table

    table = Table(title="transfer models (`vlm train --model`; any timm 2D name works too)", title_justify="left")
    for col in ("name", "dims", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r["name"]), r["dims"], escape(r["description"]))
    out.print(table)
    enc = Table(title="encoder aliases (`vlm zero-shot/finetune --model`; also open_clip, transformers and timm names)",
                title_justify="left")
    for col in ("name", "backend", "target", "description"):
        enc.add_column(col)
    for a in aliases:
        enc.add_row(escape(a["name"]), a["backend"], escape(a["target"]), escape(a["description"]))
    out.print(enc)


def _is_prefix(name: str) -> bool:
    from models.registry import _PREFIXES

    return name in _PREFIXES



# ----------------------------------------------------------------------------- run (experiment files)
@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment file (YAML): datasets x methods x seeds; "
                                                     "see experiments/*.yaml.", show_default=False)],
    runs_dir: Annotated[Optional[Path], typer.Option(
        "--runs-dir", help="Where the runs go \\[default: the file's runs_dir, else runs/<experiment name>].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="auto, cpu or cuda \\[default: the file's device, else auto].", show_default=False)] = None,
    cache_dir: CacheDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs still to run and stop.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every job of an experiment file that has no finished record yet.

    A job is (method, dataset, size, seed); its key is stored in each record, so an interrupted
    matrix resumes where it stopped. Afterwards: `vlm compare RUNS_DIR --baselines medmnist`.

    Example: [bold]vlm run experiments/breast_vessel.yaml --data-root ../shared/data/medmnist[/]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vlm.experiments import load_experiment, pending_jobs, run_job

    exp = load_experiment(experiment)
    folder = runs_dir or exp.runs_dir or Path("runs") / exp.name
    root = data_root or exp.data_root
    jobs = exp.jobs()
    todo = pending_jobs(exp, folder)
    summary = {"experiment": exp.name, "runs_dir": str(folder), "jobs": len(jobs), "skipped": len(jobs) - len(todo),
               "ran": [] if dry_run else [j.label for j in todo], "pending": [j.label for j in todo] if dry_run else []}
    console = err if as_json else out
    if not dry_run and todo:
        console.print(f"{exp.name}: {len(todo)} of {len(jobs)} jobs to run ({len(jobs) - len(todo)} already finished) "
                      f"-> {folder}", highlight=False)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            overall = bar.add_task("experiment", total=len(todo))
            for job in todo:
                bar.update(overall, description=escape(job.label))
                run_job(job, runs_dir=folder, data_root=root, device=device or exp.device, cache_dir=cache_dir)
                bar.advance(overall)
    if as_json:
        print_json(summary)
    else:
        verb = "to run" if dry_run else "ran"
        listed = summary["pending"] if dry_run else summary["ran"]
        out.print(f"{exp.name}: {len(jobs)} jobs, {summary['skipped']} already finished, {len(listed)} {verb}" +
                  "".join(f"\n  {escape(label)}" for label in listed), highlight=False)
        if not dry_run:
            out.print(f"compare: [bold]vlm compare {folder} --baselines medmnist[/]", highlight=False)


if __name__ == "__main__":
    app()
