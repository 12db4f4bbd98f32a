"""Copy nas_jax (Flax) weights into the PyTorch models of ``benchmarks/torch_models.py``.

Works from the *flattened* Flax variables (``flax.traverse_util.flatten_dict(variables, sep="/")``,
e.g. ``params/cell_3/FactorizedReduce_0/PointwiseConv_1/kernel`` or
``batch_stats/layer2_0/downsample_bn/var``) held as NumPy arrays, so the PyTorch side needs
neither jax nor flax (the benchmark passes them between processes in an ``.npz`` file).

Layouts: Flax convolution kernels are HWIO (depthwise: ``(k, k, 1, C)``, pointwise ``(1, 1, I, O)``),
PyTorch's are OIHW (depthwise ``(C, 1, k, k)``), so every conv kernel is ``transpose(3, 2, 0, 1)``;
Dense kernels are ``(in, out)`` against Linear's ``(out, in)``. BatchNorm: ``scale``/``bias`` ->
``weight``/``bias``, ``mean``/``var`` -> ``running_mean``/``running_var`` (both sides use eps 1e-5
and the biased batch variance in the forward pass).

A DARTS network's scanned run of cells is one Flax entry with the cells on a leading axis
(``params/cells_2_to_5/...``); :func:`port` reads it as one array per cell (``cell_2 … cell_5``).

The mapping is explicit (module by module) and complete in both directions: :func:`port` fails
if a Flax array is left unused, a PyTorch parameter/buffer is left unset (the fixed ``Normalize``
buffers and ``num_batches_tracked`` aside), or a shape differs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

try:  # a sibling of the running script (benchmarks/ on sys.path), as pgd_throughput.py imports it
    import torch_models as tm
except ImportError:  # pragma: no cover - imported as benchmarks.port_weights from the repository root
    from benchmarks import torch_models as tm

CONV, DENSE, BN = "conv", "dense", "bn"


def _conv(flax_prefix: str, torch_prefix: str) -> list[tuple[str, str, str]]:
    return [(f"params/{flax_prefix}/kernel", f"{torch_prefix}.weight", CONV)]


def _bn(flax_prefix: str, torch_prefix: str) -> list[tuple[str, str, str]]:
    return [
        (f"params/{flax_prefix}/scale", f"{torch_prefix}.weight", BN),
        (f"params/{flax_prefix}/bias", f"{torch_prefix}.bias", BN),
        (f"batch_stats/{flax_prefix}/mean", f"{torch_prefix}.running_mean", BN),
        (f"batch_stats/{flax_prefix}/var", f"{torch_prefix}.running_var", BN),
    ]


def _dense(flax_prefix: str, torch_prefix: str) -> list[tuple[str, str, str]]:
    return [
        (f"params/{flax_prefix}/kernel", f"{torch_prefix}.weight", DENSE),
        (f"params/{flax_prefix}/bias", f"{torch_prefix}.bias", BN),  # a plain copy
    ]


# --------------------------------------------------------------------------
# DARTS evaluation network
# --------------------------------------------------------------------------

# Flax class name of each PyTorch op (Flax auto-names submodules "<Class>_<n>", counting per class
# in creation order inside their parent; ops without parameters still count but own nothing).
_FLAX_CLASS = {
    tm.ReLUConvBN: "ReLUConvBN",
    tm.FactorizedReduce: "FactorizedReduce",
    tm.SepConv: "SepConv",
    tm.DilConv: "DilConv",
    tm.Conv7x1_1x7: "Conv7x1_1x7",
    tm.Zero: "Zero",
    nn.Identity: "Identity",
    nn.MaxPool2d: "Pool",
    nn.AvgPool2d: "Pool",
}


def _op_pairs(op: nn.Module, f: str, t: str) -> list[tuple[str, str, str]]:
    """Mapping for one DARTS op: Flax module path ``f``, PyTorch module path ``t``."""
    if isinstance(op, tm.ReLUConvBN):  # body = [ReLU, conv, BN]
        return _conv(f"{f}/PointwiseConv_0", f"{t}.body.1") + _bn(f"{f}/BatchNorm_0", f"{t}.body.2")
    if isinstance(op, tm.FactorizedReduce):
        return (_conv(f"{f}/PointwiseConv_0", f"{t}.conv_a") + _conv(f"{f}/PointwiseConv_1", f"{t}.conv_b")
                + _bn(f"{f}/BatchNorm_0", f"{t}.bn"))
    if isinstance(op, tm.SepConv):  # [ReLU, dw, pw, BN] x 2
        out = []
        for n, base in ((0, 0), (1, 4)):
            out += _conv(f"{f}/DepthwiseConv_{n}", f"{t}.{base + 1}")
            out += _conv(f"{f}/PointwiseConv_{n}", f"{t}.{base + 2}")
            out += _bn(f"{f}/BatchNorm_{n}", f"{t}.{base + 3}")
        return out
    if isinstance(op, tm.DilConv):  # [ReLU, dw, pw, BN]
        return (_conv(f"{f}/DepthwiseConv_0", f"{t}.1") + _conv(f"{f}/PointwiseConv_0", f"{t}.2")
                + _bn(f"{f}/BatchNorm_0", f"{t}.3"))
    if isinstance(op, tm.Conv7x1_1x7):  # [ReLU, conv 1x7, conv 7x1, BN]
        return _conv(f"{f}/Conv_0", f"{t}.1") + _conv(f"{f}/Conv_1", f"{t}.2") + _bn(f"{f}/BatchNorm_0", f"{t}.3")
    return []  # Zero, Identity, pools: no parameters


def darts_pairs(model: tm.DartsNetwork) -> list[tuple[str, str, str]]:
    """(flax key, torch state_dict key, kind) for every weight of ``model``."""
    pairs = _conv("Conv_0", "stem.0") + _bn("BatchNorm_0", "stem.1")
    for i, cell in enumerate(model.cells):
        counters: dict[str, int] = defaultdict(int)

        def flax_name(module: nn.Module) -> str:
            cls = _FLAX_CLASS[type(module)]
            name = f"{cls}_{counters[cls]}"
            counters[cls] += 1
            return name

        # Creation order in nas_jax.models.darts.Cell: pre0, pre1, then the ops in genotype order.
        pairs += _op_pairs(cell.pre0, f"cell_{i}/{flax_name(cell.pre0)}", f"cells.{i}.pre0")
        pairs += _op_pairs(cell.pre1, f"cell_{i}/{flax_name(cell.pre1)}", f"cells.{i}.pre1")
        for k, op in enumerate(cell.ops):
            t = f"cells.{i}.ops.{k}"
            if isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[1], nn.Dropout):
                op, t = op[0], f"{t}.0"  # (op, Dropout) wrapper
            pairs += _op_pairs(op, f"cell_{i}/{flax_name(op)}", t)
    return pairs + _dense("classifier", "classifier")


# --------------------------------------------------------------------------
# ResNet-18 (CIFAR stem)
# --------------------------------------------------------------------------


def resnet_pairs(model: tm.ResNet18, blocks=(2, 2, 2, 2)) -> list[tuple[str, str, str]]:
    pairs = _conv("conv1", "stem.0") + _bn("bn1", "stem.1")
    idx = 0
    for i, n in enumerate(blocks):
        for j in range(n):
            f, t = f"layer{i + 1}_{j}", f"layers.{idx}"
            pairs += _conv(f"{f}/conv1", f"{t}.conv1") + _bn(f"{f}/bn1", f"{t}.bn1")
            pairs += _conv(f"{f}/conv2", f"{t}.conv2") + _bn(f"{f}/bn2", f"{t}.bn2")
            if isinstance(model.layers[idx].shortcut, nn.Sequential):
                pairs += _conv(f"{f}/downsample_conv", f"{t}.shortcut.0") + _bn(f"{f}/downsample_bn", f"{t}.shortcut.1")
            idx += 1
    return pairs + _dense("classifier", "classifier")


# --------------------------------------------------------------------------
# Copy
# --------------------------------------------------------------------------


def _convert(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == CONV:
        return np.transpose(value, (3, 2, 0, 1))
    if kind == DENSE:
        return value.T
    return value


def per_cell(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flattened Flax variables with each stacked run ``cells_{a}_to_{b}`` split into ``cell_a … cell_b``."""
    out = {}
    for key, value in flat.items():
        collection, top, rest = key.split("/", 2) if key.count("/") >= 2 else (*key.split("/", 1), "")
        if top.startswith("cells_") and "_to_" in top:
            first, last = (int(n) for n in top.removeprefix("cells_").split("_to_"))
            for k, i in enumerate(range(first, last + 1)):
                out[f"{collection}/cell_{i}/{rest}"] = value[k]
        else:
            out[key] = value
    return out


def port(model: nn.Module, flat: dict[str, np.ndarray]) -> int:
    """Copy the flattened Flax variables ``flat`` into ``model`` in place; return the number of
    arrays copied. Raises ``ValueError`` on any missing, unused or mis-shaped array."""
    flat = per_cell(flat)
    if isinstance(model, tm.DartsNetwork):
        pairs = darts_pairs(model)
    elif isinstance(model, tm.ResNet18):
        pairs = resnet_pairs(model)
    else:
        raise ValueError(f"no weight mapping for {type(model).__name__}")
    state = model.state_dict()
    skip = {k for k in state if k.startswith("normalize.") or k.endswith("num_batches_tracked")}
    errors = []
    seen_flax, seen_torch = set(), set()
    new_state = {}
    for fkey, tkey, kind in pairs:
        if fkey not in flat:
            errors.append(f"missing Flax array {fkey} (for {tkey})")
            continue
        if tkey not in state:
            errors.append(f"missing PyTorch tensor {tkey} (for {fkey})")
            continue
        if fkey in seen_flax or tkey in seen_torch:
            errors.append(f"mapped twice: {fkey} -> {tkey}")
        seen_flax.add(fkey)
        seen_torch.add(tkey)
        value = _convert(np.asarray(flat[fkey], np.float32), kind)
        if tuple(value.shape) != tuple(state[tkey].shape):
            errors.append(f"shape {fkey} {value.shape} -> {tkey} {tuple(state[tkey].shape)}")
            continue
        new_state[tkey] = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))  # a writable copy
    unused = sorted(set(flat) - seen_flax)
    unset = sorted(set(state) - seen_torch - skip)
    if unused:
        errors.append(f"{len(unused)} Flax arrays unused, e.g. {unused[:5]}")
    if unset:
        errors.append(f"{len(unset)} PyTorch tensors unset, e.g. {unset[:5]}")
    if errors:
        raise ValueError("weight port failed:\n  " + "\n  ".join(errors))
    with torch.no_grad():
        for tkey, value in new_state.items():
            state[tkey].copy_(value)  # state_dict tensors share storage with the module
    return len(new_state)
