"""The worked examples of `unetkit explain`, run through the CLI as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit import UNet
from unetkit.cli import main
from unetkit.reference import init_parameters
from unetkit.reference.explain import cell_image

ONES3 = "1 1 1; 1 1 1; 1 1 1"


def explain(capsys, *args: str) -> tuple[str, dict]:
    """The text and the --json of one `unetkit explain` command."""
    assert main(["explain", *args]) == 0
    text = capsys.readouterr().out
    assert main(["explain", *args, "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetkit", *args], capture_output=True, text=True)


# --- transpose ---------------------------------------------------------------------------------------


def test_transpose_1x1_kernel_stride_2_keras_valid_spreads_the_values_apart(capsys):
    text, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", "2", "--stride", "2")
    assert data["output"] == [[2, 0, 4, 0], [0, 0, 0, 0], [6, 0, 8, 0], [0, 0, 0, 0]]
    assert data["convention"] == "keras" and data["convention_is_default"]
    assert "convention: keras (the default" in text
    assert "in[1,1] = 4: 4 × kernel lands on output rows 2..2, columns 2..2" in text
    assert text.rstrip().endswith("6 0 8 0\n    0 0 0 0")


def test_transpose_stride_1_is_no_upsampling(capsys):
    _, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", "2", "--stride", "1")
    assert data["output"] == [[2, 4], [6, 8]]


@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_transpose_2x2_kernel_stride_1_gives_3x3(capsys, convention):
    _, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", "1 2; 3 4", "--stride", "1",
                      "--padding", "valid", "--convention", convention)
    expected = F.conv_transpose2d(torch.tensor([[[[1.0, 2], [3, 4]]]]), torch.tensor([[[[1.0, 2], [3, 4]]]]))
    assert data["output"] == expected[0, 0].tolist()
    assert data["output_shape"] == [3, 3]


LECTURE = [[1, 3, 2, 2], [4, 10, 6, 6], [3, 7, 4, 4], [3, 7, 4, 4]]


def test_transpose_3x3_padding_1_stride_2_is_the_lecture_drawing(capsys):
    text, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", ONES3, "--padding", "1",
                         "--stride", "2")
    assert data["output"] == LECTURE
    assert "(outside the output, dropped: row -1, column -1)" in text  # the top-left padding border
    assert "padding=1, output_padding=1" in text
    torch_out = F.conv_transpose2d(torch.tensor([[[[1.0, 2], [3, 4]]]]), torch.ones(1, 1, 3, 3), stride=2,
                                   padding=1, output_padding=1)
    assert torch_out[0, 0].tolist() == LECTURE


def test_transpose_in_torch_terms_padding_1_output_padding_1(capsys):
    text, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", ONES3, "--padding", "1",
                         "--stride", "2", "--output-padding", "1", "--convention", "torch")
    assert data["output"] == LECTURE and data["convention"] == "torch"
    _, plain = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", ONES3, "--padding", "1",
                       "--stride", "2", "--convention", "torch")
    assert plain["output_shape"] == [3, 3]  # PyTorch's own default, output_padding 0


def test_transpose_keras_same_crops_the_other_side_and_says_so(capsys):
    text, data = explain(capsys, "transpose", "--input", "1 2; 3 4", "--kernel", ONES3, "--stride", "2",
                         "--convention", "keras", "--padding", "same")
    assert data["output"] == [[1, 1, 3, 2], [1, 1, 3, 2], [4, 4, 10, 6], [3, 3, 7, 4]]
    assert data["crop"] == {"top": 0, "left": 0}
    assert "output 4×4 (keras convention):" in text
    assert "0 dropped in front and 1 at the end" in text


# --- upsample, conv, softmax -----------------------------------------------------------------------


def test_upsample_repeats_rows_then_columns_and_learns_nothing(capsys):
    text, data = explain(capsys, "upsample", "--input", "1 2; 3 4", "--scale", "2")
    assert data["after_rows"] == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert data["output"] == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert data["trainable_parameters"] == 0 and "no trainable parameters" in text
    assert text.index("repeat every row") < text.index("repeat every column")


def test_upsample_bilinear_is_torchs(capsys):
    _, data = explain(capsys, "upsample", "--input", "1 2 0; 3 4 5", "--scale", "3", "--mode", "bilinear")
    expected = F.interpolate(torch.tensor([[[[1.0, 2, 0], [3, 4, 5]]]], dtype=torch.float64), scale_factor=3,
                             mode="bilinear", align_corners=False)
    assert np.allclose(data["output"], expected[0, 0].numpy(), rtol=1e-12, atol=1e-12)


def test_conv_4x4_with_3x3_kernel_stride_1_gives_2x2(capsys):
    text, data = explain(capsys, "conv")
    x = torch.arange(1.0, 17).reshape(1, 1, 4, 4)
    w = torch.tensor([[[[0.0, 1, 2], [2, 2, 0], [0, 1, 2]]]])
    assert data["output"] == F.conv2d(x, w)[0, 0].tolist() == [[62, 72], [102, 112]]
    assert "out[0,0] = in[0..2, 0..2] · w = 1*0 + 2*1 + 3*2" in text
    text, padded = explain(capsys, "conv", "--padding", "same", "--stride", "2")
    # 'same' as TensorFlow splits it: ceil(4 / 2) = 2 outputs need 1 pixel, put at the bottom/right
    assert padded["output"] == F.conv2d(F.pad(x, (0, 1, 0, 1)), w, stride=2)[0, 0].tolist()
    assert "top 0, bottom 1, left 0, right 1" in text


def test_softmax_prints_the_true_probabilities_and_the_argmax(capsys):
    text, data = explain(capsys, "softmax", "--logits", "2.1 -0.5 -1.2 0.3 -0.8", "--target", "0")
    z = torch.tensor([2.1, -0.5, -1.2, 0.3, -0.8], dtype=torch.float64)
    p = torch.softmax(z, 0).numpy()
    assert np.allclose(data["probabilities"], p, rtol=1e-14, atol=0)
    assert abs(data["probabilities"][0] - 0.751) < 5e-4 and data["argmax"] == 0
    assert "0.751045" in text and "arg-max: class 0" in text
    assert np.allclose(data["grad_logits"], p - np.eye(5)[0], rtol=1e-14, atol=1e-16)  # p - y


# --- backward ----------------------------------------------------------------------------------------


def test_backward_worked_example_shapes_and_gradient_split(capsys):
    text, data = explain(capsys, "backward")
    shapes = {step["name"]: step["shape"] for step in data["forward"]}
    assert shapes["input"] == [8, 8, 1] and shapes["head"] == [8, 8, 2]
    assert shapes["encoder.0.conv.conv2"] == [8, 8, 4]
    assert shapes["encoder.1.conv.conv2"] == [4, 4, 8]
    assert shapes["bottleneck.conv.conv2"] == [2, 2, 16]
    assert shapes["decoder.1.concat"] == [8, 8, 8]
    back = {step["name"]: step for step in data["backward"]}
    for split in data["concat_splits"]:  # the two halves make up the whole dL/dconcat
        whole = back[f"decoder.{2 - split['level']}.concat"]["grad_norm"]
        assert np.isclose(np.hypot(split["skip_norm"], split["decoder_norm"]), whole, rtol=1e-12)
    first = data["first_level"]
    assert first["through_skip"] > 0 and first["through_deep_path"] > 0 and first["without_skips"] > 0
    assert data["pixel"]["index"] == [4, 4] and data["pixel"]["label"] == 1
    p = np.array(data["pixel"]["probabilities"])
    assert np.allclose(data["pixel"]["p_minus_y"], p - np.array([0, 1]))
    for words in ("through the skip", "through the deep path", "skips removed", "skip part 8×8×4"):
        assert words in text


def test_backward_numbers_are_the_torch_models(capsys):
    """The same seeded weights in `unetkit.UNet` give the printed loss and first-level gradient."""
    _, data = explain(capsys, "backward", "--seed", "3", "--up-mode", "bilinear")
    config = dict(in_channels=1, num_classes=2, depth=2, base_channels=4, up_mode="bilinear", norm=None,
                  dropout=0.0, padding="same")
    model = UNet(**config).double()
    params = init_parameters(3, **config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
    image, labels = cell_image()
    loss = F.cross_entropy(model(torch.from_numpy(image)[None, None]), torch.from_numpy(labels)[None])
    loss.backward()
    assert abs(loss.item() - data["loss"]) < 1e-12
    weight_grad = model.encoder[0].conv.conv1.weight.grad.norm().item()
    assert abs(weight_grad / data["first_level"]["first_conv_weight_grad"] - 1) < 1e-10


# --- every topic, --json and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["transpose", "upsample", "conv", "softmax", "backward"])
def test_every_topic_runs_with_its_defaults_and_json(capsys, topic):
    text, data = explain(capsys, topic)
    assert data["topic"] == topic and text.strip()


def test_bad_input_is_one_line_on_stderr_and_exit_2():
    done = run_cli("explain", "transpose", "--input", "1 2; 3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "--input" in done.stderr
    done = run_cli("explain", "transpose", "--convention", "torch", "--padding", "same")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "same" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["transpose", "--kernel", "a b"],
        ["transpose", "--padding", "wide"],
        ["transpose", "--stride", "0"],
        ["transpose", "--padding", "1", "--output-padding", "1", "--convention", "keras"],
        ["conv", "--kernel", "1 2 3 4 5"],
        ["softmax", "--logits", "1 2", "--target", "2"],
        ["backward", "--pixel", "8,0"],
        ["upsample", "--scale", "0"],
    ],
)
def test_user_errors_are_one_line(capsys, args):
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetkit: error: ") and err.strip().count("\n") == 0
