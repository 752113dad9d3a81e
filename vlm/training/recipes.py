"""Named training recipes: the option values a published training script used, one small dataclass each.

A recipe fills every `TrainConfig` option the user left unset (`None`) and may add architecture
options (`--model-opt`); options given explicitly win, and the record lists them as
`recipe_overrides`. `vlm train` picks the model's default recipe unless `--recipe NAME` names one:

- `medmnist`: MedMNIST's experiments scripts (MedMNIST/experiments, `MedMNIST2D/` and
  `MedMNIST3D/train_and_eval_pytorch.py`): Adam lr 1e-3, `MultiStepLR(milestones=[0.5 E, 0.75 E],
  gamma=0.1)` stepped per epoch (fractional milestones never fire, as there), 100 epochs, best epoch
  by val AUC, test once. 2D: `as_rgb`, ToTensor, Normalize(0.5, 0.5), batch 128; `--image-size 224`
  is their `--resize` (NEAREST upsampling), and at 224 (`--resize` or the MedMNIST+ 224 files)
  `medmnist-resnet18/50` is torchvision's ResNet (`stem=imagenet`), else the CIFAR-style one. 3D: one
  channel in [0, 1] with no normalisation (their `Transform3D`, shape transform included), batch 32.
- `slices-study`: the slice-wise 3D study's recipe as README's "3D results" ran it: focal loss γ 0.7,
  balanced sampler, RAdam lr 1e-4, exponential decay (×0.95 per epoch), batch 32, 10 epochs, the
  flatten head over the backbone's 1000 logits.
- `timm-finetune`: this toolkit's defaults before recipes existed (MedMNIST's optimiser and
  schedule, 10 epochs, bilinear resizing, 3-channel input normalised to [-1, 1]).
- `medvit`: MedViT's MedMNIST notebook (Omid-Nejati/MedViT, `Instructions.ipynb`): SGD lr 0.005
  momentum 0.9, no weight decay, batch 10, AugMix after resizing to 224 px (bilinear), 10 epochs.
  The notebook has no LR schedule; the recipe keeps MultiStepLR ×0.1 at epochs 10 and 15 (absolute),
  which do not fire within its 10 epochs.

Precision (bf16 autocast on CUDA, `--amp`) is a run setting, not part of a recipe.

Example:
    >>> get_recipe("medmnist").values(is_3d=True)["batch_size"]
    32
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, Callable, Mapping

from vlm.errors import VlmError

# The TrainConfig options a recipe sets (None in a TrainConfig: "the recipe's value").
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "backbone_lr", "optimizer", "weight_decay", "scheduler", "lr_gamma",
                 "lr_milestones", "warmup_epochs", "loss", "gamma", "sampler", "augment", "image_size",
                 "interpolation", "normalize")

ModelOpts = Callable[[str, bool, int], dict[str, Any]]  # (model name, is_3d, input size) -> --model-opt defaults


def _no_model_opts(model: str, is_3d: bool, input_size: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Recipe:
    """A named set of option values, the script it reproduces, and the models it is the default for.

    `options` hold TrainConfig values: every recipe field except those with a task-dependent default
    (loss ce/bce, weight decay, LR gamma, MultiStepLR milestones at 0.5 E and 0.75 E, image size,
    backbone LR), so new recipes start from another's; `options_3d` replace some of them on 3D
    datasets; `model_opts` gives architecture options for a model at an input size.
    """

    name: str
    summary: str
    source: str
    options: Mapping[str, Any]
    options_3d: Mapping[str, Any] = field(default_factory=dict)
    model_opts: ModelOpts = _no_model_opts
    default_for: tuple[str, ...] = ()  # model-name patterns (fnmatch) it is the default recipe of

    def values(self, is_3d: bool) -> dict[str, Any]:
        """The option values on a 2D or 3D dataset."""
        return {**self.options, **(self.options_3d if is_3d else {})}

    def describe(self) -> dict[str, Any]:
        """The `vlm models` row: name, summary, source and the models it is the default for."""
        return {"name": self.name, "summary": self.summary, "source": self.source,
                "default_for": ", ".join(self.default_for) or "any other model"}


RECIPES: dict[str, Recipe] = {}
FALLBACK = "timm-finetune"  # the recipe of models no recipe claims, and of `fit` calls that name none


def register_recipe(recipe: Recipe) -> Recipe:
    """Add (or replace) a recipe in the registry after checking its preset: recipe options only, each in its
    range (`vlm.ranges`; `tests/test_recipes.py` also checks them against the typed train options)."""
    from vlm.ranges import check_options

    for preset in (recipe.options, recipe.options_3d):
        unknown = sorted(set(preset) - set(RECIPE_FIELDS))
        if unknown:
            raise VlmError(f"Recipe '{recipe.name}' sets {', '.join(unknown)}, which are not recipe options "
                           f"({', '.join(RECIPE_FIELDS)}).")
        check_options(preset)
    RECIPES[recipe.name] = recipe
    return recipe


def recipe_names() -> tuple[str, ...]:
    """The registered recipe names, in registration order."""
    return tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe `name` (a VlmError listing the recipes otherwise)."""
    if name not in RECIPES:
        raise VlmError(f"Unknown recipe '{name}': choose one of {', '.join(RECIPES)}.")
    return RECIPES[name]


def default_recipe(model_name: str) -> str:
    """The recipe a model trains with unless `--recipe` names one: the first whose patterns match, else
    `FALLBACK`."""
    for recipe in RECIPES.values():
        if any(fnmatch(model_name, pattern) for pattern in recipe.default_for):
            return recipe.name
    return FALLBACK


def recipe_model_opts(name: str, model_name: str, is_3d: bool, input_size: int,
                      given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The architecture options: the recipe's defaults under the `given` ones, and the given keys that
    replaced a recipe default (as `model_opts.KEY`, for `recipe_overrides`)."""
    defaults = get_recipe(name).model_opts(model_name, is_3d, input_size)
    return {**defaults, **given}, [f"model_opts.{k}" for k in sorted(defaults) if k in given]


# ----------------------------------------------------------------------------- the built-in recipes
_TIMM_FINETUNE = {"epochs": 10, "batch_size": 128, "lr": 1e-3, "optimizer": "adam", "scheduler": "multistep",
                  "warmup_epochs": 0.0, "gamma": 2.0, "sampler": "none", "augment": "off",
                  "interpolation": "bilinear", "normalize": True}
MEDMNIST_RESNETS = ("medmnist-resnet18", "medmnist-resnet50")


def _medmnist_model_opts(model: str, is_3d: bool, input_size: int) -> dict[str, Any]:
    """3D: one input channel (no as_rgb); 2D at 224 px: torchvision's ResNet for MedMNIST's ResNets."""
    if is_3d:
        return {"in_chans": 1}
    return {"stem": "imagenet"} if model in MEDMNIST_RESNETS and input_size == 224 else {}


def _slices_model_opts(model: str, is_3d: bool, input_size: int) -> dict[str, Any]:
    """The study's head: the backbone's 1000 logits per slice, flattened over slices."""
    return {"features": "logits", "head": "flatten"} if model.startswith("slices:") else {}


register_recipe(Recipe(
    "medmnist", "MedMNIST's experiments scripts: Adam 1e-3, MultiStepLR x0.1 at 0.5E/0.75E, 100 epochs; "
                "2D 3-channel [-1, 1], batch 128, NEAREST upsampling; 3D 1-channel [0, 1], batch 32",
    "MedMNIST/experiments MedMNIST2D/ and MedMNIST3D/train_and_eval_pytorch.py",
    {**_TIMM_FINETUNE, "epochs": 100, "lr_gamma": 0.1, "weight_decay": 0.0, "interpolation": "nearest"},
    options_3d={"batch_size": 32, "normalize": False},
    model_opts=_medmnist_model_opts,
    default_for=(*MEDMNIST_RESNETS, "acs:*", "2.5d:*", "3d:*")))
register_recipe(Recipe(
    "slices-study", "the slice-wise 3D study: focal loss (gamma 0.7), balanced sampler, RAdam 1e-4, exponential "
                    "decay, batch 32, 10 epochs, flatten head",
    "README '3D results' commands (the EfficientNet slices study)",
    {**_TIMM_FINETUNE, "batch_size": 32, "lr": 1e-4, "optimizer": "radam", "scheduler": "exponential",
     "loss": "focal", "gamma": 0.7, "sampler": "balanced"},
    model_opts=_slices_model_opts, default_for=("slices:*",)))
register_recipe(Recipe(
    "timm-finetune", "this toolkit's defaults for pretrained timm backbones: Adam 1e-3, MultiStepLR x0.1 at "
                     "0.5E/0.75E, batch 128, 10 epochs, 3-channel [-1, 1] input, bilinear resizing",
    "vlm.training.TrainConfig defaults before recipes", _TIMM_FINETUNE))
register_recipe(Recipe(
    "medvit", "MedViT's MedMNIST notebook: SGD 0.005 momentum 0.9, no weight decay, batch 10, AugMix, 224 px, "
              "10 epochs, x0.1 at epochs 10 and 15",
    "Omid-Nejati/MedViT Instructions.ipynb",
    {**_TIMM_FINETUNE, "batch_size": 10, "lr": 0.005, "optimizer": "sgd", "weight_decay": 0.0,
     "lr_milestones": [10.0, 15.0], "lr_gamma": 0.1, "augment": "augmix", "image_size": 224},
    default_for=("medvit_*",)))
