"""Prompt-set files: the 18 shipped files, validation errors, expansion, and `vlm prompts` (CliRunner)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import medmnist
import pytest
from typer.testing import CliRunner

from cli import app
from vlm.errors import VlmError
from vlm.prompts import PromptSet, load_prompt_set, shipped_prompt_files, validate_prompt_set

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def error_of(path: Path, dataset: str | None = None) -> str:
    with pytest.raises(VlmError) as info:
        validate_prompt_set(path, dataset)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    return msg


GOOD = """
    dataset: pneumoniamnist
    classes: [normal, pneumonia]
    styles:
      clip:
        templates: ["a chest X-ray of {label}."]
"""


# ----------------------------------------------------------------------------- shipped files
def test_exactly_one_shipped_file_per_info_flag():
    files = shipped_prompt_files()
    assert [p.stem for p in files] == list(medmnist.INFO)
    assert all(p.parent == REPO / "prompts" for p in files)


@pytest.mark.parametrize("flag", list(medmnist.INFO))
def test_shipped_file_validates_against_its_dataset(flag):
    ps = load_prompt_set(flag)
    assert isinstance(ps, PromptSet)
    assert ps.dataset == flag and ps.path.name == f"{flag}.yaml"
    labels = medmnist.INFO[flag]["label"]
    assert ps.classes == [labels[str(i)] for i in range(len(labels))]
    assert {"clip", "descriptive"} <= set(ps.style_names)
    assert ps.path.read_text().startswith("#")  # the top-of-file comment naming sources and intent
    for style in ps.style_names:
        if ps.task.kind == "multi-label":
            pairs = ps.expand_pairs(style)
            assert len(pairs) == len(ps.classes) and all(pos and neg for pos, neg in pairs)
        else:
            per_class = ps.expand(style)
            assert len(per_class) == len(ps.classes) and all(per_class)
            assert all("{" not in p for prompts in per_class for p in prompts)
            # distinct classes must not share their prompt ensemble
            assert len({tuple(p) for p in per_class}) == len(per_class)


def test_pneumoniamnist_has_exactly_the_four_study_styles():
    ps = load_prompt_set("pneumoniamnist")
    assert ps.style_names == ["simple", "descriptive", "clip", "clip-medical"]
    normal, pneumonia = ps.expand("simple")
    assert "Is there pneumonia in this image?" in pneumonia and "Is this a normal chest X-ray?" in normal
    normal, pneumonia = ps.expand("descriptive")
    assert "This X-ray shows signs of pneumonia." in pneumonia and "This is a normal chest X-ray." in normal
    assert "a photo of a chest X-ray that shows signs of a disease." in ps.expand("clip")[1]
    assert "a photo that is infectious." in ps.expand("clip-medical")[1]


def test_pathmnist_descriptive_covers_nine_classes():
    ps = load_prompt_set("pathmnist")
    per_class = ps.expand("descriptive")
    assert len(per_class) == 9 and all(len(p) >= 1 for p in per_class)
    assert any("spindle" in p for p in per_class[ps.classes.index("smooth muscle")])
    assert any("goblet" in p for p in per_class[ps.classes.index("normal colon mucosa")])


def test_readable_names_for_awkward_labels():
    blood = load_prompt_set("bloodmnist")
    ig = blood.expand("clip")[3]
    assert not any("(" in p for p in ig) and any("myelocyte" in p for p in ig)
    chest = load_prompt_set("chestmnist")
    assert "pleural thickening" in chest.expand_pairs("simple")[chest.classes.index("pleural")][0]


# ----------------------------------------------------------------------------- expansion
def test_expand_fills_templates_names_synonyms_and_explicit_prompts(tmp_path):
    path = write(tmp_path, """
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        names: {normal: [healthy lungs, normal lungs]}
        styles:
          clip:
            templates: ["a chest X-ray of {label}.", "a photo of {label}."]
            synonyms: {pneumonia: lung infection}
            prompts:
              pneumonia: ["This X-ray shows signs of pneumonia."]
          own:
            names: {normal: clear lungs}
            templates: ["{label}"]
    """)
    ps = load_prompt_set(path)
    normal, pneumonia = ps.expand("clip")
    assert normal == ["a chest X-ray of healthy lungs.", "a chest X-ray of normal lungs.",
                      "a photo of healthy lungs.", "a photo of normal lungs."]  # 2 templates x 2 names
    assert len(pneumonia) == 2 * 2 + 1  # 2 templates x (class name + synonym) + 1 explicit prompt
    assert pneumonia[:2] == ["a chest X-ray of pneumonia.", "a chest X-ray of lung infection."]
    assert pneumonia[-1] == "This X-ray shows signs of pneumonia."
    assert ps.expand("own") == [["clear lungs"], ["pneumonia"]]  # style names replace the top-level ones
    assert ps.counts("clip") == [4, 5] and ps.n_prompts("clip") == 9
    assert ps.to_json("clip") == {"dataset": "pneumoniamnist", "classes": ["normal", "pneumonia"],
                                  "styles": {"clip": [normal, pneumonia]}}


def test_multi_label_gives_positive_negative_pairs():
    ps = load_prompt_set("chestmnist")
    pairs = ps.expand_pairs("clip")
    assert len(pairs) == 14
    pos, neg = pairs[ps.classes.index("cardiomegaly")]
    assert "a chest X-ray showing cardiomegaly." in pos and "a chest X-ray showing no cardiomegaly." in neg
    with pytest.raises(VlmError, match="expand_pairs"):
        ps.expand("clip")
    styles = ps.to_json()["styles"]
    assert styles["clip"][1] == {"positive": pos, "negative": neg}
    with pytest.raises(VlmError, match="not multi-label"):
        load_prompt_set("pneumoniamnist").expand_pairs("clip")


def test_resolve_styles():
    ps = load_prompt_set("pneumoniamnist")
    assert ps.resolve_styles("all") == ps.style_names
    assert ps.resolve_styles("clip") == ["clip"]
    assert ps.resolve_styles("clip, simple,clip") == ["clip", "simple"]
    assert ps.resolve_styles(["descriptive", "clip-medical,simple"]) == ["descriptive", "clip-medical", "simple"]
    with pytest.raises(VlmError, match="Available: simple, descriptive, clip, clip-medical") as info:
        ps.resolve_styles("clip,clipp")
    assert "'clipp'" in str(info.value)


def test_load_by_path_or_flag(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_prompt_set(str(path)).path == path
    assert load_prompt_set(path, dataset="pneumoniamnist").dataset == "pneumoniamnist"
    with pytest.raises(VlmError, match="Unknown dataset 'pneumonia'"):
        load_prompt_set("pneumonia")
    with pytest.raises(VlmError, match="no such prompt file"):
        load_prompt_set(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- validation errors
BAD = {
    "yaml syntax": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia
        styles: {}
    """, ["line ", "YAML syntax error"]),
    "duplicate key": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          clip: {templates: ["{label}"]}
          clip: {templates: ["a {label}"]}
    """, ["line 5", "duplicate key 'clip'"]),
    "unknown top-level key": (GOOD + "    sources: [x]\n", ["sources", "unknown top-level key"]),
    "unknown style key": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          clip: {template: ["{label}"]}
    """, ["styles.clip.template", "unknown style key 'template'", "did you mean 'templates'"]),
    "unknown dataset": (GOOD.replace("dataset: pneumoniamnist", "dataset: pneumoniamnst"),
                        ["dataset (line 1)", "Unknown dataset 'pneumoniamnst'"]),
    "classes missing/extra": (GOOD.replace("[normal, pneumonia]", "[Normal, pneumonia]"),
                              ["classes (line 2)", "missing 'normal'", "extra 'Normal' (did you mean 'normal'?)"]),
    "classes order": (GOOD.replace("[normal, pneumonia]", "[pneumonia, normal]"),
                      ["classes", "index mismatch 'pneumonia' at index 0 (INFO index 1)"]),
    "empty style": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          clip:
    """, ["styles.clip (line 4)", "empty style"]),
    "no templates or prompts": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          clip: {description: nothing here}
    """, ["styles.clip", "empty style"]),
    "template without label": (GOOD.replace("a chest X-ray of {label}.", "a chest X-ray."),
                               ["styles.clip.templates[0] (line 5)", "no {label} placeholder"]),
    "unknown placeholder": (GOOD.replace("{label}", "{label} of {organ}"),
                            ["styles.clip.templates[0]", "unknown placeholder {organ}"]),
    "class without prompts": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          descriptive:
            prompts:
              normal: ["This is a normal chest X-ray."]
    """, ["styles.descriptive.prompts", "class 'pneumonia' has no prompts"]),
    "prompts for unknown class": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          descriptive:
            prompts:
              normal: ["This is a normal chest X-ray."]
              pneumonia: ["This X-ray shows signs of pneumonia."]
              covid: ["This X-ray shows COVID-19."]
    """, ["styles.descriptive.prompts.covid (line 8)", "unknown class 'covid'"]),
    "names for unknown class": (GOOD + '    names: {"normal, benign": [x]}\n',
                                ["names['normal, benign'] (line 6)", "unknown class 'normal, benign'"]),
    "placeholder in explicit prompt": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          descriptive:
            prompts:
              normal: ["This is {label}."]
              pneumonia: ["This X-ray shows signs of pneumonia."]
    """, ["styles.descriptive.prompts.normal[0]", "explicit prompt"]),
    "positive in single-label": ("""
        dataset: pneumoniamnist
        classes: [normal, pneumonia]
        styles:
          clip:
            positive: {templates: ["{label}"]}
    """, ["styles.clip.positive", "is for multi-label datasets"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_names_file_and_field(tmp_path, case):
    text, expected = BAD[case]
    msg = error_of(write(tmp_path, text))
    for part in expected:
        assert part in msg, (case, msg)


def _chest(styles: str) -> str:
    labels = ", ".join(medmnist.INFO["chestmnist"]["label"][str(i)] for i in range(14))
    return f"dataset: chestmnist\nclasses: [{labels}]\nstyles:\n" + textwrap.indent(textwrap.dedent(styles), "  ")


@pytest.mark.parametrize("styles, expected", [
    ("""
     clip:
       positive: {templates: ["a chest X-ray showing {label}."]}
     """, ["styles.clip", "needs both positive: and negative:", "negative: is missing"]),
    ("""
     clip:
       negative: {templates: ["no {label}"]}
     """, ["styles.clip", "positive: is missing"]),
    ("""
     clip:
       templates: ["{label}"]
     """, ["styles.clip.templates", "multi-label: put templates and prompts under positive: and negative:"]),
    ("""
     clip:
       positive: {templates: ["{label}"]}
       negative:
     """, ["styles.clip.negative", "empty negative side"]),
    ("""
     descriptive:
       positive: {templates: ["{label}"]}
       negative: {prompts: {atelectasis: ["no atelectasis"]}}
     """, ["styles.descriptive.negative.prompts", "label 'cardiomegaly' has no negative prompts"]),
])
def test_bad_multi_label_file(tmp_path, styles, expected):
    msg = error_of(write(tmp_path, _chest(styles)))
    for part in expected:
        assert part in msg, msg


def test_file_for_another_dataset(tmp_path):
    msg = error_of(write(tmp_path, GOOD), dataset="breastmnist")
    assert "dataset" in msg and "'pneumoniamnist'" in msg and "'breastmnist'" in msg


def test_retinamnist_numeric_class_keys_need_no_quotes(tmp_path):
    path = write(tmp_path, """
        dataset: retinamnist
        classes: [0, 1, 2, 3, 4]
        styles:
          grade:
            prompts: {0: [no DR], 1: [mild DR], 2: [moderate DR], 3: [severe DR], 4: [proliferative DR]}
    """)
    assert load_prompt_set(path).expand("grade")[4] == ["proliferative DR"]


# ----------------------------------------------------------------------------- CLI
def test_cli_validate_all_shipped_files():
    result = runner.invoke(app, ["prompts", "validate", *map(str, shipped_prompt_files())])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK") == 18


def test_cli_validate_bad_file_exits_2_with_one_stderr_line(tmp_path):
    bad = write(tmp_path, GOOD.replace("a chest X-ray of {label}.", "a chest X-ray [label]."), "bad.yaml")
    good = write(tmp_path, GOOD, "good.yaml")
    result = runner.invoke(app, ["prompts", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(bad) in lines[0] and "styles.clip.templates[0]" in lines[0] and "[label]" in lines[0]
    assert "OK" in result.stdout and str(good) in result.stdout

    result = runner.invoke(app, ["prompts", "validate", str(good), str(bad), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False and [f["ok"] for f in data["files"]] == [True, False]
    assert "styles.clip.templates[0]" in data["files"][1]["error"]


def test_cli_show_json_is_to_json():
    result = runner.invoke(app, ["prompts", "show", "pneumoniamnist", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"dataset", "classes", "styles"}
    assert data["classes"] == ["normal", "pneumonia"]
    assert list(data["styles"]) == ["simple", "descriptive", "clip", "clip-medical"]
    assert all(len(per_class) == 2 and all(isinstance(p, str) for c in per_class for p in c)
               for per_class in data["styles"].values())
    assert data == load_prompt_set("pneumoniamnist").to_json()


def test_cli_show_style_file_and_errors(tmp_path):
    result = runner.invoke(app, ["prompts", "show", "chestmnist", "--style", "simple", "--json"])
    data = json.loads(result.stdout)
    assert list(data["styles"]) == ["simple"] and data["styles"]["simple"][0] == {
        "positive": ["atelectasis"], "negative": ["no atelectasis"]}
    own = write(tmp_path, GOOD)
    result = runner.invoke(app, ["prompts", "show", "pneumoniamnist", "--prompts", str(own)])
    assert result.exit_code == 0 and "a chest X-ray of pneumonia." in result.stdout
    result = runner.invoke(app, ["prompts", "show", "breastmnist", "--prompts", str(own)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and str(own) in result.stderr
    result = runner.invoke(app, ["prompts", "show", "pneumoniamnist", "--style", "fancy"])
    assert result.exit_code == 2 and "Unknown prompt style 'fancy'" in result.stderr


def test_cli_list_json():
    result = runner.invoke(app, ["prompts", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["prompt_sets"]
    assert [r["dataset"] for r in rows] == list(medmnist.INFO)
    pneu = rows[list(medmnist.INFO).index("pneumoniamnist")]
    ps = load_prompt_set("pneumoniamnist")
    assert {k: v["prompts"] for k, v in pneu["styles"].items()} == {s: ps.n_prompts(s) for s in ps.style_names}
    chest = rows[list(medmnist.INFO).index("chestmnist")]
    assert chest["styles"]["simple"]["per_class"][2] == [2, 2]
