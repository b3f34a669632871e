"""`explain model`'s numbers come from the real model: shapes, parameters, MACs, receptive field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unetkit.nn import UNet, summarize


def _hooked_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    seen = {}

    def hook(module, args, output):
        seen[names[module]] = tuple(output.shape)

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children()) and not isinstance(m, nn.Identity)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def test_classic_table_shapes():
    summary = summarize(UNet(in_channels=3, num_classes=5), 256)
    path = dict(summary.path())
    assert [path[f"encoder {i}"] for i in (1, 2, 3, 4)] == [
        (256, 256, 64), (128, 128, 128), (64, 64, 256), (32, 32, 512)]
    assert path["bottleneck"] == (16, 16, 1024)
    assert [path[f"decoder {i}"] for i in (4, 3, 2, 1)] == [
        (32, 32, 512), (64, 64, 256), (128, 128, 128), (256, 256, 64)]
    assert path["head"] == summary.output == (256, 256, 5)


def test_concat_rows_show_the_channel_arithmetic():
    summary = summarize(UNet(in_channels=3, num_classes=5), 256)
    concats = [r for r in summary.rows if r.name.endswith("concat")]
    assert len(concats) == 4
    assert concats[0].note == "32×32×512 + 32×32×512 -> 32×32×1024"
    assert concats[0].stage == "decoder 4"
    saved = [r.note for r in summary.rows if r.note.startswith("skip saved")]
    assert saved[0] == "skip saved (256×256×64) -> decoder 1"


@pytest.mark.parametrize("options", [dict(), dict(up_mode="bilinear", norm="group"), dict(padding="valid")])
def test_parameters_and_shapes_match_the_real_model(options):
    model = UNet(in_channels=2, num_classes=3, depth=3, base_channels=4, **options).eval()
    size = model.input_size_for(40) if model.padding == "valid" else (45, 38)
    summary = summarize(model, size)
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in summary.rows) == summary.total_params
    seen = _hooked_shapes(model, torch.randn(1, 2, *size))
    assert {r.name for r in summary.rows} == set(seen)
    for row in summary.rows:
        n, c, h, w = seen[row.name]
        assert row.output == (h, w, c), row.name


def test_macs_of_the_classic_network():
    """96.4 GFLOP per 256x256 image forward, a multiply-add counted as 2."""
    summary = summarize(UNet(in_channels=3, num_classes=5), 256)
    assert 2 * summary.total_macs / 1e9 == pytest.approx(96.4, abs=0.05)
    conv = next(r for r in summary.rows if r.name == "encoder.0.conv.conv2")
    assert conv.macs == 256 * 256 * 64 * 64 * 9


def _measured_receptive_field(model: UNet, size: int) -> int:
    """Push each input pixel of the centre row up and count those that move the centre output.
    All weights positive and ReLUs active: every dependency shows (max-pool included)."""
    model = model.eval().double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.01)
    base = torch.rand(1, model.in_channels, size, size, dtype=torch.float64) + 1.0
    c = size // 2
    batch = base.repeat(size, 1, 1, 1)
    batch[torch.arange(size), :, c, torch.arange(size)] += 100.0
    with torch.no_grad():
        ref = model(base)[0, 0, c, c]
        out = model(batch)[:, 0, c, c]
    moved = (out - ref).abs() > 1e-9 * ref.abs()
    idx = torch.nonzero(moved).flatten()
    return int(idx.max() - idx.min() + 1)


@pytest.mark.parametrize("up_mode", ["transpose", "nearest", "bilinear"])
def test_receptive_field_matches_a_measurement(up_mode):
    model = UNet(in_channels=1, num_classes=1, depth=2, base_channels=2, up_mode=up_mode, norm=None)
    stated = summarize(model, 96).receptive_field
    measured = max(_measured_receptive_field(UNet(**model.config), 96 + shift) for shift in (0, 4, 8, 12))
    assert stated == measured
