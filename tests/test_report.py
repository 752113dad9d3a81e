"""`vlm report`: the HTML page of a synthetic runs folder (every kind of figure), read as text and opened in a real
browser (Debian's chromium driven by Playwright; skipped where either is absent)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from conftest import write_bench
from fixtures.tiny_models import FakeEncoder
from vlm.calibrate import calibrate_run
from vlm.compare import comparison_table
from vlm.data import load_split
from vlm.fewshot import run_fewshot
from vlm.results import load_runs
from vlm.scoring import record_run, score_split

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
AUC_HEADER = "breastmnist 28px test AUC"


def _robustness_json(record) -> dict:
    """A robustness.json in `vlm.robustness`'s format (made-up numbers: the report only draws it)."""
    cells = [{"corruption": c, "severity": s, "auc": 0.8 - d * s, "acc": 0.7 - d * s, "ece": 0.1 + d * s}
             for c, d in (("pixelate", 0.05), ("jpeg_compression", 0.02)) for s in range(1, 6)]
    return {"run_id": record.run_id, "label": record.label, "dataset": record.dataset, "size": 28, "split": "test",
            "clean": {"auc": 0.85, "acc": 0.75, "ece": 0.08}, "cells": cells,
            "corruptions": [{"corruption": c, "be": 1.1, "rbe": 1.3} for c in ("pixelate", "jpeg_compression")],
            "summary": {"be": 1.1, "rbe": 1.3}}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """write_bench's runs plus a calibrated run (with robustness.json) and few-shot runs; the report of them in
    site/report.html (record links go up to ../runs)."""
    base = tmp_path_factory.mktemp("report")
    bench = write_bench(base)
    root, runs = bench["root"], bench["runs"]
    test, val = (load_split("breastmnist", s, 28, root) for s in ("test", "val"))
    gen = torch.Generator().manual_seed(3)
    logits, val_logits = torch.randn(len(test), 2, generator=gen), torch.randn(len(val), 2, generator=gen)
    scores = logits.softmax(1)
    record = record_run(test, scores, score_split(test, scores, n_bootstrap=30), method="train", model="calibrated-net",
                        runs_dir=runs, logits=logits, val_logits=val_logits, seed=0)
    calibrate_run(record.path, data_root=root)
    (Path(record.path) / "robustness.json").write_text(json.dumps(_robustness_json(record)))
    run_fewshot("breastmnist", "fake", methods=["linear-probe"], shots=[1, 2], seeds=[0], data_root=root,
                runs_dir=runs, encoder=FakeEncoder(), n_bootstrap=0, cache_dir=base / "cache")
    run_fewshot("breastmnist", "fake", methods=["knn"], shots=[1], seeds=[0], data_root=root, runs_dir=runs,
                encoder=FakeEncoder(), image_size=32, n_bootstrap=0, cache_dir=base / "cache")  # another input size
    out = base / "site" / "report.html"
    out.parent.mkdir()
    result = runner.invoke(app, ["report", str(runs), "--out", str(out), "--data-root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    return {"root": root, "runs": runs, "out": out, "summary": json.loads(result.stdout), "html": out.read_text()}


def test_page_is_self_contained_with_every_kind_of_figure(site):
    html, summary = site["html"], site["summary"]
    assert summary["file"] == str(site["out"]) and summary["notes"] == []
    assert summary["columns"] == ["pathmnist 28px test", "chestmnist 28px test", "breastmnist 28px test"]  # MedMNIST order
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "<link" not in html  # nothing fetched
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == summary["figures"] and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == PNG for s in sources)
    kinds = re.findall(r'<figure class="(\w+)[ "]', html)
    assert kinds.count("roc") == 3
    # confusion: train tiny (newest seed), 3 zero-shot styles and the calibrated run on breastmnist; one each else
    assert kinds.count("confusion") == 5 + 1 + 1
    assert {k: kinds.count(k) for k in ("styles", "fewshot", "reliability", "robustness")} == {
        "styles": 1, "fewshot": 2, "reliability": 1, "robustness": 1}  # few-shot: one figure per input size
    assert "Few-shot · fake:encoder at 32px" in html and "Few-shot · fake:encoder at its native size" in html
    assert "ResNet-18 (28) (published)" in html and "Yang et al." in html  # the MedMNIST baselines and their legend
    assert "single run: value [95% bootstrap CI]" in html and re.search(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", html)
    assert re.search(r"0\.\d{3} ± 0\.\d{3} \(n=2\)", html)  # the two seeds of the tiny binary run


def test_best_cells_and_record_links_follow_the_comparison_table(site):
    html = site["html"]
    table = comparison_table(load_runs(site["runs"]), baselines="medmnist")
    marked = sum(getattr(cell, f"best_{m}") for cell in table.cells.values() for m in ("auc", "acc"))
    assert html.count('class="num best') == marked > 0
    links = re.findall(r'<a href="([^"]+)" title="([^"]+)">', html)
    run_ids = {r.run_id for r in load_runs(site["runs"])}
    assert {title for _, title in links} == run_ids
    for href, run_id in links:
        assert href.startswith("../runs/") and href.endswith("/record.json")
        assert json.loads((site["out"].parent / unquote(href)).read_text())["run_id"] == run_id


def test_errors_are_one_line_and_missing_labels_leave_a_note(site, tmp_path):
    empty = tmp_path / "runs"
    empty.mkdir()
    for args, message in (([str(empty)], "No finished runs found in"),
                          ([str(site["runs"]), "--out", str(tmp_path / "r.pdf")], "name it with .html"),
                          ([str(site["runs"]), "--out", str(tmp_path / "no" / "r.html")], "does not exist"),
                          ([str(site["runs"]), "--baselines", "paper"], "Unknown --baselines 'paper'"),
                          ([str(site["runs"]), "--metrics", "f1"], "Unknown --metrics f1")):
        result = runner.invoke(app, ["report", *args])
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output
    out = tmp_path / "path.html"
    result = runner.invoke(app, ["report", str(site["runs"]), "-d", "pathmnist", "--baselines", "none", "--out",
                                 str(out), "--data-root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["columns"] == ["pathmnist 28px test"] and summary["figures"] == 1  # its confusion matrix
    assert len(summary["notes"]) == 1 and summary["notes"][0].startswith("ROC · pathmnist 28px test: not drawn")
    assert "pathmnist.npz" in summary["notes"][0]
    html = out.read_text()
    assert "breastmnist" not in html and "(published)" not in html and "not drawn" in html


# ----------------------------------------------------------------------------- in a real browser
def _chromium() -> str:
    pytest.importorskip("playwright.sync_api")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


def _labels(page) -> list[str]:
    return page.eval_on_selector_all("#comparison tbody tr", "rows => rows.map(r => r.cells[0].textContent)")


def _expected(table, column, descending: bool) -> list[str]:
    """Rows by AUC in `column` (stable; empty cells last), as the page's script orders them."""
    values = [(row.label, table.cell(row, column).auc if table.cell(row, column) else None) for row in table.rows]
    present = sorted((v for v in values if v[1] is not None), key=lambda v: -v[1] if descending else v[1])
    return [label for label, _ in present] + [label for label, v in values if v is None]


def test_page_in_chromium_loads_clean_sorts_on_header_click_and_decodes_every_image(site, tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    table = comparison_table(load_runs(site["runs"]), baselines="medmnist")
    column = next(c for c in table.columns if c.dataset == "breastmnist")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url))
        page.goto(site["out"].as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == site["summary"]["figures"] and all(c and w > 0 and h > 0 for c, w, h in images)

        assert _labels(page) == [r.label for r in table.rows]
        header = page.locator("#comparison thead th", has_text=re.compile(r"breastmnist 28px test\s*AUC")).first
        header.click()
        assert header.get_attribute("aria-sort") == "descending"
        assert _labels(page) == _expected(table, column, descending=True) != [r.label for r in table.rows]
        header.click()
        assert header.get_attribute("aria-sort") == "ascending"
        assert _labels(page) == _expected(table, column, descending=False)
        before = _labels(page)
        page.locator("#comparison thead th", has_text="method").click()
        by_name = _labels(page)
        assert sorted(by_name) == sorted(before) and by_name[0][0].lower() == min(b[0].lower() for b in before)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG
