"""Typed schemas (pydantic v2) of the files the tool reads: experiment files, run specs and records, prompt files
and recipe presets. Wrong types and unknown keys are one-line errors that keep `file:line`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from vlm.errors import VlmError
from vlm.experiments import load_experiment, options_schema
from vlm.results import RunRecord, parse_record
from vlm.schemas import RunSpec, validate
from fixtures.inputs import ONE_PROMPT
from test_experiments import GOOD

EXPERIMENT = GOOD  # test_experiments.py's file: 2 datasets, one train method (options on line 11)


@pytest.mark.parametrize("edit,needle", [
    (("epochs: 1,", "epochs: ten,"), ":11: methods[0].options.epochs: input should be a valid integer (got 'ten')"),
    (("epochs: 1,", "epochs: 1, lr: fast,"), ":11: methods[0].options.lr: expected a number, got the text 'fast'"),
    (("size: 28}", "size: big}"), ":5: datasets[1].size: input should be a valid integer (got 'big')"),
    (("epochs: 1,", "epochs: 1, weight_decay: -1,"), ":11: methods[0].options.weight_decay: input should be "
                                                     "greater than or equal to 0"),
    (("epochs: 1,", "epochs: 1, gamma: -2,"), ":11: methods[0].options.gamma: input should be greater"),
    (("seeds: [0, 1]", "seeds: [-3, 1]"), ":2: seeds[0]: input should be greater than or equal to 0"),
    (("seeds: [0, 1]", "seeds: [0]\nlaunch: {workers: 0}"), ":3: launch.workers: input should be greater"),
    (("epochs: 1,", "epochs: 1, optimizer: 3,"), ":11: methods[0].options.optimizer: input should be a valid "
                                                 "string (got 3)"),
    (("model: small-cnn", "model: small-cnn\n    kind: train"), ":10: YAML syntax error: duplicate key 'kind' (first given on line 8)"),
    (("name: cnn", "name: ''"), ":7: methods[0].name: string should have at least 1 character"),
])
def test_typed_experiment_errors_keep_file_and_line(tmp_path, edit, needle):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.replace(*edit))
    with pytest.raises(VlmError) as info:
        load_experiment(path)
    assert needle in str(info.value).replace(f"{path}: line ", f"{path}:").replace(", column 5: ", ": ")
    assert "\n" not in str(info.value)


def test_yaml_numbers_are_typed_once(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.replace("epochs: 1,", "epochs: 1, lr: 1e-3,"))  # YAML 1.1 reads 1e-3 as text
    (method,) = load_experiment(path).methods
    assert method.options == {"epochs": 1, "batch_size": 16, "n_bootstrap": 0, "lr": 0.001}


def test_zero_shot_methods_are_checked_when_the_file_is_loaded(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT + "  - {name: zs, kind: zero-shot, model: ViT-B-32, styles: clipp}\n")
    with pytest.raises(VlmError, match=r":12: Unknown prompt style 'clipp'"):
        load_experiment(path)
    path.write_text(EXPERIMENT + "  - {name: zs, kind: zero-shot, model: no-such-encoder}\n")
    with pytest.raises(VlmError, match=r":12: Unknown model 'no-such-encoder'"):
        load_experiment(path)


@pytest.mark.parametrize("args,needle", [
    (["run", "{tmp}"], "is a folder; pass the experiment file (YAML) itself"),
    (["run", "{tmp}/exp.yaml", "--dry-run"], "methods[0].options.epochs: input should be a valid integer"),
    (["run", "{tmp}/missing.yaml"], "no such experiment file"),
])
def test_vlm_run_errors_are_one_line(tmp_path, args, needle):
    (tmp_path / "exp.yaml").write_text(EXPERIMENT.replace("epochs: 1,", "epochs: ten,"))
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and needle in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_option_schemas_follow_the_library_types():
    train = options_schema("train")
    assert train.model_validate({"lr_milestones": [5, 7.5], "model_opts": {"head": "mean"}, "pretrained": True})
    for bad in ({"lr_milestones": [-1]}, {"pretrained": "yes"}, {"amp": 1}, {"epochz": 1}):
        with pytest.raises(Exception):
            train.model_validate(bad)
    finetune = options_schema("finetune")
    assert finetune.model_validate({"k": "auto"}) and finetune.model_validate({"k": 5})
    with pytest.raises(Exception):
        finetune.model_validate({"k": 0})


def test_run_spec_and_record_schemas():
    with pytest.raises(VlmError, match=r"spec.json: \(top level\): a finetune run needs its 'mode'"):
        validate(RunSpec, {"entry": "finetune", "flag": "b", "model": "m", "size": 28, "config": {}}, "spec.json")
    with pytest.raises(VlmError, match="spec.json: unknown key 'colour'"):
        validate(RunSpec, {"entry": "train", "flag": "b", "model": "m", "size": 28, "config": {}, "colour": 1},
                 "spec.json")
    good = RunRecord("train", "m", "breastmnist", 28, "test", {"auc": 0.9, "acc": 0.8}).to_dict()
    assert parse_record(json.loads(json.dumps(good)), "r.json").schema_version == 1
    legacy = {k: v for k, v in good.items() if k != "schema_version"}  # written before versions existed
    assert parse_record(legacy, "r.json").dataset == "breastmnist"
    for bad, needle in (({**good, "metrics": {"auc": "high"}}, "metrics.auc: input should be a valid number"),
                        ({**good, "split": "dev"}, "split: input should be 'train', 'val' or 'test'"),
                        ({**good, "seed": 1.5}, "seed: input should be a valid integer"),
                        ({**good, "schema_version": 2}, "schema version 2")):
        with pytest.raises(VlmError, match=needle):
            parse_record(bad, "r.json")


@pytest.mark.parametrize("prompt", ["5", "true", "3.5", "[x]", "null"])
def test_prompt_files_refuse_prompts_that_are_not_text(tmp_path, prompt):
    from vlm.prompts import validate_prompt_set

    path = tmp_path / "p.yaml"
    path.write_text(ONE_PROMPT.format(prompt=prompt))
    with pytest.raises(VlmError, match=r"styles.plain.prompts.malignant\[0\] \(line 6\): must be a non-empty string"):
        validate_prompt_set(path)


def test_recipe_presets_follow_the_train_options_schema():
    from vlm.training.recipes import RECIPES, Recipe, register_recipe

    train = options_schema("train")
    for recipe in RECIPES.values():
        train.model_validate(dict(recipe.options))
        train.model_validate(dict(recipe.options_3d))
    with pytest.raises(VlmError, match="--gamma must be a finite number of at least 0"):
        register_recipe(Recipe("bad", "", "", {"gamma": -1}))
    with pytest.raises(VlmError, match="sets colour, which are not recipe options"):
        register_recipe(Recipe("bad", "", "", {"colour": "red"}))
    assert "bad" not in RECIPES
