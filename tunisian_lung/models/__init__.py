"""MedicalNet-compatible 3D ResNet classifiers and pretrained-weight loading."""

from tunisian_lung.models.resnet import (
    MEDICALNET_LAYERS,
    MEDICALNET_SHORTCUT,
    BasicBlock,
    Bottleneck,
    ResNet3d,
    resnet3d,
)
from tunisian_lung.models.weights import LoadReport, load_pretrained, read_state_dict

__all__ = [
    "MEDICALNET_LAYERS",
    "MEDICALNET_SHORTCUT",
    "BasicBlock",
    "Bottleneck",
    "LoadReport",
    "ResNet3d",
    "load_pretrained",
    "read_state_dict",
    "resnet3d",
]
