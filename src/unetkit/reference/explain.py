"""The step-by-step printers behind `unetkit explain transpose | upsample | conv | softmax | backward`.

Each `explain_*` function computes with the reference ops and returns an `Explanation`:
the lines to print and the same numbers as a JSON-able dict. Every number shown is
computed here; none is written in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.reference.ops import (
    Array,
    ReferenceInputError,
    conv2d,
    conv_transpose2d,
    cross_entropy,
    cross_entropy_backward,
    interpolation_matrix,
    softmax,
    transpose_geometry,
    upsample_bilinear,
    upsample_nearest,
    window2d,
)
from unetkit.reference.unet import ReferenceUNet, init_parameters

DEFAULT_CONVENTION = "keras"


@dataclass
class Explanation:
    """What one `explain` topic prints (`to_text`) and its `--json` form (`to_dict`)."""

    topic: str
    lines: list[str]
    data: dict[str, Any]

    def to_text(self) -> str:
        return "\n".join(self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, **self.data}


# --- reading and writing numbers ---------------------------------------------------------------


def parse_matrix(text: str, flag: str = "--input") -> Array:
    """'1 2; 3 4' (rows split by ';' or new lines, values by spaces or commas) or JSON
    '[[1, 2], [3, 4]]' -> a float64 matrix; a single number is a 1x1 matrix."""
    text = text.strip()
    rows: list[list[float]]
    try:
        if text.startswith("["):
            loaded = json.loads(text)
            rows = [loaded] if loaded and not isinstance(loaded[0], list) else loaded
            rows = [[float(v) for v in row] for row in rows]
        else:
            lines = [r for r in text.replace("\n", ";").split(";") if r.strip()]
            rows = [[float(v) for v in r.replace(",", " ").split()] for r in lines]
    except (ValueError, TypeError, IndexError):
        raise ReferenceInputError(f"{flag} {text!r} is not a matrix of numbers: write rows like \"1 2; 3 4\".") from None
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ReferenceInputError(
            f"{flag} {text!r} is not a matrix: every row needs the same number of values, e.g. \"1 2; 3 4\"."
        )
    matrix = np.array(rows, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise ReferenceInputError(f"{flag} {text!r} holds a value that is not a finite number.")
    return matrix


def parse_vector(text: str, flag: str = "--logits") -> Array:
    """'2.1 -0.5 -1.2' or '2.1, -0.5, -1.2' -> a float64 vector."""
    matrix = parse_matrix(text.replace(";", " "), flag)
    return matrix.reshape(-1)


def parse_padding(text: str | int) -> str | int:
    """'valid', 'same' or a whole number of pixels (an int is passed through)."""
    if isinstance(text, int):
        return text
    word = str(text).strip().lower()
    if word in ("valid", "same"):
        return word
    try:
        value = int(word)
    except ValueError:
        value = -1
    if value < 0:
        raise ReferenceInputError(f"--padding {text!r} is not known: use valid, same or a number of pixels such as 1.")
    return value


def parse_pixel(text: str) -> tuple[int, int]:
    """'4,4' (or '4 4') -> (row, column)."""
    try:
        row, col = (int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise ReferenceInputError(f"--pixel {text!r} is not a pixel: write ROW,COL such as 4,4.") from None
    return row, col


def _as_matrix(value: str | Any, flag: str) -> Array:
    if isinstance(value, str):
        return parse_matrix(value, flag)
    matrix = np.asarray(value, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ReferenceInputError(f"{flag} must be a non-empty matrix.")
    return matrix


def num(x: float, digits: int = 6) -> str:
    """A whole number as such (2, not 2.0), anything else to `digits` significant digits."""
    x = float(x)
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{digits}g}"


def matrix_lines(a: Array, indent: str = "    ") -> list[str]:
    """A matrix as right-aligned columns, one line per row."""
    cells = [[num(v) for v in row] for row in np.atleast_2d(a)]
    width = max(len(c) for row in cells for c in row)
    return [indent + " ".join(c.rjust(width) for c in row) for row in cells]


def _hw(a: Array) -> str:
    return f"{a.shape[0]}×{a.shape[1]}"


def _same_split(n: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow's 'same' padding for a convolution: output ceil(n / s), total padding
    max((out - 1)*s + k - n, 0), the smaller half before, the larger after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


# --- transposed convolution --------------------------------------------------------------------


def explain_transpose(
    input: str | Any = "1 2; 3 4",
    kernel: str | Any = "1 2; 3 4",
    stride: int = 2,
    padding: str | int = "valid",
    output_padding: int | None = None,
    convention: str | None = None,
    bias: float = 0.0,
) -> Explanation:
    """Every input value stamps the kernel, scaled by itself, on the output (one input to many
    outputs); overlapping stamps add up; the canvas is then cropped to the convention's size."""
    x, w = _as_matrix(input, "--input"), _as_matrix(kernel, "--kernel")
    if stride < 1:
        raise ReferenceInputError(f"--stride {stride} must be at least 1.")
    pad = parse_padding(padding)
    stated = convention is not None
    convention = convention or DEFAULT_CONVENTION
    (n_h, n_w), (k_h, k_w) = x.shape, w.shape
    geo_h = transpose_geometry(n_h, k_h, stride, pad, output_padding, convention)
    geo_w = transpose_geometry(n_w, k_w, stride, pad, output_padding, convention)
    (size_h, top, _), (size_w, left, _) = geo_h, geo_w
    out = conv_transpose2d(
        x[None, None], w[None, None], np.array([float(bias)]), stride, pad, output_padding, convention
    )[0, 0]
    canvas_h, canvas_w = (n_h - 1) * stride + k_h, (n_w - 1) * stride + k_w

    lines = [
        "transposed convolution: one input value to many outputs",
        "  out[i*s + m, j*s + n] += in[i, j] * w[m, n], on a canvas that is then cropped to the output size",
        f"convention: {convention}" + _convention_note(convention, pad),
        f"input {_hw(x)}, kernel {_hw(w)}, stride {stride}, padding {pad!r}"
        + ("" if output_padding is None else f", output_padding {output_padding}")
        + f", bias {num(bias)}",
        "",
        "input:",
        *matrix_lines(x),
        "kernel:",
        *matrix_lines(w),
        "",
        f"step 1: each input value scales the kernel and stamps it on a {canvas_h}×{canvas_w} canvas "
        f"((n-1)*s + k = ({n_h}-1)*{stride} + {k_h} = {canvas_h} rows, ({n_w}-1)*{stride} + {k_w} = {canvas_w} columns)",
    ]
    stamps = []
    canvas = np.zeros((canvas_h, canvas_w))
    for i in range(n_h):
        for j in range(n_w):
            scaled = x[i, j] * w
            canvas[i * stride : i * stride + k_h, j * stride : j * stride + k_w] += scaled
            rows = (i * stride - top, i * stride + k_h - 1 - top)
            cols = (j * stride - left, j * stride + k_w - 1 - left)
            lands, dropped = _landing(rows, cols, size_h, size_w)
            lines.append(f"  in[{i},{j}] = {num(x[i, j])}: {num(x[i, j])} × kernel lands on {lands}{dropped}")
            lines += matrix_lines(scaled, "      ")
            stamps.append(
                {"index": [i, j], "value": x[i, j], "scaled_kernel": scaled.tolist(),
                 "output_rows": list(rows), "output_columns": list(cols)}
            )
    lines += ["canvas (the sum of the stamps; where they overlap they add up):", *matrix_lines(canvas), ""]

    lines.append(f"step 2: crop the canvas to the output ({convention} convention, padding {pad!r})")
    for axis, (size, front, rule), n_canvas in (("rows", geo_h, canvas_h), ("columns", geo_w, canvas_w)):
        lines.append(f"  {axis}: {rule}; output {axis} start at canvas {axis[:-1]} {front}" + _tail(axis, front, size, n_canvas))
    lines.append(f"  out[r, c] = canvas[r + {top}, c + {left}] + bias {num(bias)}")
    torch_equivalent = _torch_equivalent(n_h, k_h, stride, size_h, top) if (n_h, k_h) == (n_w, k_w) else None
    if torch_equivalent:
        lines.append(f"  in PyTorch terms: {torch_equivalent}")
    hint = _lecture_hint(convention, pad, output_padding, n_h, k_h, stride, size_h)
    if hint:
        lines.append(f"  {hint}")
    lines += ["", f"output {_hw(out)} ({convention} convention):", *matrix_lines(out)]
    data = {
        "convention": convention,
        "convention_is_default": not stated,
        "input": x.tolist(),
        "kernel": w.tolist(),
        "stride": stride,
        "padding": pad,
        "output_padding": output_padding,
        "bias": float(bias),
        "stamps": stamps,
        "canvas": canvas.tolist(),
        "crop": {"top": top, "left": left},
        "rule": {"rows": geo_h[2], "columns": geo_w[2]},
        "torch_equivalent": torch_equivalent,
        "output_shape": list(out.shape),
        "output": out.tolist(),
    }
    return Explanation("transpose", lines, data)


def _convention_note(convention: str, pad: str | int) -> str:
    if convention == "torch":
        return f" (PyTorch's ConvTranspose2d; the default is {DEFAULT_CONVENTION})"
    note = " (the default; --convention torch gives PyTorch's output size)"
    if isinstance(pad, int):
        note += (
            "; Keras itself takes only padding 'valid' or 'same': a number p is read as lectures draw it, "
            f"output n*s with the first p={pad} rows and columns of the canvas dropped"
        )
    return note


def _landing(rows: tuple[int, int], cols: tuple[int, int], size_h: int, size_w: int) -> tuple[str, str]:
    """'output rows a..b, columns c..d' and which of them the crop drops."""
    def span(lo: int, hi: int, size: int) -> tuple[str, list[int]]:
        kept = [v for v in range(lo, hi + 1) if 0 <= v < size]
        dropped = [v for v in range(lo, hi + 1) if not 0 <= v < size]
        return (f"{kept[0]}..{kept[-1]}" if kept else "none"), dropped

    r, r_drop = span(*rows, size_h)
    c, c_drop = span(*cols, size_w)
    if r == "none" or c == "none":
        return "nothing of the output", " (it falls entirely outside the output and is dropped)"
    text = f"output rows {r}, columns {c}"
    dropped = [f"row {v}" for v in r_drop] + [f"column {v}" for v in c_drop]
    return text, (f" (outside the output, dropped: {', '.join(dropped)})" if dropped else "")


def _tail(axis: str, front: int, size: int, n_canvas: int) -> str:
    behind = n_canvas - front - size
    if behind > 0:
        return f", {front} dropped in front and {behind} at the end"
    if behind < 0:
        extra = f"{-behind} {axis if -behind > 1 else axis[:-1]}"
        return f", {front} dropped in front; {extra} of zeros at the end (no stamp reaches that far)"
    return f", {front} dropped in front, none at the end"


def _torch_equivalent(n: int, k: int, s: int, size: int, front: int) -> str | None:
    """PyTorch's padding and output_padding giving the same crop, if there are any."""
    op = size - ((n - 1) * s - 2 * front + k)
    if 0 <= op < s:
        return f"ConvTranspose2d(kernel_size={k}, stride={s}, padding={front}, output_padding={op})"
    return None


def _lecture_hint(convention: str, pad: str | int, output_padding: int | None, n: int, k: int, s: int, size: int) -> str:
    if convention != "torch" or output_padding is not None or size == n * s:
        return ""
    p = 0 if pad == "valid" else int(pad)
    op = n * s - ((n - 1) * s - 2 * p + k)
    if 0 <= op < s:
        return f"for an output of exactly stride × input = {n * s}, as lectures draw it, add --output-padding {op}"
    return ""


# --- convolution -------------------------------------------------------------------------------


def explain_conv(
    input: str | Any = "1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16",
    kernel: str | Any = "0 1 2; 2 2 0; 0 1 2",
    stride: int = 1,
    padding: str | int = 0,
    bias: float = 0.0,
) -> Explanation:
    """Every output is one window of the input times the kernel, summed (many inputs to one output)."""
    x, w = _as_matrix(input, "--input"), _as_matrix(kernel, "--kernel")
    if stride < 1:
        raise ReferenceInputError(f"--stride {stride} must be at least 1.")
    pad = parse_padding(padding)
    (n_h, n_w), (k_h, k_w) = x.shape, w.shape
    if pad == "same":  # TensorFlow's split; with stride 1 and an odd kernel it is (k - 1) / 2 on each side
        (_, top, bottom), (_, left, right) = _same_split(n_h, k_h, stride), _same_split(n_w, k_w, stride)
    else:
        top = bottom = left = right = 0 if pad == "valid" else int(pad)
    padded = window2d(x, -top, -left, n_h + top + bottom, n_w + left + right)
    if padded.shape[0] < k_h or padded.shape[1] < k_w:
        raise ReferenceInputError(
            f"a {_hw(w)} --kernel does not fit in the {_hw(padded)} (padded) --input: use a smaller kernel or more padding."
        )
    out = conv2d(padded[None, None], w[None, None], np.array([float(bias)]), stride)[0, 0]
    lines = [
        "convolution: many input values to one output",
        "  out[i, j] = sum over m, n of in[i*s + m, j*s + n] * w[m, n]  (+ bias)",
        f"input {_hw(x)}, kernel {_hw(w)}, stride {stride}, padding {pad!r}, bias {num(bias)}",
        f"  output size floor((n + pad - k) / s) + 1: rows floor(({n_h} + {top + bottom} - {k_h}) / {stride}) + 1 = "
        f"{out.shape[0]}, columns floor(({n_w} + {left + right} - {k_w}) / {stride}) + 1 = {out.shape[1]}",
        "",
        "input:",
        *matrix_lines(x),
        "kernel:",
        *matrix_lines(w),
    ]
    if pad == "same":
        lines.append("  padding 'same': ceil(n / s) outputs; the zeros they need are split as TensorFlow does, "
                     "the odd one at the bottom/right")
    if padded.shape != x.shape:
        lines += [f"input with zero padding (top {top}, bottom {bottom}, left {left}, right {right}):",
                  *matrix_lines(padded)]
    lines += ["", "each output reads one window of the (padded) input:"]
    steps = []
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            r, c = i * stride, j * stride
            window = padded[r : r + k_h, c : c + k_w]
            terms = " + ".join(f"{num(a)}*{num(b)}" for a, b in zip(window.ravel(), w.ravel()))
            shown = terms if w.size <= 25 else f"the sum of {w.size} products"
            plus = f" + {num(bias)}" if bias else ""
            lines.append(f"  out[{i},{j}] = in[{r}..{r + k_h - 1}, {c}..{c + k_w - 1}] · w = {shown}{plus} = {num(out[i, j])}")
            steps.append({"index": [i, j], "window_rows": [r, r + k_h - 1], "window_columns": [c, c + k_w - 1],
                          "window": window.tolist(), "value": out[i, j]})
    lines += ["", f"output {_hw(out)}:", *matrix_lines(out)]
    data = {"input": x.tolist(), "kernel": w.tolist(), "stride": stride, "padding": pad, "bias": float(bias),
            "padded_input": padded.tolist(), "steps": steps, "output_shape": list(out.shape), "output": out.tolist()}
    return Explanation("conv", lines, data)


# --- parameter-free up-sampling ----------------------------------------------------------------


def explain_upsample(input: str | Any = "1 2; 3 4", scale: int = 2, mode: str = "nearest") -> Explanation:
    """Nearest: repeat every row `scale` times, then every column. Bilinear: each new row is a
    weighted mean of the two nearest input rows, then the same for columns. No weights to learn."""
    x = _as_matrix(input, "--input")
    if scale < 1:
        raise ReferenceInputError(f"--scale {scale} must be a whole number of at least 1.")
    if mode not in ("nearest", "bilinear"):
        raise ReferenceInputError(f"--mode {mode!r} is not known: use nearest or bilinear.")
    n_h, n_w = x.shape
    lines = [f"up-sampling ({mode}), scale {scale}: {_hw(x)} -> {n_h * scale}×{n_w * scale}", "", "input:",
             *matrix_lines(x), ""]
    if mode == "nearest":
        rows = np.repeat(x, scale, axis=0)
        out = upsample_nearest(x[None, None], scale)[0, 0]
        lines += [f"step 1: repeat every row {scale} times (out row r = input row r // {scale}):", *matrix_lines(rows),
                  f"step 2: repeat every column {scale} times (out column c = column c // {scale}):"]
        weights: dict[str, Any] = {}
    else:
        a_h, a_w = interpolation_matrix(n_h, n_h * scale), interpolation_matrix(n_w, n_w * scale)
        rows = a_h @ x
        out = upsample_bilinear(x[None, None], scale)[0, 0]
        lines.append("step 1: each new row mixes the two nearest input rows "
                     f"(source position (r + 0.5) / {scale} - 0.5, clamped to the edges; align_corners=False):")
        lines += [f"  row {r} = {_mix(a_h[r], 'row')}" for r in range(a_h.shape[0])]
        lines += matrix_lines(rows)
        lines.append("step 2: the same between columns:")
        lines += [f"  column {c} = {_mix(a_w[c], 'column')}" for c in range(a_w.shape[0])]
        weights = {"row_weights": a_h.tolist(), "column_weights": a_w.tolist()}
    lines += matrix_lines(out)
    lines += [
        "",
        "no trainable parameters: up-sampling only copies or averages what is there. A transposed convolution",
        "learns its k×k kernel per input and output channel (unetkit's up_mode='transpose': 2×2, stride 2);",
        "with up_mode='nearest' or 'bilinear' unetkit follows the up-sampling with a 3×3 convolution to learn.",
        "",
        f"output {_hw(out)}:",
        *matrix_lines(out),
    ]
    data = {"mode": mode, "scale": scale, "input": x.tolist(), "after_rows": rows.tolist(), **weights,
            "trainable_parameters": 0, "output_shape": list(out.shape), "output": out.tolist()}
    return Explanation("upsample", lines, data)


def _mix(weights: Array, what: str) -> str:
    terms = [f"{num(wt)} × input {what} {i}" for i, wt in enumerate(weights) if wt]
    return " + ".join(terms)


# --- softmax -------------------------------------------------------------------------------------


def explain_softmax(logits: str | Any = "2.1 -0.5 -1.2 0.3 -0.8", target: int | None = None) -> Explanation:
    """p_k = exp(z_k - max z) / sum_j exp(z_j - max z); with a target class y, the
    cross-entropy -log p_y and its gradient p - y."""
    z = parse_vector(logits) if isinstance(logits, str) else np.asarray(logits, dtype=np.float64).reshape(-1)
    if z.size == 0:
        raise ReferenceInputError("--logits needs at least one number.")
    if target is not None and not 0 <= target < z.size:
        raise ReferenceInputError(f"--target {target} is not a class: use 0 to {z.size - 1}.")
    shifted = z - z.max()
    e = np.exp(shifted)
    p = softmax(z[None, :])[0]
    best = int(np.argmax(p))
    lines = [
        "softmax: logits -> class probabilities",
        "  p_k = exp(z_k - max z) / sum_j exp(z_j - max z)   (subtracting the max changes nothing, avoids overflow)",
        "",
        f"max z = {num(z.max())}; sum of exp(z - max) = {num(e.sum())}",
        "  class   logit z   z - max   exp(z - max)   probability p",
    ]
    for k in range(z.size):
        lines.append(f"  {k:>5}   {num(z[k]):>7}   {num(shifted[k]):>7}   {num(e[k]):>12}   {num(p[k]):>13}")
    lines += [f"sum of p = {num(p.sum(), 12)}", f"arg-max: class {best}, p = {num(p[best])}"]
    data: dict[str, Any] = {"logits": z.tolist(), "exp_shifted": e.tolist(), "sum_exp_shifted": float(e.sum()),
                            "probabilities": p.tolist(), "argmax": best}
    if target is not None:
        loss = cross_entropy(z[None, :], np.array([target]))
        grad = cross_entropy_backward(z[None, :], np.array([target]))[0]
        y = np.eye(z.size)[target]
        lines += [
            "",
            f"target class y = {target}: cross-entropy = -log p_y = -log {num(p[target])} = {num(loss)}",
            f"  gradient dL/dz = p - y = [{', '.join(num(v) for v in grad)}]  (y one-hot: [{', '.join(num(v) for v in y)}])",
        ]
        data.update({"target": target, "cross_entropy": loss, "grad_logits": grad.tolist()})
    return Explanation("softmax", lines, data)


# --- the backward pass of a small U-Net ---------------------------------------------------------


def cell_image(size: int = 8) -> tuple[Array, Array]:
    """A synthetic one-band image of a cell: brightness exp(-r^2 / 8), r the distance to the
    centre (bright centre, dark edges); label 1 (cell) where it is above 0.5, else 0."""
    c = (size - 1) / 2
    r2 = (np.arange(size)[:, None] - c) ** 2 + (np.arange(size)[None, :] - c) ** 2
    image = np.exp(-r2 / 8.0)
    return image, (image > 0.5).astype(np.int64)


def explain_backward(
    seed: int = 0,
    up_mode: str = "transpose",
    norm: str | None = None,
    pixel: tuple[int, int] | None = None,
    size: int = 8,
    depth: int = 2,
    base_channels: int = 4,
) -> Explanation:
    """Forward and backward through a small seeded U-Net on the cell image, with the gradient's
    split at every concatenation and what the skips do for the gradient of the first level."""
    config = {"in_channels": 1, "num_classes": 2, "depth": depth, "base_channels": base_channels,
              "up_mode": up_mode, "norm": norm, "dropout": 0.0, "padding": "same"}
    params = init_parameters(seed, **config)
    image, labels = cell_image(size)
    r, c = pixel if pixel is not None else (size // 2, size // 2)
    if not (0 <= r < size and 0 <= c < size):
        raise ReferenceInputError(f"--pixel {r},{c} is outside the {size}×{size} image: use 0 to {size - 1}.")
    x, y = image[None, None], labels[None]

    net = ReferenceUNet(params, **config)
    logits = net.forward(x)
    loss = cross_entropy(logits, y)
    dlogits = cross_entropy_backward(logits, y)
    grads = net.backward(dlogits)
    trace = net.trace
    plain = ReferenceUNet(params, **config, skips=False)
    plain_logits = plain.forward(x)
    plain_loss = cross_entropy(plain_logits, y)
    plain_grads = plain.backward(cross_entropy_backward(plain_logits, y))

    m = logits.shape[2] * logits.shape[3]
    z = logits[0, :, r, c]
    p = softmax(logits)[0, :, r, c]
    onehot = np.eye(2)[labels[r, c]]
    shape = f"{size}×{size}×1"
    lines = [
        "backward pass through a small U-Net, every number computed (NumPy reference, float64)",
        f"network: depth {depth}, base_channels {base_channels}, up_mode {up_mode!r}, norm {norm or 'none'}, "
        f"padding 'same', He-initialised weights (seed {seed})",
        f"image: {shape} synthetic cell, brightness exp(-r²/8) (bright centre, dark edges); "
        f"label 1 = cell (brightness > 0.5, {int(labels.sum())} pixels), 0 = background",
        *matrix_lines(np.round(image, 2)),
        "",
        "forward (height × width × channels):",
    ]
    for name, op, (h, w, ch) in trace.forward:
        lines.append(f"  {name:<24} {op:<44} {h}×{w}×{ch}")
    lines += [
        "",
        f"loss: cross-entropy averaged over the {m} pixels, L = {num(loss)}",
        f"at pixel ({r}, {c}), label y = {labels[r, c]}:",
        f"  logits z = [{', '.join(num(v) for v in z)}], p = softmax(z) = [{', '.join(num(v) for v in p)}]",
        f"  cross-entropy here -log p_y = {num(-np.log(p[labels[r, c]]))}",
        f"  dCE/dz = p - y = [{', '.join(num(v) for v in p - onehot)}]; "
        f"dL/dz = (p - y) / {m} = [{', '.join(num(v) for v in dlogits[0, :, r, c])}]",
        "",
        "backward: the gradient each layer hands to its input (|g| = its Euclidean norm)",
    ]
    for step in trace.backward:
        h, w, ch = step.grad_shape
        weights = "" if step.param_grad_norm is None else f"   |dW| = {num(step.param_grad_norm, 4)}"
        lines.append(f"  {step.name:<24} {step.op:<48} dL/din {f'{h}×{w}×{ch}':<9} |g| = {num(step.grad_norm, 4)}{weights}")
        if step.name.endswith(".concat"):
            level = depth - 1 - int(step.name.split(".")[1])
            split = trace.concat_split[level]
            lines.append(
                f"  {'':<24}   skip part {_shape_of(split['skip'])} |g| = {num(_norm(split['skip']), 4)} -> encoder "
                f"level {level + 1}; decoder part {_shape_of(split['up'])} |g| = {num(_norm(split['up']), 4)} -> "
                f"{step.name.rsplit('.', 1)[0]}.up"
            )

    first = trace.encoder_grad[0]
    total = first["skip"] + first["deep"]
    no_skip = plain.trace.encoder_grad[0]["deep"]
    w_name = "encoder.0.conv.conv1.weight"
    if _norm(no_skip) > 0:
        ratio = _norm(total) / _norm(no_skip)
        ratio_line = f"  so with its skip, encoder level 1 receives {num(ratio, 3)} times the gradient it gets without"
    else:
        ratio_line = "  without the skips no gradient reaches encoder level 1 at all"
    lines += [
        "",
        f"what the skips do for the gradient at encoder level 1 (its output, {_shape_of(total)}):",
        f"  through the skip:       |g| = {num(_norm(first['skip']), 4)}",
        f"  through the deep path:  |g| = {num(_norm(first['deep']), 4)}   (pool, {depth - 1} more level(s), "
        "bottleneck, decoder, back up)",
        f"  both (they add):        |g| = {num(_norm(total), 4)}",
        f"  skips removed (same weights, skip features replaced by zeros): |g| = {num(_norm(no_skip), 4)}, "
        f"loss {num(plain_loss)}",
        ratio_line,
        f"  first convolution's weight gradient |dW|: with skips {num(_norm(grads[w_name]), 4)}, "
        f"without {num(_norm(plain_grads[w_name]), 4)}",
    ]
    data = {
        "config": {**config, "seed": seed},
        "image": image.tolist(),
        "labels": labels.tolist(),
        "forward": [{"name": n, "op": o, "shape": list(s)} for n, o, s in trace.forward],
        "loss": loss,
        "pixel": {"index": [r, c], "label": int(labels[r, c]), "logits": z.tolist(), "probabilities": p.tolist(),
                  "cross_entropy": float(-np.log(p[labels[r, c]])), "p_minus_y": (p - onehot).tolist(),
                  "grad_logits": dlogits[0, :, r, c].tolist()},
        "backward": [{"name": s.name, "op": s.op, "grad_shape": list(s.grad_shape), "grad_norm": s.grad_norm,
                      "param_grad_norm": s.param_grad_norm} for s in trace.backward],
        "concat_splits": [{"level": level + 1, "skip_shape": list(_hwc(sp["skip"])), "skip_norm": _norm(sp["skip"]),
                           "decoder_shape": list(_hwc(sp["up"])), "decoder_norm": _norm(sp["up"])}
                          for level, sp in sorted(trace.concat_split.items())],
        "first_level": {"through_skip": _norm(first["skip"]), "through_deep_path": _norm(first["deep"]),
                        "total": _norm(total), "without_skips": _norm(no_skip),
                        "first_conv_weight_grad": _norm(grads[w_name]),
                        "first_conv_weight_grad_without_skips": _norm(plain_grads[w_name])},
        "loss_without_skips": plain_loss,
    }
    return Explanation("backward", lines, data)


def _norm(a: Array) -> float:
    return float(math.sqrt(float(np.sum(a * a))))


def _hwc(a: Array) -> tuple[int, int, int]:
    return int(a.shape[2]), int(a.shape[3]), int(a.shape[1])


def _shape_of(a: Array) -> str:
    h, w, c = _hwc(a)
    return f"{h}×{w}×{c}"
