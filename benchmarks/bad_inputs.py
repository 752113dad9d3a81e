"""The bad-input table of issue 13, measured from the CLI: each bad input through `vlm`, its exit code, its
message, and whether anything went wrong (a traceback, a silent acceptance, a file lost).

    python benchmarks/bad_inputs.py [--out table.md]

Every case runs `vlm ...` in-process (typer's CliRunner, the code path of the console script) in a fresh
sandbox of synthetic MedMNIST files, prepared run folders and score files; the SIGTERM case runs a real
process. Each case names the files it must leave as they were (data, checkpoints, records, score files); the
`lost` column counts those changed or gone. Verdicts: `refused` (exit 2, one stderr line), `warned` (exit 0,
the bad part skipped or recomputed with a warning line), `kept` (a data-loss case: the files survive and the
run resumes or is refused), or `TRACEBACK` / `EXIT 1` / `ACCEPTED` / `LOST` for failures. The last line counts
them; the script exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import write_synthetic  # noqa: E402 - the tests' MedMNIST-format writer
from fixtures.inputs import ONE_PROMPT  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cli import app  # noqa: E402


@dataclass
class Case:
    """One bad input: how to build it (returns the `vlm` arguments), the files it must keep, what is expected."""

    what: str
    build: Callable[["Sandbox"], list[str]]
    expect: str = "refused"  # refused | warned | kept
    keep: Callable[["Sandbox"], list[Path]] = lambda s: []
    check: Callable[["Sandbox", object], bool] | None = None  # extra condition for warned/kept cases
    listed: bool = False  # one of the examples in the issue
    note: str = ""  # the message column of a case that ends with exit 0 and no warning


@dataclass
class Sandbox:
    root: Path
    n: int = 0
    notes: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def fresh(self, name: str) -> Path:
        self.n += 1
        folder = self.root / f"{self.n:02d}-{name}"
        folder.mkdir()
        return folder

    def bad_data(self, name: str, change: Callable[[dict], dict]) -> Path:
        folder = self.fresh(name)
        with np.load(self.data / "breastmnist.npz") as npz:
            arrays = change(dict(npz))
        np.savez(folder / "breastmnist.npz", **arrays)
        return folder

    def paused_run(self, name: str) -> Path:
        """A small-cnn run paused after epoch 1 of 3, copied fresh for each case."""
        if "paused" not in self.notes:
            from vlm.training import TrainConfig, train

            part = train("breastmnist", "small-cnn", config=TrainConfig(epochs=3, batch_size=16, n_bootstrap=20,
                                                                         device="cpu"),
                         data_root=self.data, runs_dir=self.root / "template", max_epochs_this_call=1)
            self.notes["paused"] = part.run_dir
        folder = self.fresh(name) / "run"
        folder.mkdir()
        for f in self.notes["paused"].iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        return folder

    def scores(self, name: str, array: np.ndarray, pickled: bool = False) -> Path:
        path = self.fresh(name) / "scores.npy"
        np.save(path, array, allow_pickle=pickled)
        return path

    def yaml(self, name: str, text: str) -> Path:
        path = self.fresh(name) / "file.yaml"
        path.write_text(text)
        return path

    def runs_with(self, name: str, record_edit: Callable[[dict], dict], scores: np.ndarray | None = None) -> Path:
        """A runs folder with one good record and one edited one."""
        from vlm.results import RunRecord, save_run

        runs = self.fresh(name)
        good = RunRecord("train", "small-cnn", "breastmnist", 28, "test", {"auc": 0.9, "acc": 0.8, "n": 20})
        a = save_run(good, np.full((20, 2), 0.5, dtype=np.float32), runs)
        b = runs / "zz-edited"
        b.mkdir()
        (b / "record.json").write_text(json.dumps(record_edit({**good.to_dict(), "run_id": "zz-edited"})))
        if scores is not None:
            np.save(b / "scores.npy", scores, allow_pickle=True)
        self.notes[name] = (a, b)
        return runs


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing"
    return out


# ----------------------------------------------------------------------------- the cases
EXPERIMENT = """\
name: bad
datasets:
  - {{flag: breastmnist, size: {size}}}
methods:
  - name: cnn
    kind: train
    model: small-cnn
    options: {{epochs: {epochs}, lr: {lr}, batch_size: 16}}
"""
PROMPTS = ONE_PROMPT
TRAIN = ["train", "breastmnist", "--model", "small-cnn", "--device", "cpu", "--epochs", "1", "--batch-size", "16"]
P = np.random.default_rng(0).random((20, 1))
GOOD_SCORES = np.hstack([1 - P, P])


def _exp(s: Sandbox, name: str, **values) -> list[str]:
    path = s.yaml(name, EXPERIMENT.format(**{"size": 28, "epochs": 1, "lr": 0.001, **values}))
    return ["run", str(path), "--dry-run", "--runs-dir", str(path.parent / "runs")]


def _evaluate(path: Path, *more: str) -> list[str]:
    return ["evaluate", "breastmnist", "--scores", str(path), "--bootstrap", "20", *more]


def _flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    path.write_bytes(bytes(blob))


def _resume(s: Sandbox, name: str, damage: Callable[[Path], object]) -> list[str]:
    run = s.paused_run(name)
    damage(run)
    s.notes[name] = run
    return ["train", "--resume", str(run)]


def _spec_without_model(run: Path) -> None:
    spec = json.loads((run / "spec.json").read_text())
    del spec["model"]
    (run / "spec.json").write_text(json.dumps(spec))


def _keep_run(name: str) -> Callable[[Sandbox], list[Path]]:
    return lambda s: [s.notes[name]]


def _train_on(s: Sandbox, folder: Path, *more: str) -> list[str]:
    return [*TRAIN, "--data-root", str(folder), "--runs-dir", str(folder / "runs"), *more]


def _zero_shot(s: Sandbox, *more: str) -> list[str]:
    return ["zero-shot", "breastmnist", "--model", "ViT-B-32", "--data-root", str(s.data), "--runs-dir",
            str(s.root / "zs-runs"), *more]


def _finetune_probe(s: Sandbox, runs: Path) -> list[str]:
    return ["finetune", "breastmnist", "--model", "test_efficientnet", "--weights", str(s.notes["timm"]),
            "--mode", "linear-probe", "--data-root", str(s.data), "--runs-dir", str(runs), "--cache-dir",
            str(s.root / "cache"), "--bootstrap", "0", "--device", "cpu", "--json"]


def _tampered_cache(s: Sandbox) -> list[str]:
    """A linear probe, then the cached test embeddings' rows reversed on disk, then the same probe again."""
    import timm
    from safetensors.torch import save, save_file

    from vlm.embeddings import read_entry

    if "timm" not in s.notes:
        model = timm.create_model("test_efficientnet", num_classes=0)
        s.notes["timm"] = s.root / "test_efficientnet.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(s.notes["timm"]))
    first = CliRunner().invoke(app, _finetune_probe(s, s.fresh("probe-first")))
    s.notes["probe_auc"] = json.loads(first.stdout)["auc"]
    (entry,) = (s.root / "cache").glob("breastmnist_test_*.safetensors")
    emb, meta = read_entry(entry)
    entry.write_bytes(save({"embeddings": emb.flip(0).contiguous()}, metadata=meta))
    return _finetune_probe(s, s.fresh("probe-again"))


def _same_probe_auc(s: Sandbox, result) -> bool:
    return json.loads(result.stdout)["auc"] == s.notes["probe_auc"] and "checksum does not match" in result.stderr


def _stale_tmp(s: Sandbox) -> list[str]:
    run = s.paused_run("stale-tmp")
    stale = run / ".last.pt.otherhost-1.abcd.tmp"
    stale.write_bytes(b"x" * 4096)
    os.utime(stale, (time.time() - 7200,) * 2)
    s.notes["stale"] = stale
    return ["train", "--resume", str(run), "--json"]


CASES = [
    Case("experiment file: `size: big`", lambda s: _exp(s, "size-big", size="big"), listed=True),
    Case("experiment file: `epochs: ten`", lambda s: _exp(s, "epochs-ten", epochs="ten"), listed=True),
    Case("experiment file: `lr: fast`", lambda s: _exp(s, "lr-fast", lr="fast"), listed=True),
    Case("`vlm run FOLDER`", lambda s: ["run", str(s.fresh("folder"))], listed=True),
    Case("experiment file: `weight_decay: -1` (dry run)", lambda s: _exp(s, "wd", lr="0.001, weight_decay: -1")),
    Case("experiment file: unknown key", lambda s: ["run", str(s.yaml("unknown", EXPERIMENT.format(
        size=28, epochs=1, lr=0.001) + "colour: red\n")), "--dry-run"]),
    Case("experiment file: duplicate key", lambda s: ["run", str(s.yaml("dup", EXPERIMENT.format(
        size=28, epochs=1, lr=0.001).replace("kind: train", "kind: train\n    kind: finetune"))), "--dry-run"]),
    Case("experiment file: zero-shot style that does not exist (dry run)", lambda s: ["run", str(s.yaml(
        "zs-style", EXPERIMENT.format(size=28, epochs=1, lr=0.001) + "  - {name: zs, kind: zero-shot, model: "
                                                                     "ViT-B-32, styles: clipp}\n")), "--dry-run"]),
    Case("experiment file: `launch: {workers: 0}`", lambda s: ["run", str(s.yaml("launch", EXPERIMENT.format(
        size=28, epochs=1, lr=0.001) + "launch: {workers: 0}\n")), "--dry-run"]),
    Case("resume: last.pt truncated", lambda s: _resume(s, "truncated", lambda r: (r / "last.pt").write_bytes(
        (r / "last.pt").read_bytes()[:4000])), keep=_keep_run("truncated"), listed=True),
    Case("resume: last.pt empty", lambda s: _resume(s, "empty", lambda r: (r / "last.pt").write_bytes(b"")),
         keep=_keep_run("empty"), listed=True),
    Case("resume: spec.json lacks keys", lambda s: _resume(s, "spec", _spec_without_model),
         keep=_keep_run("spec"), listed=True),
    Case("resume: best.safetensors gone", lambda s: _resume(s, "no-best", lambda r: (r / "best.safetensors")
                                                            .unlink()), keep=_keep_run("no-best"), listed=True),
    Case("resume: last.pt is a folder", lambda s: _resume(s, "folder-last", lambda r: ((r / "last.pt").unlink(),
                                                                                       (r / "last.pt").mkdir())),
         keep=_keep_run("folder-last"), listed=True),
    Case("resume: last.pt missing (data loss before)", lambda s: _resume(s, "missing", lambda r: (
        r / "last.pt").unlink()), keep=_keep_run("missing"), listed=True),
    Case("resume: last.pt corrupted, not truncated (data loss before)", lambda s: _resume(
        s, "corrupt", lambda r: _flip(r / "last.pt")), keep=_keep_run("corrupt"), listed=True),
    Case("resume: best.safetensors corrupted", lambda s: _resume(s, "corrupt-best", lambda r: _flip(
        r / "best.safetensors")), keep=_keep_run("corrupt-best")),
    Case("resume: options that differ from the saved ones", lambda s: _resume(s, "differ", lambda r: None)
         + ["--lr", "0.5"], keep=_keep_run("differ")),
    Case("compare: record with missing fields", lambda s: ["compare", str(s.runs_with(
        "missing-fields", lambda r: {k: v for k, v in r.items() if k not in ("model", "size")}))], expect="warned",
         check=lambda s, r: "size" in r.stderr or "model" in r.stderr, listed=True),
    Case("compare: record with wrong types", lambda s: ["compare", str(s.runs_with(
        "types", lambda r: {**r, "size": "big", "metrics": {"auc": "high"}}))], expect="warned",
         check=lambda s, r: "valid integer" in r.stderr, listed=True),
    Case("compare: record of another schema version", lambda s: ["compare", str(s.runs_with(
        "version", lambda r: {**r, "schema_version": 9}))], expect="warned",
         check=lambda s, r: "schema version 9" in r.stderr),
    Case("compare: a foreign record.json", lambda s: ["compare", str(s.runs_with(
        "foreign", lambda r: {"colour": "red"}))], expect="warned", check=lambda s, r: "not a medvlm" in r.stderr),
    Case("compare --pair: scores file of pickled objects", lambda s: ["compare", str(s.runs_with(
        "pickled", lambda r: r, np.array([{"x": 1}] * 20, dtype=object))), "--pair", "zz-edited",
                                                                      s.notes["pickled"][0].name], listed=True),
    Case("`--weight-decay -1`", lambda s: _train_on(s, s.fresh("wd"), "--weight-decay", "-1"), listed=True),
    Case(".npz images float64 in [0, 1]", lambda s: _train_on(s, s.bad_data("float", lambda d: {
        **d, "train_images": d["train_images"] / 255.0})), listed=True),
    Case(".npz test images 14 px in a 28 px file", lambda s: _train_on(s, s.bad_data("small", lambda d: {
        **d, "test_images": d["test_images"][:, :14, :14]})), listed=True),
    Case(".npz labels out of range", lambda s: _train_on(s, s.bad_data("labels", lambda d: {
        **d, "val_labels": d["val_labels"] + 3}))),
    Case(".npz without test_labels", lambda s: _train_on(s, s.bad_data("no-labels", lambda d: {
        k: v for k, v in d.items() if k != "test_labels"}))),
    Case("complex-valued scores", lambda s: _evaluate(s.scores("complex", GOOD_SCORES + 0.5j),
                                                      "--data-root", str(s.data)), listed=True),
    Case("scores that are logits (outside [0, 1])", lambda s: _evaluate(s.scores("logits", GOOD_SCORES * 8 - 4),
                                                                        "--data-root", str(s.data))),
    Case("scores with NaN", lambda s: _evaluate(s.scores("nan", np.full((20, 2), np.nan)), "--data-root",
                                                str(s.data))),
    Case("scores of 19 rows for 20 images", lambda s: _evaluate(s.scores("rows", GOOD_SCORES[:19]), "--data-root",
                                                                str(s.data))),
    Case("scores file of pickled objects", lambda s: _evaluate(s.scores("pickle", np.array([{}] * 20), True),
                                                               "--data-root", str(s.data))),
    Case("`--threshold 2`", lambda s: _evaluate(s.scores("t2", GOOD_SCORES), "--threshold", "2", "--data-root",
                                                str(s.data)), listed=True),
    Case("`--threshold nan`", lambda s: _evaluate(s.scores("tnan", GOOD_SCORES), "--threshold", "nan",
                                                  "--data-root", str(s.data)), listed=True),
    Case("prompt file with non-string prompts", lambda s: ["prompts", "validate", str(s.yaml("prompt-int",
                                                                                         PROMPTS.format(prompt=5)))],
         listed=True),
    Case("prompt file with a boolean prompt", lambda s: ["prompts", "validate", str(s.yaml(
        "prompt-bool", PROMPTS.format(prompt="yes")))]),
    Case("prompt file with a YAML syntax error", lambda s: ["prompts", "validate", str(s.yaml(
        "prompt-syntax", PROMPTS.format(prompt="[unclosed")))]),
    Case("negative seed (`--seed -1`)", lambda s: _train_on(s, s.fresh("seed"), "--seed", "-1"), listed=True),
    Case("negative gamma (`--gamma -1`)", lambda s: _train_on(s, s.fresh("gamma"), "--gamma", "-1"), listed=True),
    Case("`--epochs 0`", lambda s: _train_on(s, s.fresh("epochs0"), "--epochs", "0")),
    Case("`--epochs ten`", lambda s: _train_on(s, s.fresh("epochs-ten"), "--epochs", "ten")),
    Case("`--lr inf`", lambda s: _train_on(s, s.fresh("lr-inf"), "--lr", "inf")),
    Case("`--image-size 4`", lambda s: _train_on(s, s.fresh("size4"), "--image-size", "4")),
    Case("`--bootstrap -1`", lambda s: _train_on(s, s.fresh("boot"), "--bootstrap", "-1")),
    Case("`--seed 4294967296` (past numpy's 32-bit seeds)", lambda s: _train_on(s, s.fresh("seed32"), "--seed",
                                                                                   "4294967296")),
    Case("`--slice-axis 5`", lambda s: _zero_shot(s, "--slice-axis", "5")),
    Case("`--k 0` (kNN, before any encoding)", lambda s: ["finetune", "breastmnist", "--model",
                                                          "test_efficientnet", "--mode", "knn", "--k", "0",
                                                          "--data-root", str(s.data)], listed=True),
    Case("unknown option `--epochz 3`", lambda s: [*TRAIN, "--epochz", "3"]),
    Case("`--save-scores` over an existing file", lambda s: _zero_shot(s, "--save-scores", str(s.scores(
        "existing", GOOD_SCORES))), keep=lambda s: [s.root / f"{s.n:02d}-existing"], listed=True),
    Case("`--save-scores` path under a file", lambda s: _zero_shot(s, "--save-scores", str(s.scores(
        "under", GOOD_SCORES) / "s.npy")), listed=True),
    Case("runs folder under a file", lambda s: _zero_shot(s, "--runs-dir", str(s.scores("runs-file", GOOD_SCORES)
                                                                              / "runs")), listed=True),
    Case("embedding cache entry with its rows reversed on disk", _tampered_cache, expect="warned",
         check=_same_probe_auc, listed=True),
    Case("stale `.last.pt.*.tmp` of a killed write", _stale_tmp, expect="kept",
         check=lambda s, r: r.exit_code == 0 and not s.notes["stale"].exists(), listed=True,
         note="(exit 0) the run resumed and finished; the stale temp file was removed by its first checkpoint write"),
]


def _sigterm(s: Sandbox) -> tuple[int, str, bool]:
    """`vlm train` in a real process, SIGTERM in epoch 2, then `vlm train --resume`: exit code, message, resumed."""
    from vlm.training.checkpoint import read_last

    runs = s.fresh("sigterm")
    big = s.fresh("sigterm-data")
    write_synthetic(big, "breastmnist", n=(2000, 60, 60))
    cmd = [sys.executable, "-c", "from cli import app; app()", *TRAIN[:6], "--epochs", "3", "--batch-size", "16",
           "--bootstrap", "20", "--data-root", str(big), "--runs-dir", str(runs)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("*/last.pt")):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    (folder,) = runs.iterdir()
    epoch = read_last(folder / "last.pt")["state"]["epoch"]
    resumed = CliRunner().invoke(app, ["train", "--resume", str(folder), "--json"])
    ok = resumed.exit_code == 0 and json.loads(resumed.stdout)["epochs_run"] == 3 and epoch >= 1
    return proc.returncode, " ".join(err.split()), ok


def run(cases: list[Case]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        s = Sandbox(Path(tmp))
        s.data.mkdir()
        write_synthetic(s.data, "breastmnist")
        old = os.getcwd()
        os.chdir(s.root)
        try:
            for i, case in enumerate(cases, 1):
                args = case.build(s)
                roots = case.keep(s)
                kept = _digest(roots)
                result = CliRunner().invoke(app, args, env={"VLM_CACHE_DIR": str(s.root / "cache"),
                                                            "COLUMNS": "300"})
                after = _digest(roots)
                lost = sum(after.get(path) != digest for path, digest in kept.items())
                lines = result.stderr.strip().splitlines()
                crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
                if crashed or "Traceback" in result.output:
                    verdict = "TRACEBACK"
                elif result.exit_code == 1:
                    verdict = "EXIT 1"
                elif lost:
                    verdict = "LOST"
                elif case.expect == "refused":
                    verdict = "refused" if result.exit_code == 2 and len(lines) == 1 else "ACCEPTED"
                else:
                    verdict = case.expect if case.check is None or case.check(s, result) else "ACCEPTED"
                message = case.note or (lines[-1] if lines else "")
                if case.expect == "warned" and lines:
                    message = next((line for line in lines if line.startswith("warning")), message)
                rows.append({"n": i, "what": case.what, "listed": case.listed, "exit": result.exit_code,
                             "verdict": verdict, "lost": lost, "message": message.replace(str(s.root), "$SANDBOX")})
            code, message, ok = _sigterm(s)
            rows.append({"n": len(rows) + 1, "what": "SIGTERM during training, then `--resume`", "listed": True,
                         "exit": code, "verdict": "kept" if code == 143 and ok else "LOST", "lost": 0 if ok else 1,
                         "message": message.replace(str(s.root), "$SANDBOX") + (" (then `--resume` finished all 3 "
                                                                                "epochs)" if ok else "")})
        finally:
            os.chdir(old)
    return rows


def table(rows: list[dict]) -> str:
    def cell(text: str) -> str:
        text = text.replace("|", "\\|")
        return text if len(text) <= 220 else text[:219] + "…"

    out = ["| # | bad input | exit | verdict | files lost | message |", "|---|---|---|---|---|---|"]
    out += [f"| {r['n']} | {cell(r['what'])}{' ★' if r['listed'] else ''} | {r['exit']} | {r['verdict']} | "
            f"{r['lost']} | {cell(r['message'])} |" for r in rows]
    bad = {v: sum(r["verdict"] == v for r in rows) for v in ("TRACEBACK", "EXIT 1", "ACCEPTED", "LOST")}
    out.append(f"\n{len(rows)} bad inputs (★ named in the issue): {bad['TRACEBACK']} tracebacks, "
               f"{sum(r['exit'] == 1 for r in rows)} exit code 1, {bad['ACCEPTED']} silent acceptances, "
               f"{sum(r['lost'] for r in rows)} files lost.")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = run(CASES)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if any(r["verdict"] in ("TRACEBACK", "EXIT 1", "ACCEPTED", "LOST") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
