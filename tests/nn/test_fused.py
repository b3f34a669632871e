"""The CPU speed paths of nn/fused.py (the inference engine, the shuffle-concat training path)
against the network as written (nn/unet.py): they must compute the same function."""

from __future__ import annotations

import pytest
import torch

from unetkit.nn import UNet, fused

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _trained_looking(model: UNet, seed: int = 0) -> UNet:
    """Give every batch norm non-trivial running statistics and affine terms (as after training),
    so that folding them into the convolutions is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _plain(model: UNet, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def _engine(model: UNet, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    engine = fused.inference_engine(model, dtype)
    assert engine is not None
    with torch.inference_mode():
        return engine(x.contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("up_mode, norm, padding, depth, size", [
    ("transpose", "batch", "same", 3, (37, 45)),
    ("transpose", None, "same", 2, (16, 16)),
    ("nearest", "batch", "same", 2, (19, 30)),
    ("bilinear", "batch", "same", 3, (24, 17)),
    ("transpose", "batch", "valid", 2, (44, 60)),
])
def test_engine_gives_the_logits_of_the_plain_network_in_fp32(up_mode, norm, padding, depth, size):
    torch.manual_seed(0)
    model = _trained_looking(UNet(in_channels=3, num_classes=4, depth=depth, base_channels=8, up_mode=up_mode,
                                  norm=norm, padding=padding))
    x = torch.randn(2, 3, *size)
    expected = _plain(model, x)
    got = _engine(model, x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 in oneDNN")
def test_engine_in_bf16_agrees_with_bf16_autocast_within_its_rounding():
    torch.manual_seed(1)
    model = _trained_looking(UNet(in_channels=1, num_classes=3, depth=3, base_channels=8))
    x = torch.randn(2, 1, 40, 40)
    got = _engine(model, x, torch.bfloat16).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _plain(model, x).float()
    exact = _plain(model, x)
    scale = exact.abs().max()
    assert (got - exact).abs().max() < 0.05 * scale  # bf16 keeps 8 bits of mantissa
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.98


def test_engine_is_built_once_and_follows_changed_weights(monkeypatch):
    builds = []
    original = fused.FusedUNet.__init__

    def counting(self, *args, **kwargs):
        builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(fused.FusedUNet, "__init__", counting)
    torch.manual_seed(2)
    model = _trained_looking(UNet(in_channels=1, num_classes=2, depth=2, base_channels=4))
    x = torch.randn(1, 1, 16, 16)
    first = _engine(model, x)
    for _ in range(3):
        model.eval()  # a common habit before every batch: must not rebuild the engine
        assert torch.equal(_engine(model, x), first)
    assert len(builds) == 1
    with torch.no_grad():
        model.head.bias.add_(1.0)  # any in-place change of a weight is seen
    moved = _engine(model, x)
    assert len(builds) == 2
    assert torch.allclose(moved, first + 1.0, atol=1e-5)
    assert torch.allclose(moved, _plain(model, x), atol=1e-5)
    model.float()  # .to() and friends give new tensors: rebuilt from them
    _engine(model, x)
    assert len(builds) == 2  # the same storage and versions: nothing changed
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    _engine(model, x)
    assert len(builds) == 3


def test_engine_packs_its_weights_for_each_input_shape_it_meets_and_keeps_a_bounded_few(monkeypatch):
    """oneDNN's best weight layout depends on the batch and map size, so the engine packs per
    shape; a stream of ever new shapes (a user's images of every size) must not grow memory."""
    monkeypatch.setattr(fused.PackedWeight, "SHAPES", 2)
    torch.manual_seed(4)
    model = _trained_looking(UNet(in_channels=2, num_classes=3, depth=2, base_channels=4))
    shapes = [(1, 16, 16), (3, 16, 16), (1, 24, 20), (2, 12, 32), (1, 16, 16)]
    for batch, height, width in shapes:  # the first shape comes back after it was evicted
        x = torch.randn(batch, 2, height, width)
        assert torch.allclose(_engine(model, x), _plain(model, x), atol=1e-4, rtol=1e-4)
    first = fused.inference_engine(model).encoder[0][0].weight
    assert len(first.packed) == 2 and (1, 2, 16, 16) in first.packed


def test_hooks_and_unfoldable_norms_get_no_engine(monkeypatch):
    monkeypatch.setattr(fused.FusedUNet, "__init__", lambda *a, **k: pytest.fail("engine built"))
    torch.manual_seed(3)
    hooked = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4).eval()
    hooked.encoder[0].register_forward_hook(lambda module, inputs, output: None)
    assert fused.inference_engine(hooked) is None  # explain and user hooks see every layer run
    grouped = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4, norm="group").eval()
    assert not fused.supported(grouped) and fused.inference_engine(grouped) is None


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_shuffle_concat_gives_the_same_training_step(padding, monkeypatch):
    """The transposed conv as 1x1 conv + shuffle into the concatenation: same logits, same gradients."""
    calls = []
    original = fused.ShuffleConcat.apply
    monkeypatch.setattr(fused.ShuffleConcat, "apply", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(4)
    size = 44 if padding == "valid" else 36
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    results = []
    for shuffle in (True, False):
        torch.manual_seed(5)
        # norm=None: with batch norm and 'same' padding the recomputing path (tested below) runs instead
        model = UNet(in_channels=3, num_classes=3, depth=2, base_channels=8, padding=padding, norm=None)
        model = model.to(memory_format=torch.channels_last).train()
        network = fused.training_network(model) if shuffle else model
        calls.clear()
        out = network(x)
        assert len(calls) == (2 if shuffle else 0)  # the path under test really ran, at both levels
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-5)
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-5, rtol=1e-4), name


def _training_step(network, model, x, target):
    out = network(x)
    loss = torch.nn.functional.cross_entropy(out.float(), target)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach().float(), grads, stats


@pytest.mark.parametrize("depth, size", [(2, 36), (3, 40), (1, 17)])
def test_recomputing_batch_norm_relu_gives_the_same_training_step(depth, size, monkeypatch):
    """Storing conv outputs only and recomputing batch norm + ReLU: same logits, gradients and
    running statistics as the network as written (float32)."""
    calls = []
    original = fused.NormReluConv.apply
    monkeypatch.setattr(fused.NormReluConv, "apply", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(6)
    x = torch.randn(3, 2, size, size + 3).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 4, (3, size, size + 3))
    results = []
    for recompute in (True, False):
        torch.manual_seed(7)
        model = UNet(in_channels=2, num_classes=4, depth=depth, base_channels=4)
        model = model.to(memory_format=torch.channels_last).train()
        network = fused.training_network(model) if recompute else model
        calls.clear()
        results.append(_training_step(network, model, x, target))
        assert bool(calls) == recompute  # the path under test really ran
    (out_a, grads_a, stats_a), (out_b, grads_b, stats_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-5, rtol=1e-4), (out_a - out_b).abs().max()
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-5, rtol=1e-3), name
    for name, value in stats_a.items():
        assert torch.allclose(value.float(), stats_b[name].float(), atol=1e-6), name


def test_recomputing_in_bf16_is_as_close_to_float32_as_the_plain_network_in_bf16():
    """bf16 rounds differently in the two paths; each must be about as far from float32 as the other."""
    torch.manual_seed(8)
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 3, (2, 32, 32))
    results = {}
    for recompute, bf16 in ((True, True), (False, True), (False, False)):
        torch.manual_seed(9)
        model = UNet(in_channels=1, num_classes=3, depth=2, base_channels=8).to(memory_format=torch.channels_last)
        network = fused.training_network(model) if recompute else model
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            results[recompute, bf16] = _training_step(network, model.train(), x, target)
    exact = results[False, False]
    for index in (0, 1):  # the logits, then every parameter's gradient
        ours, theirs = results[True, True][index], results[False, True][index]
        pairs = {"logits": (ours, theirs, exact[0])} if index == 0 else {
            name: (ours[name], theirs[name], exact[1][name]) for name in exact[1]}
        for name, (a, b, reference) in pairs.items():
            ours_error = (a - reference).norm() / reference.norm()
            plain_error = (b - reference).norm() / reference.norm()
            assert ours_error <= 2 * plain_error + 0.01, (name, float(ours_error), float(plain_error))


def test_recomputing_stores_only_the_convolution_outputs_at_full_resolution():
    """Saved for the backward pass at the top level: the encoder's two convolution outputs and
    the decoder's two, nothing else (no activations, no up-sampled map, no concatenation)."""
    torch.manual_seed(10)
    model = UNet(in_channels=2, num_classes=3, depth=2, base_channels=4).to(memory_format=torch.channels_last)
    x = torch.randn(2, 2, 32, 32).contiguous(memory_format=torch.channels_last)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, tuple[int, ...]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        pointer = t.untyped_storage().data_ptr()
        if t.dim() == 4 and tuple(t.shape[-2:]) == (32, 32) and pointer not in parameters and t is not x:
            saved[pointer] = tuple(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fused.training_network(model.train())(x)
    assert sorted(saved.values()) == [(2, 4, 32, 32)] * 4, saved
    out.square().mean().backward()  # and the step still runs through what was kept
    assert all(p.grad is not None for p in model.parameters())
