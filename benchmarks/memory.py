"""Where the memory of a training step goes, and how much the process really takes.

    .venv/bin/python benchmarks/memory.py                 # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/memory.py --no-markdown   # print only, leave BENCHMARKS.md alone

The step is the classic U-Net (3 bands -> 5 classes, base 64, depth 4), batch 4, 256 x 256,
CE + Dice, fused AdamW (`unetkit.plan.probe.make_adamw`), gradient clipping, in both of the
trainer's layouts: channels-last through `unetkit.nn.fused.training_network` (convolution
outputs stored; batch norm + ReLU and the transposed convolutions' up-sampled maps recomputed
in the backward pass) and NCHW (the network as
written). The trainer takes the one its probe, `unetkit.plan.probe.training_layout`, measures
faster here, and that one comes first. Precisions: the one the trainer's probe
(`unetkit.plan.probe.training_precision`) picks on this machine, and fp32 for comparison. The
speed issue's target for its peak RSS is 1.5 GB (1536 MiB) "with the allocator's slack
counted". Two numbers per precision and layout:

1. The floor, accounted: the process with torch imported, the parameters with their
   gradients and AdamW's two moments (4 x the fp32 parameters), and the tensors autograd
   keeps for the backward pass (unique storages, recorded with saved_tensors_hooks during a
   real forward pass and loss; parameters excluded, grouped by resolution; the weight copies
   autograd keeps, such as autocast's bf16 casts and the transposed convolutions as 1x1
   weights, apart). No workspace, no allocator slack.
2. The peak RSS, measured: VmHWM of fresh processes (`speed.py --rss`, the same step as
   speed.py's unetkit contender; 3 per row, median and range, because the heap's
   fragmentation differs between processes) that build the network and run 4 training steps, with the
   allocator as unetkit sets it (`runtime.configure()`: freed memory kept in the process) and
   with `UNETKIT_MALLOC=default` (glibc's own behaviour). This is the number the target is about.

Prints a JSON record and a paragraph for BENCHMARKS.md (its memory section; `--no-markdown`
leaves the file alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MIB = 2**20
TARGET_MIB = 1536  # the speed issue: peak RSS of training b4 <= 1.5 GB, the allocator's slack counted
BATCH, SIZE, BANDS, CLASSES = 4, 256, 3, 5


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / MIB


def account(precision: str, channels_last: bool, torch_imported_mib: float) -> dict:
    """The floor of one training step in `precision` and this layout, as the trainer runs it."""
    from unetkit.model.device import autocast
    from unetkit.nn import UNet, fused
    from unetkit.train.losses import SegmentationLoss

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = UNet(in_channels=BANDS, num_classes=CLASSES).train()
    x = torch.randn(BATCH, BANDS, SIZE, SIZE)
    network: torch.nn.Module = model
    if channels_last:  # the trainer's channels-last path; NCHW trains the network as written
        model = model.to(memory_format=torch.channels_last)
        network = fused.training_network(model)
        x = x.contiguous(memory_format=torch.channels_last)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    y = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE))
    storages: dict[int, tuple[int, str]] = {}
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() == 0 or storage.data_ptr() in parameters:
            return t
        if t.dim() == 4 and t.shape[0] == BATCH and t.shape[-1] >= 8:
            group = str(t.shape[-1])  # an activation (or its statistics' input): by resolution
        elif t.dim() >= 2:
            group = "weights"  # weight copies: autocast's casts, transposed convs as 1x1, split weights
        else:
            group = "other"  # per-channel statistics, scalars
        storages[storage.data_ptr()] = (storage.nbytes(), group)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(cpu, precision):  # the trainer: the forward pass under autocast, the loss outside
            logits = network(x)
        loss = SegmentationLoss("ce+dice", "multiclass")(logits, y)
    by_group: dict[str, float] = defaultdict(float)
    for nbytes, group in storages.values():
        by_group[group] += nbytes / MIB
    saved = sum(by_group.values())
    del loss, logits
    order = sorted((g for g in by_group if g.isdigit()), key=int, reverse=True) + [
        g for g in ("weights", "other") if g in by_group]
    return {
        "precision": precision, "layout": _layout(channels_last), "torch_imported_mib": round(torch_imported_mib, 1),
        "parameters_mib": round(weights, 1),
        "parameters_grads_adamw_mib": round(4 * weights, 1),
        "saved_mib": round(saved, 1),
        "saved_by_group_mib": {g: round(by_group[g], 1) for g in order},
        "floor_mib": round(torch_imported_mib + 4 * weights + saved, 1),
    }


def _layout(channels_last: bool) -> str:
    return "channels-last" if channels_last else "NCHW"


def measured_rss(precision: str, channels_last: bool, malloc: str, steps: int, repeats: int) -> dict:
    """VmHWM of `repeats` fresh processes, each running `steps` training steps (speed.py's
    unetkit contender). Repeated because the heap's fragmentation, and so the peak, differs
    from process to process with the threads' timing."""
    import statistics

    from speed import Spec, rss_record

    layout = _layout(channels_last)
    spec = Spec(f"memory-{precision}-{layout}-{malloc}", f"unetkit {precision}, {layout}, malloc {malloc}",
                precision=precision, channels_last=channels_last, train_channels_last=channels_last, malloc=malloc)
    records = [rss_record(spec, steps) or {} for _ in range(repeats)]
    peaks = [r["peak_rss_mib"] for r in records if r.get("peak_rss_mib") is not None]
    befores = [r["rss_before_steps_mib"] for r in records if r.get("rss_before_steps_mib") is not None]
    return {"precision": precision, "layout": layout, "malloc": malloc, "steps": steps, "repeats": repeats,
            "peaks_mib": peaks, "peak_rss_mib": statistics.median(peaks) if len(peaks) == repeats else None,
            "max_peak_rss_mib": max(peaks) if len(peaks) == repeats else None,
            "rss_before_steps_mib": statistics.median(befores) if befores else None,
            "allocator": next((r.get("allocator") for r in records if r), None)}


def _meets(mib: float | None) -> str:
    if mib is None:
        return "not measured"
    return f"meets the {TARGET_MIB} MiB target" if mib <= TARGET_MIB else f"misses the {TARGET_MIB} MiB target"


def _floor_text(a: dict) -> str:
    parts = ", ".join((f"{g} px {v:.0f}" if g.isdigit() else f"{'weight copies' if g == 'weights' else g} {v:.0f}")
                      for g, v in a["saved_by_group_mib"].items() if v >= 1)
    return (f"torch imported {a['torch_imported_mib']:.0f} MiB + parameters, gradients and AdamW moments "
            f"{a['parameters_grads_adamw_mib']:.0f} MiB + tensors saved for the backward pass {a['saved_mib']:.0f} MiB "
            f"({parts}) = **{a['floor_mib']:.0f} MiB**")


def markdown(record: dict) -> str:
    picked, layout = record["picked"], record["layout"]
    lines = [
        f"Measured {record['date']} on {record['machine']}: the classic U-Net (3 -> 5 classes, base 64), batch "
        f"{BATCH}, {SIZE}^2, CE + Dice, fused AdamW, gradient clipping, in both of the trainer's layouts: "
        "channels-last through `fused.training_network` (convolution outputs stored; batch norm + ReLU and the "
        "up-sampled maps of the transposed convolutions recomputed in the backward pass) and NCHW (the network as written). The trainer's probes pick "
        f"**{picked}** ({record['reason']}) and **{layout}** ({record['layout_reason']}); fp32 is measured "
        f"for comparison. Target (speed issue): peak RSS <= {TARGET_MIB} MiB with the allocator's slack counted. "
        "Command: `.venv/bin/python benchmarks/memory.py`.",
        "",
        "Floor, accounted (tensors autograd saves, recorded with saved_tensors_hooks: unique storages, parameters "
        "excluded; no workspace, no allocator slack):",
    ]
    for a in record["accounting"]:
        lines.append(f"- {a['precision']}, {a['layout']}: {_floor_text(a)}.")
    lines += ["", f"Peak RSS, measured (VmHWM of {record['repeats']} fresh processes per row, each building the network "
                  f"in that layout and running {record['steps']} such training steps; this is what the target is "
                  "about):", "",
              f"| precision | layout | allocator | peak RSS (MiB), median of {record['repeats']} processes | "
              f"range (MiB) | RSS before the first step (MiB) | target <= {TARGET_MIB} MiB |",
              "|---|---|---|---:|---:|---:|---|"]
    names = {"tuned": "as unetkit sets it (runtime.configure(): freed memory kept)",
             "default": "glibc's default (UNETKIT_MALLOC=default)"}
    for m in record["measured"]:
        rss = m.get("peak_rss_mib")
        before = m.get("rss_before_steps_mib")
        peaks = m.get("peaks_mib") or []
        spread = f"{min(peaks):.0f}-{max(peaks):.0f}" if peaks else ""
        lines.append(f"| {m['precision']} | {m['layout']} | {names[m['malloc']]} | "
                     f"{'failed' if rss is None else f'{rss:.0f}'} | {spread} | "
                     f"{'' if before is None else f'{before:.0f}'} | {_verdict(peaks, rss)} |")
    headline = next((m for m in record["measured"]
                     if m["precision"] == picked and m["layout"] == layout and m["malloc"] == "tuned"), None)
    if headline and headline.get("peak_rss_mib") is not None:
        peaks = headline["peaks_mib"]
        lines += ["", f"With unetkit's defaults ({picked}, {layout}, its allocator setting) the step peaks at "
                      f"{headline['peak_rss_mib']:.0f} MiB (median of {len(peaks)} processes, "
                      f"{min(peaks):.0f}-{max(peaks):.0f}): the target is {_verdict(peaks, headline['peak_rss_mib'])}."]
    return "\n".join(lines)


def _verdict(peaks: list[float], median: float | None) -> str:
    """'met' only when every process stayed within the target."""
    if median is None:
        return "n/a"
    under = sum(p <= TARGET_MIB for p in peaks)
    if under == len(peaks):
        return "met"
    return f"**not met** (within it in {under} of {len(peaks)})" if under else "**not met**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-markdown", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--steps", type=int, default=4, help="training steps of each measured process")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per measured row; the table gives their median and range (default 3)")
    args = parser.parse_args()

    from unetkit import runtime
    from unetkit.model import device

    runtime.configure()  # as the CLI does, before anything is allocated
    import unetkit.nn.fused  # noqa: F401  (what the step needs, imported before the baseline)
    import unetkit.train.losses  # noqa: F401

    torch_imported = rss_mib()  # before the probes below, which train for a few steps in this process
    from speed import machine, training_layout_here, training_precision_here

    picked, reason = training_precision_here()
    channels_last, layout_reason = training_layout_here(picked)
    precisions = [picked] + (["fp32"] if picked != "fp32" else [])
    layouts = [channels_last, not channels_last]  # the trainer's choice first
    accounting = []
    for precision in precisions:
        for layout in layouts:
            accounting.append(account(precision, layout, torch_imported))
            print(f"{precision}, {_layout(layout)}: floor {_floor_text(accounting[-1])}".replace("**", ""),
                  file=sys.stderr, flush=True)
    measured = []
    for precision in precisions:
        for layout in layouts:
            for malloc in ("tuned", "default"):
                measured.append(measured_rss(precision, layout, malloc, args.steps, args.repeats))
                rss = measured[-1].get("peak_rss_mib")
                print(f"{precision}, {_layout(layout)}, malloc {malloc}: peak RSS "
                      f"{'failed' if rss is None else f'{rss:.0f}'} MiB ({_meets(rss)})", file=sys.stderr, flush=True)
    info = machine()
    record = {
        "date": dt.date.today().isoformat(),
        "machine": f"{device.cpu_identity()}, {info['cores']} cores, torch {info['torch']}",
        "generation": info.get("generation"),
        "batch": BATCH, "size": SIZE, "network": {"in_channels": BANDS, "num_classes": CLASSES, "base_channels": 64},
        "picked": picked, "reason": reason, "layout": _layout(channels_last), "layout_reason": layout_reason,
        "steps": args.steps, "repeats": args.repeats, "target_mib": TARGET_MIB, "accounting": accounting,
        "measured": measured,
        "verdicts": {f"floor {a['precision']} {a['layout']}": _meets(a["floor_mib"]) for a in accounting}
        | {f"highest peak RSS {m['precision']} {m['layout']} malloc {m['malloc']}": _meets(m.get("max_peak_rss_mib"))
           for m in measured},
    }
    print(json.dumps(record, indent=1))
    text = markdown(record)
    print("\n" + text)
    if not args.no_markdown:
        from speed import update_markdown

        update_markdown("memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
