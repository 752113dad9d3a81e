"""The one evaluator: MedMNIST's AUC and ACC in torch, calibration, bootstrap CIs, per-class metrics, ROC curves.

Definitions follow `medmnist.evaluator.getAUC/getACC` exactly:

- binary: AUC and ACC use the LAST score column (or a 1-D score); ACC predicts `score > threshold`;
- multi-class and ordinal: AUC is the mean of the K one-vs-rest AUCs; ACC is argmax accuracy;
- multi-label: AUC and ACC are means over labels of the per-label AUC and of the per-label accuracy
  at `score > threshold`.

Everything runs in torch on the device that holds the scores, in float64. AUC is the rank
(Mann-Whitney) statistic with half credit for ties, i.e. scikit-learn's `roc_auc_score`, computed by
one weighted kernel (`core._AucPlan`) that serves the plain AUC (all weights 1), the bootstrap and the
paired bootstrap (weights = how often each sample was drawn in a resample; whole numbers, held
exactly in int32).

Every public function takes a task kind string ("binary", "multi-class", "multi-label", "ordinal")
or a TaskSpec, whose class names then label messages and per-class results.

Undefined AUC: a class (or label) with no positive or no negative samples has no AUC (scikit-learn
used to raise; 1.9 warns and returns nan, so medmnist's average becomes nan). `auc_score` raises a
VlmError naming the class; `evaluate` returns `auc = nan` (None in `to_dict()`), the per-class AUCs
that are defined, and a note naming the class, so a run on a small subset still reports its ACC.
Bootstrap resamples whose AUC is undefined are left out of the AUC percentiles and counted in
`Metrics.auc_bootstrap_skipped`.

Calibration (ECE, adaptive ECE, MCE, class-wise ECE, Brier, NLL; definitions in
`vlm.evaluate.calibration`) is scored on the same scores and resamples; `evaluate` reports it too.

Modules: `inputs` (checks), `core` (AUC/ACC), `calibration` (calibration metrics, reliability bins),
`bootstrap` (CIs, paired test), `metrics` (`evaluate`, `Metrics`), `curves` (ROC, thresholds).
"""

from vlm.evaluate.bootstrap import paired_bootstrap
from vlm.evaluate.calibration import calibration_metrics, reliability_bins
from vlm.evaluate.core import acc_score, auc_score
from vlm.evaluate.curves import roc_curve, roc_points, tune_threshold
from vlm.evaluate.inputs import KINDS, Array, check_scores
from vlm.evaluate.metrics import Metrics, evaluate

__all__ = ["KINDS", "Array", "Metrics", "acc_score", "auc_score", "calibration_metrics", "check_scores", "evaluate",
           "paired_bootstrap", "reliability_bins", "roc_curve", "roc_points", "tune_threshold"]
