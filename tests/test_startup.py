"""Lazy start-up: the light `vlm` commands import none of the heavy libraries (a deterministic proxy for
their start-up time; `benchmarks/bench_startup.py` measures the time itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "transformers", "timm", "matplotlib", "sklearn", "medmnist", "numpy", "pandas",
         "scipy", "torchvision")

# Runs the typer app in-process (as `python cli.py ARGS` would) and prints which heavy modules got imported.
_PROBE = """
import json, sys
from typer.main import get_command
from cli import app
try:
    get_command(app).main(sys.argv[1:], prog_name="vlm", standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES=" + json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


def heavy_imports(*args: str) -> list[str]:
    """The heavy modules a `vlm ARGS` run imports (run in a fresh interpreter from the repository root)."""
    code = _PROBE.format(heavy=repr(set(HEAVY)))
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES="))
    return json.loads(line.removeprefix("MODULES="))


@pytest.mark.parametrize("args", [
    ("--help",),
    ("datasets",),
    ("models",),
    ("prompts", "list"),
    ("prompts", "show", "breastmnist"),
    ("prompts", "validate", "prompts/breastmnist.yaml", "prompts/chestmnist.yaml"),
], ids=lambda a: " ".join(a[:2]))
def test_light_commands_import_no_heavy_library(args, tmp_path):
    if args == ("datasets",):
        args = ("datasets", "--data-root", str(tmp_path))
    assert heavy_imports(*args) == []


def test_prompts_validate_of_a_bad_file_stays_light(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('{"dataset": "breastmnist", "classes": ["malignant", "benign"], "styles": {"clip": {"templates": ["{label}"]}}}')
    assert heavy_imports("prompts", "validate", str(bad)) == []


def test_model_catalog_matches_the_registry():
    from models import list_models
    from models.catalog import CATALOG

    assert list(CATALOG) == [(e.name, e.dims, e.description, e.is_prefix) for e in list_models()]


def test_medmnist_info_is_medmnist_info():
    import medmnist

    from vlm.tasks import medmnist_info

    assert medmnist_info().INFO == medmnist.INFO and medmnist_info().DEFAULT_ROOT == medmnist.info.DEFAULT_ROOT


def test_fully_cached_prompts_compare_imports_no_model_library(tmp_path):
    """Every image and prompt embedding cached: the run needs torch, but neither open_clip nor a tower."""
    from conftest import write_synthetic
    from fixtures.tiny_models import write_tiny_open_clip_dir
    from vlm.zeroshot import compare_prompts

    write_synthetic(tmp_path, "breastmnist")
    model = f"local-dir:{write_tiny_open_clip_dir(tmp_path / 'tiny')}"
    options = {"data_root": tmp_path, "cache_dir": tmp_path / "cache", "n_bootstrap": 0}
    compare_prompts("breastmnist", model, [REPO / "prompts/breastmnist.yaml"], **options)  # fills the caches
    loaded = heavy_imports("prompts", "compare", "breastmnist", "--model", model, "--data-root", str(tmp_path),
                           "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0", "--json")
    assert "torch" in loaded and not {"open_clip", "transformers", "timm", "sklearn", "matplotlib"} & set(loaded)
