"""benchmarks/gpu_check.py: the parts that need no GPU (the whole `--device cpu --quick` run is slower)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # for its `from _common import ...`
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0(gpu_check, capsys):
    assert gpu_check.main([]) == 0
    assert "SKIPPED, nothing checked" in capsys.readouterr().out


def test_evaluator_check_and_flop_count_on_the_cpu(gpu_check):
    rows = gpu_check.check_evaluator(torch.device("cpu"), gpu_check.QUICK)
    assert [r[3] for r in rows] == ["ok"] * 3
    linear = torch.nn.Linear(8, 4)
    assert gpu_check.forward_flops(lambda: linear(torch.zeros(2, 8))) == 2 * 2 * 8 * 4
