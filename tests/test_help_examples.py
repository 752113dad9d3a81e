"""Every `vlm` group and command shows an example in its --help, and every example runs as written.

The examples are read from the rendered help, in a tutorial's order (the zero-shot example saves the
scores.npy that `vlm evaluate` reads, the trainings make the runs that compare, calibrate and the plots
take), and run in a workspace laid out like this repository beside `../shared`: synthetic MedMNIST files
in `../shared/data/medmnist`, a random-initialised Lite0 checkpoint in `../shared/weights` (timm's key
layout, like the real one), a random ViT-B-32 as `vitb32.pt`, the shipped prompts and experiments, the
user's own prompt file `mine.yaml` (a copy of the shipped one) and an interrupted run for `--resume`.
Globs (`runs/*_breastmnist_train_medmnist-resnet18`) are expanded as a shell would.
"""

from __future__ import annotations

import glob
import shlex
import shutil
import time
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli import app
from conftest import write_synthetic

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# Commands in the order their examples run: what an example reads, an earlier one made.
ORDER = ["", "datasets", "datasets info", "models", "prompts", "prompts list", "prompts show", "prompts validate",
         "zero-shot", "prompts compare", "evaluate", "train", "finetune", "fewshot", "run", "compare", "calibrate",
         "robustness", "plot", "plot roc", "plot confusion", "plot reliability", "plot robustness", "plot styles",
         "plot montage", "plot embeddings", "plot fewshot", "report"]


def command_paths() -> list[str]:
    """Every group and command of the app, as 'plot roc'; '' is `vlm` itself."""
    from typer import Context

    def walk(cmd, path: str) -> list[str]:
        out = [path]
        if hasattr(cmd, "list_commands"):  # a group
            ctx = Context(cmd)
            for name in cmd.list_commands(ctx):
                out += walk(cmd.get_command(ctx, name), f"{path} {name}".strip())
        return out

    return walk(get_command(app), "")


def examples(path: str) -> list[str]:
    """The 'Example: vlm ...' lines of a command's --help, rendered wide enough not to wrap."""
    result = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "1000"}, terminal_width=1000)
    assert result.exit_code == 0, result.output
    return [line.strip()[len("Example: "):] for line in result.stdout.splitlines()
            if line.strip().startswith("Example: ")]


@pytest.fixture
def workspace(tmp_path, monkeypatch, vitb32_weights):
    import timm
    from safetensors.torch import save_file

    from vlm.training import TrainConfig, train

    data = tmp_path / "shared" / "data" / "medmnist"
    data.mkdir(parents=True)
    write_synthetic(data, "breastmnist", n=(128, 16, 16))  # the medmnist recipe's batch of 128 fits
    write_synthetic(data, "retinamnist", n=(16, 8, 8))
    write_synthetic(data, "vesselmnist3d", n=(8, 4, 4))  # K=4 shots per class, the batch of 8
    weights = tmp_path / "shared" / "weights"
    weights.mkdir()
    save_file(timm.create_model("tf_efficientnet_lite0").state_dict(), weights / "tf_efficientnet_lite0.safetensors")
    repo = tmp_path / "medvlm"
    repo.mkdir()
    shutil.copytree(REPO / "prompts", repo / "prompts")
    shutil.copytree(REPO / "experiments", repo / "experiments")
    shutil.copy(REPO / "prompts" / "breastmnist.yaml", repo / "mine.yaml")
    shutil.copy(vitb32_weights, repo / "vitb32.pt")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("VLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train("breastmnist", "small-cnn", config=TrainConfig(epochs=2, batch_size=16, n_bootstrap=0), data_root=data,
          runs_dir="runs", max_epochs_this_call=1)  # an interrupted run for `vlm train --resume`
    return repo


def test_every_group_and_command_has_an_example():
    paths = command_paths()
    assert sorted(paths) == sorted(ORDER)  # a new command needs its place (and an example) here
    assert all(examples(path) for path in paths), [path for path in paths if not examples(path)]


def test_prompts_help_lists_every_prompts_command_and_flags_show_no_value():
    text = runner.invoke(app, ["prompts", "--help"], env={"COLUMNS": "120"}, terminal_width=120).stdout
    assert all(f"│ {name} " in text for name in ("list", "show", "validate", "compare"))
    text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"}, terminal_width=120).stdout
    assert "<bool>" not in text and "--dry-run  " in text and "--json  " in text
    compare = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}, terminal_width=200).stdout
    assert "Random seed of the paired bootstrap" in compare and "training" not in compare


def test_every_example_runs_as_written(workspace):
    ran: dict[str, float] = {}
    for path in ORDER:
        for example in dict.fromkeys(examples(path)):
            words = shlex.split(example)
            assert words[0] == "vlm", example
            args = [match for word in words[1:] for match in (sorted(glob.glob(word)) or [word])]
            start = time.perf_counter()
            result = runner.invoke(app, args, env={"COLUMNS": "120"})
            assert result.exit_code == 0, f"{example}\n{result.output}"
            ran[example] = time.perf_counter() - start
    print("\n".join(f"{s:6.1f} s  {e}" for e, s in ran.items()))  # what each example costs (pytest -s)
    assert len(ran) >= len(ORDER)
    assert (workspace / "scores.npy").is_file() and list(Path("runs").glob("*_breastmnist_train_small-cnn/record.json"))
    for figure in ("roc.png", "cm.svg", "reliability.png", "robustness.png", "styles.png", "montage.png",
                   "vessel.png", "emb.png", "fewshot.png"):
        assert (workspace / figure).stat().st_size > 0, figure
