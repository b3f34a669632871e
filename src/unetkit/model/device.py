"""Where and in which precision to run: chosen once, from what the machine can do.

On CUDA: bf16 where the GPU has it, else fp16. On a CPU, bf16 is used only where a one-off
measurement shows it faster than fp32 (`bf16_pays`): the avx512_bf16 flag alone does not
say, its dot-product instruction runs at half the fp32 FMA rate on some CPUs, and only AMX
makes bf16 much faster. The trainer and the predictor both read this, so both run the same way.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from unetkit.errors import UnetkitError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit name must be available. Under torchrun
    each process takes the GPU of its LOCAL_RANK."""
    if name in ("auto", "cuda") and torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UnetkitError("--device cuda: no CUDA GPU is visible to this torch build; use --device cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UnetkitError("--device mps: Apple's MPS is not available here; use --device cpu.")
    return torch.device(name)


def join_process_group() -> tuple[int, int, bool]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1): NCCL on
    CUDA, gloo on the CPU. Returns rank, world size and whether this call opened the group
    (and so must close it: gloo threads left to interpreter shutdown abort the process)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size(), owns


def leave_process_group(owned: bool) -> None:
    import torch.distributed as dist

    if owned and dist.is_initialized():
        dist.destroy_process_group()


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (avx512_bf16 / amx_bf16 flags)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker and checker() and "avx512" in flags)


def pick_precision(name: str, device: torch.device, training: bool = False) -> str:
    """'auto' -> the fastest precision that keeps accuracy on this device and for this use.

    On a CPU, bf16 is used for inference only where it measures faster (`bf16_pays`:
    the bf16 flag is not enough — on the Xeon of BENCHMARKS.md bf16 ran at half fp32 speed),
    and never for training: eager bf16 autocast, with its casts and bf16 backward kernels,
    trained the classic network at 0.6x the fp32 speed here (BENCHMARKS.md)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise UnetkitError("--precision fp16 is for GPUs; on the CPU use bf16 or fp32.")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and not training:
        return "bf16" if bf16_pays() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass; a no-op in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Evaluate without gradients, then restore the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


# --- does bf16 pay on this CPU? ---------------------------------------------------------------

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

    key = f"{cpu_identity()}|torch {torch.__version__}|{torch.get_num_threads()} threads"
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
        from unetkit.atomic import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps({**known, key: round(speedup, 3)}, indent=1))
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
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def _cpu_generation() -> str:
    """x86's family and model numbers ("family 25 model 1"), empty where /proc/cpuinfo has none:
    they tell apart two processors that a VM names alike and that share every speed flag (an
    AVX2 Zen 2 and an AVX2 Zen 3 "AMD EPYC" train the same network at different layouts' best)."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"family {family} model {model}" if family and model else ""


def _cpuinfo_field(name: str) -> str:
    """The first processor's `name` field in /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return ""


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_identity() -> str:
    """The CPU as the speed caches know it: its model name, family and model numbers, and the
    vector instructions that decide which kernels run. A name alone is not enough: a VM's "AMD
    EPYC" is a processor with avx512_bf16 on one host and one with AVX2 only on the next, and
    bf16 pays on the first only."""
    flags = _cpu_flags()
    generation = _cpu_generation()
    isa = "+".join(f for f in SPEED_FLAGS if f in flags) or "no AVX2"
    return f"{_cpu_model()} ({generation + '; ' if generation else ''}{isa})"


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "unetkit"
