"""Built-in architectures; importing this package imports each module, whose decorators register it.

To add one: write `models/architectures/NAME.py` with a factory decorated by
`models.registry.register_model` (or `register_prefix`), and import it below.
"""

from models.architectures import timm2d, medmnist_resnet, small_cnn  # noqa: F401  2D: timm fallback, torchvision-only, MedMNIST CNNs
from models.architectures import medvit  # noqa: F401  2D: MedViT small/base/large (hybrid CNN-Transformer)
from models.architectures import acs, slices, vit3d  # noqa: F401  3D: slices:, acs:/2.5d:/3d:, vit3d, joint
