"""CoOp: the prompt towers reproduce zero-shot at step 0 (open_clip CLIP, open_clip TextTransformer, BiomedCLIP's
HF BERT, transformers CLIP), and learned context beats zero-shot on the tiny trained CLIP with misleading names."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fixtures.tiny_models import (
    TINY_TEXT,
    TINY_VIT,
    TinyClipEncoder,
    tiny_open_clip_config,
    train_tiny_clip,
    write_quadrant_dataset,
    write_tiny_bert,
    write_tiny_hf_clip,
)
from vlm.encoders import load_encoder
from vlm.errors import VlmError
from vlm.fewshot import PromptTower, register_tower, run_fewshot
from vlm.fewshot.base import FewShotData
from vlm.fewshot.methods.coop import CoOpOptions, build_learner
from vlm.fewshot.run import zero_shot_classifier
from vlm.tasks import get_task
from vlm.zeroshot import run_zero_shot, zero_shot_scores


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_prompts(path: Path, flag: str, style: dict, names: dict | None = None) -> Path:
    style = dict(style, **({"names": names} if names else {}))
    path.write_text(json.dumps({"dataset": flag, "classes": list(get_task(flag).labels), "styles": {"s": style}}))
    return path


def _problem(enc, flag: str, prompts: Path) -> FewShotData:
    task = get_task(flag)
    return FewShotData(task, {}, {}, enc, 0, lambda: zero_shot_classifier(enc, task, prompts, "s"))


def _check_step0_is_zero_shot(enc, flag: str, tmp_path: Path, n_ctx: int = 4) -> None:
    """CoOp's context initialised from the template equals zero-shot with it; the prompts' ids are cut to their own
    tokens (open_clip's causal and HF towers trim the padding of the fixed context, transformers' pads to the longest)."""
    if get_task(flag).kind == "multi-label":
        style = {"positive": {"templates": ["a photo of a {label}."]},
                 "negative": {"templates": ["a photo of a no {label}."]}}
    else:
        style = {"templates": ["a photo of a {label}."]}
    data = _problem(enc, flag, write_prompts(tmp_path / f"{flag}.yaml", flag, style))
    learner = build_learner(data, CoOpOptions())
    with learner.tower.frozen(), torch.no_grad():
        w = learner()
    zs = data.head().weights
    assert learner.m == n_ctx and w.shape == zs.shape
    assert learner.tokens["ids"].shape[1] < enc.context_length
    assert torch.allclose(w, zs, atol=1e-5)
    img = F.normalize(torch.randn(16, enc.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    kind = get_task(flag).kind
    assert torch.allclose(zero_shot_scores(img, w, enc.logit_scale, kind), zero_shot_scores(img, zs, enc.logit_scale, kind),
                          atol=1e-5)
    assert all(p.grad is None for p in enc.model.parameters())


@pytest.fixture(scope="module")
def oc_tiny(tmp_path_factory) -> tuple[str, Path]:
    import open_clip

    folder = tmp_path_factory.mktemp("coop_configs")
    name = tiny_open_clip_config(folder, "medvlm-coop-tiny")
    custom = "medvlm-coop-custom"  # CustomTextCLIP with open_clip's TextTransformer
    (folder / f"{custom}.json").write_text(json.dumps({"embed_dim": 16, "custom_text": True, "vision_cfg": TINY_VIT,
                                                       "text_cfg": TINY_TEXT}))
    open_clip.add_model_config(folder)
    return name, custom


@pytest.mark.parametrize("flag", ["breastmnist", "chestmnist"])
def test_coop_step0_is_zero_shot_open_clip(oc_tiny, flag, tmp_path):
    import open_clip

    for arch in oc_tiny:
        torch.manual_seed(0)
        path = tmp_path / f"{arch}.pt"
        model = open_clip.create_model(arch, pretrained=None)
        assert hasattr(model, "text") == (arch == oc_tiny[1])
        torch.save(model.state_dict(), path)
        _check_step0_is_zero_shot(load_encoder(arch, weights=path), flag, tmp_path)


def test_coop_step0_is_zero_shot_transformers(tmp_path):
    enc = load_encoder(str(write_tiny_hf_clip(tmp_path / "hf-clip")))
    _check_step0_is_zero_shot(enc, "breastmnist", tmp_path, n_ctx=9)  # its byte-level vocabulary has no merges


def test_coop_step0_is_zero_shot_biomedclip_bert(tmp_path):
    import open_clip

    folder = tmp_path / "biomedclip-tiny"
    text_dir = write_tiny_bert(folder / "text")
    text_cfg = {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir), "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 16, "vision_cfg": TINY_VIT,
                                                                            "text_cfg": text_cfg}}))
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=16, vision_cfg=TINY_VIT, text_cfg=dict(text_cfg, hf_model_pretrained=False))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    enc = load_encoder(f"local-dir:{folder}")
    assert type(enc.model.text).__name__ == "HFTextEncoder"
    _check_step0_is_zero_shot(enc, "breastmnist", tmp_path)


# ----------------------------------------------------------------------------- learning on the tiny trained CLIP
class TinyTower(PromptTower):
    """The bag-of-words text tower of fixtures.tiny_models.TinyClip, driven from word embeddings."""

    lead = 0  # no start token

    def __init__(self, encoder: TinyClipEncoder) -> None:
        super().__init__(encoder, encoder.model)

    def tokenize(self, texts):
        rows = [[zlib.crc32(w.encode()) % self.module.vocab for w in t.lower().replace(".", " ").split()] for t in texts]
        ids = torch.full((len(rows), max(map(len, rows))), -1)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return {"ids": ids, "mask": (ids >= 0).float()[..., None]}

    def token_embeddings(self, tokens):
        with torch.no_grad():
            return self.module.words.weight[tokens["ids"].clamp_min(0)] * tokens["mask"]

    def encode(self, tokens, embeds):
        mask = tokens["mask"]
        return self.module.text_proj((embeds * mask).sum(dim=1) / mask.sum(dim=1))


register_tower("tiny", TinyTower)


@pytest.fixture(scope="module")
def tiny_clip() -> TinyClipEncoder:
    return TinyClipEncoder(train_tiny_clip(list(get_task("octmnist").labels)))


def test_tiny_tower_step0_is_the_encoder(tiny_clip, tmp_path):
    data = _problem(tiny_clip, "octmnist", write_prompts(tmp_path / "p.yaml", "octmnist",
                                                          {"templates": ["a photo of {label}."]}))
    learner = build_learner(data, CoOpOptions(ctx_init="a photo of"))
    with torch.no_grad():
        assert learner.m == 3 and torch.allclose(learner(), data.head().weights, atol=1e-6)


@pytest.mark.parametrize("names,csc", [("garbled", False), ("swapped", True)])
def test_coop_beats_zero_shot_when_class_names_mislead(tiny_clip, names, csc, tmp_path):
    """Garbled names (words the model never saw) leave zero-shot at chance; swapped names (each class named after
    the next) make it systematically wrong. 8 shots per class fix both: the shared context the garbled names,
    class-specific context (a shared one cannot permute classes in a bag-of-words tower) the swapped ones."""
    write_quadrant_dataset(tmp_path, n=(80, 40, 40))
    classes = list(get_task("octmnist").labels)
    wrong = {"garbled": ["zebra", "violin", "castle", "banana"], "swapped": classes[1:] + classes[:1]}[names]
    prompts = write_prompts(tmp_path / "wrong.yaml", "octmnist", {"templates": ["a photo of {label}."]},
                            {c: [w] for c, w in zip(classes, wrong)})
    kw = dict(data_root=tmp_path, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", prompts=prompts,
              n_bootstrap=0)
    zs = run_zero_shot("octmnist", "tiny", encoder=tiny_clip, record=False, **kw)[0]
    assert zs["acc"] <= 0.35 and zs["auc"] < 0.5
    options = {"coop": {"ctx_init": "a photo of", "csc": csc, "epochs": 30, "lr": 0.05, "optimizer": "adamw",
                        "batch_size": 8}}
    rec = run_fewshot("octmnist", "tiny", methods=["coop"], shots=[8], seeds=[0], style="s", encoder=tiny_clip,
                      options=options, **kw)[0]
    assert rec.config["n_train"] == 32 and rec.config["chosen"]["epoch"] > 0 and rec.config["chosen"]["n_ctx"] == 3
    assert rec.metrics["auc"] > 0.9 and rec.metrics["acc"] > 0.6, rec.metrics
    assert rec.metrics["auc"] > zs["auc"] + 0.4 and rec.metrics["acc"] > zs["acc"] + 0.3
    history = rec.config["selection"]["rows"]
    assert history[0]["epoch"] == 0 and len(history) == 31
    assert all(p.requires_grad for p in tiny_clip.model.parameters())  # flags restored after training


def test_coop_needs_a_prompt_tower(tmp_path):
    from fixtures.tiny_models import FakeEncoder

    from vlm.fewshot.towers import prompt_tower

    with pytest.raises(VlmError, match="not available for fake encoders"):
        prompt_tower(FakeEncoder())
