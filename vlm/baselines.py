"""Published results to compare against: the MedMNIST v2 benchmark tables, shipped as package data.

Source: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8 — Table 3 (12 2D
datasets: ResNet-18/50 at 28 and 224 px, auto-sklearn, AutoKeras, Google AutoML Vision) and Table 4
(6 3D datasets: ResNet-18/50 with 2.5D, 3D and ACS convolutions, auto-sklearn, AutoKeras). Values are
test-split AUC and ACC as printed (three decimals, means of at least three runs).

The numbers live in `vlm/resources/medmnist_v2_baselines.csv`, one row per (dataset, method), with a
`check` column saying how each row was verified when it was entered:

- ``confirmed``: matches an independent stored copy of the published table — a hand transcription of
  Table 3 (all 224 px and AutoML rows), a replication report quoting Table 3 (all ResNet-18 (28)
  rows), published-reference configs quoting medmnist.com/v2 (ResNet-50+3D on all 3D datasets), or a
  check value of this project's spec (BreastMNIST/RetinaMNIST ResNet-18 (28), VesselMNIST3D and
  AdrenalMNIST3D ResNet-18+ACS);
- ``website-2021``: matches the 2021 benchmark table of the MedMNIST site (medmnist.github.io v2.html);
  the published paper changed a handful of such cells by 0.001, so the third decimal may be off;
- ``partial``: AUC confirmed, ACC not;
- ``unverified``: no stored copy found (NoduleMNIST3D, AdrenalMNIST3D, VesselMNIST3D were re-run for
  the published version, so the 2021 website values do not apply). Tables mark these cells.

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

SOURCE = ("Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
          "classification, Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8")
RESOURCE = "medmnist_v2_baselines.csv"
CHECKS = ("confirmed", "website-2021", "partial", "unverified")

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
        rows.append({
            "method": raw["method"],
            "dataset": raw["dataset"],
            "auc": float(raw["auc"]),
            "acc": float(raw["acc"]),
            "size": int(raw["size"]),
            "split": "test",
            "table": f"Table {table}",
            "check": raw["check"],
            "source": f"{SOURCE}, Table {table}",
        })
    return tuple(rows)


def medmnist_baselines(dataset: str | None = None) -> list[dict[str, Any]]:
    """Published MedMNIST v2 test results, as dicts with method, dataset, auc, acc, source.

    Each dict also holds `size` (the method's input size: 224 for the "(224)" ResNets, else 28),
    `split` ("test"), `table` ("Table 3" or "Table 4") and `check` (see the module docstring).
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
