"""Built-in architectures; importing this package registers them with `models.registry`."""
from models.architectures import timm2d, medmnist_resnet, small_cnn  # noqa: F401,E402  2D: timm fallback, torchvision-only, MedMNIST CNNs
from models.architectures import acs, slices, vit3d  # noqa: F401,E402  3D: slices:, acs:/2.5d:/3d:, vit3d, joint
from models.architectures import medvit  # noqa: F401,E402  2D: MedViT small/base/large (hybrid CNN-Transformer)
