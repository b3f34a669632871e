"""Every layer the U-Net uses, as a NumPy forward and backward in float64.

Each op is a pair: `op(...)` computes the output, `op_backward(dout, <op's inputs>)` takes
dL/d(output) and returns dL/d(each input), recomputing whatever it needs from the inputs so
that every pair reads on its own. Arrays are (N, C, H, W) as in PyTorch, weights in
PyTorch's layouts, so the tests can hold each op against torch to 1e-10.

Two index helpers carry the arithmetic of every sliding-window op:
`_gather` reads each output's window (many inputs -> one output: convolution, max-pool) and
`_scatter`, its exact adjoint, adds each window back (one input -> many outputs: the
transposed convolution, and the backward of the convolution). `window2d` pads and crops.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Array = np.ndarray
IntPair = int | tuple[int, int]
Padding = int | str


class ReferenceInputError(ValueError):
    """An input the reference cannot compute; the message names it and says what to use."""


def _pair(value: IntPair, name: str, minimum: int = 0) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, (int, np.integer)) or v < minimum for v in pair):
        raise ReferenceInputError(f"{name}={value!r} must be a whole number (or a pair) of at least {minimum}.")
    return int(pair[0]), int(pair[1])


# --- moving values around: pad / crop, gather / scatter --------------------------------------


def window2d(x: Array, top: int, left: int, height: int, width: int, fill: float = 0.0) -> Array:
    """out[..., i, j] = x[..., i + top, j + left], `fill` where that falls outside x.

    With top, left >= 0 and a window inside x it is a crop; with negative offsets, a pad.
    Its backward is the same window shifted back: `window2d(dout, -top, -left, H, W)`.
    """
    out = np.full(x.shape[:-2] + (height, width), fill, dtype=np.float64)
    rows = slice(max(0, -top), min(height, x.shape[-2] - top))
    cols = slice(max(0, -left), min(width, x.shape[-1] - left))
    if rows.start < rows.stop and cols.start < cols.stop:
        out[..., rows, cols] = x[..., rows.start + top : rows.stop + top, cols.start + left : cols.stop + left]
    return out


def window2d_backward(dout: Array, top: int, left: int, height: int, width: int) -> Array:
    """Each output value came from one input value (or from nothing): send it back there.
    `height`, `width` are the forward input's."""
    return window2d(dout, -top, -left, height, width)


def _pad(x: Array, padding: tuple[int, int], fill: float = 0.0) -> Array:
    ph, pw = padding
    return window2d(x, -ph, -pw, x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw, fill)


def _unpad(dx: Array, padding: tuple[int, int]) -> Array:
    ph, pw = padding
    return window2d(dx, ph, pw, dx.shape[-2] - 2 * ph, dx.shape[-1] - 2 * pw)


def _gather(x: Array, kernel: tuple[int, int], stride: tuple[int, int]) -> Array:
    """windows[..., i, j, m, n] = x[..., i*s + m, j*s + n]: the window each output reads."""
    kh, kw = kernel
    if x.shape[-2] < kh or x.shape[-1] < kw:
        raise ReferenceInputError(
            f"a {kh}x{kw} window does not fit in a {x.shape[-2]}x{x.shape[-1]} map: use a larger input or more padding."
        )
    return sliding_window_view(x, (kh, kw), axis=(-2, -1))[..., :: stride[0], :: stride[1], :, :]


def _scatter(windows: Array, stride: tuple[int, int], size: tuple[int, int]) -> Array:
    """The adjoint of `_gather`: out[..., i*s + m, j*s + n] += windows[..., i, j, m, n]."""
    *lead, ho, wo, kh, kw = windows.shape
    sh, sw = stride
    out = np.zeros((*lead, *size))
    for m in range(kh):
        for n in range(kw):
            out[..., m : m + sh * (ho - 1) + 1 : sh, n : n + sw * (wo - 1) + 1 : sw] += windows[..., m, n]
    return out


# --- convolution: many inputs to one output ----------------------------------------------------


def conv2d(x: Array, w: Array, b: Array | None = None, stride: IntPair = 1, padding: IntPair = 0) -> Array:
    """out[o, i, j] = b[o] + sum_{c, m, n} x_pad[c, i*s + m, j*s + n] * w[o, c, m, n]

    x (N, C, H, W), w (O, C, kh, kw); x_pad has `padding` zeros on each side; the output
    is floor((H + 2p - kh) / s) + 1 high. Many inputs (a window) make one output.
    """
    s, p = _pair(stride, "stride", 1), _pair(padding, "padding")
    windows = _gather(_pad(x, p), w.shape[-2:], s)
    out = np.einsum("nchwkl,ockl->nohw", windows, w)
    return out if b is None else out + b[None, :, None, None]


def conv2d_backward(
    dout: Array, x: Array, w: Array, stride: IntPair = 1, padding: IntPair = 0
) -> tuple[Array, Array, Array]:
    """dw[o, c, m, n] = sum_{i, j} dout[o, i, j] * x_pad[c, i*s + m, j*s + n]; db[o] = sum dout[o];
    dx_pad[c, i*s + m, j*s + n] += dout[o, i, j] * w[o, c, m, n] -- the input gradient is a
    scatter, i.e. a transposed convolution of dout. Returns (dx, dw, db)."""
    s, p = _pair(stride, "stride", 1), _pair(padding, "padding")
    xp = _pad(x, p)
    dw = np.einsum("nohw,nchwkl->ockl", dout, _gather(xp, w.shape[-2:], s))
    dxp = _scatter(np.einsum("nohw,ockl->nchwkl", dout, w), s, xp.shape[-2:])
    return _unpad(dxp, p), dw, dout.sum(axis=(0, 2, 3))


def conv1x1(x: Array, w: Array, b: Array | None = None) -> Array:
    """out[o, i, j] = b[o] + sum_c w[o, c] * x[c, i, j]: a per-pixel linear layer (the U-Net's head).
    w is (O, C, 1, 1) as in PyTorch."""
    out = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    return out if b is None else out + b[None, :, None, None]


def conv1x1_backward(dout: Array, x: Array, w: Array) -> tuple[Array, Array, Array]:
    """dx[c] = sum_o w[o, c] dout[o]; dw[o, c] = sum_pixels dout[o] x[c]; db[o] = sum dout[o]."""
    dx = np.einsum("oc,nohw->nchw", w[:, :, 0, 0], dout)
    dw = np.einsum("nohw,nchw->oc", dout, x)[:, :, None, None]
    return dx, dw, dout.sum(axis=(0, 2, 3))


# --- transposed convolution: one input to many outputs -----------------------------------------


def transpose_geometry(
    n: int, k: int, s: int, padding: Padding = 0, output_padding: int | None = None, convention: str = "torch"
) -> tuple[int, int, str]:
    """Output length, crop (canvas cells dropped before the output starts) and the rule used,
    for one axis of a transposed convolution whose scatter canvas is (n - 1)*s + k long.

    torch: length (n-1)*s - 2p + k + output_padding; out[o] = canvas[o + p].
    keras 'valid': n*s + max(k - s, 0), nothing dropped in front (zeros after if k < s).
    keras 'same': n*s, the excess k - s split as TensorFlow does, the smaller half in front.
    keras with output_padding: Keras' (n-1)*s + k - 2*pad + output_padding, pad = 0 or k // 2.
    keras with a number p (Keras itself has none): the lecture drawing, length n*s with the
    first p canvas cells dropped -- PyTorch's padding=p, output_padding=s + 2p - k.
    """
    if convention not in ("torch", "keras"):
        raise ReferenceInputError(f"convention={convention!r} is not known: use 'keras' or 'torch'.")
    if output_padding is not None and not 0 <= output_padding < s:
        raise ReferenceInputError(
            f"output_padding={output_padding} must be at least 0 and smaller than the stride {s} "
            "(PyTorch and Keras both refuse more)."
        )
    canvas = (n - 1) * s + k
    if isinstance(padding, str) and padding not in ("valid", "same"):
        raise ReferenceInputError(f"padding={padding!r} is not known: use 'valid', 'same' or a number of pixels.")
    if isinstance(padding, (int, np.integer)) and padding < 0:
        raise ReferenceInputError(f"padding={padding} must not be negative.")
    op = output_padding or 0
    if convention == "torch":
        if padding == "same":
            raise ReferenceInputError(
                "PyTorch's ConvTranspose2d has no padding='same': give a number of pixels, "
                "or use the keras convention (--convention keras)."
            )
        p = 0 if padding == "valid" else int(padding)
        size, front = canvas - 2 * p + op, p
        rule = f"(n-1)*s - 2p + k + output_padding = ({n}-1)*{s} - 2*{p} + {k} + {op} = {size}"
    elif padding == "valid" and output_padding is None:
        size, front = n * s + max(k - s, 0), 0
        rule = f"n*s + max(k - s, 0) = {n}*{s} + max({k} - {s}, 0) = {size}"
    elif padding == "same" and output_padding is None:
        size = n * s
        front = max(canvas - size, 0) // 2
        rule = f"n*s = {n}*{s} = {size}"
    elif isinstance(padding, str):
        pad = 0 if padding == "valid" else k // 2
        size = canvas - 2 * pad + op
        front = 0 if padding == "valid" else max(canvas - size, 0) // 2
        rule = f"(n-1)*s + k - 2*pad + output_padding = ({n}-1)*{s} + {k} - 2*{pad} + {op} = {size}"
        if padding == "same" and -(-size // s) != n:
            raise ReferenceInputError(
                f"Keras padding='same' with output_padding={op} gives {size}, which TensorFlow cannot "
                f"map back to {n} inputs: use another output_padding or padding='valid'."
            )
    else:
        if output_padding is not None:
            raise ReferenceInputError(
                "an output_padding with a number of pixels of padding is PyTorch's: use the torch convention (--convention torch)."
            )
        size, front = n * s, int(padding)
        rule = f"n*s = {n}*{s} = {size}, the first {front} canvas cells dropped"
    if size < 1:
        raise ReferenceInputError(
            f"the output would have {size} rows or columns ({rule}): use less padding or a larger input."
        )
    return size, front, rule


def _transpose_plan(x: Array, w: Array, stride, padding, output_padding, convention):
    s = _pair(stride, "stride", 1)
    if isinstance(padding, str):
        p: tuple = (padding, padding)
    else:
        p = _pair(padding, "padding")
    op = (None, None) if output_padding is None else _pair(output_padding, "output_padding")
    geo = [
        transpose_geometry(x.shape[axis], w.shape[axis], s[i], p[i], op[i], convention)
        for i, axis in enumerate((-2, -1))
    ]
    canvas = tuple((x.shape[axis] - 1) * s[i] + w.shape[axis] for i, axis in enumerate((-2, -1)))
    return s, canvas, (geo[0][1], geo[1][1]), (geo[0][0], geo[1][0])


def conv_transpose2d(
    x: Array,
    w: Array,
    b: Array | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    output_padding: IntPair | None = None,
    convention: str = "torch",
) -> Array:
    """canvas[o, i*s + m, j*s + n] += x[c, i, j] * w[c, o, m, n], then cropped, plus b[o].

    One input to many outputs: every input value stamps the whole kernel, scaled by itself,
    on a canvas of (H - 1)*s + kh rows; where stamps overlap they add up. The canvas is then
    cropped (or zero-extended) to the output size of `convention` -- see `transpose_geometry`.
    w is (C_in, C_out, kh, kw), PyTorch's layout; the default is PyTorch's convention.
    """
    s, canvas_size, front, size = _transpose_plan(x, w, stride, padding, output_padding, convention)
    canvas = _scatter(np.einsum("nchw,cokl->nohwkl", x, w), s, canvas_size)
    out = window2d(canvas, front[0], front[1], *size)
    return out if b is None else out + b[None, :, None, None]


def conv_transpose2d_backward(
    dout: Array,
    x: Array,
    w: Array,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    output_padding: IntPair | None = None,
    convention: str = "torch",
) -> tuple[Array, Array, Array]:
    """dcanvas = dout put back where the crop took it from (zero where it was dropped);
    dx[c, i, j] = sum_{o, m, n} dcanvas[o, i*s + m, j*s + n] * w[c, o, m, n] -- a convolution,
    many to one; dw[c, o, m, n] = sum_{i, j} x[c, i, j] * dcanvas[o, i*s + m, j*s + n];
    db[o] = sum dout[o]. Returns (dx, dw, db)."""
    s, canvas_size, front, _ = _transpose_plan(x, w, stride, padding, output_padding, convention)
    dcanvas = window2d_backward(dout, front[0], front[1], *canvas_size)
    windows = _gather(dcanvas, w.shape[-2:], s)
    dx = np.einsum("nohwkl,cokl->nchw", windows, w)
    dw = np.einsum("nchw,nohwkl->cokl", x, windows)
    return dx, dw, dout.sum(axis=(0, 2, 3))


# --- pooling and parameter-free up-sampling ----------------------------------------------------


def max_pool2d(x: Array, kernel: IntPair = 2, stride: IntPair | None = None, padding: IntPair = 0) -> Array:
    """out[i, j] = max_{m, n} x_pad[i*s + m, j*s + n]; padding is -inf, never the maximum.
    The stride defaults to the kernel (non-overlapping windows, the U-Net's 2x2 halving)."""
    k = _pair(kernel, "kernel", 1)
    s = k if stride is None else _pair(stride, "stride", 1)
    return _gather(_pad(x, _pair(padding, "padding"), -np.inf), k, s).max(axis=(-2, -1))


def max_pool2d_backward(
    dout: Array, x: Array, kernel: IntPair = 2, stride: IntPair | None = None, padding: IntPair = 0
) -> Array:
    """Only the arg-max of each window moved the output, so it alone gets the gradient:
    dx[arg-max of window (i, j)] += dout[i, j] (the first maximum on ties, as PyTorch)."""
    k, p = _pair(kernel, "kernel", 1), _pair(padding, "padding")
    s = k if stride is None else _pair(stride, "stride", 1)
    xp = _pad(x, p, -np.inf)
    windows = _gather(xp, k, s)
    flat = windows.reshape(*windows.shape[:-2], -1)
    hit = np.arange(flat.shape[-1]) == flat.argmax(axis=-1)[..., None]
    dxp = _scatter(hit.reshape(windows.shape) * dout[..., None, None], s, xp.shape[-2:])
    return _unpad(dxp, p)


def upsample_nearest(x: Array, scale: IntPair = 2) -> Array:
    """out[i, j] = x[i // s, j // s]: repeat every row s times, then every column. No weights."""
    sh, sw = _pair(scale, "scale", 1)
    return np.repeat(np.repeat(x, sh, axis=-2), sw, axis=-1)


def upsample_nearest_backward(dout: Array, scale: IntPair = 2) -> Array:
    """Each input was copied into an s x s block, so its gradient is the block's sum."""
    sh, sw = _pair(scale, "scale", 1)
    *lead, h, w = dout.shape
    return dout.reshape(*lead, h // sh, sh, w // sw, sw).sum(axis=(-3, -1))


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool = False) -> Array:
    """A (n_out, n_in): out = A @ in is 1-D linear interpolation, PyTorch's source index:
    src = (o + 0.5) * n_in / n_out - 0.5 clamped at 0 (align_corners=False), or
    src = o * (n_in - 1) / (n_out - 1) (True); out[o] = (1 - f) in[floor(src)] + f in[floor(src) + 1]."""
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        if align_corners:
            src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((o + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        a[o, i0] += 1.0 - frac
        a[o, i1] += frac
    return a


def upsample_bilinear(x: Array, scale: IntPair = 2, align_corners: bool = False) -> Array:
    """out = A_h @ x @ A_w^T: interpolate between rows, then between columns. No weights."""
    sh, sw = _pair(scale, "scale", 1)
    h, w = x.shape[-2:]
    return interpolation_matrix(h, h * sh, align_corners) @ x @ interpolation_matrix(w, w * sw, align_corners).T


def upsample_bilinear_backward(dout: Array, scale: IntPair = 2, align_corners: bool = False) -> Array:
    """The forward is linear, out = A_h x A_w^T, so dx = A_h^T dout A_w."""
    sh, sw = _pair(scale, "scale", 1)
    h, w = dout.shape[-2] // sh, dout.shape[-1] // sw
    return interpolation_matrix(h, h * sh, align_corners).T @ dout @ interpolation_matrix(w, w * sw, align_corners)


# --- point-wise, normalisation, concatenation ---------------------------------------------------


def relu(x: Array) -> Array:
    """out = max(x, 0)."""
    return np.maximum(x, 0.0)


def relu_backward(dout: Array, x: Array) -> Array:
    """The gradient passes where the input was positive and stops elsewhere: dout * [x > 0]."""
    return dout * (x > 0)


def batch_norm(x: Array, gamma: Array, beta: Array, eps: float = 1e-5) -> Array:
    """Training mode: y = gamma * (x - mean) / sqrt(var + eps) + beta, with the mean and the
    biased (divide by M) variance of each channel over the batch and all pixels (M values)."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return gamma[None, :, None, None] * (x - mean) / np.sqrt(var + eps) + beta[None, :, None, None]


def batch_norm_backward(dout: Array, x: Array, gamma: Array, eps: float = 1e-5) -> tuple[Array, Array, Array]:
    """With xhat = (x - mean) / sqrt(var + eps) and dxhat = gamma * dout, the statistics depend
    on every x, hence dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps);
    dgamma = sum dout * xhat, dbeta = sum dout. Returns (dx, dgamma, dbeta)."""
    axes = (0, 2, 3)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    dxhat = gamma[None, :, None, None] * dout
    dx = (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    return dx / np.sqrt(var + eps), (dout * xhat).sum(axis=axes), dout.sum(axis=axes)


def concat(parts: list[Array]) -> Array:
    """Stack feature maps along the channel axis: the U-Net's skip connection, [skip, up]."""
    return np.concatenate(parts, axis=1)


def concat_backward(dout: Array, channels: list[int]) -> list[Array]:
    """The gradient splits: each part gets back exactly its own channels of dL/dconcat."""
    return np.split(dout, np.cumsum(channels)[:-1], axis=1)


# --- activations and losses ------------------------------------------------------------------------


def softmax(z: Array, axis: int = 1) -> Array:
    """p_k = exp(z_k - max z) / sum_j exp(z_j - max z); subtracting the max changes nothing
    but keeps exp from overflowing."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dout: Array, p: Array, axis: int = 1) -> Array:
    """dp_k/dz_j = p_k (delta_kj - p_j), hence dz = p * (dout - sum_k dout_k p_k)."""
    return p * (dout - (dout * p).sum(axis=axis, keepdims=True))


def sigmoid(z: Array) -> Array:
    """s = 1 / (1 + exp(-z)), computed as exp(-log(1 + exp(-z))) so no exp overflows."""
    return np.exp(-np.logaddexp(0.0, -z))


def sigmoid_backward(dout: Array, s: Array) -> Array:
    """ds/dz = s (1 - s)."""
    return dout * s * (1.0 - s)


def _one_hot(target: Array, classes: int) -> Array:
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer) or target.min() < 0 or target.max() >= classes:
        raise ReferenceInputError(f"class labels must be whole numbers from 0 to {classes - 1}.")
    return np.moveaxis(np.eye(classes)[target], -1, 1)


def cross_entropy(logits: Array, target: Array) -> float:
    """L = mean over samples and pixels of -log softmax(z)[y] = logsumexp(z) - z_y.
    logits (N, C, ...), target (N, ...) of class indices."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(log_p * _one_hot(target, logits.shape[1])).sum(axis=1).mean())


def cross_entropy_backward(logits: Array, target: Array) -> Array:
    """dL/dz = (p - y) / M: probability minus one-hot label, averaged over the M terms."""
    m = logits.size // logits.shape[1]
    return (softmax(logits, axis=1) - _one_hot(target, logits.shape[1])) / m


def binary_cross_entropy(logits: Array, target: Array) -> float:
    """L = mean of -(y log s + (1 - y) log(1 - s)), s = sigmoid(z), computed stably as
    mean of log(1 + exp(z)) - y z. Targets in [0, 1], the logits' shape."""
    return float((np.logaddexp(0.0, logits) - target * logits).mean())


def binary_cross_entropy_backward(logits: Array, target: Array) -> Array:
    """dL/dz = (sigmoid(z) - y) / M, the same p - y as the softmax cross-entropy."""
    return (sigmoid(logits) - target) / logits.size
