"""ResNets in torchvision's layout (He et al. 2016; the V1.5 variant, stride on the 3x3
convolution), built by hand because torchvision is not installed here.

Module names match ``torchvision.models.resnet*`` exactly, so an ImageNet state dict saved
from torchvision (e.g. ``resnet50-11ad3fa6.pth``, the ``IMAGENET1K_V2`` weights D-Cube
uses) loads with :func:`load_torchvision_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medaug.errors import MedaugError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(block, width, layers[0])
        self.layer2 = self._layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _layer(self, block, planes: int, count: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before pooling (stride 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.trunk(x)), 1))


def build_resnet(architecture: str, width: int = 64) -> ResNet:
    """A torchvision ResNet; ``width`` (channels of the first stage) 64 is torchvision's, and
    the only width its ImageNet weights fit."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown ResNet {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    block, layers = ARCHITECTURES[architecture]
    return ResNet(block, layers, width=width)


def load_torchvision_weights(model: ResNet, path: str | Path) -> None:
    """Load a torchvision state dict into ``model`` (every layer but ``fc``, which is the
    task's own); a file of another architecture is refused, naming the first mismatch."""
    path = Path(path)
    if not path.is_file():
        raise MedaugError(f"{path}: the ImageNet ResNet weights file does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)

    # fc is the task's own; num_batches_tracked is missing from older torchvision files.
    def kept(key: str) -> bool:
        return not key.startswith("fc.") and not key.endswith("num_batches_tracked")

    state = {k: v for k, v in state.items() if kept(k)}
    own = {k: v for k, v in model.state_dict().items() if kept(k)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise MedaugError(f"{path}: not torchvision weights of this ResNet (first mismatch: {first})")
    model.load_state_dict(state, strict=False)
