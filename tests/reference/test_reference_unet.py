"""The NumPy reference U-Net against `unetkit.UNet` in float64: the same logits and the same
gradient for every parameter (relative error < 1e-9), and the gradient's split at a skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit import UNet
from unetkit.reference import ReferenceInputError, ReferenceUNet, init_parameters, parameter_shapes
from unetkit.reference.unet import widths

TOL = 1e-9


def rel_err(actual, expected, floor: float = 1e-6) -> float:
    """max |actual - expected| / max |expected|, the denominator at least `floor`."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), floor))


def numpy_params(model: UNet) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy() for name, p in model.named_parameters()}


def torch_and_reference(config: dict, size: tuple[int, int] | int, batch: int = 2):
    """Run both on the same input and upstream gradient; return (model, reference, logits, ref logits, ref grads)."""
    model = UNet(**config).double().train()
    if isinstance(size, int):  # 'valid': the smallest size at or above it that fits
        size = (model.nearest_valid_sizes(size)[1],) * 2
    x = torch.randn(batch, config.get("in_channels", 1), *size, dtype=torch.float64)
    logits = model(x)
    upstream = torch.randn_like(logits)
    (logits * upstream).sum().backward()
    ref = ReferenceUNet(numpy_params(model), **model.config)
    ref_logits = ref.forward(x.numpy())
    ref_grads = ref.backward(upstream.numpy())
    return model, ref, logits.detach().numpy(), ref_logits, ref_grads


# depth, base_channels, in_channels, num_classes, up_mode, norm, padding, size ('valid': an int)
GRID = [
    (1, 2, 1, 1, "transpose", None, "same", (7, 5)),
    (2, 4, 3, 2, "transpose", "batch", "same", (19, 13)),
    (3, 2, 1, 3, "transpose", "batch", "same", (16, 16)),
    (2, 3, 2, 2, "nearest", None, "same", (19, 13)),
    (3, 2, 1, 2, "nearest", "batch", "same", (11, 20)),
    (1, 4, 1, 2, "bilinear", "batch", "same", (5, 9)),
    (2, 2, 3, 4, "bilinear", None, "same", (19, 13)),
    (1, 2, 1, 2, "transpose", "batch", "valid", 17),
    (2, 2, 2, 1, "nearest", None, "valid", 40),
    (2, 4, 1, 2, "bilinear", "batch", "valid", 44),
    (3, 2, 1, 2, "transpose", None, "valid", 60),
]


@pytest.mark.parametrize(
    "case", GRID, ids=lambda c: f"d{c[0]}-b{c[1]}-in{c[2]}-k{c[3]}-{c[4]}-{c[5]}-{c[6]}-{c[7]}"
)
def test_reference_unet_matches_torch_logits_and_every_parameter_gradient(case):
    depth, base, cin, classes, up_mode, norm, padding, size = case
    config = dict(in_channels=cin, num_classes=classes, depth=depth, base_channels=base,
                  up_mode=up_mode, norm=norm, padding=padding)
    model, ref, logits, ref_logits, ref_grads = torch_and_reference(config, size)
    assert rel_err(ref_logits, logits) < TOL
    names = [name for name, _ in model.named_parameters()]
    assert sorted(ref_grads) == sorted(names)
    # An up-sampling bias in front of a batch norm ('valid': no zero border) has a true gradient
    # of 0; its round-off is measured against the model's gradient scale, not against 0.
    scale = 1e-3 * max(p.grad.abs().max().item() for p in model.parameters())
    for name, p in model.named_parameters():
        assert rel_err(ref_grads[name], p.grad.numpy(), scale) < TOL, name


@pytest.mark.parametrize("up_mode", ["transpose", "nearest", "bilinear"])
@pytest.mark.parametrize("norm", [None, "batch"])
def test_parameter_names_and_shapes_are_the_torch_models(up_mode, norm):
    config = dict(in_channels=3, num_classes=4, depth=3, base_channels=4, up_mode=up_mode, norm=norm)
    expected = {name: tuple(p.shape) for name, p in UNet(**config).named_parameters()}
    assert list(parameter_shapes(**config).items()) == list(expected.items())
    params = init_parameters(seed=1, **config)
    assert {name: a.shape for name, a in params.items()} == expected


def test_init_parameters_use_the_torch_models_he_scale():
    config = dict(in_channels=1, num_classes=2, depth=2, base_channels=32, up_mode="transpose", norm=None)
    torch_std = {n: p.std().item() for n, p in UNet(**config).named_parameters() if n.endswith("weight")}
    ours = {n: a.std() for n, a in init_parameters(seed=0, **config).items() if n.endswith("weight")}
    for name, std in torch_std.items():
        assert abs(ours[name] / std - 1) < 0.35, name  # both draw N(0, gain / fan_in)


@pytest.mark.parametrize(("padding", "size"), [("same", (19, 13)), ("valid", 44)])
def test_the_skip_half_of_dl_dconcat_is_exactly_what_reaches_the_encoder_through_the_skip(padding, size):
    """Torch's SkipConcat receives dL/dconcat and hands dL/dskip back; the reference's split
    must be the same numbers, and the part that reaches the encoder is that half, no more."""
    config = dict(in_channels=1, num_classes=2, depth=2, base_channels=4, up_mode="transpose",
                  norm="batch", padding=padding)
    model = UNet(**config).double().train()
    seen: dict[int, dict[str, np.ndarray]] = {}
    for j, block in enumerate(model.decoder):
        level = model.depth - 1 - j

        def hook(module, grad_input, grad_output, level=level):
            seen[level] = {"concat": grad_output[0].numpy().copy(), "skip": grad_input[0].numpy().copy(),
                           "up": grad_input[1].numpy().copy()}

        block.concat.register_full_backward_hook(hook)
    if isinstance(size, int):
        size = (model.nearest_valid_sizes(size)[1],) * 2
    x = torch.randn(2, 1, *size, dtype=torch.float64)
    logits = model(x)
    upstream = torch.randn_like(logits)
    (logits * upstream).sum().backward()
    ref = ReferenceUNet(numpy_params(model), **model.config)
    ref.forward(x.numpy())
    ref.backward(upstream.numpy())

    ch = widths(model.depth, model.base_channels)
    for level in range(model.depth):
        split, torch_seen = ref.trace.concat_split[level], seen[level]
        # torch: the skip half of dL/dconcat is the skip input's gradient, exactly
        assert np.array_equal(torch_seen["concat"][:, : ch[level]], torch_seen["skip"])
        assert rel_err(split["skip"], torch_seen["skip"]) < TOL
        assert rel_err(split["up"], torch_seen["up"]) < TOL
        # the reference: what reaches the encoder through the skip is that half, uncropped
        to_encoder = ref.trace.encoder_grad[level]["skip"]
        h, w = split["skip"].shape[-2:]
        top, left = (to_encoder.shape[-2] - h) // 2, (to_encoder.shape[-1] - w) // 2
        assert np.array_equal(to_encoder[..., top : top + h, left : left + w], split["skip"])
        border = to_encoder.copy()
        border[..., top : top + h, left : left + w] = 0
        assert not border.any()  # nothing else: where the crop dropped the skip, no gradient


def test_without_skips_no_gradient_goes_through_the_skip():
    config = dict(in_channels=1, num_classes=2, depth=2, base_channels=4, up_mode="nearest", norm=None,
                  dropout=0.0, padding="same")
    params = init_parameters(seed=3, **config)
    net = ReferenceUNet(params, **config, skips=False)
    out = net.forward(np.random.default_rng(0).normal(size=(1, 1, 8, 8)))
    net.backward(np.ones_like(out))
    for level in range(2):
        assert not net.trace.encoder_grad[level]["skip"].any()
        assert net.trace.encoder_grad[level]["deep"].any()


def test_the_reference_takes_exactly_the_networks_options():
    """The options are declared once (unetkit.nn.options); the reference reads the network's own."""
    import inspect

    from unetkit.nn.options import OPTION_NAMES

    keyword = [n for n, p in inspect.signature(ReferenceUNet).parameters.items() if p.kind == p.KEYWORD_ONLY
               and p.default is inspect.Parameter.empty]
    assert keyword == list(OPTION_NAMES)


def test_reference_refuses_what_it_does_not_mirror():
    config = dict(in_channels=1, num_classes=2, depth=1, base_channels=2, up_mode="transpose", norm=None,
                  dropout=0.0, padding="same")
    params = init_parameters(**config)
    with pytest.raises(ReferenceInputError, match="norm"):
        ReferenceUNet(params, **{**config, "norm": "group"})
    with pytest.raises(ReferenceInputError, match="dropout"):
        ReferenceUNet(params, **{**config, "dropout": 0.1})
    with pytest.raises(ReferenceInputError, match="missing"):
        ReferenceUNet({k: v for k, v in params.items() if k != "head.bias"}, **config)
    with pytest.raises(ReferenceInputError, match="valid"):
        ReferenceUNet(params, **{**config, "padding": "valid"}).forward(np.zeros((1, 1, 15, 15)))
