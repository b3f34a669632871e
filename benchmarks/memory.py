"""Where the memory of a training step goes: the classic U-Net, batch 4, 256 x 256, fp32.

    .venv/bin/python benchmarks/memory.py

The speed issue's target for the peak RSS of that step is 1.2 GB. This accounts for the
floor under it, measured rather than estimated: the process with torch imported, the
parameters with their gradients and AdamW's two moments, and the tensors autograd keeps
for the backward pass (unique storages, recorded with saved_tensors_hooks during a real
forward pass and loss), grouped by resolution. Prints a JSON record and a paragraph for
BENCHMARKS.md (its memory section; `--no-markdown` leaves the file alone).
"""

from __future__ import annotations

import json
import resource
import sys
from collections import defaultdict
from pathlib import Path

import torch

MIB = 2**20


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / MIB


def account(batch: int = 4, size: int = 256, bands: int = 3, classes: int = 5) -> dict:
    from unetkit.nn import UNet
    from unetkit.train.losses import SegmentationLoss

    start = rss_mib()
    torch.manual_seed(0)
    model = UNet(in_channels=bands, num_classes=classes).to(memory_format=torch.channels_last).train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    x = torch.randn(batch, bands, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch, size, size))
    storages: dict[int, tuple[int, int]] = {}
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        side = t.shape[-1] if t.dim() == 4 else 0
        storages[storage.data_ptr()] = (storage.nbytes(), side)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = SegmentationLoss("ce+dice", "multiclass")(model(x), y)
    by_side: dict[int, float] = defaultdict(float)
    for pointer, (nbytes, side) in storages.items():
        if pointer not in parameters:
            by_side[side] += nbytes / MIB
    saved = sum(by_side.values())
    del loss
    return {
        "batch": batch, "size": size, "torch_imported_mib": round(start, 1),
        "parameters_mib": round(weights, 1),
        "parameters_grads_adamw_mib": round(4 * weights, 1),
        "saved_activations_mib": round(saved, 1),
        "saved_by_side_mib": {str(k): round(v, 1) for k, v in sorted(by_side.items(), reverse=True)},
        "floor_mib": round(start + 4 * weights + saved, 1),
    }


def main() -> int:
    record = account()
    print(json.dumps(record, indent=1))
    sides = ", ".join(f"{side} px {mib:.0f}" if side != "0" else f"other {mib:.0f}"
                      for side, mib in record["saved_by_side_mib"].items() if float(mib) >= 1)
    text = (
        f"Floor of a training step (classic U-Net, batch {record['batch']}, {record['size']}^2, fp32): "
        f"torch imported {record['torch_imported_mib']:.0f} MiB + parameters, gradients and AdamW moments "
        f"{record['parameters_grads_adamw_mib']:.0f} MiB + activations saved for the backward pass "
        f"{record['saved_activations_mib']:.0f} MiB ({sides}) = {record['floor_mib']:.0f} MiB, before any "
        "workspace or allocator slack. Command: `.venv/bin/python benchmarks/memory.py`.")
    print("\n" + text)
    if "--no-markdown" not in sys.argv[1:]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from speed import update_markdown

        update_markdown("memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
