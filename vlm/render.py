"""Rich renderings shared by the CLI: tables of datasets, metrics and runs (no computation here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from vlm.tasks import TaskSpec

if TYPE_CHECKING:
    from vlm.prompts import PromptSet


def task_summary(task: TaskSpec, present: list[int]) -> dict[str, Any]:
    """The JSON/table row of a dataset for `vlm datasets`."""
    return {
        "flag": task.flag,
        "modality": task.modality,
        "task": task.kind,
        "classes": task.num_classes,
        "channels": task.n_channels,
        "dims": task.dims,
        "sizes": list(task.sizes),
        "n_samples": task.n_samples,
        "present_sizes": present,
    }


def datasets_table(rows: list[dict[str, Any]], root: Path) -> Table:
    table = Table(title=f"MedMNIST datasets (data root: {root})", title_justify="left")
    for col in ("flag", "modality", "task", "classes", "ch", "dims", "sizes", "train/val/test", "present"):
        table.add_column(col, justify="right" if col in ("classes", "ch") else "left")
    for r in rows:
        n = r["n_samples"]
        present = ",".join(map(str, r["present_sizes"])) or "-"
        table.add_row(r["flag"], r["modality"], r["task"], str(r["classes"]), str(r["channels"]), r["dims"],
                      ",".join(map(str, r["sizes"])), f"{n['train']}/{n['val']}/{n['test']}",
                      Text(present, style="green" if r["present_sizes"] else "dim"))
    return table


def dataset_info_view(info: dict[str, Any]) -> Group:
    head = Text.assemble((info["flag"], "bold"), f"  {info['modality']} · {info['task']} · {info['dims']} · "
                         f"{info['n_channels']} channel(s) · {info['size']}px")
    table = Table(title="per-split, per-class counts" if info["counts"] else "labels", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("label")
    splits = list(info["counts"]) if info["counts"] else []
    for s in splits:
        table.add_column(f"{s} ({info['counts'][s]['n']})", justify="right")
    for i, label in enumerate(info["labels"]):
        table.add_row(str(i), label, *(str(info["counts"][s]["per_class"][i]) for s in splits))
    files = "\n".join(f"  {size}px: {path}" for size, path in info["files"].items()) or "  none"
    note = "" if info["counts"] else (f"\nNo {info['size']}px file under {info['data_root']}: counts come from the "
                                      f"file (medmnist.INFO n_samples: {info['n_samples']}).")
    return Group(head, table, Text(f"local files in {info['data_root']}:\n{files}{note}"))


def fmt_ci(value: float | None, ci: Iterable[float] | None) -> str:
    if value is None:
        return "-"
    if not ci:
        return f"{value:.3f}"
    lo, hi = ci
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def metrics_table(results: list[dict[str, Any]], title: str = "", name_key: str | None = None) -> Table:
    """One row per result dict (Metrics.to_dict() plus optional name): AUC/ACC with CIs, balanced ACC."""
    table = Table(title=title, title_justify="left")
    if name_key:
        table.add_column(name_key)
    for col in ("AUC [95% CI]", "ACC [95% CI]", "bal. ACC", "n"):
        table.add_column(col, justify="right")
    for r in results:
        cells = [fmt_ci(r["auc"], r.get("auc_ci")), fmt_ci(r["acc"], r.get("acc_ci")),
                 "-" if r.get("balanced_acc") is None else f"{r['balanced_acc']:.3f}", str(r["n"])]
        table.add_row(*([str(r.get(name_key, ""))] if name_key else []), *cells)
    return table


# ----------------------------------------------------------------------------- prompt sets
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
    table = Table(title="Prompt sets (prompts per style; multi-label counts positive + negative)",
                  title_justify="left")
    for col in ("dataset", "task", "classes", "styles"):
        table.add_column(col, justify="right" if col == "classes" else "left")
    for r in rows:
        styles = Text(", ").join(Text.assemble((name, "bold"), f" ({s['prompts']})") for name, s in r["styles"].items())
        table.add_row(r["dataset"], r["kind"], str(r["classes"]), styles)
    return table


def prompt_set_view(data: dict[str, Any], descriptions: dict[str, str] | None = None,
                    path: Path | str | None = None) -> Group:
    """`PromptSet.to_json()` as one table per style: class -> its expanded prompts (multi-label: +/- pairs)."""
    descriptions = descriptions or {}
    parts: list[Any] = [Text.assemble((data["dataset"], "bold"), f"  {len(data['classes'])} classes"
                                      + (f" · {path}" if path else ""))]
    for name, per_class in data["styles"].items():
        title = f"{name}" + (f" — {descriptions[name]}" if descriptions.get(name) else "")
        table = Table(title=title, title_justify="left", show_lines=True)
        table.add_column("#", justify="right")
        table.add_column("class")
        pairs = bool(per_class) and isinstance(per_class[0], dict)
        if pairs:
            table.add_column("positive prompts")
            table.add_column("negative prompts")
        else:
            table.add_column("prompts")
        for i, (cls, prompts) in enumerate(zip(data["classes"], per_class)):
            if pairs:
                table.add_row(str(i), Text(cls), Text("\n".join(prompts["positive"])),
                              Text("\n".join(prompts["negative"])))
            else:
                table.add_row(str(i), Text(cls), Text("\n".join(prompts)))
        parts.append(table)
    return Group(*parts)
