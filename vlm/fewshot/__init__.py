"""Few-shot classification on cached image embeddings (issue #15).

- `shots`: the K-shot protocol and its shots files (draw, write atomically, reuse, refuse mismatches);
- `base`: the method registry (`METHODS`, `register`), `FewShotData`, `MethodResult`, logit conventions;
- `methods`: linear-probe, knn, zs-init (vlm.finetune's code), tip-adapter, tip-adapter-f, clip-adapter, coop;
- `towers`: text towers driven from token embeddings (CoOp) for the open_clip and transformers backends;
- `run`: `run_fewshot(...) -> list[RunRecord]`, `curve_rows`, `curve_summary`, `size_note` (data and input size).

Every method selects its hyper-parameters / epoch on val AUC and scores the test split once.
"""

from vlm.fewshot import methods  # noqa: F401  (registers the methods)
from vlm.fewshot.base import METHODS, FewShotData, MethodResult, MethodSpec, get_method, register
from vlm.fewshot.run import (curve_rows, curve_summary, input_size, run_fewshot, run_method, size_note,
                            zero_shot_classifier)
from vlm.fewshot.shots import Shots, draw_indices, prepare_shots, read_shots
from vlm.fewshot.towers import TOWERS, PromptTower, prompt_tower, register_tower

__all__ = ["METHODS", "FewShotData", "MethodResult", "MethodSpec", "PromptTower", "Shots", "TOWERS", "curve_rows",
           "curve_summary", "draw_indices", "get_method", "input_size", "prepare_shots", "prompt_tower", "read_shots",
           "register", "register_tower", "run_fewshot", "run_method", "size_note", "zero_shot_classifier"]
