"""Where and in which precision to run: chosen once, from what the machine can do.

bf16 autocast pays on CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX) and on
CUDA GPUs that support it; elsewhere fp16 on CUDA, fp32 on the rest. Everything here is
read by the trainer and the predictor, so both run the same way.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch

from unetkit.errors import UnetkitError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit name must be available."""
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

    On a CPU, bf16 is used for inference only where it measures faster (`runtime.bf16_pays`:
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
        from unetkit.runtime import bf16_pays

        return "bf16" if bf16_pays() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass; a no-op in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_workers() -> int:
    """DataLoader workers: none on a 2-core machine (the model needs both cores), else a few."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(4, cores // 2)


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
