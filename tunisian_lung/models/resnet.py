"""3D ResNets whose parameter names and shapes match Tencent MedicalNet's released checkpoints.

The backbone follows ``models/resnet.py`` of https://github.com/Tencent/MedicalNet (read at
commit 34b9bb2). The stem is a 7x7x7 stride-2 convolution with 64 filters on one input
channel, then a 3x3x3 stride-2 max-pool. Four stages of 64/128/256/512 planes follow:
``layer2`` has stride 2, and ``layer3``/``layer4`` keep stride 1 with dilation 2 and 4.
Depths 10/18/34 use ``BasicBlock``,
depths 50/101/152/200 use ``Bottleneck`` (expansion 4). MedicalNet's README pairs each released
file with a shortcut type: B (1x1x1 convolution + BatchNorm) for ResNet10 and ResNet50+, A
(strided identity zero-padded along channels, no parameters) for ResNet18 and ResNet34.

MedicalNet ends in a segmentation decoder (``conv_seg``). Here a classification head replaces
it: global average pooling, dropout, then a linear layer named ``fc``.
"""

from __future__ import annotations

from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tunisian_lung.errors import ConfigError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet3d",
    "MEDICALNET_LAYERS",
    "MEDICALNET_SHORTCUT",
    "HEAD_PREFIX",
    "resnet3d",
]

ShortcutType = Literal["A", "B"]

# Blocks per stage for each depth, as in MedicalNet's resnet10 ... resnet200 constructors.
MEDICALNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}

# Shortcut type of each released MedicalNet checkpoint (MedicalNet README, "Network structure
# parameter settings").
MEDICALNET_SHORTCUT: dict[int, ShortcutType] = {
    10: "B",
    18: "A",
    34: "A",
    50: "B",
    101: "B",
    152: "B",
    200: "B",
}

# Prefix of the classification head's parameters; everything else is the backbone.
HEAD_PREFIX = "fc."


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut (type A): strided subsampling, then zero channels appended.

    Parameters
    ----------
    out_channels
        Number of channels of the output; must be at least the input channel count.
    stride
        Spatial subsampling step along D, H and W.
    """

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        missing = self.out_channels - x.shape[1]
        if missing > 0:
            # F.pad pads the last dimensions first: (W, W, H, H, D, D, C_before, C_after).
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, missing))
        return x


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (ResNet10/18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1x1, 3x3x3, 1x1x1 convolutions with a residual connection (ResNet50 and deeper)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNet3d(nn.Module):
    """MedicalNet 3D ResNet backbone with a classification head.

    Parameters
    ----------
    block
        :class:`BasicBlock` or :class:`Bottleneck`.
    layers
        Number of blocks in ``layer1`` ... ``layer4``.
    num_classes
        Number of output logits.
    shortcut_type
        ``"A"`` (parameter-free) or ``"B"`` (1x1x1 convolution + BatchNorm) for blocks that
        change the channel count or stride.
    dropout
        Dropout probability before the linear layer, in [0, 1).

    Notes
    -----
    Input is ``(N, 1, D, H, W)`` float32 with ``D, H, W = z, y, x``. The stem, the max-pool
    and ``layer2`` each halve the spatial size, so the feature map is about 1/8 of the input
    size per axis.
    ``forward`` returns logits of shape ``(N, num_classes)``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 2,
        shortcut_type: ShortcutType = "B",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(count < 1 for count in layers):
            raise ConfigError(f"layers must be four positive block counts, got {list(layers)}")
        if shortcut_type not in ("A", "B"):
            raise ConfigError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.block = block
        self.layers_per_stage = tuple(layers)
        self.shortcut_type: ShortcutType = shortcut_type
        self.num_classes = num_classes
        self._inplanes = 64

        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)

        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def feature_channels(self) -> int:
        """Number of channels of the pooled feature vector (512 or 2048)."""
        return 512 * self.block.expansion

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self._inplanes != out_channels:
            if self.shortcut_type == "A":
                downsample = ZeroPadShortcut(out_channels, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self._inplanes, out_channels, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_channels),
                )
        stage = [block(self._inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self._inplanes = out_channels
        stage.extend(block(self._inplanes, planes, dilation=dilation) for _ in range(1, blocks))
        return nn.Sequential(*stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled backbone features, shape ``(N, feature_channels)``."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(
                f"expected input of shape (N, 1, D, H, W), got {tuple(x.shape)}; add the channel "
                "axis with x.unsqueeze(1) for a (N, D, H, W) batch"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(N, num_classes)`` for a ``(N, 1, D, H, W)`` batch."""
        return self.fc(self.dropout(self.forward_features(x)))

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Yield the parameters of the classification head (the ``fc`` layer)."""
        return self.fc.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Yield every parameter outside the classification head."""
        for name, parameter in self.named_parameters():
            if not name.startswith(HEAD_PREFIX):
                yield parameter

    def backbone_modules(self) -> list[nn.Module]:
        """Return the backbone's top-level modules (stem and the four stages)."""
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]


def resnet3d(
    depth: int,
    *,
    num_classes: int = 2,
    shortcut_type: ShortcutType | None = None,
    dropout: float = 0.2,
) -> ResNet3d:
    """Build a MedicalNet-compatible 3D ResNet classifier.

    Parameters
    ----------
    depth
        One of 10, 18, 34, 50, 101, 152, 200.
    num_classes
        Number of output logits (2 for cancer versus no cancer).
    shortcut_type
        ``"A"`` or ``"B"``. ``None`` picks the type of MedicalNet's released checkpoint for this
        depth (B for 10 and 50+, A for 18 and 34), so that :func:`load_pretrained` accepts it.
    dropout
        Dropout probability before the linear layer.

    Returns
    -------
    ResNet3d
        A model taking ``(N, 1, D, H, W)`` float32 input and returning ``(N, num_classes)``
        logits.

    Raises
    ------
    ConfigError
        If the depth, shortcut type, class count or dropout is invalid.
    """
    if depth not in MEDICALNET_LAYERS:
        raise ConfigError(
            f"unsupported ResNet depth {depth!r}; choose one of {sorted(MEDICALNET_LAYERS)}"
        )
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock if depth < 50 else Bottleneck
    shortcut = MEDICALNET_SHORTCUT[depth] if shortcut_type is None else shortcut_type
    return ResNet3d(
        block,
        MEDICALNET_LAYERS[depth],
        num_classes=num_classes,
        shortcut_type=shortcut,
        dropout=dropout,
    )
