"""Published results to compare against: the MedMNIST v2 benchmark tables, shipped as package data.

Paper: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8 — Table 3 (12 2D
datasets: ResNet-18/50 at 28 and 224 px, auto-sklearn, AutoKeras, Google AutoML Vision) and Table 4
(6 3D datasets: ResNet-18/50 with 2.5D, 3D and ACS convolutions, auto-sklearn, AutoKeras). Values are
test-split AUC and ACC as printed (three decimals, means of at least three runs).

The numbers live in `vlm/resources/medmnist_v2_baselines.csv`, one row per (dataset, method), with a
`source` column naming the stored copy each row's two cells were read from and checked against, as
``<repository>@<short commit>:<path>``. Every one of the 264 cells comes from the benchmark tables of
the MedMNIST website as it stands now (GitHub MedMNIST/medmnist.github.io, commit
83f35a9df2c72f6e95a740c50010423de8326067, index.html: the medmnist.com page of January 2024, citing the
Scientific Data paper, with the published NoduleMNIST3D split). The CSV's header comment lists how the
older stored pages differ (the 2021 v2 page before NoduleMNIST3D, AdrenalMNIST3D and VesselMNIST3D
were re-run, and the 224 px ResNets' earlier runs) and why the current page is taken. No stored copy
of the paper's own table text was found; the site is the authors' copy of it.

Sizes: the "(224)" ResNets were trained on the 28 px images upsampled to 224 px, and every other
method at 28 px; `vlm.compare` places a baseline only in a test-split column of its size.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources
from typing import Any

from vlm.errors import VlmError
from vlm.tasks import get_task

PAPER = ("Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
         "classification, Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8")
RESOURCE = "medmnist_v2_baselines.csv"
# The stored copies a row's `source` may name, with where to find them again.
STORED_COPIES = {
    "medmnist.github.io@83f35a9:index.html": (
        "github.com/MedMNIST/medmnist.github.io, commit 83f35a9df2c72f6e95a740c50010423de8326067, index.html "
        "(medmnist.com, January 2024): Benchmarking Performance on MedMNIST2D / MedMNIST3D"),
}

METHODS_2D = ("ResNet-18 (28)", "ResNet-18 (224)", "ResNet-50 (28)", "ResNet-50 (224)", "auto-sklearn", "AutoKeras",
              "Google AutoML Vision")
METHODS_3D = ("ResNet-18+2.5D", "ResNet-18+3D", "ResNet-18+ACS", "ResNet-50+2.5D", "ResNet-50+3D", "ResNet-50+ACS",
              "auto-sklearn", "AutoKeras")


@lru_cache(maxsize=1)
def _rows() -> tuple[dict[str, Any], ...]:
    text = resources.files("vlm").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    rows = []
    for raw in csv.DictReader(io.StringIO(body)):
        table = int(raw["table"])
        if raw["source"] not in STORED_COPIES:  # a packaging error, caught by the tests
            raise VlmError(f"{RESOURCE}: {raw['dataset']} {raw['method']} names no known stored copy "
                           f"('{raw['source']}').")
        rows.append({
            "method": raw["method"],
            "dataset": raw["dataset"],
            "auc": float(raw["auc"]),
            "acc": float(raw["acc"]),
            "size": int(raw["size"]),
            "split": "test",
            "table": f"Table {table}",
            "source": raw["source"],
            "reference": f"{PAPER}, Table {table}",
        })
    return tuple(rows)


def medmnist_baselines(dataset: str | None = None) -> list[dict[str, Any]]:
    """Published MedMNIST v2 test results, as dicts with method, dataset, auc, acc, source.

    `source` is the stored copy the row was checked against (e.g. "medmnist.github.io@83f35a9:index.html",
    see the module docstring); `reference` cites the paper and its table. Each dict also holds `size`
    (the method's input size: 224 for the "(224)" ResNets, else 28), `split` ("test") and `table`
    ("Table 3" or "Table 4").
    `dataset` restricts the list to one flag (unknown flags raise a VlmError with suggestions).

    Example: `medmnist_baselines("breastmnist")[0]` -> {'method': 'ResNet-18 (28)', 'auc': 0.901, ...}
    """
    if dataset is None:
        return [dict(r) for r in _rows()]
    flag = get_task(dataset).flag
    return [dict(r) for r in _rows() if r["dataset"] == flag]


BASELINE_SETS = {"medmnist": medmnist_baselines}


def baselines(name: str, dataset: str | None = None) -> list[dict[str, Any]]:
    """A named set of published baselines ("medmnist"); a clear error for other names."""
    if name not in BASELINE_SETS:
        raise VlmError(f"Unknown baselines '{name}': choose one of {', '.join(BASELINE_SETS)}.")
    return BASELINE_SETS[name](dataset)
