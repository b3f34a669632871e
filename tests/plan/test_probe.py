"""The machine probe: training precision by measurement (forced for the test), cached step costs."""

from __future__ import annotations

import pytest
import torch

from unetkit.nn.options import UNetOptions
from unetkit.plan import probe

TINY = UNetOptions(in_channels=1, num_classes=2, depth=2, base_channels=4)


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def test_the_precision_can_be_forced(monkeypatch):
    for forced, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("UNETKIT_CPU_BF16", forced)
        assert probe.training_precision(TINY, 32, 2, torch.device("cpu"))[0] == expected


def test_unforced_the_precision_is_measured_and_the_faster_one_kept(monkeypatch):
    monkeypatch.delenv("UNETKIT_CPU_BF16", raising=False)
    monkeypatch.setattr(probe, "_cpu_can_bf16", lambda: True)
    for fp32, bf16, expected in ((1.0, 0.5, "bf16"), (1.0, 0.95, "fp32"), (1.0, 2.0, "fp32")):
        monkeypatch.setattr(probe, "step_cost", lambda o, p, b, precision, d, f=fp32, h=bf16: probe.StepCost(
            f if precision == "fp32" else h, 1.0, precision, True))
        choice, why = probe.training_precision(TINY, 32, 2, torch.device("cpu"))
        assert choice == expected and "measured" in why


def test_a_cpu_without_bf16_trains_in_fp32_without_measuring(monkeypatch):
    monkeypatch.delenv("UNETKIT_CPU_BF16", raising=False)
    monkeypatch.setattr(probe, "_cpu_can_bf16", lambda: False)
    monkeypatch.setattr(probe, "step_cost", lambda *a, **k: pytest.fail("measured"))
    assert probe.training_precision(TINY, 32, 2, torch.device("cpu"))[0] == "fp32"


def test_a_step_is_measured_once_then_read_from_the_cache(tmp_path):
    first = probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1)
    again = probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1)
    assert first.measured and not again.measured and again.seconds == first.seconds > 0
    assert (tmp_path / "unetkit" / "probe.json").is_file()
    other = probe.step_cost(TINY, 48, 2, "fp32", "cpu", steps=1)
    assert other.measured  # another recipe is another measurement


def test_a_cpu_of_the_same_name_with_other_instructions_is_measured_anew(monkeypatch):
    from unetkit.model import device

    monkeypatch.setattr(device, "_cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1).measured
    assert not probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1).measured
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx2"})  # the next host: AVX2 only
    assert probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1).measured


def test_the_layout_is_measured_and_nchw_taken_only_where_clearly_faster(monkeypatch):
    for channels_last, nchw, expected in ((1.0, 0.6, False), (1.0, 0.95, True), (0.8, 1.0, True)):
        monkeypatch.setattr(probe, "step_cost", lambda o, p, b, precision, d, layout, steps=3, c=channels_last, n=nchw:
                            probe.StepCost(c if layout == "channels_last" else n, 1.0, precision, True))
        choice, why = probe.training_layout(TINY, 32, 2, "fp32", torch.device("cpu"))
        assert choice is expected and "measured" in why


def test_both_layouts_are_real_training_steps_cached_apart():
    cl = probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1)
    nchw = probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1, layout="nchw")
    assert cl.measured and nchw.measured and nchw.seconds > 0  # another layout is another measurement
    assert not probe.step_cost(TINY, 32, 2, "fp32", "cpu", steps=1, layout="nchw").measured


def test_off_the_cpu_channels_last_without_measuring(monkeypatch):
    monkeypatch.setattr(probe, "step_cost", lambda *a, **k: pytest.fail("measured"))
    assert probe.training_layout(TINY, 32, 2, "bf16", torch.device("meta"))[0] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_on_a_gpu_bf16_or_fp16_without_measuring():
    choice, _ = probe.training_precision(TINY, 32, 2, torch.device("cuda"))
    assert choice == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_loading_a_training_sample_is_measured_on_the_data(tmp_path):
    from unetkit.data.check import check_dataset
    from unetkit.data.synth import write_dataset

    write_dataset("cells", tmp_path / "cells", count=6, size=64, seed=0)
    report = check_dataset(tmp_path / "cells", val_fraction=0.2, seed=0)
    cost = probe.sample_cost_of(tmp_path / "cells", report)
    seconds = cost(32, "default", "all")
    assert 0 < seconds < 5
    assert probe.sample_seconds(tmp_path / "cells", [], report.spec, 32, "default", "all") == 0.0


def test_layout_choice_keeps_channels_last_unless_nchw_pays_for_its_memory():
    assert probe.layout_choice({"channels_last": 1.0, "nchw": 0.5}) == (
        False, "a training step measured 2.00x as fast in NCHW here")
    barely, why = probe.layout_choice({"channels_last": 1.04, "nchw": 1.0})
    assert barely is True and "1.04x as fast in NCHW" in why and f"under the {probe.NCHW_MARGIN:.2f}x" in why
    slower, why = probe.layout_choice({"channels_last": 1.0, "nchw": 1.25})
    assert slower is True and why == "a training step measured 1.25x as fast in channels-last here"
