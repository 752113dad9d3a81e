"""Transfer-learning architectures for MedMNIST and their registry (depends on torch/timm only).

    from models import create_model
    net = create_model("medmnist-resnet18", num_classes=2)
"""

from models.registry import ModelError, create_model, list_models, model_dims, register_model, register_prefix

__all__ = ["ModelError", "create_model", "list_models", "model_dims", "register_model", "register_prefix"]
