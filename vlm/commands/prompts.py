"""`vlm prompts list|show|validate|compare`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from vlm.commands.common import FlagArg, SizeOpt, VlmGroup, command
from vlm.commands.encoder_options import EncodeOptions, ModelOpt, PromptsFileOpt, ScoringOptions, StyleOpt, WeightsOpt
from vlm.commands.encoder_options import EnsembleOpt, encoder_kwargs
from vlm.commands.output import Block, FormatOpt, Line, Output, Styled, Table, columns, emit, err, status_console
from vlm.commands.views import metric_cells
from vlm.errors import VlmError

if TYPE_CHECKING:
    from vlm.prompts import PromptSet

prompts_app = typer.Typer(cls=VlmGroup, no_args_is_help=True,
                          help="Prompt-set files (prompts/<flag>.yaml): list, show and validate them, and rank "
                               "their styles by zero-shot AUC on the val split (compare).\n\n"
                               "Example: [bold]vlm prompts show breastmnist --style clip[/]")


def prompt_set_summary(ps: PromptSet) -> dict[str, Any]:
    """The JSON/table row of a prompt file for `vlm prompts list`: its styles and prompts per style."""
    styles = {}
    for name, style in ps.styles.items():
        counts = ps.counts(name)
        styles[name] = {"description": style.description, "prompts": ps.n_prompts(name),
                        "per_class": [list(c) if isinstance(c, tuple) else c for c in counts]}
    return {"dataset": ps.dataset, "kind": ps.task.kind, "classes": len(ps.classes), "path": str(ps.path),
            "styles": styles}


def prompt_sets_table(rows: list[dict[str, Any]]) -> Table:
    """One row per prompt file: dataset, task, classes and its styles with their prompt counts."""
    cells = [[r["dataset"], r["kind"], str(r["classes"]),
              Styled(", ".join(f"[bold]{escape(name)}[/] ({s['prompts']})" for name, s in r["styles"].items()),
                     markup=True)] for r in rows]
    return Table(columns("dataset", "task", "classes", "styles", right=("classes",)), cells,
                 title="Prompt sets (prompts per style; multi-label counts positive + negative)")


def prompt_set_blocks(data: dict[str, Any], descriptions: dict[str, str], path: Path | str | None) -> list[Block]:
    """`PromptSet.to_json()` as one table per style: class -> its expanded prompts (multi-label: +/- pairs)."""
    blocks: list[Block] = [Line(f"[bold]{escape(data['dataset'])}[/]  {len(data['classes'])} classes"
                                + (escape(f" · {path}") if path else ""))]
    for name, per_class in data["styles"].items():
        title = f"{name}" + (f" — {descriptions[name]}" if descriptions.get(name) else "")
        pairs = bool(per_class) and isinstance(per_class[0], dict)
        names = ("positive prompts", "negative prompts") if pairs else ("prompts",)
        rows = [[str(i), cls, *(["\n".join(p["positive"]), "\n".join(p["negative"])] if pairs else ["\n".join(p)])]
                for i, (cls, p) in enumerate(zip(data["classes"], per_class))]
        blocks.append(Table(columns("#", "class", *names, right=("#",)), rows, title=title, show_lines=True))
    return blocks


@prompts_app.command("list")
@command
def prompts_list() -> Output:
    """List the shipped prompt sets: dataset, task, styles and the number of prompts per style.

    Example: [bold]vlm prompts list[/]
    """
    from vlm.prompts import load_prompt_set, shipped_prompt_files

    rows = [prompt_set_summary(load_prompt_set(path)) for path in shipped_prompt_files()]
    return Output({"prompt_sets": rows}, [prompt_sets_table(rows)])


@prompts_app.command("show")
@command
def prompts_show(
    flag: FlagArg,
    prompts: PromptsFileOpt = None,
    style: StyleOpt = "all",
) -> Output:
    """Show the expanded prompts of every class (templates filled with every name), style by style.

    Example: [bold]vlm prompts show pneumoniamnist --style clip,descriptive[/]
    """
    from vlm.prompts import load_prompt_set

    ps = load_prompt_set(prompts if prompts is not None else flag, dataset=flag)
    data = ps.to_json(style)
    descriptions = {name: ps.styles[name].description for name in data["styles"]}
    return Output(data, prompt_set_blocks(data, descriptions, ps.path))


@prompts_app.command("validate")
@command
def prompts_validate(
    files: Annotated[list[Path], typer.Argument(help="Prompt-set YAML files to check, e.g. prompts/*.yaml.",
                                                show_default=False)],
) -> Output:
    """Check prompt-set files: OK, or one error line naming the file and the field. Exit code 2 if any fails.

    Example: [bold]vlm prompts validate prompts/*.yaml[/]
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
    lines = [Line(f"[green]OK[/] {escape(r['path'])}  ({r['dataset']}: {', '.join(r['styles'])})", soft_wrap=True)
             if r["ok"] else Line(f"[bold red]error:[/] {escape(r['error'])}", stderr=True, soft_wrap=True)
             for r in results]
    table = Table(columns("path", "ok", "dataset", "styles", "error"),
                  [[r["path"], r["ok"], r["dataset"], ",".join(r["styles"]), r["error"]] for r in results],
                  formats=("csv",))
    return Output({"ok": not failed, "files": results}, [*lines, table], exit_code=2 if failed else 0)


@prompts_app.command("compare")
@command
def prompts_compare(
    flag: FlagArg,
    model: ModelOpt,
    prompts: Annotated[Optional[list[Path]], typer.Option(
        "--prompts", help="Prompt-set YAML files to rank (--prompts A.yaml B.yaml ...; default: the shipped "
                          "prompts/<flag>.yaml).", show_default=False)] = None,
    more: Annotated[Optional[list[Path]], typer.Argument(
        help="More prompt files (so that `--prompts A.yaml B.yaml` takes both).", show_default=False)] = None,
    weights: WeightsOpt = None,
    ensemble: EnsembleOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to rank on; keep val for model selection "
                                                       "(score test once with `vlm zero-shot`).")] = "val",
    size: SizeOpt = 28,
    watch: Annotated[bool, typer.Option("--watch", help="Keep the model and caches in memory and rank again each "
                                                        "time one of the prompt files is saved (Ctrl-C ends).")] = False,
    *,
    encode: EncodeOptions,
    scoring: ScoringOptions,
    fmt: FormatOpt = "table",
) -> Output | None:
    """Rank every style of every prompt file by zero-shot AUC on the val split (best first).

    Images are encoded once (and cached), prompts too; nothing is recorded. With --watch the ranking is
    shown again after every save of a prompt file; a file that does not parse prints its error and the
    watch goes on.

    Example: [bold]vlm prompts compare breastmnist --model ViT-B-32 --weights vitb32.pt --prompts prompts/breastmnist.yaml mine.yaml --data-root ../shared/data/medmnist[/]
    """
    from vlm.commands.progress import encode_progress
    from vlm.zeroshot import prompt_ranker

    files = [*(prompts or []), *(more or [])]
    if not files:
        from vlm.prompts import shipped_prompt_file

        files = [shipped_prompt_file(flag)]
    progress, callback = encode_progress(status_console(fmt), f"encoding {flag} {split}")
    with progress:
        ranker = prompt_ranker(flag, model, () if watch else files, weights=weights, split=split, size=size,
                               progress=callback, ensemble=ensemble, **encoder_kwargs(encode, scoring))
    if not watch:
        return ranking_output(ranker.rank(files), flag, model, split, size)
    from vlm.watch import watch_rankings

    status = status_console(fmt)
    names = ", ".join(Path(f).name for f in files)

    def show(rows: list[dict[str, Any]]) -> None:
        emit(ranking_output(rows, flag, model, split, size), fmt)
        status.print(f"[dim]watching {escape(names)} · Ctrl-C ends[/]", highlight=False)

    def error(exc: VlmError) -> None:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)

    watch_rankings(ranker, files, show, error)
    return None


def ranking_output(rows: list[dict[str, Any]], flag: str, model: str, split: str, size: int) -> Output:
    """The Output of one `compare_prompts` ranking: its JSON object and the ranked table."""
    names = ("#", "file", "style", "#prompts", "AUC [95% CI]", "ACC [95% CI]", "bal. ACC")
    table = Table(columns(*names, right=("#", "#prompts", *names[4:])),
                  [[str(r["rank"]), Path(r["prompts"]).name, r["style"], str(r["n_prompts"]), *metric_cells(r)]
                   for r in rows],
                  title=f"prompt styles ranked by AUC · {flag} · {split} · {size}px · {model}")
    return Output({"dataset": flag.lower(), "model": model, "split": split, "size": size, "ranking": rows}, [table])
