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
UNETKIT_MALLOC=default (the allocator only). Nothing here changes any result. The entry
points (the CLI, training, the predictor) call `configure()`; importing unetkit does not.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

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
    """One intra-op thread per core this process really has: its CPU affinity (which torch
    does not read in containers that pin fewer cores than the machine has), shared with the
    other processes torchrun started on this machine. A count the user chose stands; the
    OMP_NUM_THREADS=1 that torchrun sets by itself for several processes does not."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    launched = "TORCHELASTIC_RUN_ID" in os.environ and local > 1 and os.environ.get("OMP_NUM_THREADS") == "1"
    if not launched and any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return None
    import torch

    cores = max(1, len(os.sched_getaffinity(0)) // max(1, local))
    if launched or cores < torch.get_num_threads():
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def cores() -> int:
    """The cores this process may use, shared with torchrun's other processes on this machine."""
    total = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, total // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def default_workers() -> int:
    """DataLoader workers: none with 2 cores or fewer (the model needs them), else a quarter of
    the cores, at most 4 (each takes a core from the model: see `share_with_loaders`)."""
    count = cores()
    return 0 if count <= 2 else min(4, max(1, count // 4))


def share_with_loaders(workers: int) -> int:
    """Give `workers` DataLoader processes a core each and the model the rest (at least one):
    a loader that takes the model's core slows both far more than it saves. Returns the
    model's thread count. Workers themselves run single-threaded (`loader_worker_init`)."""
    import torch

    if workers <= 0 or _applied is None or _applied.get("threads") is None:
        return torch.get_num_threads()
    torch.set_num_threads(max(1, cores() - workers))
    return torch.get_num_threads()


def loader_worker_init(worker_id: int) -> None:
    """In each DataLoader worker: one thread for torch and OpenCV (augmentation is per sample)."""
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def applied() -> dict[str, object] | None:
    """What `configure` did in this process (None when it has not run)."""
    return _applied
