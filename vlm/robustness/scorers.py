"""A recorded method rebuilt as a function from a split to logits, to score corrupted test splits with it.

- `train` runs: the transfer model from spec.json (model, size, options, config), best.safetensors loaded,
  MedMNIST preprocessing and the eval-time shape transform, as `vlm.training.fit` scored test;
- `full` / `zs-init` fine-tuning runs: the encoder's image tower and linear head from spec.json, then
  best.safetensors;
- `linear-probe` runs (zs-init with zs_then=linear-probe too): the frozen encoder named in the record and the
  probe saved beside it (probe.safetensors); embeddings are computed afresh (no embedding cache);
- `zero-shot` runs: the encoder, prompt file, style and ensembling named in the record (logit_scale * cosine).

kNN runs are refused (their scores are vote fractions of the training split, not a model of one image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vlm.data import Split
from vlm.errors import VlmError
from vlm.results import RunRecord
from vlm.runtime import resolve_device
from vlm.tasks import TaskSpec, get_task


@dataclass
class Scorer:
    """A method that maps a split to logits (N, K); `temperature` is the run's calibration, if any."""

    task: TaskSpec
    logits: Callable[[Split], torch.Tensor]
    kind: str  # train, finetune, linear-probe or zero-shot
    temperature: float | None = None


def _model_scorer(model: torch.nn.Module, preprocess: Any, config: Any, task: TaskSpec, device: torch.device,
                  batch_size: int) -> Callable[[Split], torch.Tensor]:
    from vlm.training.pipeline import InputPipeline, predict_logits

    model.to(device).eval()
    pipeline = InputPipeline(preprocess, is_3d=task.is_3d, config=config)
    return lambda split: predict_logits(model, split.to(device), pipeline, batch_size=batch_size, device=device,
                                        amp=config.amp)


def _trained(record: RunRecord, device: torch.device, batch_size: int) -> Callable[[Split], torch.Tensor]:
    """train / full / zs-init runs: the model from spec.json with best.safetensors loaded."""
    from vlm.training import BEST_FILE, TrainConfig, read_spec
    from vlm.training.checkpoint import load_best

    folder = Path(record.path)
    spec = read_spec(folder)
    if not (folder / BEST_FILE).is_file():
        raise VlmError(f"Run {record.run_id} has no {BEST_FILE} to rebuild its model from.")
    task = get_task(spec["flag"])
    config = TrainConfig.from_dict(spec["config"]).resolved(task)
    if spec["entry"] == "train":
        from vlm.training.transfer import build_transfer_model

        opts = dict(spec.get("model_opts") or {})
        in_chans = int(opts.pop("in_chans", 3))
        built = build_transfer_model(spec["model"], task, config, size=spec["size"], in_chans=in_chans,
                                     pretrained=False, weights=None, model_opts=opts)
        model, preprocess = built.model, built.preprocess
    else:
        from vlm.finetune import TowerClassifier

        enc = _encoder(spec["model"], spec.get("weights"), device, config.image_size)
        model = TowerClassifier(enc.image_tower(), enc.embed_dim, task.num_classes, normalize=spec["mode"] == "zs-init")
        preprocess = enc.preprocess
    load_best(model, folder / BEST_FILE)
    return _model_scorer(model, preprocess, config, task, device, batch_size)


def _encoder(name: str, weights: str | None, device: torch.device, size: int | None) -> Any:
    from vlm.encoders import load_encoder

    enc = load_encoder(name, weights, device)
    if size is not None and size != enc.preprocess.size:
        enc.preprocess = enc.preprocess.with_size(size)
    return enc


def _embedder(record: RunRecord, encoder: Any, device: torch.device, batch_size: int) -> tuple[Any, Callable]:
    """The record's encoder (or the one given) at the recorded input size, and split -> its embeddings."""
    from vlm.embeddings import encode_split

    config = record.config
    size = (record.preprocessing or {}).get("size")
    enc = encoder if encoder is not None else _encoder(config["model_name"], config.get("weights"), device, size)
    policy = {"slice_axis": config.get("slice_axis", 0), "pool": config.get("pool", "mean")}
    return enc, lambda split: encode_split(enc, split, batch_size=batch_size, **policy)


def _probe(record: RunRecord, encoder: Any, device: torch.device, batch_size: int) -> Callable[[Split], torch.Tensor]:
    from vlm.finetune.probe import PROBE_FILE, load_probe, probe_logits

    path = Path(record.path) / PROBE_FILE
    if not path.is_file():
        raise VlmError(f"Run {record.run_id} has no {PROBE_FILE} (it was recorded before probes were saved); "
                       f"run the linear probe again.")
    probe = load_probe(path)
    _, embed = _embedder(record, encoder, device, batch_size)
    return lambda split: probe_logits(embed(split), probe)


def _zero_shot(record: RunRecord, encoder: Any, device: torch.device,
               batch_size: int) -> Callable[[Split], torch.Tensor]:
    from vlm.prompts import load_prompt_set
    from vlm.zeroshot import text_classifier, zero_shot_logits

    if "weights" not in record.config and encoder is None:
        raise VlmError(f"Zero-shot run {record.run_id} does not record its encoder weights (an older record); "
                       f"run `vlm zero-shot` again.")
    enc, embed = _embedder(record, encoder, device, batch_size)
    task = get_task(record.dataset)
    prompt_set = load_prompt_set(Path(record.config["prompts_file"]), dataset=task.flag)
    classifier = text_classifier(enc, prompt_set, record.config["style"], record.config.get("ensemble"))
    return lambda split: zero_shot_logits(embed(split), classifier, enc.logit_scale, task.kind)


def run_scorer(record: RunRecord, *, device: str = "auto", batch_size: int = 256, encoder: Any = None) -> Scorer:
    """The method of a recorded run as a `Scorer` (see the module docstring for what each kind rebuilds).

    `encoder` replaces the encoder a linear-probe or zero-shot record names (an already loaded one).
    """
    dev = resolve_device(device)
    calibrated = record.calibrated or {}
    method = record.method
    if method == "knn":
        raise VlmError(f"Run {record.run_id} is a kNN run: its scores are vote fractions over the training split, "
                       f"so there is no single model to score corrupted images with.")
    if method == "zero-shot":
        kind, logits = "zero-shot", _zero_shot(record, encoder, dev, batch_size)
    elif method == "linear-probe" or (method == "zs-init" and record.config.get("zs_then") == "linear-probe"):
        kind, logits = "linear-probe", _probe(record, encoder, dev, batch_size)
    elif (Path(record.path) / "spec.json").is_file():
        kind, logits = method, _trained(record, dev, batch_size)
    else:
        raise VlmError(f"Run {record.run_id} ({method}) is neither a trained run folder (spec.json + best.safetensors) "
                       f"nor a linear-probe or zero-shot record: there is no model to rebuild.")
    return Scorer(task=get_task(record.dataset), logits=logits, kind=kind, temperature=calibrated.get("temperature"))

