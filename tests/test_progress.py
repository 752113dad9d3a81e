"""Honest progress: a job's events (epochs, encodings, its end) written by its worker and read back by
`vlm run`, the matrix's count and ETA, the live area drawn to the terminal's width, plain lines elsewhere,
and tables that never cut a number."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.text import Text

from fixtures.inputs import random_split
from fixtures.tiny_models import FakeEncoder
from vlm.commands.output import Column, Table, rich_tables
from vlm.commands.progress import JobProgress, StatusDisplay, bar_line, matrix_lines
from vlm.embeddings import CPU_PASS, image_embeddings
from vlm.jobprogress import EventReader, EventWriter, JobReporter, JobView, clock_text, events_path
from vlm.matrix_progress import MatrixProgress


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def train_event(stage, epoch, epochs=3, **kw):
    fields = dict(batch=0, batches=4, loss=None, val_auc=None, val_acc=None, best_auc=None, best_epoch=0, seconds=0.0)
    return SimpleNamespace(stage=stage, epoch=epoch, epochs=epochs, **{**fields, **kw})


def test_training_events_become_epoch_rows_with_the_best_so_far():
    clock, events = Clock(), []
    reporter = JobReporter(events.append, every_s=1.0, clock=clock)
    reporter(train_event("start", 0, batches=4))
    for b in range(1, 5):  # four batches within 0.3 s: only the first passes the 1 s throttle
        clock.t += 0.1
        reporter(train_event("batch", 1, batch=b, loss=0.9 - 0.1 * b))
    reporter(train_event("epoch", 1, loss=0.61234, val_auc=0.7, best_auc=0.7, best_epoch=1, seconds=2.25))
    reporter(train_event("epoch", 2, loss=0.5, val_auc=0.65, best_auc=0.7, best_epoch=1, seconds=2.0))
    reporter(train_event("test", 2, best_epoch=1))
    assert [e["stage"] for e in events] == ["train", "batch", "epoch", "epoch", "test"]
    view = JobView("cnn · breastmnist 28px · seed 0", tag="[1/2] ")
    lines = view.feed({"t": 1000.0, "stage": "start", "label": view.label})
    lines += [line for e in events for line in view.feed(e)]
    assert lines == ["[1/2] cnn · breastmnist 28px · seed 0",
                     "[1/2]   epoch 1/3  loss 0.6123  val AUC 0.7000 *  best 0.7000 @ 1  2.2s",
                     "[1/2]   epoch 2/3  loss 0.5000  val AUC 0.6500    best 0.7000 @ 1  2.0s"]
    assert view.phase == "scoring test with epoch 1" and view.fraction() == 1.0
    view.feed({"t": 1003.0, "stage": "done", "results": [{"name": "cnn", "split": "test", "auc": 0.8123,
                                                          "acc": 0.75}]})
    assert view.state == "done"


def test_encoding_events_count_fractions_of_volumes_and_say_cache_hits():
    clock, events = Clock(), []
    reporter = JobReporter(events.append, every_s=0.0, clock=clock)
    split = random_split("vesselmnist3d", 3, shape=(1, 20, 8, 8))  # 20 slices: two passes a volume on the CPU
    image_embeddings(FakeEncoder(), split, batch_size=256, use_cache=False, progress=reporter.embed)
    done = [e["done"] for e in events]
    assert events[0]["what"] == "vesselmnist3d test" and events[0]["unit"] == "volumes" and events[0]["total"] == 3
    assert done == pytest.approx([0, 16 / 20, 1, 1 + 16 / 20, 2, 2 + 16 / 20, 3])  # CPU_PASS = 16 slices a pass
    view = JobView("probe")
    lines = [line for e in events for line in view.feed(e)]
    assert lines == ["  encoded vesselmnist3d test: 3 volumes in 0.0 s"]
    reporter.embed.describe("breastmnist val", "images")
    reporter.embed.set_total(0)  # a cache hit
    assert view.feed(events[-1]) == ["  breastmnist val: embeddings from the cache"]


def test_2d_encoding_advances_every_cpu_pass_not_every_batch():
    ticks = []
    image_embeddings(FakeEncoder(), random_split("pathmnist", 40), batch_size=256, use_cache=False,
                     progress=ticks.append)
    assert ticks == [CPU_PASS, CPU_PASS, 40 - 2 * CPU_PASS]


def test_event_files_are_read_incrementally_and_from_the_start_once_replaced(tmp_path):
    path = events_path(tmp_path, "abc")
    writer = EventWriter(path)
    writer.start("job A")
    reader = EventReader(path)
    assert [e["stage"] for e in reader.read()] == ["start"]
    writer({"t": 1, "stage": "epoch", "epoch": 1})
    with open(path, "ab") as f:
        f.write(b'{"t": 2, "stage": "ba')  # a line being written
    assert [e["epoch"] for e in reader.read()] == [1]
    with open(path, "ab") as f:
        f.write(b'tch"}\n')
    assert [e["stage"] for e in reader.read()] == ["batch"] and reader.read() == []
    writer.start("job A again")  # a new attempt replaces the file
    assert [e.get("label") for e in reader.read()] == ["job A again"]


def write_job(runs, key, clock, *events):
    writer = EventWriter(events_path(runs, key))
    writer.start(key, t=clock.t)
    for stage, fields in events:
        writer({"t": clock.t, "stage": stage, **fields})


def test_matrix_counts_jobs_and_estimates_the_time_left(tmp_path):
    clock = Clock()
    tracker = MatrixProgress(tmp_path, [("a", "job a"), ("b", "job b"), ("c", "job c")], workers=1, clock=clock)
    assert tracker.update() == [] and tracker.eta() is None
    write_job(tmp_path, "a", clock)
    clock.t += 60
    EventWriter(events_path(tmp_path, "a"))({"t": clock.t, "stage": "done", "results": []})
    lines = tracker.update(done=["job a"])
    assert lines[-1] == "1 of 3 jobs done · elapsed 1:00 · ETA 2:00"  # two more jobs of a minute each
    write_job(tmp_path, "b", clock, ("epoch", {"epoch": 1, "epochs": 4, "loss": 0.5}))
    clock.t += 20  # b: a quarter of its epochs in 20 s -> 60 s to go, c: 60 s
    tracker.update()
    assert tracker.eta() == pytest.approx(120) and tracker.finished() == pytest.approx(1.25)
    lines = tracker.update(failed={"job b": "VlmError: boom"})  # a verdict without its event
    assert lines[0].startswith("[2/3]   failed after 0:20: VlmError: boom")
    assert lines[1] == "1 of 3 jobs done · 1 failed · elapsed 1:20 · ETA 1:00"


def test_live_area_fits_the_width_and_keeps_numbers_whole(tmp_path):
    clock = Clock()
    tracker = MatrixProgress(tmp_path, [("a", "lite0-linear-probe-with-a-long-name · vesselmnist3d 28px · seed 0")],
                             clock=clock)
    write_job(tmp_path, "a", clock, ("batch", {"epoch": 2, "epochs": 10, "batch": 7, "batches": 18,
                                               "loss": 0.123456}))
    tracker.update()
    for width in (40, 80, 120):
        console = Console(width=width, record=True, force_terminal=True, color_system=None)
        for line in matrix_lines(tracker, width):
            console.print(line)
        text = console.export_text()
        assert all(len(line) <= width for line in text.splitlines())
        assert "…" not in text and "7/18" in text and "loss 0.1235" in text and "0/1 jobs" in text
        assert "ETA" in text and "━" in text
    assert bar_line("abc", 0.5, "xyz", 80)[0].plain.count("━") == 20  # a 40-cell bar, half done
    assert [t.plain for t in bar_line("a" * 30, 0.5, "b" * 30, 50)][0] == "a" * 30 + " " + "b" * 30  # own line


def test_plain_lines_off_a_terminal_are_never_wrapped_or_coloured():
    buf = io.StringIO()
    console = Console(file=buf, width=40, force_terminal=False)
    with StatusDisplay(console, lambda width: [Text("live")]) as display:
        display.print_lines(["[1/2]   epoch 1/3  loss 0.6123  val AUC 0.7000 *  best 0.7000 @ 1  2.2s"])
    assert buf.getvalue() == "[1/2]   epoch 1/3  loss 0.6123  val AUC 0.7000 *  best 0.7000 @ 1  2.2s\n"
    buf = io.StringIO()
    with JobProgress(Console(file=buf, force_terminal=False), "breastmnist small-cnn") as bar:
        bar(train_event("epoch", 1, epochs=1, loss=0.5, val_auc=0.6, best_auc=0.6, best_epoch=1, seconds=1.0))
    assert buf.getvalue().splitlines() == ["breastmnist small-cnn",
                                           "  epoch 1/1  loss 0.5000  val AUC 0.6000 *  best 0.6000 @ 1  1.0s"]


def test_wide_tables_are_split_by_column_group_and_never_cut_a_number():
    cells = ["0.578 [0.267, 0.873] *", "0.500 [0.250, 0.750]"]
    cols = [Column("method", overflow="fold")] + [Column(f"{d} 28px test\n{m}", "right", group=d)
                                                  for d in ("breastmnist", "vesselmnist3d") for m in ("AUC", "ACC")]
    rows = [["lite0-linear-probe (linear-probe timm:tf_efficientnet_lite0)", *cells, *cells],
            ["resnet18-scratch (train medmnist-resnet18)", cells[1], cells[0], "", ""]]
    table = Table(cols, rows, title="results", caption="legend")
    for width, parts in ((80, 2), (200, 1)):
        tables = rich_tables(table, width)
        console = Console(width=width, record=True, color_system=None)
        for t in tables:
            console.print(t)
        text = console.export_text()
        assert len(tables) == parts and all(len(line) <= width for line in text.splitlines())
        assert "…" not in text and text.count("0.578 [0.267, 0.873] *") == 3 and text.count("legend") == 1
        assert len(re.findall(r"│ lite0-linear-probe", text)) == parts  # the row names in every part
        assert len(re.findall(r"│ resnet18-scratch", text)) == 1  # only where it has values
        names = "".join(re.findall(r"^│ (.*?) *│", text, re.M))
        assert "lite0-linear-probe(linear-probetimm:tf_efficientnet_lite0)" in names.replace(" ", "")
    header = [t.columns[1].header for t in rich_tables(table, 80)]
    assert header == ["breastmnist 28px test\nAUC", "vesselmnist3d 28px test\nAUC"]  # a dataset's columns together


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.6, 61, 3600 + 62, None)] == ["0:00", "1:00", "1:01", "1:01:02", "?"]


def test_worker_results_name_the_records(tmp_path):
    from vlm.worker import job_results

    run = tmp_path / "r1"
    run.mkdir()
    (run / "record.json").write_text(json.dumps({"method": "train", "split": "test", "metrics": {"auc": 0.8, "acc": 0.7},
                                                 "config": {"experiment_method": "cnn"}}))
    assert job_results([run, tmp_path / "missing"]) == [{"name": "cnn", "split": "test", "auc": 0.8, "acc": 0.7}]
