"""The layer-by-layer table behind `unetkit explain model`, measured on the real model.

The model is rebuilt on the meta device (shapes without memory or arithmetic) and run once
with a forward hook on every leaf module; multiply-accumulates come from torch's own
FlopCounterMode, parameters from the modules, the receptive field from the kernel sizes and
strides of the layers in the order they ran. Nothing here is a formula kept apart from the
network, so the table cannot drift from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unetkit.nn.blocks import CenterCrop, CropBack, PadToMultiple, SkipConcat
from unetkit.nn.unet import UNet

Shape = tuple[int, int, int]  # H, W, C, the order a textbook draws


@dataclass
class LayerRow:
    """One executed layer: where it sits, what it does, its shapes and its cost."""

    stage: str
    name: str
    op: str
    inputs: list[Shape]
    output: Shape
    params: int
    macs: int
    note: str = ""


@dataclass
class ModelSummary:
    """Everything `explain model` prints; `to_dict` is its `--json` form."""

    config: dict[str, Any]
    input: Shape
    output: Shape
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    total_macs: int = 0
    receptive_field: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        return _format(self)

    def path(self) -> list[tuple[str, Shape]]:
        """The feature map each stage hands on: the skip of an encoder level (before its
        pool), the bottleneck's and each decoder level's output, the head's logits."""
        last: dict[str, Shape] = {}
        for row in self.rows:
            if row.stage not in ("input", "output") and not row.name.endswith(".pool"):
                last[row.stage] = row.output
        return list(last.items())


def summarize(model: UNet, size: int | tuple[int, int], batch: int = 1) -> ModelSummary:
    """Run a meta-device twin of `model` on a (batch, C, H, W) input and record every layer."""
    h, w = (size, size) if isinstance(size, int) else size
    with torch.device("meta"):
        twin = UNet(**model.config)
    twin.eval()
    names = {module: name for name, module in twin.named_modules()}
    root = type(twin).__name__
    rows: list[LayerRow] = []
    order: list[nn.Module] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        name = names[module]
        order.append(module)
        rows.append(
            LayerRow(
                stage=_stage(name, model.depth),
                name=name,
                op=_describe(module, name),
                inputs=[_hwc(t) for t in tensors],
                output=_hwc(output),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=0,
            )
        )

    handles = [
        m.register_forward_hook(hook)
        for m in twin.modules()
        if not list(m.children()) and not isinstance(m, nn.Identity)
    ]
    x = torch.empty(batch, model.in_channels, h, w, device="meta")
    try:
        with FlopCounterMode(display=False) as counter:
            out = twin(x)
    finally:
        for handle in handles:
            handle.remove()

    flops = counter.get_flop_counts()
    for row in rows:
        # FlopCounterMode counts a multiply-add as 2 FLOPs, for the whole batch.
        row.macs = sum(flops.get(f"{root}.{row.name}", {}).values()) // 2 // batch
    _annotate_skips(rows, model.depth)
    return ModelSummary(
        config=model.config,
        input=(h, w, model.in_channels),
        output=_hwc(out),
        rows=rows,
        total_params=sum(p.numel() for p in model.parameters()),
        total_macs=sum(r.macs for r in rows),
        receptive_field=receptive_field(order, model.depth),
    )


def receptive_field(layers: list[nn.Module], depth: int) -> int:
    """Width in input pixels of the region one output pixel depends on (the widest over
    output positions). Walks the layers back from the output, mapping an interval of
    positions through each; the deepest path contains every shallower skip path."""
    steps = [m for m in layers if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.Upsample))]
    widest = 0
    for position in range(2**depth):
        lo, hi = position, position
        for layer in reversed(steps):
            lo, hi = _input_interval(layer, lo, hi)
        widest = max(widest, hi - lo + 1)
    return widest


def _input_interval(layer: nn.Module, lo: int, hi: int) -> tuple[int, int]:
    """The input positions that outputs lo..hi of `layer` read (unbounded coordinates)."""
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        # output o = i*s - p + m, 0 <= m < k  =>  i in [ceil((o+p-k+1)/s), floor((o+p)/s)]
        return -((-(lo + p - k + 1)) // s), (hi + p) // s
    if isinstance(layer, nn.Upsample):
        if layer.mode == "nearest":
            return lo // 2, hi // 2
        # bilinear, align_corners=False: o reads floor(o/2 - 1/4) and the next one
        return math.floor(lo / 2 - 0.25), math.floor(hi / 2 - 0.25) + 1
    k, s, p, d = _conv_like(layer)
    return lo * s - p, hi * s - p + d * (k - 1)


def _conv_like(layer: nn.Module) -> tuple[int, int, int, int]:
    def first(v: Any) -> int:
        return v[0] if isinstance(v, tuple) else v

    return (first(layer.kernel_size), first(layer.stride), first(layer.padding), first(layer.dilation))


def _hwc(t: torch.Tensor) -> Shape:
    return int(t.shape[-2]), int(t.shape[-1]), int(t.shape[1])


def _stage(name: str, depth: int) -> str:
    top = name.split(".")
    if top[0] == "encoder":
        return f"encoder {int(top[1]) + 1}"
    if top[0] == "decoder":
        return f"decoder {depth - int(top[1])}"
    if top[0] == "pad":
        return "input"
    if top[0] == "crop":
        return "output"
    return top[0]


def _describe(m: nn.Module, name: str) -> str:
    if isinstance(m, nn.ConvTranspose2d):
        return f"{m.kernel_size[0]}x{m.kernel_size[1]} transposed conv, stride {m.stride[0]}"
    if isinstance(m, nn.Conv2d):
        text = f"{m.kernel_size[0]}x{m.kernel_size[1]} conv"
        return text + " (head)" if name == "head" else text + ("" if m.padding[0] else ", unpadded")
    if isinstance(m, nn.MaxPool2d):
        return "2x2 max-pool, stride 2"
    if isinstance(m, nn.Upsample):
        return f"{m.mode} up-sampling x{int(m.scale_factor)}"
    if isinstance(m, nn.BatchNorm2d):
        return "batch norm"
    if isinstance(m, nn.InstanceNorm2d):
        return "instance norm"
    if isinstance(m, nn.GroupNorm):
        return f"group norm ({m.num_groups} groups)"
    if isinstance(m, nn.ReLU):
        return "ReLU"
    if isinstance(m, nn.Dropout):
        return f"dropout p={m.p}"
    if isinstance(m, SkipConcat):
        return "concat skip + up-sampled"
    if isinstance(m, CenterCrop):
        return "centre-crop skip"
    if isinstance(m, PadToMultiple):
        return f"zero-pad to a multiple of {m.multiple}"
    if isinstance(m, CropBack):
        return "crop back to the input size"
    return type(m).__name__


def _annotate_skips(rows: list[LayerRow], depth: int) -> None:
    """Say where each skip leaves the encoder and where the decoder concatenates it."""
    for level in range(1, depth + 1):
        level_rows = [r for r in rows if r.stage == f"encoder {level}" and not r.name.endswith(".pool")]
        if level_rows:
            last = level_rows[-1]
            last.note = f"skip saved ({_fmt(last.output)}) -> decoder {level}"
    for row in rows:
        if row.op.startswith("concat") and len(row.inputs) == 2:
            skip, up = row.inputs
            row.note = f"{_fmt(skip)} + {_fmt(up)} -> {_fmt(row.output)}"


def _fmt(shape: Shape) -> str:
    return "×".join(str(v) for v in shape)


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _format(s: ModelSummary) -> str:
    c = s.config
    lines = [
        f"U-Net: {c['in_channels']} band(s) in, {c['num_classes']} class(es) out, depth {c['depth']}, "
        f"base {c['base_channels']} channels, up_mode={c['up_mode']}, norm={c['norm']}, padding={c['padding']}",
        f"input {_fmt(s.input)} (H×W×C)",
        "feature maps: " + " → ".join(f"{stage} {_fmt(shape)}" for stage, shape in s.path()),
        "",
    ]
    header = f"{'layer':<30} {'operation':<34} {'input':>16} {'output':>14} {'params':>10} {'MACs':>9}"
    lines.append(header)
    stage = None
    for row in s.rows:
        if row.stage != stage:
            stage = row.stage
            lines.append(f"── {stage} " + "─" * (len(header) - len(stage) - 4))
        shown_in = " + ".join(_fmt(i) for i in row.inputs[:2])
        lines.append(
            f"{row.name:<30} {row.op:<34} {shown_in:>16} {_fmt(row.output):>14} "
            f"{row.params:>10,} {_human(row.macs):>9}"
        )
        if row.note:
            lines.append(f"{'':<30}   ↳ {row.note}")
    lines += [
        "",
        f"output {_fmt(s.output)} logits",
        f"parameters: {s.total_params:,}",
        f"multiply-accumulates: {s.total_macs:,} ({_human(s.total_macs)}MAC, {_human(2 * s.total_macs)}FLOP) per image",
        f"receptive field: {s.receptive_field}×{s.receptive_field} input pixels per output pixel",
    ]
    return "\n".join(lines)
