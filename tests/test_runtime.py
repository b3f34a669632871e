"""Start-up tuning (runtime.py): the allocator and the thread count, applied by the entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from unetkit import runtime


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


def test_threads_follow_the_cores_a_process_really_has(monkeypatch):
    """torchrun's processes share the machine's cores; its own OMP_NUM_THREADS=1 does not stand."""
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runtime._set_threads()
    assert set_to == [4]
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")  # the user's own OMP_NUM_THREADS=1 stands
    set_to.clear()
    assert runtime._set_threads() is None and set_to == []
    assert runtime.cores() == 4
