"""Figures: ROC curves, confusion matrices, prompt-style bars, data montages, embedding scatters, K-shot curves.

Every `plot_*` function takes plain arrays and writes one file; the `*_figure` functions gather the
arrays from run records, dataset files or an encoder and call them. Figures are drawn on matplotlib's
Agg canvas without pyplot (no global backend switch, no open-figure state) and written atomically;
the file format follows the suffix of the output path: ``.png`` or ``.svg`` (whose text stays
<text>, searchable and editable).

Modules: `figure` (canvas, saving, labels, colours), `curves` (ROC, confusion), `styles` (prompt
styles), `montage` (samples per class), `embeddings` (PCA / t-SNE scatters), `fewshot` (K-shot curves),
`reliability` (reliability diagrams), `robustness` (MedMNIST-C AUC against severity).
"""

from vlm.plots.curves import confusion_figure, macro_curve, plot_confusion, plot_roc, roc_figure
from vlm.plots.embeddings import embeddings_figure, plot_embeddings, project_2d
from vlm.plots.fewshot import fewshot_figure, plot_fewshot
from vlm.plots.figure import FORMATS, check_out, save_figure
from vlm.plots.montage import montage_figure, pick_per_class, plot_montage, volume_slices
from vlm.plots.reliability import plot_reliability, reliability_figure
from vlm.plots.robustness import plot_robustness, robustness_figure
from vlm.plots.styles import ZERO_SHOT, plot_style_bars, styles_figure

__all__ = [
    "FORMATS", "ZERO_SHOT", "check_out", "confusion_figure", "embeddings_figure", "fewshot_figure", "macro_curve",
    "montage_figure", "pick_per_class", "plot_confusion", "plot_embeddings", "plot_fewshot", "plot_montage",
    "plot_reliability", "plot_robustness", "plot_roc", "plot_style_bars", "project_2d", "reliability_figure",
    "robustness_figure", "roc_figure", "save_figure", "styles_figure", "volume_slices",
]
