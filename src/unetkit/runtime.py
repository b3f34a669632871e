"""Start-up tuning of the process: settings that make the same maths run faster, applied once.

`configure()` is called when unetkit is imported (and by the CLI). What it does, measured in
BENCHMARKS.md:

- glibc's malloc: large blocks (over 128 KiB to 32 MiB, adaptively) come straight from mmap
  and are returned to the kernel on free, and the top of the heap is trimmed as soon as it
  frees up. A training step allocates and frees gigabytes of activations, so each step
  page-faults all of it in again and zeroes it in the kernel. `mallopt(M_MMAP_MAX, 0)`
  keeps large blocks on the heap and a high `M_TRIM_THRESHOLD` keeps freed memory in the
  process for the next step: 1.12-1.15x faster fp32 training of the classic network here
  (BENCHMARKS.md). The price is resident memory: freed blocks stay in the process and the
  heap fragments, so a training run's peak RSS grows by 0.3-0.7 GB. Same effect as
  `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`, which only works
  when set before the process starts.
- torch's intra-op threads: one per core this process may run on (its CPU affinity), which
  torch does not read by itself in containers that pin fewer cores than the machine has.

Opt out with the environment variable UNETKIT_NO_TUNING=1 (everything) or
UNETKIT_MALLOC=default (the allocator only). Nothing here changes any result.

`bf16_pays()` answers the other start-up question, whether bf16 autocast is faster than
fp32 on this CPU. The avx512_bf16 flag alone does not say: its dot-product instruction
(vdpbf16ps) runs at half the FLOP rate of fp32 FMAs on some CPUs (measured on the Xeon of
BENCHMARKS.md: bf16 convolutions at 0.55x the fp32 speed), and only AMX makes bf16 much
faster. So on an avx512_bf16 CPU without AMX a 3x3 convolution is timed once in both
precisions (about 0.2 s) and the answer is cached per CPU model and torch version.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt's int accepts: never trim

_applied: dict[str, object] | None = None


def configure(force: bool = False) -> dict[str, object]:
    """Apply the start-up settings once per process; returns what was done (for reports).

    Idempotent: later calls return the first call's record unless `force` is true."""
    global _applied
    if _applied is not None and not force:
        return _applied
    done: dict[str, object] = {"malloc": "untouched", "threads": None}
    if os.environ.get("UNETKIT_NO_TUNING", "") not in ("", "0"):
        done["malloc"] = "off (UNETKIT_NO_TUNING)"
        _applied = done
        return done
    if os.environ.get("UNETKIT_MALLOC", "").lower() == "default":
        done["malloc"] = "off (UNETKIT_MALLOC=default)"
    else:
        done["malloc"] = keep_freed_memory()
    done["threads"] = _set_threads()
    _applied = done
    return done


def keep_freed_memory() -> str:
    """Tell glibc's malloc to serve large blocks from the heap and keep freed memory.

    Returns a word for the report: "kept" when applied, otherwise why not."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "no mallopt"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    return "kept" if ok else "mallopt refused"


def _set_threads() -> int | None:
    """One intra-op thread per core this process may use, unless the user chose a count."""
    if any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return None
    if not hasattr(os, "sched_getaffinity"):
        return None
    import torch

    cores = len(os.sched_getaffinity(0))
    if cores < torch.get_num_threads():
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def applied() -> dict[str, object] | None:
    """What `configure` did in this process (None when it has not run)."""
    return _applied


# --- does bf16 pay on this CPU? ----------------------------------------------------------------

BF16_MARGIN = 1.15  # bf16 must be this much faster than fp32 to be worth its rounding


@functools.cache
def bf16_pays() -> bool:
    """Whether bf16 autocast runs this CPU's convolutions clearly faster than fp32.

    UNETKIT_CPU_BF16=1 / 0 forces the answer. AMX (amx_bf16): yes. No avx512_bf16: no.
    avx512_bf16 alone: measured once (see `bf16_speedup`) and cached on disk."""
    forced = os.environ.get("UNETKIT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return True
    if "avx512_bf16" not in flags:
        return False
    return bf16_speedup() >= BF16_MARGIN


def bf16_speedup(use_cache: bool = True) -> float:
    """fp32 time / bf16 time of a 3x3 convolution (128 -> 128 channels, 32 x 32, batch 8,
    channels-last), best of 5 alternating runs of each; cached per CPU, torch and threads."""
    import torch

    key = f"{_cpu_model()}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    cache = _cache_dir() / "cpu-bf16.json"
    if use_cache:
        try:
            known = json.loads(cache.read_text())
            if key in known:
                return float(known[key])
        except (OSError, ValueError):
            known = {}
    else:
        known = {}
    x = torch.randn(8, 128, 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).contiguous(memory_format=torch.channels_last)
    cases = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
    best = dict.fromkeys(cases, float("inf"))
    with torch.inference_mode():
        for _ in range(2):  # warm-up: primitive creation
            for a, b in cases.values():
                torch.nn.functional.conv2d(a, b, padding=1)
        for _ in range(5):
            for dtype, (a, b) in cases.items():
                start = time.perf_counter()
                torch.nn.functional.conv2d(a, b, padding=1)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    speedup = best[torch.float32] / best[torch.bfloat16]
    try:
        known = {**known, key: round(speedup, 3)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    except OSError:
        pass  # a read-only home: measure again next time
    return speedup


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "unetkit"
