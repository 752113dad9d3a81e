"""Prompt styles are chosen on the val split: `--style best` ranks them on val and scores test once;
several styles scored on test are marked, and `vlm compare` never marks such a row best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlm.compare import comparison_table
from vlm.results import load_run, load_runs
from vlm.tasks import get_task
from vlm.zeroshot import compare_prompts, run_zero_shot

from fixtures.tiny_models import TinyClipEncoder, train_tiny_clip, write_quadrant_dataset


@pytest.fixture(scope="module")
def tiny_clip() -> TinyClipEncoder:
    return TinyClipEncoder(train_tiny_clip(list(get_task("octmnist").labels)))


def _prompts(path: Path) -> Path:
    classes = list(get_task("octmnist").labels)
    deranged = {c: [classes[(i + 1) % 4]] for i, c in enumerate(classes)}
    styles = {"shuffled": {"templates": ["a photo of {label}."], "names": deranged},  # first in the file, worst
              "right": {"templates": ["a photo of {label}."]}}
    path.write_text(json.dumps({"dataset": "octmnist", "classes": classes, "styles": styles}))
    return path


def test_best_style_is_ranked_on_val_and_test_is_scored_once(tiny_clip, tmp_path):
    write_quadrant_dataset(tmp_path)
    prompts = _prompts(tmp_path / "oct.yaml")
    kw = dict(prompts=prompts, data_root=tmp_path, cache_dir=tmp_path / "cache", n_bootstrap=50)
    results = run_zero_shot("octmnist", "tiny", encoder=tiny_clip, runs_dir=tmp_path / "runs", **kw)
    assert [r["style"] for r in results] == ["right"]  # one style scored on test
    selection = results[0]["selection"]
    val_rank = compare_prompts("octmnist", "tiny", [prompts], encoder=tiny_clip, data_root=tmp_path,
                               cache_dir=tmp_path / "cache", n_bootstrap=0)
    assert selection["split"] == "val" and selection["style"] == "right"
    assert [r["style"] for r in selection["ranking"]] == [r["style"] for r in val_rank] == ["right", "shuffled"]
    assert selection["ranking"][0]["auc"] == val_rank[0]["auc"]
    record = load_run(results[0]["run_dir"])
    assert record.split == "test" and record.config["selection"] == selection


def test_styles_scored_on_test_are_marked_and_never_starred(tiny_clip, tmp_path):
    write_quadrant_dataset(tmp_path)
    prompts = _prompts(tmp_path / "oct.yaml")
    kw = dict(prompts=prompts, data_root=tmp_path, cache_dir=tmp_path / "cache", n_bootstrap=50,
              runs_dir=tmp_path / "runs")
    on_test = run_zero_shot("octmnist", "tiny", encoder=tiny_clip, styles="all", **kw)
    assert {r["selection"]["split"] for r in on_test} == {"test"}
    table = comparison_table(load_runs(tmp_path / "runs"))
    assert all(r.test_selected and r.label.endswith("‡") for r in table.rows)
    assert not any(c.best_auc or c.best_acc for c in table.cells.values())
    run_zero_shot("octmnist", "tiny", encoder=tiny_clip, **kw)  # --style best: selected on val
    table = comparison_table(load_runs(tmp_path / "runs"))
    chosen = [r for r in table.rows if not r.test_selected]
    assert len(chosen) == 1 and chosen[0].options["style"] == "right"
    starred = [rk for (rk, _), c in table.cells.items() if c.best_auc]
    assert starred == [chosen[0].key]


def test_cli_style_best_json_shows_the_val_selection(tmp_path):
    import open_clip
    import torch

    from cli import app
    from conftest import write_synthetic
    from fixtures.tiny_models import tiny_open_clip_config

    name = tiny_open_clip_config(tmp_path / "configs", "medvlm-select-tiny")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(name, pretrained=None).state_dict(), weights)
    write_synthetic(tmp_path, "breastmnist")
    result = CliRunner().invoke(app, ["zero-shot", "breastmnist", "--model", name, "--weights", str(weights),
                                      "--data-root", str(tmp_path), "--runs-dir", str(tmp_path / "runs"),
                                      "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    shipped = [r["style"] for r in out["selection"]["ranking"]]
    assert out["selection"]["split"] == "val" and out["selection"]["style"] == shipped[0]
    assert len(shipped) > 1 and [r["style"] for r in out["results"]] == [shipped[0]]
    aucs = [r["auc"] for r in out["selection"]["ranking"]]
    assert aucs == sorted(aucs, reverse=True)
