"""The U-Net: shapes for any size, valid padding, gradients, init, save/load, variants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unetkit.nn import UNet, UNetError

SIZES = [(1, 1), (19, 19), (64, 64), (67, 45), (128, 96), (255, 257)]
UP_MODES = ["transpose", "nearest", "bilinear"]


@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize("in_channels", [1, 3, 10])
@pytest.mark.parametrize("up_mode", UP_MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_same_padding_output_matches_input_size(size, up_mode, in_channels, num_classes):
    model = UNet(in_channels=in_channels, num_classes=num_classes, base_channels=4, up_mode=up_mode).eval()
    x = torch.randn(1, in_channels, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, num_classes, *size)
    assert torch.isfinite(out).all()


def test_valid_padding_gives_the_papers_388_from_572():
    model = UNet(in_channels=1, num_classes=2, base_channels=2, padding="valid").eval()
    assert model.output_size(572) == (388, 388)
    assert model.input_size_for(388) == (572, 572)
    assert model.input_size_for((380, 388)) == (572, 572)  # smallest input that covers 380
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_valid_padding_non_square_and_other_depth():
    model = UNet(in_channels=1, num_classes=2, base_channels=2, depth=2, padding="valid").eval()
    h, w = model.input_size_for((20, 36))
    oh, ow = model.output_size((h, w))
    assert oh >= 20 and ow >= 36
    with torch.no_grad():
        assert model(torch.randn(1, 1, h, w)).shape == (1, 2, oh, ow)


def test_valid_padding_refuses_an_impossible_size_naming_the_nearest():
    model = UNet(base_channels=2, padding="valid")
    with pytest.raises(UNetError) as info:
        model(torch.randn(1, 1, 570, 572))
    message = str(info.value)
    assert "\n" not in message
    assert "556" in message and "572" in message and "570" in message


def test_same_padding_is_not_limited_to_multiples_of_32():
    model = UNet(base_channels=2, depth=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 1000, 3)).shape == (2, 2, 1000, 3)


def test_channel_widths_double_per_level():
    model = UNet(in_channels=3, num_classes=5)
    widths = [level.conv.conv2.out_channels for level in model.encoder]
    assert widths == [64, 128, 256, 512]
    assert model.bottleneck.conv.conv2.out_channels == 1024
    assert [level.conv.conv2.out_channels for level in model.decoder] == [512, 256, 128, 64]
    assert model.head.kernel_size == (1, 1) and model.head.out_channels == 5


VARIANTS = [
    dict(up_mode="transpose", norm="batch"),
    dict(up_mode="nearest", norm="instance"),
    dict(up_mode="bilinear", norm="group"),
    dict(up_mode="transpose", norm=None),
    dict(up_mode="bilinear", norm="batch", dropout=0.3),
    dict(up_mode="transpose", norm="batch", padding="valid"),
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
class TestEveryVariant:
    """One class runs every variant through forward, backward and save/load."""

    def make(self, options):
        return UNet(in_channels=3, num_classes=4, depth=3, base_channels=8, **options)

    def size(self, model):
        return model.input_size_for(36) if model.padding == "valid" else (37, 29)

    def test_every_parameter_gets_a_finite_nonzero_gradient(self, options):
        model = self.make(options).train()
        h, w = self.size(model)
        x = torch.randn(2, 3, h, w)
        logits = model(x)
        target = torch.randint(0, 4, (2, *logits.shape[-2:]))
        F.cross_entropy(logits, target).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name

    def test_state_dict_round_trip_gives_identical_outputs(self, options):
        model = self.make(options).eval()
        for m in model.modules():  # make running stats non-trivial
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        clone = UNet(**model.config)
        clone.load_state_dict(model.state_dict())
        clone.eval()
        x = torch.randn(1, 3, *self.size(model))
        with torch.no_grad():
            assert torch.equal(model(x), clone(x))

    def test_config_rebuilds_the_same_architecture(self, options):
        model = self.make(options)
        clone = UNet(**model.config)
        assert [(n, p.shape) for n, p in model.named_parameters()] == [
            (n, p.shape) for n, p in clone.named_parameters()
        ]


def test_upsampling_decoder_differs_from_transposed_conv_as_expected():
    """transpose: a 2x2 kernel (4 taps) per in/out pair; resize + 3x3 conv: 9 taps."""
    base, depth = 8, 3
    count = {m: sum(p.numel() for p in UNet(base_channels=base, depth=depth, up_mode=m).parameters())
             for m in UP_MODES}
    assert count["nearest"] == count["bilinear"]
    pairs = [(base * 2 ** (level + 1), base * 2**level) for level in range(depth)]
    assert count["nearest"] - count["transpose"] == sum(5 * cin * cout for cin, cout in pairs)
    transposes = [m for m in UNet(up_mode="transpose").modules() if isinstance(m, nn.ConvTranspose2d)]
    upsamples = [m for m in UNet(up_mode="bilinear").modules() if isinstance(m, nn.Upsample)]
    assert len(transposes) == 4 and all(t.kernel_size == (2, 2) and t.stride == (2, 2) for t in transposes)
    assert len(upsamples) == 4 and all(sum(p.numel() for p in u.parameters()) == 0 for u in upsamples)


def test_he_initialisation():
    model = UNet(in_channels=3, base_channels=64)
    conv = model.encoder[3].conv.conv2  # 512 * 9 inputs per output
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3
    up = model.decoder[0].up.up  # transposed 2x2 stride 2: each output reads 1024 inputs
    assert up.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.02)
    assert torch.count_nonzero(up.bias) == 0


def test_dropout_only_at_the_end_of_the_encoder_and_in_the_bottleneck():
    model = UNet(base_channels=4, dropout=0.5)
    holders = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Dropout))
    assert holders == ["bottleneck.dropout", "encoder.3.dropout"]
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, nn.Dropout))


@pytest.mark.parametrize(
    "options, flag",
    [
        (dict(up_mode="deconv"), "up_mode"),
        (dict(norm="layer"), "norm"),
        (dict(padding="reflect"), "padding"),
        (dict(depth=0), "depth"),
        (dict(dropout=1.0), "dropout"),
        (dict(in_channels=0), "in_channels"),
    ],
)
def test_bad_options_name_the_option(options, flag):
    with pytest.raises(UNetError, match=flag):
        UNet(**options)
