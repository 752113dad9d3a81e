"""Vision-only fine-tuning of an image encoder (a VLM's image tower or a timm backbone) with a linear head.

Four modes, each recorded as one run (method = the mode, model = the encoder id):

- `linear-probe`: frozen encoder. L2-normalised embeddings of train/val/test come from
  `vlm.embeddings.image_embeddings` (disk-cached, so a second probe encodes nothing); features are
  standardised with the training mean/std and a logistic regression is fitted in torch with
  full-batch L-BFGS (softmax over K classes; per-label sigmoid for multi-label). The L2 strength is
  chosen on VALIDATION AUC over `l2_grid` (fitted from the strongest to the weakest, each warm-started
  from the previous); the test split is scored once with the chosen model.
- `knn`: cosine k-nearest neighbours of the normalised embeddings against the training split. The
  score of class c is the fraction of the k neighbours of class c (`weighting="uniform"`) or their
  share of the weights exp(cos / 0.07) (`"similarity"`, as in DINO's kNN); multi-label: per label,
  the (weighted) fraction of positive neighbours. Rows are probabilities; no softmax. `k="auto"`
  picks k from (1, 3, 5, 10, 20, 50, 100, 200) on validation AUC.
- `full`: the tower plus a linear head (on the tower's features) trained end to end by
  `vlm.training.fit`, the tower at `backbone_lr` (default 1e-5), the head at `lr` (default 1e-3),
  AdamW + cosine with one warm-up epoch, the encoder's own preprocessing.
- `zs-init` (vision-language encoders only): the head sits on L2-normalised features and starts as
  the zero-shot classifier of one prompt style, `logit_scale * text_classifier(...)`, bias 0, so at
  step 0 it reproduces the zero-shot scores (multi-label: per label `logit_scale * (t_pos - t_neg)`,
  whose sigmoid is the zero-shot pair softmax). Then `zs_then="full"` (default) fine-tunes tower and
  head as `full`; `zs_then="linear-probe"` keeps the tower frozen and fits the probe on the cached
  embeddings with its L2 penalty pulling the weights toward the zero-shot head instead of toward 0
  (a large L2 returns the zero-shot classifier; the grid adds 100 and 1000 for that end).

3D datasets work with `linear-probe` and `knn` through pooled slice embeddings (`slice_axis`,
`pool`); `full`/`zs-init` with `zs_then="full"` need 2D images.

Example:
    >>> finetune("breastmnist", "tf_efficientnet_lite0", mode="linear-probe",
    ...          weights="../shared/weights/tf_efficientnet_lite0.safetensors")   # doctest: +SKIP

Modules: `heads` (the tower classifier, the zero-shot head), `probe` (logistic probe and kNN on
frozen embeddings), `modes` (the `finetune` entry point, its defaults and options).
"""

from vlm.finetune.heads import TowerClassifier, zero_shot_head
from vlm.finetune.modes import EXTRA_OPTIONS, MODES, ZS_THEN, FinetuneOptions, finetune, finetune_config
from vlm.finetune.probe import KNN_WEIGHTINGS, fit_logistic, knn, knn_scores, linear_probe, logistic_scores

__all__ = [
    "EXTRA_OPTIONS", "KNN_WEIGHTINGS", "MODES", "ZS_THEN", "FinetuneOptions", "TowerClassifier", "finetune",
    "finetune_config", "fit_logistic", "knn", "knn_scores", "linear_probe", "logistic_scores", "zero_shot_head",
]
