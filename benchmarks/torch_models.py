"""PyTorch counterparts of two nas_jax models, for the throughput comparison only.

Written for this benchmark from the specification in docs/protocol.md §b.1–§b.3 and §c.3,
so that the PyTorch side does the same work as nas_jax:

* :class:`DartsNetwork` — the DARTS evaluation network built from a genotype
  (``nas_jax.models.genotypes.Genotype``): stem conv 3×3 (3 -> 3C) + BN, L cells
  with reductions at ⌊L/3⌋ and ⌊2L/3⌋, ReLUConvBN / FactorizedReduce
  preprocessing, per-op dropout (default 0.2, train mode only), global average
  pool, Linear.
* :class:`ResNet18` — torchvision-style ResNet-18 with the CIFAR stem (3×3
  stride-1 conv, no max-pool).

Both models normalise their [0, 1] NCHW input with the dataset mean/std as their
first operation, as the nas_jax models do (G1). Convolutions have no bias; BN is
affine with eps 1e-5, momentum 0.1 (G4). Initialisation is left at PyTorch's
defaults: it does not affect throughput.
"""

from __future__ import annotations

import torch
from torch import nn

# --------------------------------------------------------------------------
# DARTS operations (docs/protocol.md §b.1)
# --------------------------------------------------------------------------


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1, affine=True)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ReLUConvBN(nn.Module):
    """ReLU -> 1×1 conv (c_in -> c_out) -> BN (cell preprocessing)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), _bn(c_out))

    def forward(self, x):
        return self.body(x)


class FactorizedReduce(nn.Module):
    """ReLU -> 1×1 stride-2 convs on x and x[:, :, 1:, 1:] -> concat -> BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_out // 2
        self.relu = nn.ReLU()
        self.conv_a = nn.Conv2d(c_in, half, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - half, 1, stride=2, bias=False)
        self.bn = _bn(c_out)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], dim=1))


def _dw_pw_block(c: int, k: int, stride: int, pad: int, dilation: int) -> list[nn.Module]:
    """[ReLU -> depthwise k×k -> pointwise 1×1 -> BN]."""
    return [
        nn.ReLU(),
        nn.Conv2d(c, c, k, stride=stride, padding=pad, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        _bn(c),
    ]


class SepConv(nn.Sequential):
    """Two stacked dw-pw blocks; the first carries the stride."""

    def __init__(self, c: int, k: int, stride: int):
        pad = (k - 1) // 2
        super().__init__(*_dw_pw_block(c, k, stride, pad, 1), *_dw_pw_block(c, k, 1, pad, 1))


class DilConv(nn.Sequential):
    """One dw-pw block with a dilation-2 depthwise conv."""

    def __init__(self, c: int, k: int, stride: int):
        super().__init__(*_dw_pw_block(c, k, stride, k - 1, 2))


class Conv7x1_1x7(nn.Sequential):  # noqa: N801 - the op's genotype name
    def __init__(self, c: int, stride: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            _bn(c),
        )


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride] * 0.0


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name.startswith("sep_conv_"):
        return SepConv(c, int(name[-1]), stride)
    if name.startswith("dil_conv_"):
        return DilConv(c, int(name[-1]), stride)
    if name == "conv_7x1_1x7":
        return Conv7x1_1x7(c, stride)
    raise ValueError(f"unknown op {name!r}")


# --------------------------------------------------------------------------
# Cell and network (docs/protocol.md §b.2–§b.4)
# --------------------------------------------------------------------------


class Cell(nn.Module):
    def __init__(self, genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 dropout: float):
        super().__init__()
        cell, self.concat = (
            (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
        )
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.pre1 = ReLUConvBN(c_p, c)
        self.indices = [idx for _, idx in cell]
        ops = []
        for name, idx in cell:
            stride = 2 if reduction and idx < 2 else 1
            op = make_op(name, c, stride)
            is_identity = name == "skip_connect" and stride == 1
            if name != "none" and not is_identity and dropout > 0:
                op = nn.Sequential(op, nn.Dropout(dropout))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for k in range(0, len(self.ops), 2):
            a = self.ops[k](states[self.indices[k]])
            b = self.ops[k + 1](states[self.indices[k + 1]])
            states.append(a + b)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """DARTS evaluation network (§b.3) without the auxiliary head or drop-path."""

    def __init__(self, genotype, num_classes: int, mean, std, init_channels: int = 36, layers: int = 20,
                 dropout: float = 0.2):
        super().__init__()
        self.normalize = Normalize(mean, std)
        c = init_channels
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), _bn(3 * c))
        c_pp = c_p = 3 * c
        c_cur = c
        reduction_prev = False
        cells = []
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            cell = Cell(genotype, c_pp, c_p, c_cur, reduction, reduction_prev, dropout)
            cells.append(cell)
            c_pp, c_p = c_p, len(cell.concat) * c_cur
            reduction_prev = reduction
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(self.normalize(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1.mean(dim=(2, 3)))


# --------------------------------------------------------------------------
# ResNet-18, CIFAR stem (docs/protocol.md §c.3)
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride=stride, bias=False), _bn(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, mean, std, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), _bn(64), nn.ReLU(inplace=True))
        layers, c_in = [], 64
        for i, n in enumerate(blocks):
            planes = 64 * 2**i
            for j in range(n):
                layers.append(BasicBlock(c_in, planes, 2 if (i > 0 and j == 0) else 1))
                c_in = planes
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(self.normalize(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def num_params(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
