"""A U-Net assembled from the reference ops, forward and backward, mirroring `unetkit.UNet`.

Given the torch model's weights as a dict of NumPy arrays keyed by the torch parameter names
(`{name: p.detach().numpy() for name, p in model.named_parameters()}`), `ReferenceUNet`
computes the same logits and, from any dL/dlogits, the same gradient for every parameter.
The backward is written out by hand, level by level, so that it can also report what the
textbooks draw: each layer's gradient shape, the split of dL/dconcat at every skip into its
skip part and its decoder part, and how much gradient reaches each encoder level through the
skip versus through the deep path.

Mirrored: any depth, base_channels, in_channels, num_classes; up_mode 'transpose', 'nearest',
'bilinear'; norm None or 'batch' (training mode: batch statistics); padding 'same' (with the
centred pad to a multiple of 2**depth and the crop back) or 'valid' (centre-cropped skips);
dropout 0 only (dropout is random).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetkit.reference.ops import (
    Array,
    ReferenceInputError,
    batch_norm,
    batch_norm_backward,
    concat,
    concat_backward,
    conv1x1,
    conv1x1_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    upsample_bilinear,
    upsample_bilinear_backward,
    upsample_nearest,
    upsample_nearest_backward,
    window2d,
    window2d_backward,
)


@dataclass
class BackwardStep:
    """One layer on the way back: the gradient it hands to its input, and its weights' gradient."""

    name: str
    op: str
    grad_shape: tuple[int, ...]
    grad_norm: float
    param_grad_norm: float | None = None


@dataclass
class Trace:
    """What one forward and backward pass did, for `explain backward` and the tests."""

    forward: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    backward: list[BackwardStep] = field(default_factory=list)
    # level -> the two halves of dL/dconcat: {"skip": ..., "up": ...}
    concat_split: dict[int, dict[str, Array]] = field(default_factory=dict)
    # level -> dL/d(encoder output) by path: {"skip": ..., "deep": ...}
    encoder_grad: dict[int, dict[str, Array]] = field(default_factory=dict)


def widths(depth: int, base_channels: int) -> list[int]:
    """Channels per level: base, 2*base, ..., 2**depth * base (the bottleneck)."""
    return [base_channels * 2**level for level in range(depth + 1)]


def parameter_shapes(
    *, in_channels: int, num_classes: int, depth: int, base_channels: int, up_mode: str, norm: str | None,
    **unused: Any,
) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, named and ordered as `unetkit.UNet.named_parameters()`.

    The options are the network's (`model.config`, the U-Net options declared once in
    `unetkit.nn.options`); the ones that shape no parameter (dropout, padding) are accepted and unused."""
    shapes: dict[str, tuple[int, ...]] = {}

    def double_conv(prefix: str, cin: int, cout: int) -> None:
        for i, c in ((1, cin), (2, cout)):
            shapes[f"{prefix}.conv{i}.weight"] = (cout, c, 3, 3)
            if norm is None:
                shapes[f"{prefix}.conv{i}.bias"] = (cout,)
            else:
                shapes[f"{prefix}.norm{i}.weight"] = (cout,)
                shapes[f"{prefix}.norm{i}.bias"] = (cout,)

    ch = widths(depth, base_channels)
    for level in range(depth):
        double_conv(f"encoder.{level}.conv", in_channels if level == 0 else ch[level - 1], ch[level])
    double_conv("bottleneck.conv", ch[depth - 1], ch[depth])
    for j, level in enumerate(reversed(range(depth))):
        cin, half = ch[level + 1], ch[level + 1] // 2
        up = _up_prefix(j, up_mode)
        shapes[f"{up}.weight"] = (cin, half, 2, 2) if up_mode == "transpose" else (half, cin, 3, 3)
        shapes[f"{up}.bias"] = (half,)
        double_conv(f"decoder.{j}.conv", ch[level] + half, ch[level])
    shapes["head.weight"] = (num_classes, ch[0], 1, 1)
    shapes["head.bias"] = (num_classes,)
    return shapes


def init_parameters(seed: int = 0, **config: Any) -> dict[str, Array]:
    """He initialisation as `unetkit.UNet.reset_parameters`: weights ~ N(0, 2 / fan_in)
    (1 / fan_in for the head, which feeds no ReLU), biases 0, norm scales 1."""
    rng = np.random.default_rng(seed)
    params: dict[str, Array] = {}
    shapes = parameter_shapes(**config)
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape)
        elif ".norm" in name:
            params[name] = np.ones(shape)
        else:
            if name.endswith(".up.up.weight"):  # transposed (C_in, C_out, 2, 2), stride 2:
                fan_in = shape[0]  # each output sees one input pixel per channel
            else:
                fan_in = shape[1] * shape[2] * shape[3]
            gain = 1.0 if name == "head.weight" else 2.0
            params[name] = rng.normal(0.0, np.sqrt(gain / fan_in), size=shape)
    return params


def _valid_output(n: int, depth: int) -> int | None:
    """One side length through the unpadded network (as `unetkit.nn.unet`); None where a map
    shrinks to nothing or an odd size meets a 2x2 max-pool."""
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    for _ in range(depth):
        n = 2 * n - 4
    return n if n > 0 else None


def _up_prefix(j: int, up_mode: str) -> str:
    return f"decoder.{j}.up.up" if up_mode == "transpose" else f"decoder.{j}.up.up.1"


def _hwc(a: Array) -> tuple[int, int, int]:
    return int(a.shape[2]), int(a.shape[3]), int(a.shape[1])


def _norm(a: Array) -> float:
    return float(np.sqrt(np.sum(a * a)))


class ReferenceUNet:
    """`unetkit.UNet` in NumPy: `forward(x)` -> logits, then `backward(dlogits)` -> the
    gradient of every parameter (a dict keyed like `params`); `input_grad` and `trace` hold
    the rest. `skips=False` replaces every skip by zeros (same weights), for comparison."""

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        in_channels: int,
        num_classes: int,
        depth: int,
        base_channels: int,
        up_mode: str,
        norm: str | None,
        dropout: float,
        padding: str,
        skips: bool = True,
        eps: float = 1e-5,
    ) -> None:
        """`params` by torch parameter name; the options are the network's own (`**model.config`)."""
        if up_mode not in ("transpose", "nearest", "bilinear"):
            raise ReferenceInputError(f"up_mode={up_mode!r} is not known: use 'transpose', 'nearest' or 'bilinear'.")
        if norm not in (None, "batch"):
            raise ReferenceInputError(f"norm={norm!r} is not in the reference: use None or 'batch'.")
        if padding not in ("same", "valid"):
            raise ReferenceInputError(f"padding={padding!r} is not known: use 'same' or 'valid'.")
        if dropout:
            raise ReferenceInputError(f"dropout={dropout} is random: the reference mirrors dropout=0 only.")
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.up_mode, self.norm, self.padding, self.skips, self.eps = up_mode, norm, padding, skips, eps
        shapes = parameter_shapes(in_channels=in_channels, num_classes=num_classes, depth=depth,
                                  base_channels=base_channels, up_mode=up_mode, norm=norm)
        self.params: dict[str, Array] = {}
        for name, shape in shapes.items():
            if name not in params:
                raise ReferenceInputError(f"parameter {name!r} is missing: pass every name of model.named_parameters().")
            value = np.asarray(params[name], dtype=np.float64)
            if value.shape != shape:
                raise ReferenceInputError(f"parameter {name!r} has shape {value.shape}, expected {shape}.")
            self.params[name] = value
        self.trace = Trace()
        self.input_grad: Array | None = None

    # --- forward -------------------------------------------------------------------------------

    def forward(self, x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ReferenceInputError(f"input shape {x.shape} must be (N, {self.in_channels}, H, W).")
        self.trace = Trace()
        self._cache: dict[str, Any] = {"input_hw": x.shape[-2:]}
        self._record("input", "image", x)
        if self.padding == "same":  # PadToMultiple: centred zeros up to a multiple of 2**depth
            m = 2**self.depth
            ph, pw = -x.shape[-2] % m, -x.shape[-1] % m
            self._cache["pad"] = (ph // 2, pw // 2, x.shape[-2] + ph, x.shape[-1] + pw)
            x = window2d(x, -(ph // 2), -(pw // 2), x.shape[-2] + ph, x.shape[-1] + pw)
            if ph or pw:
                self._record("pad", f"zero-pad to a multiple of {m}", x)
        elif not all(_valid_output(n, self.depth) for n in x.shape[-2:]):
            raise ReferenceInputError(
                f"input size {x.shape[-2]}x{x.shape[-1]} does not fit padding='valid' with depth={self.depth}: "
                "use UNet.nearest_valid_sizes, or padding='same' for any size."
            )
        skips = self._cache["skips"] = []
        for level in range(self.depth):
            skip = self._double_conv(f"encoder.{level}.conv", x)
            skips.append(skip)
            x = max_pool2d(skip, 2)
            self._record(f"encoder.{level}.pool", "2x2 max-pool", x)
        x = self._double_conv("bottleneck.conv", x)
        for j, level in enumerate(reversed(range(self.depth))):
            x = self._decoder_level(j, level, x, skips[level])
        self._cache["head_in"] = x
        x = conv1x1(x, self.params["head.weight"], self.params["head.bias"])
        self._record("head", "1x1 conv", x)
        if self.padding == "same":  # CropBack: centred crop to the input's size
            h, w = self._cache["input_hw"]
            top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
            self._cache["crop"] = (top, left, x.shape[-2], x.shape[-1])
            if (h, w) != x.shape[-2:]:
                x = window2d(x, top, left, h, w)
                self._record("crop", "crop back to the input size", x)
        return x

    def _decoder_level(self, j: int, level: int, x: Array, skip: Array) -> Array:
        self._cache[f"decoder.{j}.up_in"] = x
        up = self._up(j, x)
        self._record(f"decoder.{j}.up", self._up_name(), up)
        top, left = (skip.shape[-2] - up.shape[-2]) // 2, (skip.shape[-1] - up.shape[-1]) // 2
        self._cache[f"decoder.{j}.crop"] = (top, left, skip.shape[-2], skip.shape[-1])
        cropped = window2d(skip, top, left, up.shape[-2], up.shape[-1])  # CenterCrop ('valid' only)
        if not self.skips:
            cropped = np.zeros_like(cropped)
        joined = concat([cropped, up])
        self._cache[f"decoder.{j}.channels"] = [cropped.shape[1], up.shape[1]]
        self._record(f"decoder.{j}.concat", f"concat [skip {_shape(cropped)}, up {_shape(up)}]", joined)
        return self._double_conv(f"decoder.{j}.conv", joined)

    def _up(self, j: int, x: Array) -> Array:
        w, b = self.params[f"{_up_prefix(j, self.up_mode)}.weight"], self.params[f"{_up_prefix(j, self.up_mode)}.bias"]
        if self.up_mode == "transpose":
            return conv_transpose2d(x, w, b, stride=2)
        resized = upsample_nearest(x, 2) if self.up_mode == "nearest" else upsample_bilinear(x, 2)
        self._cache[f"decoder.{j}.resized"] = resized
        return conv2d(resized, w, b, padding=1)

    def _up_name(self) -> str:
        if self.up_mode == "transpose":
            return "2x2 transposed conv, stride 2"
        return f"{self.up_mode} x2 + 3x3 conv"

    def _double_conv(self, prefix: str, x: Array) -> Array:
        for i in (1, 2):
            w, b = self.params[f"{prefix}.conv{i}.weight"], self.params.get(f"{prefix}.conv{i}.bias")
            z = conv2d(x, w, b, padding=self._conv_padding)
            y = z if self.norm is None else batch_norm(
                z, self.params[f"{prefix}.norm{i}.weight"], self.params[f"{prefix}.norm{i}.bias"], self.eps
            )
            self._cache[f"{prefix}.conv{i}"] = (x, z, y)
            x = relu(y)
            self._record(f"{prefix}.conv{i}", "3x3 conv" + (" + batch norm" if self.norm else "") + " + ReLU", x)
        return x

    @property
    def _conv_padding(self) -> int:
        return 1 if self.padding == "same" else 0

    def _record(self, name: str, op: str, a: Array) -> None:
        self.trace.forward.append((name, op, _hwc(a)))

    # --- backward --------------------------------------------------------------------------------

    def backward(self, dlogits: Array) -> dict[str, Array]:
        """dL/dparameter for every parameter, given dL/dlogits; the mirror of `forward`, read bottom up."""
        grads: dict[str, Array] = {}
        d = np.asarray(dlogits, dtype=np.float64)
        if self.padding == "same":
            top, left, h, w = self._cache["crop"]
            d = window2d_backward(d, top, left, h, w)
        x = self._cache["head_in"]
        d, grads["head.weight"], grads["head.bias"] = conv1x1_backward(d, x, self.params["head.weight"])
        self._step("head", "1x1 conv", d, grads["head.weight"])
        from_skip: dict[int, Array] = {}
        for j in reversed(range(self.depth)):  # decoder.0 is the deepest: walk back up from the last
            level = self.depth - 1 - j
            d, from_skip[level] = self._decoder_level_backward(j, level, d, grads)
        d = self._double_conv_backward("bottleneck.conv", d, grads)
        for level in reversed(range(self.depth)):
            deep = max_pool2d_backward(d, self._cache["skips"][level], 2)
            self._step(f"encoder.{level}.pool", "2x2 max-pool: gradient to each window's arg-max", deep)
            self.trace.encoder_grad[level] = {"skip": from_skip[level], "deep": deep}
            d = deep + from_skip[level]  # the encoder output fed two paths: their gradients add
            self._step(f"encoder.{level} output", "skip + deep path", d)
            d = self._double_conv_backward(f"encoder.{level}.conv", d, grads)
        if self.padding == "same":
            top, left, _, _ = self._cache["pad"]
            d = window2d(d, top, left, *self._cache["input_hw"])
        self.input_grad = d
        return grads

    def _decoder_level_backward(self, j: int, level: int, d: Array, grads: dict[str, Array]) -> tuple[Array, Array]:
        d = self._double_conv_backward(f"decoder.{j}.conv", d, grads)
        d_skip, d_up = concat_backward(d, self._cache[f"decoder.{j}.channels"])
        self.trace.concat_split[level] = {"skip": d_skip, "up": d_up}
        self._step(f"decoder.{j}.concat", "split: skip part | decoder part", d)
        top, left, h, w = self._cache[f"decoder.{j}.crop"]
        to_encoder = window2d_backward(d_skip, top, left, h, w)  # undo the centre crop
        if not self.skips:
            to_encoder = np.zeros_like(to_encoder)  # a constant zero skip passes nothing back
        prefix, x = _up_prefix(j, self.up_mode), self._cache[f"decoder.{j}.up_in"]
        w_up = self.params[f"{prefix}.weight"]
        if self.up_mode == "transpose":
            d, grads[f"{prefix}.weight"], grads[f"{prefix}.bias"] = conv_transpose2d_backward(d_up, x, w_up, stride=2)
        else:
            resized = self._cache[f"decoder.{j}.resized"]
            d, grads[f"{prefix}.weight"], grads[f"{prefix}.bias"] = conv2d_backward(d_up, resized, w_up, padding=1)
            if self.up_mode == "nearest":
                d = upsample_nearest_backward(d, 2)
            else:
                d = upsample_bilinear_backward(d, 2)
        self._step(f"decoder.{j}.up", self._up_name(), d, grads[f"{prefix}.weight"])
        return d, to_encoder

    def _double_conv_backward(self, prefix: str, d: Array, grads: dict[str, Array]) -> Array:
        for i in (2, 1):
            x, z, y = self._cache[f"{prefix}.conv{i}"]
            d = relu_backward(d, y)
            if self.norm is not None:
                gamma = self.params[f"{prefix}.norm{i}.weight"]
                d, grads[f"{prefix}.norm{i}.weight"], grads[f"{prefix}.norm{i}.bias"] = batch_norm_backward(
                    d, z, gamma, self.eps
                )
            w = self.params[f"{prefix}.conv{i}.weight"]
            d, grads[f"{prefix}.conv{i}.weight"], db = conv2d_backward(d, x, w, padding=self._conv_padding)
            if self.norm is None:
                grads[f"{prefix}.conv{i}.bias"] = db
            self._step(f"{prefix}.conv{i}", "ReLU, " + ("batch norm, " if self.norm else "") + "3x3 conv", d,
                       grads[f"{prefix}.conv{i}.weight"])
        return d

    def _step(self, name: str, op: str, grad: Array, param_grad: Array | None = None) -> None:
        self.trace.backward.append(
            BackwardStep(name, op, _hwc(grad), _norm(grad), None if param_grad is None else _norm(param_grad))
        )


def _shape(a: Array) -> str:
    h, w, c = _hwc(a)
    return f"{h}×{w}×{c}"
