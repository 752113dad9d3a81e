"""Data layer: MedMNIST file layouts, clear errors, real files when ../shared is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, needs_shared_data, write_synthetic
from vlm.data import dataset_info, load_split, resolve_root, verify
from vlm.errors import VlmError
from vlm.preprocess import Preprocess, grey_to_rgb, normalize, resize, to_float
from vlm.tasks import all_tasks, get_task


def test_tasks_match_medmnist_info():
    import medmnist

    tasks = all_tasks()
    assert [t.flag for t in tasks] == list(medmnist.INFO)
    assert sum(t.is_3d for t in tasks) == 6
    kinds = {t.flag: t.kind for t in tasks}
    assert kinds["chestmnist"] == "multi-label" and kinds["retinamnist"] == "ordinal"
    assert kinds["breastmnist"] == "binary" and kinds["pathmnist"] == "multi-class"
    assert get_task("organmnist3d").sizes == (28, 64) and get_task("dermamnist").sizes == (28, 64, 128, 224)


def test_unknown_flag_suggests_closest():
    with pytest.raises(VlmError, match="Did you mean breastmnist"):
        get_task("breastmnst")


@pytest.mark.parametrize("flag,shape", [
    ("breastmnist", (40, 1, 28, 28)),        # grey 2D file: (N, H, W)
    ("pathmnist", (40, 3, 28, 28)),          # colour 2D file: (N, H, W, 3)
    ("chestmnist", (40, 1, 28, 28)),
    ("vesselmnist3d", (40, 1, 28, 28, 28)),  # 3D file: (N, D, H, W)
])
def test_load_split_layouts(data_root, flag, shape):
    split = load_split(flag, "train", 28, data_root)
    assert tuple(split.images.shape) == shape and split.images.dtype == torch.uint8
    assert split.labels.dtype == torch.int64
    assert split.labels.shape == (40, 14 if flag == "chestmnist" else 1)


def test_colour_file_keeps_pixels(tmp_path):
    path = write_synthetic(tmp_path, "pathmnist")
    raw = np.load(path)["test_images"]
    split = load_split("pathmnist", "test", 28, tmp_path)
    assert np.array_equal(split.images.permute(0, 2, 3, 1).numpy(), raw)


def test_class_counts(data_root):
    split = load_split("retinamnist", "test", 28, data_root)
    assert split.class_counts() == [4, 4, 4, 4, 4]
    chest = load_split("chestmnist", "test", 28, data_root)
    assert chest.class_counts() == chest.labels.sum(0).tolist()


def test_missing_file_message_names_file_folder_url_md5(tmp_path):
    task = get_task("dermamnist")
    with pytest.raises(VlmError) as exc:
        load_split("dermamnist", "test", 64, tmp_path)
    msg = str(exc.value)
    assert "dermamnist_64.npz" in msg and str(tmp_path) in msg and task.url(64) in msg and task.md5(64) in msg


def test_bad_size_and_split(data_root):
    with pytest.raises(VlmError, match="28, 64"):
        load_split("vesselmnist3d", "test", 128, data_root)
    with pytest.raises(VlmError, match="train, val, test"):
        load_split("breastmnist", "training", 28, data_root)


def test_truncated_file_is_a_clear_error(data_root):
    path = data_root / "breastmnist.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VlmError, match="truncated"):
        load_split("breastmnist", "test", 28, data_root)


def test_verify_detects_wrong_md5(data_root):
    with pytest.raises(VlmError, match="MD5"):
        verify(get_task("breastmnist"), 28, data_root)


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("VLM_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VLM_DATA_ROOT")
    assert resolve_root(None).name == ".medmnist"


def test_preprocess_ops():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    f = to_float(x)
    assert f.max() <= 1 and torch.allclose(f * 255, x.float())
    rgb = grey_to_rgb(f)
    assert rgb.shape == (2, 3, 28, 28) and torch.equal(rgb[:, 0], rgb[:, 2])
    n = normalize(rgb, (0.5,) * 3, (0.5,) * 3)
    assert torch.allclose(n, f.expand(-1, 3, -1, -1) * 2 - 1)
    assert resize(f, 64, "bicubic").shape == (2, 1, 64, 64)
    assert resize(torch.rand(2, 1, 28, 28, 28), 64).shape == (2, 1, 64, 64, 64)
    with pytest.raises(VlmError, match="interpolation"):
        resize(f, 64, "lanczos")
    p = Preprocess(size=32, interpolation="bicubic")
    assert p(x).shape == (2, 3, 32, 32) and "interp=bicubic" in p.id


@needs_shared_data
@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist", "adrenalmnist3d", "vesselmnist3d"])
def test_real_files_match_info(flag):
    task = get_task(flag)
    verify(task, 28, SHARED_DATA)
    info = dataset_info(flag, 28, SHARED_DATA)
    for split, n in task.n_samples.items():
        assert info["counts"][split]["n"] == n
        assert sum(info["counts"][split]["per_class"]) == n
