"""The evaluator against medmnist.evaluator and scikit-learn, ties included, plus bootstrap, ROC and checks."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from medmnist.evaluator import getACC, getAUC
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from vlm.errors import VlmError
from vlm.evaluate import (
    acc_score,
    auc_score,
    check_scores,
    evaluate,
    paired_bootstrap,
    roc_curve,
    roc_points,
    tune_threshold,
)
from vlm.evaluate.bootstrap import _bootstrap, _resample_weights
from vlm.evaluate.core import _hits, _plans
from vlm.evaluate.inputs import _prepare
from vlm.tasks import get_task

MEDMNIST_TASK = {
    "binary": "binary-class",
    "multi-class": "multi-class",
    "ordinal": "ordinal-regression",
    "multi-label": "multi-label, binary-class",
}
KS = {"binary": 2, "multi-class": 9, "ordinal": 5, "multi-label": 14}
TOL = 1e-9


def make(kind: str, n: int = 400, seed: int = 0, decimals: int | None = 1, signal: float = 1.0):
    """Labels (N, L) and scores (N, K) as numpy arrays; scores rounded to `decimals` to force ties."""
    rng = np.random.default_rng(seed)
    k = KS[kind]
    if kind == "multi-label":
        y = (rng.random((n, k)) < 0.3).astype(np.int64)
        s = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + signal * (2 * y - 1))))
    else:
        y = rng.integers(0, k, size=(n, 1))
        logits = rng.normal(size=(n, k)) + signal * np.eye(k)[y[:, 0]]
        s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:
        s = np.round(s, decimals)
    return y, s


def reference_auc(y: np.ndarray, s: np.ndarray, kind: str) -> float:
    """medmnist's AUC, nan where it is undefined (scikit-learn raises, or warns and gives nan since 1.x)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            return getAUC(y, s, MEDMNIST_TASK[kind])
        except ValueError:
            return float("nan")


@pytest.mark.parametrize("kind", list(KS))
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_acc_match_medmnist_with_ties(kind, seed):
    y, s = make(kind, seed=seed)
    assert len(np.unique(s)) < 12  # heavy ties
    yt, st = torch.from_numpy(y), torch.from_numpy(s)
    ref_auc, ref_acc = getAUC(y, s, MEDMNIST_TASK[kind]), getACC(y, s, MEDMNIST_TASK[kind])
    assert auc_score(kind, yt, st) == pytest.approx(ref_auc, abs=TOL, rel=0)
    assert acc_score(kind, yt, st) == pytest.approx(ref_acc, abs=TOL, rel=0)
    m = evaluate(kind, yt, st, n_bootstrap=0)
    assert m.auc == pytest.approx(ref_auc, abs=TOL, rel=0)
    assert m.acc == pytest.approx(ref_acc, abs=TOL, rel=0)


@pytest.mark.parametrize("kind", ["binary", "multi-label"])
def test_acc_threshold_matches_medmnist(kind):
    y, s = make(kind, seed=3, decimals=2)
    for threshold in (0.2, 0.5, 0.73):
        assert acc_score(kind, y, s, threshold) == pytest.approx(
            getACC(y, s, MEDMNIST_TASK[kind], threshold), abs=TOL, rel=0)


def test_binary_one_dimensional_scores_and_last_column():
    y, s = make("binary", decimals=2)
    ref = getAUC(y, s[:, 1], "binary-class")
    assert auc_score("binary", y[:, 0], s[:, 1]) == pytest.approx(ref, abs=TOL, rel=0)
    # Only the last column counts: changing the first one changes nothing.
    s2 = s.copy()
    s2[:, 0] = np.random.default_rng(0).random(len(s))
    assert auc_score("binary", y, s2) == pytest.approx(ref, abs=TOL, rel=0)
    assert acc_score("binary", y, s2) == acc_score("binary", y, s)


@pytest.mark.parametrize("kind", list(KS))
def test_per_class_confusion_and_balanced_acc_match_sklearn(kind):
    y, s = make(kind, seed=5)
    m = evaluate(kind, y, s, n_bootstrap=0)
    if kind == "multi-label":
        pred = (s > 0.5).astype(int)
        ref_auc = [skm.roc_auc_score(y[:, c], s[:, c]) for c in range(s.shape[1])]
        ref_acc = [skm.accuracy_score(y[:, c], pred[:, c]) for c in range(s.shape[1])]
        ref_support = y.sum(axis=0).tolist()
        ref_bal = np.mean([skm.balanced_accuracy_score(y[:, c], pred[:, c]) for c in range(s.shape[1])])
        assert m.confusion == skm.multilabel_confusion_matrix(y, pred).tolist()
    else:
        k = 2 if kind == "binary" else s.shape[1]
        pred = (s[:, -1] > 0.5).astype(int) if kind == "binary" else s.argmax(axis=1)
        if kind == "binary":
            ref_auc = [skm.roc_auc_score(y[:, 0], s[:, -1])] * 2
        else:
            ref_auc = [skm.roc_auc_score(y[:, 0] == c, s[:, c]) for c in range(k)]
        ref_acc = skm.recall_score(y[:, 0], pred, average=None, labels=list(range(k))).tolist()
        ref_support = np.bincount(y[:, 0], minlength=k).tolist()
        ref_bal = skm.balanced_accuracy_score(y[:, 0], pred)
        assert m.confusion == skm.confusion_matrix(y[:, 0], pred, labels=list(range(k))).tolist()
    assert [c["auc"] for c in m.per_class] == pytest.approx(ref_auc, abs=TOL, rel=0)
    assert [c["acc"] for c in m.per_class] == pytest.approx(ref_acc, abs=TOL, rel=0)
    assert [c["support"] for c in m.per_class] == ref_support
    assert m.balanced_acc == pytest.approx(ref_bal, abs=TOL, rel=0)


def test_balanced_acc_ignores_classes_absent_from_the_labels():
    y, s = make("multi-class", n=200, signal=2.0)
    s[:20, 7] = 1.0  # predicted class 7 ...
    y[y == 7] = 0  # ... which no sample has
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = skm.balanced_accuracy_score(y[:, 0], s.argmax(axis=1))
    assert evaluate("multi-class", y, s, n_bootstrap=0).balanced_acc == pytest.approx(ref, abs=TOL, rel=0)


@pytest.mark.parametrize("kind", list(KS))
def test_bootstrap_rounds_equal_medmnist_on_the_resampled_data(kind):
    """The weighted kernel on a resample's multiplicities equals medmnist on the resample itself."""
    y, s = make(kind, n=150, seed=2)
    yt, st = _prepare(kind, y, s, None, kind)
    boot_auc, boot_acc = _bootstrap([(_plans(kind, yt, st), _hits(kind, yt, st, 0.5))], yt, 15, seed=7)
    weights = torch.cat(list(_resample_weights(len(y), 15, 7, yt.device)))[:, 1:]
    checked = 0
    for r in range(15):
        idx = np.repeat(np.arange(len(y)), weights[r].long().numpy())
        assert len(idx) == len(y)
        ref = reference_auc(y[idx], s[idx], kind)
        if np.isnan(ref):  # a class missing from this resample
            assert torch.isnan(boot_auc[0, r])
            continue
        assert boot_auc[0, r].item() == pytest.approx(ref, abs=TOL, rel=0)
        assert boot_acc[0, r].item() == pytest.approx(getACC(y[idx], s[idx], MEDMNIST_TASK[kind]), abs=TOL, rel=0)
        checked += 1
    assert checked >= 10


def test_bootstrap_is_seeded_and_contains_the_estimate():
    y, s = make("multi-class", n=500, decimals=2)
    a = evaluate("multi-class", y, s, n_bootstrap=300, seed=1)
    b = evaluate("multi-class", y, s, n_bootstrap=300, seed=1)
    c = evaluate("multi-class", y, s, n_bootstrap=300, seed=2)
    assert a.to_dict() == b.to_dict()
    assert a.auc_ci != c.auc_ci
    assert a.auc_ci[0] < a.auc < a.auc_ci[1]
    assert a.acc_ci[0] < a.acc < a.acc_ci[1]
    assert 0 < a.auc_ci[1] - a.auc_ci[0] < 0.1


@pytest.mark.parametrize("kind", ["binary", "multi-label"])
def test_ci_width_shrinks_with_more_samples(kind):
    small = evaluate(kind, *make(kind, n=200, seed=4), n_bootstrap=200)
    large = evaluate(kind, *make(kind, n=1800, seed=4), n_bootstrap=200)
    for field in ("auc_ci", "acc_ci"):
        width_small = getattr(small, field)[1] - getattr(small, field)[0]
        width_large = getattr(large, field)[1] - getattr(large, field)[0]
        assert width_large < 0.6 * width_small  # 1/sqrt(9) in theory


def test_no_bootstrap_and_ci_level():
    y, s = make("binary")
    assert evaluate("binary", y, s, n_bootstrap=0).auc_ci is None
    m90 = evaluate("binary", y, s, n_bootstrap=400, ci=0.90)
    m99 = evaluate("binary", y, s, n_bootstrap=400, ci=0.99)
    assert m99.auc_ci[0] < m90.auc_ci[0] and m90.auc_ci[1] < m99.auc_ci[1]
    with pytest.raises(VlmError, match="ci must be"):
        evaluate("binary", y, s, ci=95)


def test_metrics_to_dict_is_json_and_uses_task_labels():
    task = get_task("retinamnist")
    y, s = make("ordinal", n=task.n_samples["test"], seed=1)
    m = evaluate(task, torch.from_numpy(y), torch.from_numpy(s).float(), n_bootstrap=50)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["kind"] == "ordinal" and d["n"] == 400 and d["n_bootstrap"] == 50
    assert [c["label"] for c in d["per_class"]] == list(task.labels)
    assert len(d["auc_ci"]) == 2 and len(d["confusion"]) == 5


def test_undefined_auc_raises_in_auc_score_and_is_nan_in_evaluate():
    y, s = make("multi-class", n=100)
    y[y == 4] = 3  # class 4 has no positives
    with pytest.raises(VlmError, match="class '4'.*no positive"):
        auc_score("multi-class", y, s)
    assert np.isnan(reference_auc(y, s, "multi-class"))
    pathmnist = get_task("pathmnist")  # 9 classes; a TaskSpec names them
    with pytest.raises(VlmError, match=f"class '{pathmnist.labels[4]}'"):
        auc_score(pathmnist, y, s)
    labels = [f"c{i}" for i in range(9)]
    m = evaluate("multi-class", y, s, n_bootstrap=20, labels=labels)
    assert np.isnan(m.auc) and m.auc_ci is None and m.acc_ci is not None
    assert any("'c4'" in note for note in m.notes)
    d = m.to_dict()
    assert d["auc"] is None and d["per_class"][4]["auc"] is None and d["per_class"][0]["auc"] is not None
    json.dumps(d, allow_nan=False)


def test_resamples_without_a_class_are_skipped():
    y, s = make("multi-label", n=60, seed=0, decimals=2)
    y[:, 0] = 0
    y[0, 0] = 1  # one positive: absent from about 37% of resamples
    m = evaluate("multi-label", y, s, n_bootstrap=200)
    assert 30 < m.auc_bootstrap_skipped < 120
    assert m.auc_ci is not None and m.auc_ci[0] <= m.auc_ci[1]
    assert any("resamples" in note for note in m.notes)


def test_roc_curve_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)
    fpr, tpr, thr = roc_curve(torch.from_numpy(y), torch.from_numpy(s))
    ref = skm.roc_curve(y, s, drop_intermediate=False)
    for ours, theirs in zip((fpr, tpr, thr), ref):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=TOL)
    with pytest.raises(VlmError, match="undefined"):
        roc_curve(np.zeros(5), np.arange(5.0))


def test_roc_points_per_class_and_macro():
    y, s = make("multi-class", n=300, decimals=2)
    names = [f"c{i}" for i in range(9)]
    curves = roc_points("multi-class", y, s, names)
    assert list(curves) == names + ["macro"]
    fpr3, tpr3, _ = skm.roc_curve(y[:, 0] == 3, s[:, 3], drop_intermediate=False)
    np.testing.assert_allclose(curves["c3"][0].numpy(), fpr3, atol=TOL)
    np.testing.assert_allclose(curves["c3"][1].numpy(), tpr3, atol=TOL)
    # scikit-learn's ROC example: mean of np.interp onto the union of the fpr values.
    per_class = [skm.roc_curve(y[:, 0] == c, s[:, c], drop_intermediate=False) for c in range(9)]
    grid = np.unique(np.concatenate([f for f, _, _ in per_class]))
    mean_tpr = np.mean([np.interp(grid, f, t) for f, t, _ in per_class], axis=0)
    np.testing.assert_allclose(curves["macro"][0].numpy(), grid, atol=TOL)
    np.testing.assert_allclose(curves["macro"][1].numpy(), mean_tpr, atol=TOL)
    assert list(roc_points("binary", *make("binary"), labels=["benign", "malignant"])) == ["malignant"]
    assert list(roc_points(get_task("pathmnist"), y, s))[:9] == list(get_task("pathmnist").labels)


def test_check_scores_errors():
    task = get_task("breastmnist")  # test split: 156 images, classes malignant / normal, benign
    y = torch.randint(0, 2, (156, 1))
    check_scores(task, y, torch.rand(156, 2))
    check_scores(task, y, torch.rand(156))  # positive-class scores, as medmnist accepts
    with pytest.raises(VlmError, match=r"156 samples \(breastmnist test split\), got 150 rows"):
        check_scores(task, y, torch.rand(150, 2))
    with pytest.raises(VlmError, match=r"K=2 classes \('malignant', 'normal, benign'\); the scores have 3 columns"):
        check_scores(task, y, torch.rand(156, 3))
    with pytest.raises(VlmError, match=r"shape"):
        check_scores(task, y, torch.rand(156, 2, 1))
    bad = torch.rand(156, 2)
    bad[[3, 9], 0] = torch.nan
    bad[[3, 20], 1] = torch.inf  # 4 bad values in 3 rows
    with pytest.raises(VlmError, match="NaN or infinite values in 3 of 156 rows"):
        check_scores(task, y, bad)
    with pytest.raises(VlmError, match="Label value 2 is out of range"):
        check_scores(task, torch.full((156, 1), 2), torch.rand(156, 2))
    with pytest.raises(VlmError, match="Unknown task kind"):
        evaluate("regression", y, torch.rand(156, 2))


def test_paired_bootstrap_self_and_better_run():
    y, s = make("multi-class", n=400, decimals=2, signal=1.0)
    same = paired_bootstrap("multi-class", y, s, s, n_bootstrap=200)
    for metric in ("auc", "acc"):
        assert same[metric]["diff"] == 0 and same[metric]["p_value"] == 1.0 and same[metric]["ci"] == (0.0, 0.0)
    _, better = make("multi-class", n=400, decimals=2, signal=3.0)
    _, noise = make("multi-class", n=400, seed=9, decimals=2, signal=0.0)
    better = 0.5 * better + 0.5 * np.eye(9)[y[:, 0]]  # a much better run on the same samples
    res = paired_bootstrap("multi-class", y, better, noise, n_bootstrap=200)
    for metric in ("auc", "acc"):
        assert res[metric]["diff"] > 0.1
        assert res[metric]["ci"][0] > 0
        assert res[metric]["p_value"] == 2 / 201  # no resample favours b: the smallest p, never 0
    assert res["auc"]["a"] == pytest.approx(getAUC(y, better, "multi-class"), abs=TOL, rel=0)
    # The same resamples serve both runs: the paired CI is the bootstrap of the difference.
    reverse = paired_bootstrap("multi-class", y, noise, better, n_bootstrap=200)
    assert reverse["auc"]["ci"][1] == pytest.approx(-res["auc"]["ci"][0], abs=1e-12)


@pytest.mark.parametrize("kind", ["binary", "multi-label"])
def test_tune_threshold_beats_half_on_shifted_scores(kind):
    y, s = make(kind, n=600, seed=1, decimals=None, signal=2.0)
    shifted = s * 0.4  # good ranking, but almost nothing clears 0.5
    t = tune_threshold(kind, y, shifted)
    assert t != 0.5
    tuned, default = acc_score(kind, y, shifted, t), acc_score(kind, y, shifted, 0.5)
    assert tuned > default + 0.05
    # It is the best threshold: no candidate on a fine grid does better.
    grid = np.linspace(0, 1, 501)
    assert tuned >= max(acc_score(kind, y, shifted, g) for g in grid) - 1e-12
    assert tune_threshold(kind, y, s) == pytest.approx(0.5, abs=0.15)


def test_tune_threshold_keeps_half_when_nothing_is_better():
    y = np.array([0, 0, 1, 1])
    assert tune_threshold("binary", y, np.array([0.1, 0.2, 0.7, 0.9])) == 0.5  # as good as 0.45, nearer 0.5
    assert tune_threshold("multi-class", *make("multi-class")) == 0.5
