"""Calibration metrics (vlm.evaluate.calibration) against torchmetrics, scikit-learn and numpy; temperature scaling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.evaluate.bootstrap import _resample_sums, _resample_weights
from vlm.evaluate.calibration import _from_sums, _linear_columns, calibration_metrics, reliability_bins
from vlm.evaluate.core import _plans
from vlm.evaluate.inputs import _prepare
from vlm.temperature import T_MAX, apply_temperature, fit_temperature

tmf = pytest.importorskip("torchmetrics.functional.classification")
from torchmetrics.functional.classification.calibration_error import _ce_compute  # noqa: E402

KS = {"binary": 2, "multi-class": 9, "ordinal": 5, "multi-label": 6}
TM_TOL = 1e-5  # torchmetrics' public multi-class function works in float32
TOL = 1e-12


def make(kind: str, n: int = 3000, seed: int = 0, sharpness: float = 1.0, decimals: int | None = None):
    """Labels (N, L) drawn from softmax/sigmoid(z) and scores softmax/sigmoid(sharpness * z), numpy.

    sharpness 1 gives calibrated scores; above 1, over-confident ones.
    """
    rng = np.random.default_rng(seed)
    k = KS[kind]
    if kind == "multi-label":
        z = rng.normal(size=(n, k)) * 1.5
        y = (rng.random((n, k)) < 1 / (1 + np.exp(-z))).astype(np.int64)
        s = 1 / (1 + np.exp(-sharpness * z))
    else:
        z = rng.normal(size=(n, k)) * 1.5
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1, keepdims=True)
        e = np.exp(sharpness * z)
        s = e / e.sum(axis=1, keepdims=True)
    return y, (np.round(s, decimals) if decimals is not None else s)


def two_columns(p: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([1 - p, p], axis=1))


def tm_top_label(kind: str, y: np.ndarray, s: np.ndarray, norm: str = "l1", float64: bool = False) -> float:
    """torchmetrics' top-label calibration error; binary on [1 - p, p], multi-label per label and averaged.

    `multiclass_calibration_error` casts confidences to float32 (and sums its bins in float32);
    `float64=True` runs its binning and norm (`_ce_compute`) on the same top label in float64 instead.
    """
    if kind == "multi-label":
        return float(np.mean([tm_top_label("binary", y[:, [c]], s[:, c], norm, float64) for c in range(s.shape[1])]))
    if kind == "binary":
        probs, k = two_columns(s[:, -1] if s.ndim == 2 else s), 2
    else:
        probs, k = torch.from_numpy(s), s.shape[1]
    target = torch.from_numpy(y[:, 0])
    if float64:
        conf, pred = probs.max(dim=1)
        return _ce_compute(conf, pred.eq(target).double(), 15, norm).item()
    return tmf.multiclass_calibration_error(probs, target, num_classes=k, n_bins=15, norm=norm).item()


# ---------------------------------------------------------------------------------------------------
# ECE, MCE, class-wise ECE against torchmetrics


@pytest.mark.parametrize("kind", ["binary", "multi-class", "ordinal", "multi-label"])
@pytest.mark.parametrize("sharpness", [1.0, 3.0])
def test_ece_and_mce_equal_torchmetrics_top_label(kind, sharpness):
    y, s = make(kind, sharpness=sharpness, seed=int(sharpness))
    # The public torchmetrics function casts confidences to float32, where c > 1 - 6e-8 becomes 1 and lands
    # in its extra bin for c = 1 (our last bin is right-closed): keep confidences below that.
    s = np.clip(s, 1e-6, 1 - 1e-6)
    m = evaluate(kind, y, s, n_bootstrap=0)
    for norm, ours in (("l1", m.ece), ("max", m.mce)):
        assert ours == pytest.approx(tm_top_label(kind, y, s, norm, float64=True), abs=TOL, rel=0)
        assert ours == pytest.approx(tm_top_label(kind, y, s, norm), abs=TM_TOL, rel=0)


@pytest.mark.parametrize("kind", ["binary", "multi-class", "ordinal"])
def test_per_class_ece_equals_torchmetrics_binary_calibration_error(kind):
    y, s = make(kind, sharpness=2.0, seed=5)
    m = evaluate(kind, y, s, n_bootstrap=0)
    prob = np.stack([1 - s[:, -1], s[:, -1]], axis=1) if kind == "binary" else s
    ref = [tmf.binary_calibration_error(torch.from_numpy(prob[:, c].copy()), torch.from_numpy((y[:, 0] == c).astype(np.int64)),
                                        n_bins=15).item() for c in range(prob.shape[1])]
    assert [c["ece"] for c in m.per_class] == pytest.approx(ref, abs=TOL, rel=0)


def test_multi_label_per_label_ece_is_the_binary_top_label_ece_and_averages_to_ece():
    y, s = make("multi-label", sharpness=2.0, seed=6)
    m = evaluate("multi-label", y, s, n_bootstrap=0)
    per_label = [c["ece"] for c in m.per_class]
    ref = [tm_top_label("binary", y[:, [c]], s[:, c], float64=True) for c in range(y.shape[1])]
    assert per_label == pytest.approx(ref, abs=TOL, rel=0)
    assert m.ece == pytest.approx(np.mean(per_label), abs=TOL, rel=0)


def test_binary_top_label_ece_folds_p_and_one_minus_p_into_the_same_bins():
    """With all p on one side of 0.5, top-label ECE is the positive column's calibration error; else it differs."""
    y, s = make("binary", n=4000, sharpness=2.0, seed=7)
    p = s[:, -1]
    positive_col = lambda rows: tmf.binary_calibration_error(  # noqa: E731
        torch.from_numpy(p[rows]), torch.from_numpy(y[rows, 0]), n_bins=15).item()
    for side in (p > 0.5, p < 0.5):
        assert calibration_metrics("binary", y[side], s[side])["ece"] == pytest.approx(positive_col(side), abs=TOL, rel=0)
    assert calibration_metrics("binary", y, s)["ece"] != pytest.approx(positive_col(slice(None)), abs=1e-6)


def test_bins_are_right_closed_and_zero_and_one_fall_in_the_end_bins():
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    p = torch.cat([edges[8:], edges[[10, 10]] + 1e-9, torch.zeros(1)])  # conf = p, except p = 0 -> conf 1
    counts = reliability_bins("binary", torch.ones(len(p), dtype=torch.long), p)["count"]
    # edge j/15 goes to bin j - 1; 1.0 and the confidence 1 of p = 0 to the last bin; just above 10/15 to bin 10
    assert counts == [0] * 7 + [1, 1, 1, 3, 1, 1, 1, 2]
    assert calibration_metrics("multi-class", [[0]], [[0.0, 0.0]])["ece"] == 1.0  # conf 0: first bin, hit


@pytest.mark.parametrize("y, ece, acc", [([0, 1], 0.0, 0.5), ([0, 0], 0.5, 1.0), ([1, 1], 0.5, 0.0)])
def test_binary_tie_at_one_half_predicts_class_zero_like_acc(y, ece, acc):
    s = [[0.5, 0.5], [0.5, 0.5]]
    m = evaluate("binary", np.array(y)[:, None], s, n_bootstrap=0)
    assert (m.ece, m.acc, m.mce) == (ece, acc, ece)


# ---------------------------------------------------------------------------------------------------
# Adaptive ECE against a plain numpy loop


def numpy_adaptive_ece(conf: np.ndarray, hit: np.ndarray, n_bins: int = 15) -> float:
    total = 0.0
    for group in np.array_split(np.argsort(conf, kind="stable"), n_bins):
        if len(group):
            total += len(group) / len(conf) * abs(hit[group].mean() - conf[group].mean())
    return total


def numpy_top_label(kind: str, y: np.ndarray, s: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    if kind in ("binary", "multi-label"):
        cols = [s[:, -1]] if kind == "binary" else list(s.T)
        ys = [y[:, 0]] if kind == "binary" else list(y.T)
        return [(np.where(p > 0.5, p, 1 - p), ((p > 0.5) == (t == 1)).astype(float)) for p, t in zip(cols, ys)]
    return [(s.max(axis=1), (s.argmax(axis=1) == y[:, 0]).astype(float))]


@pytest.mark.parametrize("kind", ["binary", "multi-class", "multi-label"])
@pytest.mark.parametrize("n, decimals", [(1000, None), (1003, 2), (11, None)])
def test_adaptive_ece_equals_numpy_loop(kind, n, decimals):
    y, s = make(kind, n=n, sharpness=2.0, seed=n, decimals=decimals)
    ref = np.mean([numpy_adaptive_ece(c, h) for c, h in numpy_top_label(kind, y, s)])
    assert calibration_metrics(kind, y, s)["ece_adaptive"] == pytest.approx(ref, abs=TOL, rel=0)


# ---------------------------------------------------------------------------------------------------
# Brier and NLL against scikit-learn


def test_binary_brier_is_twice_sklearn_and_nll_is_log_loss():
    y, s = make("binary", sharpness=2.0, seed=8)
    m = evaluate("binary", y, s, n_bootstrap=0)
    assert m.brier == pytest.approx(2 * skm.brier_score_loss(y[:, 0], s[:, -1]), abs=TOL, rel=0)
    assert m.nll == pytest.approx(skm.log_loss(y[:, 0], s[:, -1]), abs=TOL, rel=0)
    assert evaluate("binary", y, s[:, -1], n_bootstrap=0).brier == m.brier  # one column: the same problem


@pytest.mark.parametrize("kind", ["multi-class", "ordinal"])
def test_multiclass_brier_and_nll(kind):
    y, s = make(kind, sharpness=2.0, seed=9)
    m = evaluate(kind, y, s, n_bootstrap=0)
    onehot = np.eye(s.shape[1])[y[:, 0]]
    assert m.brier == pytest.approx(np.mean(((s - onehot) ** 2).sum(axis=1)), abs=TOL, rel=0)
    assert m.nll == pytest.approx(skm.log_loss(y[:, 0], s, labels=range(s.shape[1])), abs=TOL, rel=0)


def test_multi_label_brier_and_nll_are_means_over_labels():
    y, s = make("multi-label", sharpness=2.0, seed=10)
    m = evaluate("multi-label", y, s, n_bootstrap=0)
    labels = range(y.shape[1])
    assert m.brier == pytest.approx(np.mean([skm.brier_score_loss(y[:, c], s[:, c]) for c in labels]), abs=TOL, rel=0)
    assert m.nll == pytest.approx(np.mean([skm.log_loss(y[:, c], s[:, c], labels=[0, 1]) for c in labels]),
                                  abs=TOL, rel=0)


def test_nll_clamps_a_zero_probability_at_1e_12():
    c = calibration_metrics("multi-class", [[0], [1]], [[0.0, 1.0], [0.0, 1.0]])
    assert c["nll"] == pytest.approx(-np.log(1e-12) / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------------
# Behaviour: calibrated vs over-confident scores, CIs, records


@pytest.mark.parametrize("kind", ["binary", "multi-class", "multi-label"])
def test_calibrated_scores_have_small_ece_and_overconfident_ones_larger(kind):
    calibrated = calibration_metrics(kind, *make(kind, n=20000, seed=11))
    over = calibration_metrics(kind, *make(kind, n=20000, seed=11, sharpness=3.0))
    assert calibrated["ece"] < 0.02 and calibrated["ece_adaptive"] < 0.02
    assert over["ece"] > 5 * calibrated["ece"] and over["ece"] > 0.05
    assert over["ece_adaptive"] > 0.05 and over["nll"] > calibrated["nll"] and over["brier"] > calibrated["brier"]


@pytest.mark.parametrize("kind", ["binary", "multi-class", "multi-label"])
def test_bootstrap_rounds_equal_the_metrics_of_the_resampled_data(kind):
    y, s = make(kind, n=300, sharpness=2.0, seed=12)
    yt, st = _prepare(kind, y, s, None, "test")
    _, sums = _resample_sums([_plans(kind, yt, st)], _linear_columns(kind, yt, st), 12, seed=3)
    boot = _from_sums(sums, yt)
    weights = torch.cat(list(_resample_weights(len(y), 12, 3, yt.device)))[:, 1:]
    for r in range(12):
        idx = np.repeat(np.arange(len(y)), weights[r].numpy())
        ref = calibration_metrics(kind, y[idx], s[idx])
        assert [b[r].item() for b in boot] == pytest.approx([ref["ece"], ref["brier"], ref["nll"]], abs=TOL, rel=0)


def test_cis_contain_the_estimate_are_seeded_and_serialise():
    y, s = make("multi-class", n=600, sharpness=2.0, seed=13)
    a = evaluate("multi-class", y, s, n_bootstrap=300, seed=1)
    b = evaluate("multi-class", y, s, n_bootstrap=300, seed=1)
    c = evaluate("multi-class", y, s, n_bootstrap=300, seed=2)
    assert a.to_dict() == b.to_dict()
    for metric in ("ece", "brier", "nll"):
        lo, hi = getattr(a, f"{metric}_ci")
        assert lo < getattr(a, metric) < hi
        assert getattr(c, f"{metric}_ci") != (lo, hi)
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert {"ece", "ece_ci", "ece_adaptive", "mce", "brier", "brier_ci", "nll", "nll_ci"} <= d.keys()
    assert all("ece" in row for row in d["per_class"])
    none = evaluate("multi-class", y, s, n_bootstrap=0)
    assert (none.ece_ci, none.brier_ci, none.nll_ci) == (None, None, None) and none.ece == a.ece


def test_evaluate_reports_the_calibration_metrics():
    for kind in KS:
        y, s = make(kind, n=500, sharpness=2.0, seed=14)
        m, c = evaluate(kind, y, s, n_bootstrap=0), calibration_metrics(kind, y, s)
        assert [m.ece, m.ece_adaptive, m.mce, m.brier, m.nll] == [c[k] for k in ("ece", "ece_adaptive", "mce", "brier", "nll")]


def test_reliability_bins_match_the_ece():
    y, s = make("multi-class", n=2000, sharpness=2.0, seed=15)
    bins = reliability_bins("multi-class", y, s)
    assert len(bins["edges"]) == 16 and sum(bins["count"]) == bins["n"] == 2000
    ece = sum(n / 2000 * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n)
    assert ece == pytest.approx(calibration_metrics("multi-class", y, s)["ece"], abs=TOL, rel=0)
    assert all(np.isnan(c) for n, c in zip(bins["count"], bins["confidence"]) if n == 0)
    pooled = reliability_bins("multi-label", *make("multi-label", n=100, seed=15))
    assert pooled["n"] == sum(pooled["count"]) == 100 * KS["multi-label"]


# ---------------------------------------------------------------------------------------------------
# Temperature scaling


def synthetic_logits(kind: str, t0: float, n: int = 20000, seed: int = 0):
    """Logits z (float64) and labels drawn from softmax(z / t0) (sigmoid per label for multi-label)."""
    g = torch.Generator().manual_seed(seed)
    k = KS[kind]
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    if kind == "multi-label":
        return z, (torch.rand(n, k, generator=g, dtype=torch.float64) < torch.sigmoid(z / t0)).long()
    return z, torch.multinomial(torch.softmax(z / t0, dim=1), 1, generator=g)


@pytest.mark.parametrize("kind", ["binary", "multi-class", "ordinal", "multi-label"])
@pytest.mark.parametrize("t0", [0.5, 2.0])
def test_fit_recovers_a_known_temperature(kind, t0):
    z, y = synthetic_logits(kind, t0, seed=int(t0 * 10))
    assert fit_temperature(kind, z, y) == pytest.approx(t0, rel=0.05)


def test_binary_single_logit_column_is_the_pair_zero_z():
    z, y = synthetic_logits("binary", 1.5, seed=3)
    diff = z[:, 1] - z[:, 0]
    assert fit_temperature("binary", diff, y) == pytest.approx(fit_temperature("binary", z, y), rel=1e-6)
    assert torch.allclose(apply_temperature("binary", diff[:, None], 1.5), apply_temperature("binary", z, 1.5),
                          atol=1e-12, rtol=0)


def numpy_nll(kind: str, z: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """NLL for each temperature in t (batches of temperatures at once), the long way."""
    out = []
    for temps in np.array_split(t, max(1, len(t) // 100)):
        a = z[None] / temps[:, None, None]  # (T, N, K)
        if kind == "multi-label":
            out.append(np.mean(np.logaddexp(0, a) - y[None] * a, axis=(1, 2)))
        else:
            m = a.max(axis=2, keepdims=True)
            lse = m[..., 0] + np.log(np.exp(a - m).sum(axis=2))
            out.append(np.mean(lse - a[:, np.arange(z.shape[0]), y[:, 0]], axis=1))
    return np.concatenate(out)


@pytest.mark.parametrize("kind", ["multi-class", "multi-label"])
def test_fit_matches_a_fine_grid_search(kind):
    z, y = synthetic_logits(kind, 1.3, n=1000, seed=4)
    grid = np.arange(1.0, 1.6, 2e-4)
    nll = numpy_nll(kind, z.numpy(), y.numpy(), grid)
    assert fit_temperature(kind, z, y) == pytest.approx(grid[np.argmin(nll)], abs=1e-3)


@pytest.mark.parametrize("kind", ["binary", "multi-class", "multi-label"])
@pytest.mark.parametrize("t0", [0.7, 1.0, 3.0])
def test_fitted_temperature_never_increases_validation_nll(kind, t0):
    z, y = synthetic_logits(kind, t0, n=2000, seed=5)
    t = fit_temperature(kind, z, y)
    before = calibration_metrics(kind, y, apply_temperature(kind, z, 1.0))["nll"]
    after = calibration_metrics(kind, y, apply_temperature(kind, z, t))["nll"]
    assert after <= before + 1e-12


@pytest.mark.parametrize("kind", ["binary", "multi-class", "multi-label"])
def test_temperature_one_is_the_plain_softmax(kind):
    z = torch.randn(50, KS[kind], dtype=torch.float32)
    plain = torch.sigmoid(z) if kind == "multi-label" else torch.softmax(z, dim=1)
    out = apply_temperature(kind, z, 1.0)
    assert out.dtype == torch.float32 and torch.equal(out, plain)


def test_temperature_keeps_auc_and_acc():
    for kind in ("binary", "multi-label"):
        z, y = synthetic_logits(kind, 1.0, n=1000, seed=6)
        a, b = (evaluate(kind, y, apply_temperature(kind, z, t), n_bootstrap=0) for t in (1.0, 2.7))
        assert (a.auc, a.acc) == (b.auc, b.acc) and a.ece != b.ece
    z, y = synthetic_logits("multi-class", 1.0, n=1000, seed=6)
    a, b = (evaluate("multi-class", y, apply_temperature("multi-class", z, t), n_bootstrap=0) for t in (1.0, 2.7))
    assert a.acc == b.acc and a.auc == pytest.approx(b.auc, abs=0.01)  # one-vs-rest ranks may move slightly


def test_uninformative_direction_fits_the_upper_bound_and_bad_temperatures_raise():
    z, y = synthetic_logits("binary", 1.0, n=2000, seed=7)
    assert fit_temperature("binary", -z, y) == pytest.approx(T_MAX, rel=1e-6)  # anti-correlated logits
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(VlmError, match="temperature"):
            apply_temperature("binary", z, bad)
