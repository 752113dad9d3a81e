"""Bad data and score files are refused on load with a message naming the file, the array and what was
expected (issue 13: float images, small images inside a 28 px file, labels out of range, complex or
pickled scores, scores outside [0, 1])."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_synthetic
from vlm.data import load_split
from vlm.errors import VlmError
from vlm.evaluate import evaluate
from vlm.scoring import load_scores_file


def _rewrite(path, **arrays):
    data = dict(np.load(path))
    data.update(arrays)
    np.savez(path, **data)


@pytest.mark.parametrize("change,split,message", [
    (lambda d: {"train_images": d["train_images"] / 255.0}, "train",
     r"train_images has dtype float64, expected uint8"),
    (lambda d: {"test_images": d["test_images"][:, :14, :14]}, "test",
     r"test_images has shape \(20, 14, 14\), expected \(N, 28, 28\) for breastmnist"),
    (lambda d: {"val_labels": d["val_labels"] + 2}, "val", r"val_labels holds the value \d, expected 0\.\.1"),
    (lambda d: {"val_labels": d["val_labels"][:-1]}, "val", r"val_labels has shape \(11, 1\), expected \(12, 1\)"),
    (lambda d: {"train_labels": d["train_labels"].astype(np.float32)}, "train", "expected integer class indices"),
    (lambda d: {"train_images": np.repeat(d["train_images"][..., None], 3, -1)}, "train",
     r"has shape \(40, 28, 28, 3\), expected \(N, 28, 28\)"),
])
def test_bad_arrays_name_file_array_and_expectation(tmp_path, change, split, message):
    path = write_synthetic(tmp_path, "breastmnist")
    _rewrite(path, **change(dict(np.load(path))))
    with pytest.raises(VlmError, match=message) as info:
        load_split("breastmnist", split, 28, tmp_path)
    assert str(path) in str(info.value)


def test_a_missing_array_and_a_3d_file_of_the_wrong_size(tmp_path):
    path = write_synthetic(tmp_path, "vesselmnist3d")
    data = dict(np.load(path))
    data["test_images"] = data["test_images"][:, :, :, :20]
    del data["val_labels"]
    np.savez(path, **data)
    with pytest.raises(VlmError, match="has no array val_labels"):
        load_split("vesselmnist3d", "val", 28, tmp_path)
    with pytest.raises(VlmError, match=r"expected \(N, 28, 28, 28\)"):
        load_split("vesselmnist3d", "test", 28, tmp_path)
    assert load_split("vesselmnist3d", "train", 28, tmp_path).images.shape == (40, 1, 28, 28, 28)


@pytest.mark.parametrize("array,message", [
    (np.array([[0.2 + 1j, 0.8]] * 4), "complex128 values"),
    (np.array([[0, 1]] * 4), "int64 values"),
])
def test_score_files_must_be_real_floats(tmp_path, array, message):
    np.save(tmp_path / "s.npy", array)
    with pytest.raises(VlmError, match=message):
        load_scores_file(tmp_path / "s.npy")


def test_pickled_scores_are_never_loaded(tmp_path):
    np.save(tmp_path / "s.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(VlmError, match="pickled Python objects"):
        load_scores_file(tmp_path / "s.npy")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(VlmError, match="it is a folder"):
        load_scores_file(tmp_path / "d.npy")


@pytest.mark.parametrize("scores,message", [
    ([[0.2, 1.7], [0.5, 0.5]], r"probabilities in \[0, 1\]"),
    ([[-0.1, 0.2], [0.5, 0.5]], r"probabilities in \[0, 1\]"),
    ([[float("nan"), 0.2], [0.5, 0.5]], "NaN or infinite"),
    ([[[0.5]], [[0.5]]], r"shape \(N, K\) or \(N,\)"),
    (torch.tensor([[0.5 + 0j, 0.5]] * 2), "real numbers"),
])
def test_evaluate_refuses_scores_that_are_not_probabilities(scores, message):
    with pytest.raises(VlmError, match=message):
        evaluate("binary", [0, 1], scores, n_bootstrap=0)
