"""Device and precision choice (model/device.py): bf16 on a CPU only where it measures faster."""

from __future__ import annotations

import json

import pytest
import torch

from unetkit.errors import UnetkitError
from unetkit.model import device
from unetkit.model.device import pick_precision


def test_bf16_choice_can_be_forced_and_is_measured_once(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for forced, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("UNETKIT_CPU_BF16", forced)
        device.bf16_pays.cache_clear()
        assert device.bf16_pays() is expected
    device.bf16_pays.cache_clear()
    speedup = device.bf16_speedup()
    assert speedup > 0
    cached = json.loads((tmp_path / "unetkit" / "cpu-bf16.json").read_text())
    assert list(cached.values()) == [round(speedup, 3)]
    assert device.bf16_speedup() == round(speedup, 3)  # from the cache, not timed again


def test_precision_auto_on_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, training=True) == "fp32"  # eager bf16 training is slower here
    for forced, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("UNETKIT_CPU_BF16", forced)
        device.bf16_pays.cache_clear()
        assert pick_precision("auto", cpu) == expected
    device.bf16_pays.cache_clear()
    assert pick_precision("bf16", cpu, training=True) == "bf16"  # an explicit choice stands
    with pytest.raises(UnetkitError, match="fp16 is for GPUs"):
        pick_precision("fp16", cpu)
