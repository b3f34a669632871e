"""The machine probe: what a training step of a given network costs here, measured, not assumed.

The same network trains 4-5x faster in bf16 on a CPU with AMX, about 2x on one whose bf16
dot products are full speed, and slower on one where they run at half the fp32 rate, so the
training precision is chosen by timing a real training step (the trainer's: the fast
training network, channels-last, fused AdamW; a cross-entropy loss, whose cost is small
beside the network's) in both precisions; the memory layout (the fused channels-last network
or the plain NCHW one) is chosen the same way, as the faster one depends on the CPU and the
width. The planner asks the same function what candidate recipes cost. Every answer is
cached per CPU (model name and vector instructions: `cpu_identity`) or GPU, torch version
and thread count, in ~/.cache/unetkit/probe.json: a machine is measured once.
`UNETKIT_CPU_BF16=0/1` forces the precision answer (for tests, and for a machine one knows).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unetkit.model.device import _cache_dir, cpu_identity, pick_device
from unetkit.nn.options import UNetOptions

BF16_MARGIN = 1.15  # bf16 must be this much faster than fp32 to be worth its rounding
NCHW_MARGIN = 1.10  # the plain NCHW network must be this much faster to replace the fused channels-last one
LAYOUTS = ("channels_last", "nchw")
CACHE_FILE = "probe.json"


@dataclass(frozen=True)
class StepCost:
    """Seconds per training step of one recipe on this machine (and what was measured)."""

    seconds: float
    images_per_s: float
    precision: str
    measured: bool  # False: from the cache


def machine_key(device: torch.device) -> str:
    """What a measurement depends on besides the recipe: the processor, torch and the threads."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_identity()
    return f"{name}|torch {torch.__version__}|{torch.get_num_threads()} threads|{device.type}"


def step_cost(options: UNetOptions, patch: int, batch: int, precision: str, device: str | torch.device = "auto",
              steps: int = 3, use_cache: bool = True, layout: str = "channels_last") -> StepCost:
    """The time of one training step of `options` at `patch` x `patch`, `batch` images, in `precision`,
    in the trainer's `layout`: channels_last (the fused training network) or nchw (the network as written)."""
    device = pick_device(device) if isinstance(device, str) else device
    key = f"{machine_key(device)}|{json.dumps(options.to_dict(), sort_keys=True)}|{patch}|{batch}|{precision}"
    key += "|nchw" if layout == "nchw" else ""
    cache = _read_cache()
    if use_cache and key in cache:
        seconds = float(cache[key])
        return StepCost(seconds, batch / seconds, precision, measured=False)
    seconds = _time_steps(options, patch, batch, [precision], device, steps, layout)[precision]
    _write_cache({key: seconds})
    return StepCost(seconds, batch / seconds, precision, measured=True)


def sample_seconds(root: str | Path, stems: list[str], spec: Any, patch: int, augment: str, flips: str,
                   ignore_nodata: bool = False, draws: int = 6) -> float:
    """The time to read, crop and augment one training sample of this data set, measured
    (median of `draws`, after a warm-up): a training step pays it per image wherever the
    loader runs in the training process, and it does not shrink with the network's width."""
    from unetkit.data.dataset import SegmentationDataset
    from unetkit.data.transforms import build_augmentation

    if not stems:
        return 0.0
    size = (patch, patch)
    dataset = SegmentationDataset(root, stems, spec, patch_size=size, seed=0, ignore_nodata=ignore_nodata,
                                  transform=build_augmentation(size, level=augment, ignore_index=spec.ignore_index,
                                                               flips=flips))
    times = []
    for draw in range(draws + 1):
        start = time.perf_counter()
        dataset[draw * 7919 % max(1, len(dataset) * 4)]
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def sample_cost_of(root: str | Path, report: Any, ignore_nodata: bool = False) -> Callable[[int, str, str], float]:
    """The planner's `sample_cost(patch, augment, flips)` for the training split of a checked data set."""
    return lambda patch, augment, flips: sample_seconds(root, list(report.splits.get("train") or []), report.spec,
                                                         patch, augment, flips, ignore_nodata)


def training_precision(options: UNetOptions, patch: int, batch: int, device: torch.device) -> tuple[str, str]:
    """(precision, why) for training this network on `device`: on CUDA bf16 (fp16 where bf16 is
    missing); on a CPU bf16 only where a measured training step is at least BF16_MARGIN faster
    than in fp32, else fp32."""
    if device.type == "cuda":
        return ("bf16", "the GPU has bf16") if torch.cuda.is_bf16_supported() else ("fp16", "the GPU lacks bf16")
    if device.type != "cpu":
        return "fp32", f"{device.type}: fp32"
    forced = os.environ.get("UNETKIT_CPU_BF16")
    if forced in ("0", "1"):
        return ("bf16" if forced == "1" else "fp32"), f"UNETKIT_CPU_BF16={forced}"
    if not _cpu_can_bf16():
        return "fp32", "the CPU has no bf16 instructions"
    costs = {p: step_cost(options, patch, batch, p, device) for p in ("fp32", "bf16")}
    speedup = costs["fp32"].seconds / costs["bf16"].seconds
    choice = "bf16" if speedup >= BF16_MARGIN else "fp32"
    return choice, f"a training step measured {speedup:.2f}x as fast in bf16 as in fp32 here"


def training_layout(options: UNetOptions, patch: int, batch: int, precision: str,
                    device: torch.device, steps: int = 3) -> tuple[bool, str]:
    """(channels_last, why) for training this network on `device`. Channels-last runs the fused
    training network (nn/fused.py) and pays on most machines; on some CPUs oneDNN's NCHW
    convolutions are faster for some widths (AVX2 in fp32), so on a CPU both are timed and NCHW
    is taken where it measures at least NCHW_MARGIN faster."""
    if device.type != "cpu":
        return True, f"{device.type}: channels-last"
    return layout_choice({layout: step_cost(options, patch, batch, precision, device, steps=steps,
                                            layout=layout).seconds for layout in LAYOUTS})


def layout_choice(seconds: dict[str, float]) -> tuple[bool, str]:
    """(channels_last, why) from the measured seconds of a step in each of LAYOUTS: NCHW only
    where it is at least NCHW_MARGIN faster (the fused channels-last path stores less)."""
    speedup = seconds["channels_last"] / seconds["nchw"]
    faster = "NCHW" if speedup >= 1 else "channels-last"
    why = f"a training step measured {max(speedup, 1 / speedup):.2f}x as fast in {faster} here"
    if 1 <= speedup < NCHW_MARGIN:
        why += f", under the {NCHW_MARGIN:.2f}x that pays for the memory NCHW's stored activations take"
    return speedup < NCHW_MARGIN, why


def _cpu_can_bf16() -> bool:
    from unetkit.model.device import _cpu_flags

    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags or bool(
        getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def _time_steps(options: UNetOptions, patch: int, batch: int, precisions: list[str], device: torch.device,
                steps: int, layout: str = "channels_last") -> dict[str, float]:
    """Best of `steps` timed training steps per precision (after a warm-up), alternating, in the
    trainer's `layout` (channels_last: the fused training network; nchw: the network as written)."""
    import torch.nn.functional as F

    from unetkit.nn import UNet, fused

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = UNet(options).to(device).to(memory_format=fmt).train()
        network = fused.training_network(model) if layout == "channels_last" else model
        binary = options.num_classes == 1
        optimizer = make_adamw(model.parameters(), 1e-4, 1e-4, device)
        x = torch.randn(batch, options.in_channels, patch, patch, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, max(2, options.num_classes), (batch, patch, patch), device=device)

        def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if binary:
                return F.binary_cross_entropy_with_logits(logits.float()[:, 0], target.float())
            return F.cross_entropy(logits.float(), target)

        def one(precision: str) -> float:
            start = time.perf_counter()
            with _autocast(device, precision):
                logits = network(x)
            value = loss(logits, y)
            value.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # as the trainer: gradients freed after the step
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        times: dict[str, list[float]] = {p: [] for p in precisions}
        for precision in precisions:
            one(precision)  # warm-up: oneDNN primitive creation, page faults
        for _ in range(steps):
            for precision in precisions:
                times[precision].append(one(precision))
        return {p: min(t) if len(t) < 3 else statistics.median(sorted(t)[: max(1, len(t) - 1)]) for p, t in
                times.items()}
    finally:
        torch.random.set_rng_state(state)


def make_adamw(params: Any, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with its fused kernel where this torch has one for the device (one pass over the
    parameters instead of a dozen), else the default implementation."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _cache_path() -> Path:
    return _cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        values = json.loads(_cache_path().read_text())
        return values if isinstance(values, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(entries: dict[str, Any]) -> None:
    from unetkit.atomic import atomic_write_text

    try:
        atomic_write_text(_cache_path(), json.dumps({**_read_cache(), **entries}, indent=1))
    except OSError:
        pass  # a read-only home: measure again next time


__all__ = ["BF16_MARGIN", "LAYOUTS", "NCHW_MARGIN", "StepCost", "layout_choice", "machine_key", "make_adamw",
           "sample_cost_of", "sample_seconds", "step_cost", "training_layout", "training_precision"]
