"""Robustness on MedMNIST-C: a recorded method scored on the corrupted test splits of its dataset.

- `corrupt`      the `medmnistc` package's corruptions per dataset, applied to a split and cached as uint8
- `scorers`      a run record rebuilt as split -> logits (trained and fine-tuned models, linear probes, zero-shot)
- `report`       AUC/ACC/ECE per corruption and severity, MedMNIST-C's balanced error (BE) and relative
                 balanced error (RBE), written to the run folder as robustness.json

Example:
    >>> robustness("runs/2025..._breastmnist_train_medmnist-resnet18",
    ...            data_root="../shared/data/medmnist")                      # doctest: +SKIP
"""

from vlm.robustness.corrupt import SEVERITIES, corrupt_images, corrupted_split, corruptions, medmnistc_version
from vlm.robustness.report import ROBUSTNESS_FILE, balanced_errors, load_report, robustness
from vlm.robustness.scorers import Scorer, run_scorer

__all__ = [
    "ROBUSTNESS_FILE", "SEVERITIES", "Scorer", "balanced_errors", "corrupt_images", "corrupted_split", "corruptions",
    "load_report", "medmnistc_version", "robustness", "run_scorer",
]
