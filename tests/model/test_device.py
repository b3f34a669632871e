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


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_asking_for_a_missing_gpu_is_one_sentence():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UnetkitError, match="--device cuda: no CUDA GPU"):
        device.pick_device("cuda")
    assert device.pick_device("auto").type in ("cpu", "mps")


def test_without_torchrun_there_is_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert device.join_process_group() == (0, 1, False)


@CUDA
def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    assert device.pick_device("auto") == torch.device("cuda", torch.cuda.device_count() - 1)


@CUDA
def test_on_a_gpu_auto_picks_bf16_or_fp16_for_both_uses():
    gpu = torch.device("cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert pick_precision("auto", gpu) == expected and pick_precision("auto", gpu, training=True) == expected


@CUDA
def test_a_tiny_run_trains_and_predicts_on_the_gpu(disks, tmp_path):
    import numpy as np

    import unetkit

    run = unetkit.train(data=str(disks), out=str(tmp_path / "run"), depth=2, base_channels=4, patch_size=32,
                        batch_size=2, epochs=1, progress=False, device="cuda")
    assert run.best_metric is not None
    mask = unetkit.predict(str(tmp_path / "run" / "best"), np.zeros((40, 40), np.uint8), device="cuda")
    assert mask.shape == (40, 40)


def test_two_cpus_of_one_name_and_the_same_flags_are_told_apart_by_their_generation(monkeypatch):
    """An AVX2 Zen 2 and an AVX2 Zen 3 are both "AMD EPYC" with the same speed flags on these VMs,
    and the faster training layout differs between them: family and model numbers part them."""
    monkeypatch.setattr(device, "_cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx2", "fma"})
    fields = {"cpu family": "23", "model": "49"}
    monkeypatch.setattr(device, "_cpuinfo_field", lambda name: fields.get(name, ""))
    zen2 = device.cpu_identity()
    fields.update({"cpu family": "25", "model": "1"})
    assert device.cpu_identity() != zen2 and "family 25 model 1" in device.cpu_identity()
    fields.clear()  # no such fields (another architecture): the name and flags alone
    assert device.cpu_identity() == "AMD EPYC (avx2)"


def test_the_real_cpuinfo_gives_a_generation_on_x86():
    import platform

    if platform.machine() in ("x86_64", "AMD64"):
        assert device._cpu_generation().startswith("family ")
    assert device._cpuinfo_field("no such field") == ""


def test_the_speed_caches_tell_apart_two_cpus_of_one_name(monkeypatch, tmp_path):
    """A VM's "AMD EPYC" may have avx512_bf16 on one host and AVX2 only on the next: a speed-up
    measured on the first must not be read back on the second."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(device, "_cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    with_bf16 = device.cpu_identity()
    device.bf16_speedup()
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx2", "fma"})
    assert device.cpu_identity() != with_bf16
    device.bf16_speedup()
    cached = json.loads((tmp_path / "unetkit" / "cpu-bf16.json").read_text())
    assert len(cached) == 2 and all(key.startswith("AMD EPYC (") for key in cached)
