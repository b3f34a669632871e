"""Start-up tuning (runtime.py) and the choice of precision built on it (train/device.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from unetkit import runtime
from unetkit.errors import UnetkitError
from unetkit.train.device import pick_precision


def _configure_in_a_fresh_process(code: str | None = None, **env: str) -> dict:
    code = code or ("import json, unetkit; from unetkit import runtime; "
                    "unetkit.Predictor(unetkit.UNet(depth=1, base_channels=2)); print(json.dumps(runtime.applied()))")
    clean = {k: v for k, v in os.environ.items() if k not in ("UNETKIT_NO_TUNING", "UNETKIT_MALLOC",
                                                              "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_alone_changes_nothing():
    code = "import json, unetkit; from unetkit import runtime; unetkit.UNet; print(json.dumps(runtime.applied()))"
    assert _configure_in_a_fresh_process(code) is None


def test_the_engines_tune_the_allocator_and_threads_once_and_say_so():
    record = _configure_in_a_fresh_process()
    if sys.platform.startswith("linux"):
        assert record["malloc"] in ("kept", "not glibc")
    assert 1 <= record["threads"] <= len(os.sched_getaffinity(0))  # never more threads than usable cores
    assert runtime.configure() is runtime.configure()  # idempotent: one record per process


def test_tuning_can_be_turned_off():
    assert _configure_in_a_fresh_process(UNETKIT_NO_TUNING="1") == {"malloc": "off (UNETKIT_NO_TUNING)",
                                                                   "threads": None}
    record = _configure_in_a_fresh_process(UNETKIT_MALLOC="default")
    assert record["malloc"] == "off (UNETKIT_MALLOC=default)"
    assert _configure_in_a_fresh_process(OMP_NUM_THREADS="1")["threads"] is None  # the user's count stands


def test_bf16_choice_can_be_forced_and_is_measured_once(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for forced, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("UNETKIT_CPU_BF16", forced)
        runtime.bf16_pays.cache_clear()
        assert runtime.bf16_pays() is expected
    runtime.bf16_pays.cache_clear()
    speedup = runtime.bf16_speedup()
    assert speedup > 0
    cached = json.loads((tmp_path / "unetkit" / "cpu-bf16.json").read_text())
    assert list(cached.values()) == [round(speedup, 3)]
    assert runtime.bf16_speedup() == round(speedup, 3)  # from the cache, not timed again


def test_precision_auto_on_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, training=True) == "fp32"  # eager bf16 training is slower here
    for forced, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("UNETKIT_CPU_BF16", forced)
        runtime.bf16_pays.cache_clear()
        assert pick_precision("auto", cpu) == expected
    runtime.bf16_pays.cache_clear()
    assert pick_precision("bf16", cpu, training=True) == "bf16"  # an explicit choice stands
    with pytest.raises(UnetkitError, match="fp16 is for GPUs"):
        pick_precision("fp16", cpu)
