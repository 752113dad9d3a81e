"""The MedCLIP backend: a random tiny MedCLIP saved in the released layout, loaded offline and strictly;
its preprocessing against a PIL re-implementation of `MedCLIPFeatureExtractor`; zero-shot scores
against a hand computation of `PromptClassifier` and against the `medclip` package's own
`PromptClassifier` (run on the CPU, with transformers 5's name for its feature extractor); the two prompt-ensembling rules; the folder errors; and
`vlm zero-shot pneumoniamnist --model medclip-vit:FOLDER --style all` end to end.

The released checkpoints were saved with transformers 4.x: `write_tiny_medclip` writes that layout
(Swin's 4.x key names, the `relative_position_index` and `position_ids` buffers) from a model built
here, so that the loader's key mapping is exercised; transformers' own Swin conversion is the check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vlm.encoders import list_aliases, load_encoder, resolve_name
from vlm.encoders.medclip import IMG_MEAN, IMG_STD, MedCLIPEncoder
from vlm.errors import VlmError
from vlm.prompts import load_prompt_set
from vlm.zeroshot import text_classifier, zero_shot_scores

from conftest import SHARED_DATA, needs_shared_data, write_synthetic

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "this", "is", "there", "in", "an",
         "chest", "x", "-", "ray", "lung", "lungs", "normal", "healthy", "pneumonia", "infection", "signs", "?", "."]
PROJ = 8
# transformers 4.x Swin names (what the released checkpoints hold) <- current names
SWIN_4X = (("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
           ("attention.v_proj", "attention.self.value"),
           ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
           ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_configs(folder: Path) -> None:
    """FOLDER/text (3-layer BERT config + vocab.txt) and FOLDER/vision (2-stage Swin config, 224 px)."""
    from transformers import BertConfig, SwinConfig

    (folder / "text").mkdir(parents=True, exist_ok=True)
    (folder / "text" / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=128).save_pretrained(folder / "text")
    SwinConfig(image_size=224, patch_size=16, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
               window_size=7).save_pretrained(folder / "vision")


def released_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict as transformers 4.x saved MedCLIP: Swin's old names and its persistent buffers."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision_model.model."):
            for new, old in SWIN_4X:
                key = key.replace(new, old)
        out[key] = value.clone()
    for name, buf in model.named_buffers():
        if name.endswith("relative_position_bias.relative_position_index"):
            n = int(buf.numel() ** 0.5)
            out[name.replace("attention.relative_position_bias.", "attention.self.")] = buf.view(n, n).clone()
    out["text_model.model.embeddings.position_ids"] = torch.arange(128)[None]
    return out


def write_tiny_medclip(folder: Path, variant: str = "vit", seed: int = 0, logit_scale: float = 4.0) -> Path:
    """A random tiny MedCLIP in the released folder layout (pytorch_model.bin + text/ + vision/)."""
    from vlm.encoders.medclip import build_model

    tiny_configs(folder)
    if variant == "resnet":
        import shutil

        shutil.rmtree(folder / "vision")
    torch.manual_seed(seed)
    model, _ = build_model(variant, folder, PROJ)
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 0.5)  # transformers initialises them to 0: make the key mapping matter
    torch.save(released_layout(model) if variant == "vit" else model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def medclip_dir(tmp_path_factory) -> Path:
    return write_tiny_medclip(tmp_path_factory.mktemp("medclip") / "medclip-vit")


@pytest.fixture(scope="module")
def encoder(medclip_dir) -> MedCLIPEncoder:
    return load_encoder(f"medclip-vit:{medclip_dir}")


# ----------------------------------------------------------------------------- independent references
def feature_extractor(img) -> np.ndarray:
    """MedCLIPFeatureExtractor's steps on one PIL image, re-implemented with PIL (the package does not
    import with transformers 5): pad_img, CLIPFeatureExtractor resize (shorter edge, bicubic) and
    center_crop, normalize on to_numpy_array(rescale=True) -> (1, 224, 224) float32."""
    from PIL import Image

    x, y = img.size
    side = max(224, x, y)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(img, (int((side - x) / 2), int((side - y) / 2)))
    w, h = canvas.size
    short, long = (w, h) if w <= h else (h, w)
    if short != 224:
        new_short, new_long = 224, int(224 * long / short)
        canvas = canvas.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.BICUBIC)
    w, h = canvas.size
    top, left = int((h - 224 + 1) * 0.5), int((w - 224 + 1) * 0.5)
    canvas = canvas.crop((left, top, left + 224, top + 224))
    arr = np.array(canvas).astype(np.float32) * (1 / 255.0)
    return ((arr - np.float32(IMG_MEAN)) / np.float32(IMG_STD))[None]


def pil_pixels(images: np.ndarray) -> torch.Tensor:
    """(N, H, W[, 3]) uint8 -> (N, 1, 224, 224) through `feature_extractor`."""
    from PIL import Image

    return torch.from_numpy(np.stack([feature_extractor(Image.fromarray(img)) for img in images]))


def reference_model(folder: Path):
    """(swin, bert, vision projection, text projection, logit scale, tokenizer) straight from transformers:
    the vision tower through transformers' own 4.x -> current Swin conversion (`from_pretrained`)."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizer, SwinModel

    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    hf = folder.parent / f"{folder.name}-hf-swin"
    if not hf.is_dir():
        shutil.copytree(folder / "vision", hf)
        prefix = "vision_model.model."
        save_file({k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)},
                  hf / "model.safetensors")
    swin, info = SwinModel.from_pretrained(hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    bert = BertModel(BertConfig.from_pretrained(folder / "text"))
    prefix = "text_model.model."
    bert.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                          if k.startswith(prefix) and not k.endswith("position_ids")}, strict=True)
    tok = BertTokenizer.from_pretrained(folder / "text")
    tok.model_max_length = 77
    scale = float(state["logit_scale"].clamp(0, 4.6052).exp())
    return (swin.eval(), bert.eval(), state["vision_model.projection_head.weight"],
            state["text_model.projection_head.weight"], scale, tok)


def hand_scores(folder: Path, images: np.ndarray, groups: list[list[str]], ensemble: str) -> torch.Tensor:
    """PromptClassifier by hand: image/text embeddings -> prompt logits -> per-class mean of logits (or of the
    normalised text embeddings, renormalised, for 'embeddings') -> softmax over classes."""
    swin, bert, wv, wt, scale, tok = reference_model(folder)
    with torch.no_grad():
        pixels = pil_pixels(images).repeat(1, 3, 1, 1)
        img = F.normalize(swin(pixels).pooler_output @ wv.T, dim=-1)
        class_logits = []
        for prompts in groups:  # one tokenizer call per class, as medclip's process_class_prompts
            t = tok(prompts, truncation=True, padding=True, return_tensors="pt")
            hs = bert(input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True).hidden_states
            emb = F.normalize(torch.stack([hs[1], hs[2], hs[-1]]).permute(1, 0, 2, 3).mean(2).mean(1) @ wt.T, dim=-1)
            if ensemble == "logits":
                class_logits.append((scale * img @ emb.T).mean(dim=1))
            else:
                class_logits.append(scale * img @ F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(class_logits, dim=1).softmax(dim=-1)


def noise_images(n: int, size: int = 28, seed: int = 0, rgb: bool = False) -> np.ndarray:
    shape = (n, size, size, 3) if rgb else (n, size, size)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def as_batch(images: np.ndarray) -> torch.Tensor:
    """MedMNIST (N, H, W[, 3]) uint8 -> the (N, C, H, W) uint8 of a Split."""
    t = torch.from_numpy(images)
    return t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- names and loading
def test_aliases_and_names_resolve(medclip_dir):
    names = {row["name"]: row for row in list_aliases()}
    assert names["medclip-vit"]["backend"] == names["medclip-resnet"]["backend"] == "medclip"
    assert resolve_name("medclip-vit").target == "vit" and resolve_name("medclip-resnet").target == "resnet"
    assert resolve_name(f"medclip-vit:{medclip_dir}").target == f"vit:{medclip_dir}"
    assert resolve_name(f"medclip-resnet:{medclip_dir}").target == f"resnet:{medclip_dir}"
    assert resolve_name(f"medclip:{medclip_dir}").target == str(medclip_dir)
    assert resolve_name(str(medclip_dir)).backend == "medclip"
    for enc in (load_encoder("medclip-vit", weights=str(medclip_dir)), load_encoder(str(medclip_dir)),
                load_encoder("medclip-vit", weights=medclip_dir / "pytorch_model.bin")):
        assert enc.id == "medclip:vit" and enc.backend == "medclip" and enc.prompt_ensemble == "logits"


def test_released_layout_loads_strictly(medclip_dir, encoder):
    state = torch.load(medclip_dir / "pytorch_model.bin", weights_only=True)
    assert "text_model.model.embeddings.position_ids" in state
    assert any(k.endswith("attention.self.query.weight") for k in state)  # transformers 4.x Swin names
    swin, bert, wv, wt, scale, _ = reference_model(medclip_dir)
    model = encoder.model
    assert all(torch.equal(v, model.vision_model.model.state_dict()[k]) for k, v in swin.state_dict().items())
    assert all(torch.equal(v, model.text_model.model.state_dict()[k]) for k, v in bert.state_dict().items())
    assert torch.equal(model.vision_model.projection_head.weight, wv)
    assert torch.equal(model.text_model.projection_head.weight, wt)
    assert encoder.logit_scale == pytest.approx(scale) == pytest.approx(np.exp(4.0))
    assert encoder.embed_dim == PROJ and encoder.weights_id.startswith("sha256:")
    assert encoder.image_tower() is model.vision_model


@pytest.mark.parametrize("change, match", [
    ("extra", r"1 unexpected key\(s\), e.g. vision_model.extra"),
    ("missing", r"1 missing key\(s\), e.g. text_model.projection_head.weight"),
    ("index", r"relative_position_index differs"),
])
def test_a_checkpoint_that_does_not_fit_names_the_keys(medclip_dir, tmp_path, change, match):
    folder = tmp_path / "bad"
    shutil.copytree(medclip_dir, folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    if change == "extra":
        state["vision_model.extra"] = torch.zeros(1)
    elif change == "missing":
        del state["text_model.projection_head.weight"]
    else:
        key = next(k for k in state if k.endswith("relative_position_index"))
        state[key] = state[key].flip(0)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(VlmError, match=match):
        load_encoder(f"medclip-vit:{folder}")


@pytest.mark.parametrize("remove", ["pytorch_model.bin", "vision/config.json", "text/vocab.txt"])
def test_a_missing_file_is_named_in_one_line(medclip_dir, tmp_path, remove):
    folder = tmp_path / "partial"
    shutil.copytree(medclip_dir, folder)
    (folder / remove).unlink()
    with pytest.raises(VlmError) as exc:
        load_encoder(f"medclip-vit:{folder}")
    message = str(exc.value)
    assert "\n" not in message and f"Missing {folder / remove}" in message
    for name in ("FOLDER/pytorch_model.bin", "FOLDER/text/config.json and vocab.txt", "FOLDER/vision/config.json",
                 "emilyalsentzer/Bio_ClinicalBERT", "microsoft/swin-tiny-patch4-window7-224", "medclip-vit:FOLDER"):
        assert name in message


def test_no_folder_says_which_file_goes_where():
    with pytest.raises(VlmError) as exc:
        load_encoder("medclip-resnet")
    message = str(exc.value)
    assert message.startswith("No MedCLIP folder given") and "\n" not in message
    assert "FOLDER/pytorch_model.bin" in message and "medclip_resnet_weight.txt" in message
    assert "vision/config.json" not in message  # the ResNet variant needs no Swin config


# ----------------------------------------------------------------------------- preprocessing
@needs_shared_data
def test_preprocess_equals_medclip_feature_extractor_on_breastmnist(encoder):
    images = np.load(SHARED_DATA / "breastmnist.npz")["test_images"]  # (156, 28, 28) uint8
    ours = encoder.preprocess(as_batch(images))
    ref = pil_pixels(images)
    assert ours.shape == (len(images), 3, 224, 224) and torch.equal(ours[:, :1], ours[:, 1:2])
    assert torch.allclose(ours[:, :1], ref, atol=1e-6, rtol=0)
    black = torch.tensor((0 - IMG_MEAN) / IMG_STD)
    assert torch.allclose(ours[:, :, :98], black) and torch.allclose(ours[:, :, 126:], black)  # padded, not enlarged


PACKAGE_REFERENCE = Path(__file__).parent / "fixtures" / "data" / "medclip_processor_reference.npz"


@needs_shared_data
def test_preprocess_equals_the_medclip_package_processor_output(encoder):
    """Against the `medclip` package's own MedCLIPFeatureExtractor, run under transformers 4.23 by
    fixtures/make_medclip_processor_reference.py (the package's processor does not run under transformers 5)."""
    ref = np.load(PACKAGE_REFERENCE)
    assert str(ref["transformers"]) == "4.23.1" and str(ref["medclip"]) == "0.0.3"
    real = np.load(SHARED_DATA / "breastmnist.npz")["test_images"][:len(ref["breastmnist_test"])]
    rng = np.random.default_rng(1)
    large = [rng.integers(0, 256, size=tuple(shape), dtype=np.uint8) for shape in ref["large_shapes"]]
    for images, expected in ((real, ref["breastmnist_test"]), (large, ref["large"])):
        ours = torch.cat([encoder.preprocess(as_batch(img[None])) for img in images])[:, :1]
        assert ours.shape == expected.shape == (len(images), 1, 224, 224)
        grey_levels = (ours - torch.from_numpy(expected)).abs().max().item() * IMG_STD * 255
        assert grey_levels < 1e-3, grey_levels  # bit-exact up to float32 rounding


@pytest.mark.parametrize("shape, rgb", [((28, 28), True), ((256, 256), False), ((300, 240), False),
                                        ((230, 300), True)])
def test_preprocess_rgb_and_large_images_like_pil(encoder, shape, rgb):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, *shape) + ((3,) if rgb else ()), dtype=np.uint8)
    ours = encoder.preprocess(as_batch(images))
    assert torch.allclose(ours[:, :1], pil_pixels(images), atol=1e-6, rtol=0)  # luma and PIL bicubic, bit-exact


# ----------------------------------------------------------------------------- zero-shot scores
@pytest.mark.parametrize("ensemble", ["logits", "embeddings"])
def test_zero_shot_scores_equal_the_hand_computation(medclip_dir, encoder, ensemble):
    ps = load_prompt_set("pneumoniamnist")
    assert {"simple", "descriptive", "clip", "clip-medical"} <= set(ps.style_names)
    images = noise_images(6)
    img = F.normalize(encoder.encode_images(encoder.preprocess(as_batch(images))), dim=-1)
    for style in ps.style_names:
        ours = zero_shot_scores(img, text_classifier(encoder, ps, style, ensemble), encoder.logit_scale, "binary")
        assert torch.allclose(ours, hand_scores(medclip_dir, images, ps.expand(style), ensemble), atol=1e-5)


def test_logits_and_embeddings_ensembling_differ_and_follow_their_definitions(encoder):
    ps = load_prompt_set("pneumoniamnist")
    img = F.normalize(encoder.encode_images(encoder.preprocess(as_batch(noise_images(8, seed=2)))), dim=-1)
    s = encoder.logit_scale
    groups = ps.expand("clip-medical")
    texts = [F.normalize(encoder.encode_texts(g), dim=-1) for g in groups]
    by_logits = torch.stack([(s * img @ t.T).mean(dim=1) for t in texts], dim=1).softmax(dim=-1)
    by_embeddings = torch.stack([s * img @ F.normalize(t.mean(dim=0), dim=-1) for t in texts], dim=1).softmax(dim=-1)
    logits = zero_shot_scores(img, text_classifier(encoder, ps, "clip-medical", "logits"), s, "binary")
    embeddings = zero_shot_scores(img, text_classifier(encoder, ps, "clip-medical", "embeddings"), s, "binary")
    default = zero_shot_scores(img, text_classifier(encoder, ps, "clip-medical"), s, "binary")
    assert torch.allclose(logits, by_logits, atol=1e-6) and torch.allclose(embeddings, by_embeddings, atol=1e-6)
    assert torch.equal(default, logits)  # MedCLIP's own rule is the default
    assert (logits - embeddings).abs().max() > 1e-4  # well above the 1e-6 of the definitions
    with pytest.raises(VlmError, match="Unknown prompt ensembling 'max'"):
        text_classifier(encoder, ps, "clip", "max")


def package_scores(medclip, folder: Path, encoder: MedCLIPEncoder, ps, style: str, pixels: torch.Tensor,
                   monkeypatch) -> torch.Tensor:
    """`medclip.PromptClassifier(ensemble=True)` on `encoder`'s weights: its MedCLIPModel built from tiny
    from_pretrained folders (its projection sizes are hard-coded: replaced by the tiny ones), the prompts
    tokenised by its `process_class_prompts`; softmax over its class logits."""
    text_dir, vision_dir = folder.parent / "pkg-text", folder.parent / "pkg-vision"
    encoder.model.text_model.model.save_pretrained(text_dir)
    encoder.tokenizer.save_pretrained(text_dir)
    encoder.model.vision_model.model.save_pretrained(vision_dir)
    mm = medclip.modeling_medclip
    monkeypatch.setattr(medclip.constants, "BERT_TYPE", str(text_dir))
    monkeypatch.setattr(medclip.constants, "VIT_TYPE", str(vision_dir))
    monkeypatch.setattr(mm.MedCLIPTextModel.__init__, "__defaults__", (str(text_dir), 512, False))
    ref = mm.MedCLIPModel(vision_cls=mm.MedCLIPVisionModelViT)
    ref.vision_model.projection_head = torch.nn.Linear(16, PROJ, bias=False)
    ref.text_model.projection_head = torch.nn.Linear(16, PROJ, bias=False)
    ref.load_state_dict(encoder.model.state_dict(), strict=True)
    ref = ref.cuda().eval()
    inputs = medclip.prompts.process_class_prompts(dict(zip(ps.classes, ps.expand(style))))
    with torch.no_grad():
        logits = medclip.PromptClassifier(ref, ensemble=True)(pixel_values=pixels, prompt_inputs=inputs)["logits"]
    return logits.float().softmax(dim=-1).cpu()


def import_medclip(monkeypatch):
    """The `medclip` package (0.0.3), importable with transformers 5 and without CUDA: its dataset module
    imports `CLIPFeatureExtractor` (renamed `CLIPImageProcessor`), and its classifiers call `.cuda()` on
    every input (a no-op here when there is no GPU). Skips when the package is not installed."""
    import sys

    import transformers

    pytest.importorskip("nltk", reason="medclip imports nltk")
    processor = transformers.CLIPImageProcessor  # may replace the lazy module in sys.modules: patch that one
    monkeypatch.setattr(sys.modules["transformers"], "CLIPFeatureExtractor", processor, raising=False)
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
        monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *args, **kwargs: self)
    return pytest.importorskip("medclip", reason="medclip (installed by .ci/run with --no-deps) not installed")


def test_zero_shot_scores_equal_the_medclip_package(medclip_dir, encoder, monkeypatch):
    medclip = import_medclip(monkeypatch)
    ps = load_prompt_set("pneumoniamnist")
    pixels = encoder.preprocess(as_batch(noise_images(5)))
    img = F.normalize(encoder.encode_images(pixels), dim=-1)
    for style in ps.style_names:
        ours = zero_shot_scores(img, text_classifier(encoder, ps, style), encoder.logit_scale, "binary")
        ref = package_scores(medclip, medclip_dir, encoder, ps, style, pixels.cuda(), monkeypatch)
        assert torch.allclose(ours, ref, atol=1e-5), (style, (ours - ref).abs().max())


# ----------------------------------------------------------------------------- the ResNet variant
@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory) -> Path:
    return write_tiny_medclip(tmp_path_factory.mktemp("medclip") / "medclip-resnet", variant="resnet")


def test_resnet_variant_loads_and_is_told_apart(resnet_dir, medclip_dir):
    enc = load_encoder(f"medclip:{resnet_dir}")
    assert enc.id == "medclip:resnet" and enc.embed_dim == PROJ
    assert enc.encode_images(enc.preprocess(as_batch(noise_images(2)))).shape == (2, PROJ)
    with pytest.raises(VlmError, match="is a MedCLIP-ResNet checkpoint, not MedCLIP-ViT"):
        load_encoder(f"medclip-vit:{resnet_dir}")
    with pytest.raises(VlmError, match="is a MedCLIP-ViT checkpoint, not MedCLIP-ResNet"):
        load_encoder("medclip-resnet", weights=str(medclip_dir))


# ----------------------------------------------------------------------------- CLI and fine-tuning
def test_cli_zero_shot_all_styles_end_to_end(medclip_dir, tmp_path):
    from cli import app
    from vlm.results import load_run

    write_synthetic(tmp_path, "pneumoniamnist")
    base = ["zero-shot", "pneumoniamnist", "--model", f"medclip-vit:{medclip_dir}", "--style", "all", "--data-root",
            str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
            "--bootstrap", "20", "--device", "cpu"]
    result = CliRunner().invoke(app, base + ["--save-scores", str(tmp_path / "s.npy")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "logits ensembling" in result.output
    images = np.load(tmp_path / "pneumoniamnist.npz")["test_images"]
    ps = load_prompt_set("pneumoniamnist")
    for style in ("simple", "descriptive", "clip", "clip-medical"):
        saved = torch.from_numpy(np.load(tmp_path / f"s_{style}.npy"))
        assert torch.allclose(saved, hand_scores(medclip_dir, images, ps.expand(style), "logits"), atol=1e-5)
    runs = sorted((tmp_path / "runs").rglob("record.json"))
    assert len(runs) == 4
    record = load_run(runs[0].parent)
    assert record.config["ensemble"] == "logits" and "MedCLIP PromptClassifier" in record.score_convention
    assert record.preprocessing["id"].startswith("medclip:pad-square@224")
    again = CliRunner().invoke(app, base + ["--ensemble", "embeddings", "--style", "clip", "--json"])
    assert again.exit_code == 0, again.output
    assert '"ensemble": "embeddings"' in again.output and '"images_encoded": 0' in again.output
    ranked = CliRunner().invoke(app, ["prompts", "compare", "pneumoniamnist", "--model", f"medclip-vit:{medclip_dir}",
                                      "--ensemble", "logits", "--data-root", str(tmp_path), "--cache-dir",
                                      str(tmp_path / "cache"), "--bootstrap", "20", "--device", "cpu", "--json"])
    assert ranked.exit_code == 0, ranked.output
    assert ranked.output.count('"ensemble": "logits"') == 4
    bad = CliRunner().invoke(app, base + ["--ensemble", "max"])
    assert bad.exit_code == 2 and "Unknown prompt ensembling 'max'" in bad.output


def test_finetune_modes_run_with_medclip(medclip_dir, encoder, tmp_path):
    from vlm.finetune import TowerClassifier, finetune, finetune_config, zero_shot_head
    from vlm.tasks import get_task

    task = get_task("pneumoniamnist")
    w, style = zero_shot_head(encoder, task)
    model = TowerClassifier(encoder.image_tower(), encoder.embed_dim, task.num_classes, normalize=True)
    x = encoder.preprocess(as_batch(noise_images(4, seed=3)))
    ps = load_prompt_set("pneumoniamnist")
    with torch.no_grad():
        model.head.weight.copy_(w)
        model.head.bias.zero_()
        zs = zero_shot_scores(F.normalize(encoder.encode_images(x), dim=-1), text_classifier(encoder, ps, style),
                              encoder.logit_scale, task.kind)
        assert torch.allclose(model(x).softmax(dim=1), zs, atol=1e-5)  # zs-init starts at MedCLIP's zero-shot
    write_synthetic(tmp_path, "pneumoniamnist", n=(24, 8, 8), separable=True)
    fast = dict(n_bootstrap=10, device="cpu", eval_batch_size=16)
    common = dict(data_root=tmp_path, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
    for mode in ("linear-probe", "knn"):
        result = finetune("pneumoniamnist", f"medclip-vit:{medclip_dir}", mode=mode, config=finetune_config(**fast),
                          **common)
        assert result.record.method == mode and result.record.model == "medclip:vit"
    for mode in ("full", "zs-init"):
        result = finetune("pneumoniamnist", f"medclip-vit:{medclip_dir}", mode=mode,
                          config=finetune_config(epochs=1, batch_size=8, **fast), **common)
        assert result.finished and result.record.method == mode
