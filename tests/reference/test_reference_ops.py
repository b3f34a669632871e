"""Each reference op against torch's own, forward and backward, in float64 (relative error
< 1e-10), on shapes, strides and paddings drawn by hypothesis; each backward against central
finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unetkit.reference import ops

FAST = settings(max_examples=30, deadline=None, derandomize=True)  # the same examples in every CI run
TOL = 1e-10


def rel_err(actual, expected) -> float:
    """max |actual - expected| / max |expected|, the scale floored at 1e-4: the inputs here are of
    unit scale, so a smaller result is a cancellation to 0 (the gradient of a batch norm over two
    values, say), whose rounding is absolute (~1e-16), not relative to its tiny size."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0), 1e-4))


def torch_run(fn, arrays, upstream=None):
    """Torch's output and the gradient of sum(output * upstream) for every array."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.ones_like(out) if upstream is None else torch.tensor(upstream))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def assert_match(ref_out, ref_grads, torch_out, torch_grads):
    assert rel_err(ref_out, torch_out) < TOL
    for ours, theirs in zip(ref_grads, torch_grads):
        assert rel_err(ours, theirs) < TOL


def rng_from(data) -> np.random.Generator:
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def pair(data, lo: int, hi: int, label: str) -> tuple[int, int]:
    return data.draw(st.tuples(st.integers(lo, hi), st.integers(lo, hi)), label=label)


# --- against torch ---------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_conv2d_matches_torch(data):
    rng = rng_from(data)
    n, c, o = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    k, s, p = pair(data, 1, 4, "kernel"), pair(data, 1, 3, "stride"), pair(data, 0, 2, "padding")
    h = data.draw(st.integers(max(1, k[0] - 2 * p[0]), 9))
    w = data.draw(st.integers(max(1, k[1] - 2 * p[1]), 9))
    x, wt, b = rng.normal(size=(n, c, h, w)), rng.normal(size=(o, c, *k)), rng.normal(size=o)
    out = ops.conv2d(x, wt, b, s, p)
    g = rng.normal(size=out.shape)
    assert_match(out, ops.conv2d_backward(g, x, wt, s, p), *torch_run(
        lambda x, wt, b: F.conv2d(x, wt, b, stride=s, padding=p), [x, wt, b], g))


@FAST
@given(st.data())
def test_conv_transpose2d_matches_torch(data):
    rng = rng_from(data)
    n, c, o = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    k, s, p = pair(data, 1, 4, "kernel"), pair(data, 1, 3, "stride"), pair(data, 0, 2, "padding")
    op = (data.draw(st.integers(0, s[0] - 1)), data.draw(st.integers(0, s[1] - 1)))
    h, w = pair(data, 1, 5, "input")
    assume(all((n_ - 1) * s_ - 2 * p_ + k_ + o_ >= 1 for n_, s_, p_, k_, o_ in zip((h, w), s, p, k, op)))
    x, wt, b = rng.normal(size=(n, c, h, w)), rng.normal(size=(c, o, *k)), rng.normal(size=o)
    out = ops.conv_transpose2d(x, wt, b, s, p, op)
    g = rng.normal(size=out.shape)
    assert_match(out, ops.conv_transpose2d_backward(g, x, wt, s, p, op), *torch_run(
        lambda x, wt, b: F.conv_transpose2d(x, wt, b, stride=s, padding=p, output_padding=op), [x, wt, b], g))


@FAST
@given(st.data())
def test_conv_transpose2d_keras_conventions_are_crops_of_torchs_canvas(data):
    """Keras 'valid' / 'same' (and a number p, the lecture drawing) crop the same scatter canvas
    that torch builds with padding 0; checked through torch's autograd with F.pad as the crop."""
    rng = rng_from(data)
    k, s = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    padding = data.draw(st.sampled_from(["valid", "same", 0, 1, 2]))
    h, w = pair(data, 1, 4, "input")
    x, wt = rng.normal(size=(1, 2, h, w)), rng.normal(size=(2, 3, k, k))
    out = ops.conv_transpose2d(x, wt, None, s, padding, None, "keras")
    g = rng.normal(size=out.shape)

    def crop(n: int) -> tuple[int, int]:
        canvas = (n - 1) * s + k
        if padding == "valid":
            front, size = 0, n * s + max(k - s, 0)
        elif padding == "same":
            front, size = max(canvas - n * s, 0) // 2, n * s
        else:
            front, size = padding, n * s
        return -front, size - (canvas - front)  # F.pad amounts: negative crops

    (top, bottom), (left, right) = crop(h), crop(w)
    assume(-top < (h - 1) * s + k and -left < (w - 1) * s + k)  # F.pad cannot crop a whole canvas away
    assert out.shape[-2:] == (h * s + (max(k - s, 0) if padding == "valid" else 0),
                              w * s + (max(k - s, 0) if padding == "valid" else 0))
    assert_match(out, ops.conv_transpose2d_backward(g, x, wt, s, padding, None, "keras")[:2], *torch_run(
        lambda x, wt: F.pad(F.conv_transpose2d(x, wt, stride=s), (left, right, top, bottom)), [x, wt], g))


@FAST
@given(st.data())
def test_max_pool2d_matches_torch(data):
    rng = rng_from(data)
    k, s = pair(data, 1, 3, "kernel"), pair(data, 1, 3, "stride")
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    h = data.draw(st.integers(max(1, k[0] - 2 * p[0]), 9))
    w = data.draw(st.integers(max(1, k[1] - 2 * p[1]), 9))
    x = rng.normal(size=(2, 2, h, w))
    out = ops.max_pool2d(x, k, s, p)
    g = rng.normal(size=out.shape)
    assert_match(out, [ops.max_pool2d_backward(g, x, k, s, p)], *torch_run(
        lambda x: F.max_pool2d(x, k, s, p), [x], g))


@FAST
@given(st.data())
def test_upsampling_matches_torch_interpolate(data):
    rng = rng_from(data)
    scale = pair(data, 1, 3, "scale")
    mode = data.draw(st.sampled_from(["nearest", "bilinear", "bilinear-corners"]))
    x = rng.normal(size=(2, 2, *pair(data, 1, 6, "input")))
    if mode == "nearest":
        out = ops.upsample_nearest(x, scale)
        g = rng.normal(size=out.shape)
        dx = ops.upsample_nearest_backward(g, scale)
        kwargs = {"mode": "nearest"}
    else:
        corners = mode == "bilinear-corners"
        out = ops.upsample_bilinear(x, scale, corners)
        g = rng.normal(size=out.shape)
        dx = ops.upsample_bilinear_backward(g, scale, corners)
        kwargs = {"mode": "bilinear", "align_corners": corners}
    assert_match(out, [dx], *torch_run(lambda x: F.interpolate(x, scale_factor=scale, **kwargs), [x], g))


@FAST
@given(st.data())
def test_batch_norm_training_mode_matches_torch(data):
    rng = rng_from(data)
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    h, w = pair(data, 1, 5, "size")
    assume(n * h * w > 1)
    x = rng.normal(size=(n, c, h, w)) * 3 + 1
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    out = ops.batch_norm(x, gamma, beta)
    g = rng.normal(size=out.shape)
    assert_match(out, ops.batch_norm_backward(g, x, gamma), *torch_run(
        lambda x, gm, bt: F.batch_norm(x, None, None, gm, bt, training=True, eps=1e-5), [x, gamma, beta], g))


@FAST
@given(st.data())
def test_cross_entropy_and_its_gradient_p_minus_y_match_torch(data):
    rng = rng_from(data)
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 5))
    spatial = data.draw(st.sampled_from([(), (3, 2), (1, 4)]))
    z, y = rng.normal(size=(n, c, *spatial)) * 3, rng.integers(0, c, size=(n, *spatial))
    loss, (dz,) = torch_run(lambda z: F.cross_entropy(z, torch.tensor(y)), [z])
    assert abs(ops.cross_entropy(z, y) - loss) / abs(loss) < TOL
    assert rel_err(ops.cross_entropy_backward(z, y), dz) < TOL


@FAST
@given(st.data())
def test_binary_cross_entropy_matches_torch(data):
    rng = rng_from(data)
    z, y = rng.normal(size=(2, 1, 3, 4)) * 4, rng.uniform(size=(2, 1, 3, 4)).round()
    loss, (dz,) = torch_run(lambda z: F.binary_cross_entropy_with_logits(z, torch.tensor(y)), [z])
    assert abs(ops.binary_cross_entropy(z, y) - loss) / abs(loss) < TOL
    assert rel_err(ops.binary_cross_entropy_backward(z, y), dz) < TOL


@FAST
@given(st.data())
def test_pointwise_ops_concat_conv1x1_and_window_match_torch(data):
    rng = rng_from(data)
    x = rng.normal(size=(2, 3, *pair(data, 1, 5, "size"))) * 3
    g = rng.normal(size=x.shape)
    assert_match(ops.relu(x), [ops.relu_backward(g, x)], *torch_run(F.relu, [x], g))
    s = ops.sigmoid(x)
    assert_match(s, [ops.sigmoid_backward(g, s)], *torch_run(torch.sigmoid, [x], g))
    p = ops.softmax(x, axis=1)
    assert_match(p, [ops.softmax_backward(g, p, axis=1)], *torch_run(lambda t: torch.softmax(t, 1), [x], g))

    a, b = x[:, :1].copy(), x[:, 1:].copy()
    assert_match(ops.concat([a, b]), ops.concat_backward(g, [1, 2]), *torch_run(
        lambda a, b: torch.cat([a, b], 1), [a, b], g))

    w, bias = rng.normal(size=(4, 3, 1, 1)), rng.normal(size=4)
    out = ops.conv1x1(x, w, bias)
    g1 = rng.normal(size=out.shape)
    assert_match(out, ops.conv1x1_backward(g1, x, w), *torch_run(lambda x, w, b: F.conv2d(x, w, b), [x, w, bias], g1))

    top, left = data.draw(st.integers(-3, 3)), data.draw(st.integers(-3, 3))
    height, width = pair(data, 1, 7, "window")
    assume(top < x.shape[2] and left < x.shape[3] and top + height > 0 and left + width > 0)
    out = ops.window2d(x, top, left, height, width)
    g2 = rng.normal(size=out.shape)
    pads = (-left, width - x.shape[3] + left, -top, height - x.shape[2] + top)
    assert_match(out, [ops.window2d_backward(g2, top, left, *x.shape[2:])], *torch_run(
        lambda t: F.pad(t, pads), [x], g2))


# --- against finite differences ------------------------------------------------------------------------

rng0 = np.random.default_rng(0)
Y4 = rng0.integers(0, 3, size=(2, 3, 2))

# name: (forward(*arrays) -> array, backward(dout, *arrays) -> grads, input shapes)
FD_CASES = {
    "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, 2, 1),
               lambda d, x, w, b: ops.conv2d_backward(d, x, w, 2, 1), [(2, 2, 5, 4), (3, 2, 3, 2), (3,)]),
    "conv_transpose2d torch": (
        lambda x, w, b: ops.conv_transpose2d(x, w, b, 2, 1, 1),
        lambda d, x, w, b: ops.conv_transpose2d_backward(d, x, w, 2, 1, 1), [(1, 2, 3, 2), (2, 3, 3, 3), (3,)]),
    "conv_transpose2d keras same": (
        lambda x, w: ops.conv_transpose2d(x, w, None, 2, "same", None, "keras"),
        lambda d, x, w: ops.conv_transpose2d_backward(d, x, w, 2, "same", None, "keras")[:2],
        [(1, 2, 3, 2), (2, 2, 3, 3)]),
    "conv1x1": (ops.conv1x1, lambda d, x, w, b: ops.conv1x1_backward(d, x, w), [(2, 3, 2, 3), (2, 3, 1, 1), (2,)]),
    "max_pool2d": (lambda x: ops.max_pool2d(x, 3, 2, 1),
                   lambda d, x: [ops.max_pool2d_backward(d, x, 3, 2, 1)], [(2, 2, 5, 6)]),
    "upsample_nearest": (lambda x: ops.upsample_nearest(x, (2, 3)),
                         lambda d, x: [ops.upsample_nearest_backward(d, (2, 3))], [(1, 2, 3, 2)]),
    "upsample_bilinear": (lambda x: ops.upsample_bilinear(x, 2),
                          lambda d, x: [ops.upsample_bilinear_backward(d, 2)], [(1, 2, 3, 4)]),
    "relu": (ops.relu, lambda d, x: [ops.relu_backward(d, x)], [(2, 3, 3, 3)]),
    "batch_norm": (ops.batch_norm, lambda d, x, g, b: ops.batch_norm_backward(d, x, g), [(3, 2, 2, 3), (2,), (2,)]),
    "softmax": (ops.softmax, lambda d, z: [ops.softmax_backward(d, ops.softmax(z))], [(2, 4, 2, 2)]),
    "sigmoid": (ops.sigmoid, lambda d, z: [ops.sigmoid_backward(d, ops.sigmoid(z))], [(2, 3, 2)]),
    "concat": (lambda a, b: ops.concat([a, b]), lambda d, a, b: ops.concat_backward(d, [2, 1]),
               [(2, 2, 3, 3), (2, 1, 3, 3)]),
    "window2d": (lambda x: ops.window2d(x, -1, 2, 4, 3),
                 lambda d, x: [ops.window2d_backward(d, -1, 2, 4, 5)], [(1, 2, 4, 5)]),
    "cross_entropy": (lambda z: np.array(ops.cross_entropy(z, Y4)),
                      lambda d, z: [d * ops.cross_entropy_backward(z, Y4)], [(2, 3, 3, 2)]),
    "binary_cross_entropy": (lambda z: np.array(ops.binary_cross_entropy(z, (Y4 > 0) * 1.0)),
                             lambda d, z: [d * ops.binary_cross_entropy_backward(z, (Y4 > 0) * 1.0)], [(2, 3, 2)]),
}


@pytest.mark.parametrize("name", list(FD_CASES))
def test_backward_matches_central_finite_differences(name):
    forward, backward, shapes = FD_CASES[name]
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=shape) for shape in shapes]
    upstream = rng.normal(size=np.shape(forward(*arrays)))
    analytic = backward(upstream, *arrays)

    def loss() -> float:
        return float(np.sum(forward(*arrays) * upstream))

    h = 1e-6
    for array, grad in zip(arrays, analytic):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            keep = array[index]
            array[index] = keep + h
            up = loss()
            array[index] = keep - h
            down = loss()
            array[index] = keep
            numeric[index] = (up - down) / (2 * h)
        assert rel_err(grad, numeric) < 1e-6, name


# --- the transposed convolution's size rules -----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "k", "s", "padding", "output_padding", "convention", "size", "front"),
    [
        (2, 1, 2, "valid", None, "keras", 4, 0),  # n*s + max(k - s, 0)
        (2, 3, 2, "valid", None, "keras", 5, 0),
        (2, 3, 2, "same", None, "keras", 4, 0),  # n*s, the odd pixel cropped at the end
        (2, 4, 2, "same", None, "keras", 4, 1),
        (2, 3, 2, 1, None, "keras", 4, 1),  # the lecture drawing
        (2, 3, 2, 1, None, "torch", 3, 1),  # (n-1)*s - 2p + k
        (2, 3, 2, 1, 1, "torch", 4, 1),
        (2, 3, 2, "same", 1, "keras", 4, 0),  # Keras' formula with output_padding
    ],
)
def test_transpose_geometry(n, k, s, padding, output_padding, convention, size, front):
    assert ops.transpose_geometry(n, k, s, padding, output_padding, convention)[:2] == (size, front)


@pytest.mark.parametrize(
    ("padding", "output_padding", "convention"),
    [("same", None, "torch"), (1, 1, "keras"), (0, 2, "torch"), ("full", None, "keras"), (0, None, "tf")],
)
def test_transpose_geometry_refuses_what_the_frameworks_refuse(padding, output_padding, convention):
    with pytest.raises(ops.ReferenceInputError):
        ops.transpose_geometry(2, 3, 2, padding, output_padding, convention)
