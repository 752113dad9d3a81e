"""`vlm prompts list|show|validate|compare` and `vlm zero-shot`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.common import (
    BatchSizeOpt,
    BootstrapOpt,
    CacheDirOpt,
    DataRootOpt,
    DeviceOpt,
    DownloadOpt,
    FlagArg,
    JsonOpt,
    ModelOpt,
    PoolOpt,
    PromptsFileOpt,
    RunsDirOpt,
    SeedOpt,
    SizeOpt,
    SliceAxisOpt,
    SplitOpt,
    StyleOpt,
    VlmGroup,
    WeightsOpt,
    encode_progress,
    err,
    out,
    print_json,
)
from vlm.errors import VlmError

prompts_app = typer.Typer(cls=VlmGroup, no_args_is_help=True,
                          help="Prompt-set files (prompts/<flag>.yaml): list, show and validate them.")


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

    progress, callback = encode_progress(as_json, f"encoding {flag} {split}")
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
    progress, callback = encode_progress(as_json, f"encoding {flag} {split}")
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
