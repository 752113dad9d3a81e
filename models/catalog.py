"""The registered model names as a static, torch-free table, so that `vlm models` lists them without
importing (and so registering) every architecture, which loads torch, torchvision and timm.

It must match `models.list_models()` entry for entry (`tests/test_startup.py` checks): when you register
an architecture, add its row here too, in `list_models()` order (2D first, then by name).
"""

from __future__ import annotations

from typing import NamedTuple


class CatalogEntry(NamedTuple):
    """What `vlm models` shows of a registered name or prefix (a `models.registry.ModelEntry` without its factory)."""

    name: str
    dims: str
    description: str
    is_prefix: bool = False


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("alexnet", "2d", "torchvision alexnet (ImageNet weights: --weights FILE)"),
    CatalogEntry("medium-cnn", "2d", "Keras-notebook medium CNN: conv128-conv512-conv1024 -> dense 256 -> dense 128 -> K."),
    CatalogEntry("medmnist-resnet18", "2d", "MedMNIST's ResNet-18: CIFAR-style for 28 px inputs; `stem=imagenet`: torchvision's (their 224 px)."),
    CatalogEntry("medmnist-resnet50", "2d", "MedMNIST's ResNet-50: CIFAR-style for 28 px inputs; `stem=imagenet`: torchvision's (their 224 px)."),
    CatalogEntry("medvit_base", "2d", "MedViT-base (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-20-3, 224 px."),
    CatalogEntry("medvit_large", "2d", "MedViT-large (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-30-3, 224 px."),
    CatalogEntry("medvit_small", "2d", "MedViT-small (Manzari et al. 2023): hybrid ECB/LTB transformer, depths 3-4-10-3, 224 px."),
    CatalogEntry("small-cnn", "2d", "Keras-notebook small CNN: conv32-conv32 (3x3, ReLU, max-pool) -> dense 64 -> K."),
    CatalogEntry("squeezenet1_0", "2d", "torchvision squeezenet1_0 (ImageNet weights: --weights FILE)"),
    CatalogEntry("squeezenet1_1", "2d", "torchvision squeezenet1_1 (ImageNet weights: --weights FILE)"),
    CatalogEntry("2.5d", "3d", "ResNet-18/50 with 2.5D (1×k×k) convolutions", is_prefix=True),
    CatalogEntry("3d", "3d", "ResNet-18/50 with 3D convolutions (I3D-inflated 2D weights)", is_prefix=True),
    CatalogEntry("acs", "3d", "ResNet-18/50 with ACS convolutions (2D weights kept exactly)", is_prefix=True),
    CatalogEntry("acs:resnet18+vit3d", "3d", "ACS ResNet-18 and ViT3D features concatenated, one linear layer"),
    CatalogEntry("slices", "3d", "slice-wise 3D model around any timm 2D backbone (EfficientNet slices)", is_prefix=True),
    CatalogEntry("vit3d", "3d", "ViT on 7×7×7 patches of 28³ volumes (16³ for 64³), 256-dim, 6 layers"),
)
