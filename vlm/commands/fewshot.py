"""`vlm fewshot`: K-shot curves (methods × K × seeds) on cached image embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer
from rich.markup import escape
from typer.core import TyperCommand

from vlm.commands.calibrate import CalibrateOpt, calibration_table
from vlm.commands.common import BootstrapOpt, DataRootOpt, DownloadOpt, FlagArg, RunsDirOpt, SizeOpt, command
from vlm.commands.encoder_options import EncodeOptions, ModelOpt, PromptsFileOpt, WeightsOpt
from vlm.commands.output import Column, FormatOpt, Line, Output, Table, status_console
from vlm.errors import VlmError
from vlm.ranges import check_option

MULTI_VALUE = ("--method", "--shots", "--seeds")
FULL = ("all", "full")


def spread_values(args: Sequence[str], names: Sequence[str] = MULTI_VALUE) -> list[str]:
    """`--shots 1 2 4` as `--shots 1 --shots 2 --shots 4`: the words after one of `names`, up to the next
    option or a dataset flag, each become a value of that option."""
    from vlm.tasks import get_task

    def is_flag(word: str) -> bool:
        try:
            get_task(word)
        except VlmError:
            return False
        return True

    out: list[str] = []
    current: str | None = None
    for word in args:
        if word.startswith("-"):
            current = word if word in names else None
            out.append(word)
        elif current is not None and out[-1] != current and not is_flag(word):
            out += [current, word]
        else:
            if current is not None and out[-1] != current:
                current = None
            out.append(word)
    return out


class FewShotCommand(TyperCommand):
    """A command whose --method, --shots and --seeds take several values after one option name."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        return super().parse_args(ctx, spread_values(args))


def parse_shots(values: Sequence[str]) -> list[int | str]:
    """K values from the command line: whole numbers >= 1, or all/full for the full-data point."""
    shots: list[int | str] = []
    for v in values:
        if v.lower() in FULL:
            shots.append("all")
            continue
        try:
            k = int(v)
        except ValueError:
            raise VlmError(f"--shots takes whole numbers of examples per class or all/full, got '{v}'.") from None
        shots.append(check_option("shots", k))
    return shots


def parse_seeds(values: Sequence[str]) -> list[int]:
    """Seeds from the command line: whole numbers >= 0."""
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise VlmError(f"--seeds takes whole numbers, got {' '.join(values)}.") from None
    return check_option("seeds", seeds)


def parse_options(values: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`METHOD.KEY=VALUE` pairs (values read as YAML: 10, 1e-3, [0.2, 0.6], null) into per-method overrides."""
    import yaml

    options: dict[str, dict[str, Any]] = {}
    for item in values:
        name, eq, value = item.partition("=")
        method, dot, key = name.partition(".")
        if not (eq and dot and method and key):
            raise VlmError(f"--option takes METHOD.KEY=VALUE (e.g. coop.epochs=10), got '{item}'.")
        if method not in methods:
            raise VlmError(f"--option {item}: '{method}' is not one of the methods run ({', '.join(methods)}).")
        try:
            options.setdefault(method, {})[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise VlmError(f"--option {item}: cannot read the value '{value}'.") from None
    return options


def _mean_std(entry: dict[str, Any], metric: str) -> str:
    mean, std = entry.get(metric), entry.get(f"{metric}_std")
    if mean is None:
        return "-"
    return f"{mean:.3f}" if entry["n_seeds"] < 2 else f"{mean:.3f} ± {std:.3f}"


def seeds_note(summary: list[dict[str, Any]]) -> str:
    """'mean ± std over 3 seeds' (or 'one seed') for the tables of a curve."""
    seeds = sorted({s["n_seeds"] for s in summary})
    return "one seed" if seeds == [1] else f"mean ± std over {'/'.join(map(str, seeds))} seeds"


def curve_tables(summary: list[dict[str, Any]], title: str) -> list[Table]:
    """AUC and ACC tables: a row per method, a column per K ("full" for all), mean ± std over seeds in each cell."""
    methods = list(dict.fromkeys(s["method"] for s in summary))
    shots = list(dict.fromkeys(s["shots"] for s in summary))
    cells = {(s["method"], s["shots"]): s for s in summary}
    cols = [Column("method")] + [Column("full" if k == "all" else f"K={k}", "right") for k in shots]
    return [Table(cols, [[m] + [_mean_std(cells[(m, k)], metric) if (m, k) in cells else "" for k in shots]
                         for m in methods], title=f"few-shot {metric.upper()} · {title}")
            for metric in ("auc", "acc")]


class CurveBar:
    """One progress bar for a curve: the images of each split while they are encoded, then a step per record."""

    def __init__(self, progress: Any, flag: str, total: int) -> None:
        self.progress, self.flag, self.total = progress, flag, total
        self.task = progress.add_task(f"{flag}: loading", total=total)
        self.done = 0

    def set_total(self, n: int) -> None:
        if n:
            self.progress.update(self.task, description=f"{self.flag}: encoding", total=n, completed=0)

    def __call__(self, advance: int) -> None:
        self.progress.advance(self.task, advance)

    def record(self, record: Any) -> None:
        self.done += 1
        self.progress.update(self.task, total=self.total, completed=self.done,
                             description=escape(f"{self.flag}: {record.config['fewshot_method']} "
                                                f"K={record.config['shots']} seed {record.seed}"))


@command
def fewshot_cmd(
    flag: FlagArg,
    model: ModelOpt,
    weights: WeightsOpt = None,
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", metavar="NAME ...",
        help="Few-shot method(s), one or several after one --method: linear-probe, knn, zs-init, tip-adapter, "
             "tip-adapter-f, clip-adapter, coop (the last five need a vision-language model) "
             "\\[default: linear-probe].", show_default=False)] = None,
    shots: Annotated[Optional[list[str]], typer.Option(
        "--shots", metavar="K ...",
        help="K, examples per class (multi-label: positives per label), one or several: 1 2 4 8 16; all (or full) "
             "adds the full-data point \\[default: 1 2 4 8 16].", show_default=False)] = None,
    seeds: Annotated[Optional[list[str]], typer.Option(
        "--seeds", metavar="SEED ...",
        help="Seeds of the K-shot draws (and of training), one or several \\[default: 0 1 2].",
        show_default=False)] = None,
    shots_file: Annotated[Optional[Path], typer.Option(
        "--shots-file", help="Run on the draw of this shots file (one K and seed; written if missing, refused if "
                             "it does not match the data, K or seed).", show_default=False)] = None,
    val_shots: Annotated[Optional[str], typer.Option(
        "--val-shots", metavar="K",
        help="Validate on a K-shot draw of val instead of the full val split (strict few-shot model selection).",
        show_default=False)] = None,
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", metavar="METHOD.KEY=VALUE",
        help="A method's hyper-parameter (e.g. coop.epochs=10, clip-adapter.ratios=[0.2,0.6]); repeatable.",
        show_default=False)] = None,
    prompts: PromptsFileOpt = None,
    style: Annotated[Optional[str], typer.Option(
        "--style", help="Prompt style of the text methods' zero-shot classifier and class names \\[default: clip, "
                        "else the file's first].", show_default=False)] = None,
    size: SizeOpt = 28,
    image_size: Annotated[Optional[int], typer.Option(
        "--image-size", help="Encode at this input size instead of the encoder's own (if its image tower takes "
                             "it; 28 keeps MedMNIST's native pixels).", show_default=False)] = None,
    *,
    encode: EncodeOptions,
    slice_axis: Annotated[int, typer.Option(
        "--slice-axis", help="3D only: encode volumes slice by slice along this axis, 0/1/2 = D/H/W.")] = 0,
    pool: Annotated[str, typer.Option(
        "--pool", help="3D only: pool slice embeddings per volume by mean or max.")] = "mean",
    runs_dir: RunsDirOpt = Path("runs"),
    shots_dir: Annotated[Optional[Path], typer.Option(
        "--shots-dir", help="Folder of the shots files, shared by every method of a (K, seed) \\[default: "
                            "RUNS_DIR/shots].", show_default=False)] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    bootstrap: BootstrapOpt = 1000,
    calibrate: CalibrateOpt = None,
    fmt: FormatOpt = "table",
) -> Output:
    """K-shot curves: every method on every K and seed, one run record each, on cached image embeddings.

    Images are encoded once (3D: slice embeddings pooled per volume) and cached, so each point of a curve
    costs only its method. For a (K, seed) the K-shot draw of train is written to a shots file that every
    method reuses; hyper-parameters and epochs are chosen on val AUC, test is scored once. The tables
    show mean ± std over seeds; --json gives one row per record. Then: `vlm plot fewshot RUNS_DIR`.

    Example: [bold]vlm fewshot breastmnist --model tf_efficientnet_lite0 --weights ../shared/weights/tf_efficientnet_lite0.safetensors --method linear-probe knn --shots 1 2 4 8 16 all --seeds 0 1 2 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm fewshot vesselmnist3d --model tf_efficientnet_lite0 --weights ../shared/weights/tf_efficientnet_lite0.safetensors --image-size 28 --method knn --shots 1 2 4 --seeds 0 --data-root ../shared/data/medmnist[/]
    Example: [bold]vlm fewshot breastmnist --model ViT-B-32 --weights vitb32.pt --method coop tip-adapter --shots 4 --seeds 0 --option coop.epochs=5 --data-root ../shared/data/medmnist --json[/]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vlm.calibrate import check_calibration
    from vlm.fewshot import curve_rows, curve_summary, get_method, run_fewshot, size_note
    from vlm.fewshot.run import DEFAULT_SHOTS

    check_calibration(calibrate)
    if calibrate and val_shots is not None:
        raise VlmError("--calibrate fits its temperature on the full val split; it cannot be used with --val-shots.")

    methods = list(dict.fromkeys(method or ["linear-probe"]))
    for name in methods:
        get_method(name)
    options = parse_options(option or [], methods)
    ks = parse_shots(shots) if shots else None if shots_file else list(DEFAULT_SHOTS)
    seed_list = parse_seeds(seeds) if seeds else None if shots_file else [0, 1, 2]
    val_k = parse_shots([val_shots])[0] if val_shots is not None else None
    draws = 1 if shots_file else len(ks or []) * len(seed_list or [])
    console = status_console(fmt)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bar = CurveBar(progress, flag, draws * len(methods))
        records = run_fewshot(flag, model, methods=methods, shots=ks, seeds=seed_list, weights=weights, size=size,
                              data_root=data_root, download=download, device=encode.device, runs_dir=runs_dir,
                              shots_dir=shots_dir, shots_file=shots_file, val_shots=val_k, prompts=prompts,
                              style=style, options=options, cache_dir=encode.cache_dir, batch_size=encode.batch_size,
                              slice_axis=slice_axis, pool=pool, n_bootstrap=bootstrap, image_size=image_size,
                              progress=bar, on_record=bar.record)
    calibrated = _calibrate(records, calibrate, data_root)
    rows = curve_rows(records)
    summary = curve_summary(rows)
    first = records[0]
    embed, fit = first.timings.get("embed_seconds", 0.0), sum(r.timings.get("fit_seconds", 0.0) for r in records)
    encoded = first.config.get("images_encoded", 0)
    data = {"dataset": first.dataset, "model": first.model, "weights_id": first.weights_id, "size": first.size,
            "split": first.split, "methods": methods, "images_encoded": encoded, "embed_seconds": embed,
            "fit_seconds": round(fit, 4), "rows": rows, "summary": summary}
    if calibrate:
        data["calibrated"] = [{"run_dir": r.path, **r.calibrated} for r in calibrated]
    encoded_note = f"encoded {encoded} images in {embed:.1f}s" if encoded else "image embeddings from the cache"
    folder = escape(str(runs_dir))
    shots_folder = escape(str(Path(first.config["shots_file"]).parent))
    blocks: list[Any] = curve_tables(summary, f"{size_note(first)} · {first.model}")
    if calibrated:
        blocks.append(calibration_table([(f"{r.config['fewshot_method']} K={r.config['shots']} seed {r.seed}",
                                          r.metrics, r.calibrated) for r in calibrated]))
    blocks += [Line(f"test split, {seeds_note(summary)}; {encoded_note}; {len(records)} runs fitted and scored "
                    f"in {fit:.1f}s; records in [bold]{folder}[/], shots files in [bold]{shots_folder}[/]",
                    soft_wrap=True),
               Line(f"plot: [bold]vlm plot fewshot {folder} --dataset {first.dataset} --out fewshot.png[/]",
                    soft_wrap=True)]
    return Output(data, blocks)


def _calibrate(records: list[Any], method: str | None, data_root: Any) -> list[Any]:
    """With --calibrate: temperature-scale every run that kept its logits (kNN keeps none), in place."""
    if not method:
        return []
    from vlm.calibrate import calibrate_run
    from vlm.scoring import LOGITS_FILE

    return [calibrate_run(r, data_root=data_root, method=method) for r in records
            if (Path(r.path) / LOGITS_FILE).is_file()]
