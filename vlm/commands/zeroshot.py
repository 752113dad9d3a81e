"""`vlm zero-shot`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.calibrate import CalibrateOpt, calibration_table
from vlm.commands.common import FlagArg, RunsDirOpt, SizeOpt, SplitOpt, command
from vlm.commands.encoder_options import EncodeOptions, ModelOpt, PromptsFileOpt, ScoringOptions, WeightsOpt
from vlm.commands.encoder_options import EnsembleOpt, encoder_kwargs
from vlm.commands.output import FormatOpt, Line, Output, Table, columns, status_console
from vlm.commands.views import CALIBRATION_COLUMNS, METRIC_COLUMNS, calibration_cells, metric_cells


def _per_class_cell(result: dict[str, Any]) -> str:
    rows = result.get("per_class") or []
    return "\n".join(f"{r['label']}: {'-' if r.get('acc') is None else format(r['acc'], '.3f')}" for r in rows)


def zero_shot_table(results: list[dict[str, Any]], title: str) -> Table:
    """One row per prompt style: AUC/ACC with CIs, balanced ACC, ECE/Brier with CIs, per-class ACC and n."""
    numbers = (*METRIC_COLUMNS, *CALIBRATION_COLUMNS)
    return Table(columns("style", *numbers, "per-class ACC", "n", right=(*numbers, "n")),
                 [[str(r.get("style", "")), *metric_cells(r), *calibration_cells(r), _per_class_cell(r), str(r["n"])]
                  for r in results],
                 title=title, show_lines=True)


@command
def zero_shot_cmd(
    flag: FlagArg,
    model: ModelOpt,
    weights: WeightsOpt = None,
    prompts: PromptsFileOpt = None,
    style: Annotated[str, typer.Option(
        "--style", help="Prompt style(s): 'best' (rank the file's styles on the val split, then score --split "
                        "once with the winner), a name, a comma list (clip,descriptive) or 'all' (several styles "
                        "on test are marked as not selected on val).")] = "best",
    ensemble: EnsembleOpt = None,
    split: SplitOpt = "test",
    size: SizeOpt = 28,
    save_scores: Annotated[Optional[Path], typer.Option(
        "--save-scores", help="Also save the (N, K) scores as .npy; with several styles one file per style, "
                              "named FILE_<style>.npy. An existing file is refused unless --force.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --save-scores overwrite existing files.")] = False,
    *,
    encode: EncodeOptions,
    runs_dir: RunsDirOpt = Path("runs"),
    scoring: ScoringOptions,
    calibrate: CalibrateOpt = None,
    fmt: FormatOpt = "table",
) -> Output:
    """Zero-shot classification of a split with a vision-language encoder and a prompt-set file.

    Scores are softmax(logit_scale * cosine) over the classes (multi-label: over each label's
    negative/positive prompt pair). Image embeddings are cached, so re-running with other prompts
    encodes nothing. Each style is recorded as a run under --runs-dir. By default (--style best) the
    prompt file's styles are ranked on the val split and test is scored once with the winner; the
    ranking is kept in the record and in --json as "selection".

    Example: [bold]vlm zero-shot breastmnist --model ViT-B-32 --weights vitb32.pt --style clip --data-root ../shared/data/medmnist --save-scores scores.npy[/]
    Example: [bold]vlm zero-shot breastmnist --model ViT-B-32 --weights vitb32.pt --style best --data-root ../shared/data/medmnist --json[/]
    """
    from vlm.commands.progress import encode_progress
    from vlm.zeroshot import run_zero_shot

    progress, callback = encode_progress(status_console(fmt), f"encoding {flag} {split}")
    with progress:
        results = run_zero_shot(flag, model, weights=weights, prompts=prompts, styles=style, split=split, size=size,
                                runs_dir=runs_dir, progress=callback, save_scores=save_scores, force=force,
                                ensemble=ensemble,
                                calibrate=calibrate, **encoder_kwargs(encode, scoring))
    first = results[0]
    data = {"dataset": flag.lower(), "model": model, "encoder": first["model"], "weights_id": first["weights_id"],
            "split": split, "size": size, "images_encoded": first["images_encoded"], "selection": first["selection"],
            "results": results}
    encoded = (f"encoded {first['images_encoded']} images in {first['encode_seconds']:.1f}s"
               if first["images_encoded"] else "image embeddings from the cache")
    blocks = [zero_shot_table(results, f"zero-shot · {flag} · {split} · {size}px · {first['model']} "
                                       f"({first['weights_id']})"),
              Line(f"{encoded}; prompts: {escape(first['prompts'])}; {first['ensemble']} ensembling", soft_wrap=True)]
    selection = first["selection"]
    if selection and selection["split"] == "val":
        ranks = ", ".join(f"{r['style']} {r['auc']:.3f}" if r["auc"] is not None else r["style"]
                          for r in selection["ranking"])
        blocks.append(Line(f"style chosen on val: [bold]{escape(selection['style'])}[/] (val AUC: {escape(ranks)})",
                           soft_wrap=True))
    elif selection:
        blocks.append(Line("several styles scored on test: pick a style on val (--style best) before reading "
                           "a best one off this table", soft_wrap=True))
    if calibrate:
        blocks.insert(1, calibration_table([(r["style"], r, r["calibrated"]) for r in results]))
    for r in results:
        tag = escape("[" + r["style"] + "]")
        if r.get("run_dir"):
            blocks.append(Line(f"{tag} recorded in [bold]{escape(r['run_dir'])}[/]", soft_wrap=True))
        if r.get("scores_file"):
            blocks.append(Line(f"{tag} scores saved to [bold]{escape(r['scores_file'])}[/]", soft_wrap=True))
    return Output(data, blocks)
