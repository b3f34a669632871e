"""The planner: a whole training recipe from the data's fingerprint, the machine and a time budget.

Each rule follows a property of the data or a measurement, never one data set's numbers:
- patch toward the median image's shorter side (nnU-Net's 2D rule), at most what one step
  of the device handles well (256 px on a CPU, 512 on a GPU) unless the typical object needs
  more (a patch holds at least twice the median object's diameter, so that objects and their
  surroundings fit whole), and never more than the image (beyond it a patch is padding);
- depth: pool while the bottleneck keeps at least 8 px a side (the deepest the patch allows,
  so the receptive field is as wide as the patch lets it be: large objects widen the patch);
- batch: about 2^17 pixels a step on a CPU (2^20 on a GPU), at least 2 (batch norm);
- precision: measured (`probe.training_precision`);
- layout: measured per width (`probe.layout_choice`: NCHW or the fused channels-last network,
  whichever trains that width faster here), so that the width is chosen with the cost of the
  layout it will train in;
- width: from measured step times (the network's, and reading and augmenting the batch where
  the training process does it), base 8 widened to 16, 32, 64 while the wider network still
  gets MIN_STEPS optimisation steps in the time and either comes nearly free (a step under
  WIDENING_COST times the narrower one's) or still gets MANY_STEPS: a larger network only
  where it will be trained enough for what it costs;
- steps: what the budget holds once validation (about a tenth) and checkpoints are paid,
  with the poly schedule planned to end exactly there (the trainer re-estimates as it goes);
- augmentation: mirrors only for images with an up (classes at fixed heights), every flip and
  turn otherwise; loss: the task's default, with class weights when a class is rare.
Any setting the user gave wins, and the plan says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from unetkit import runtime
from unetkit.nn.options import UNetOptions
from unetkit.plan.fingerprint import Fingerprint
from unetkit.plan.probe import LAYOUTS, layout_choice, step_cost, training_precision

# Optimisation steps a wider network must still get, else a narrower one is trained: in the
# budget benchmark a network twice as wide at full resolution with 1,300-1,500 steps scored
# above the narrower one with 2,000-2,300 on every set, so the floor sits below that.
MIN_STEPS = 1000
# Doubling the width quadruples a convolution's work. Where a step of the wider network costs
# under WIDENING_COST times the narrower one's, the narrow network was bound by memory traffic
# and the width comes nearly free; where it costs about what the work says, the steps it takes
# away matter more than the width, until the wider network still gets MANY_STEPS. In the budget
# benchmark (BENCHMARKS.md) the wider network won at about twice the cost and lost at about
# three times with under 2,000 steps.
WIDENING_COST = 2.25
MANY_STEPS = 3 * MIN_STEPS
WIDTHS = (8, 16, 32, 64)
VALIDATION_SHARE = 0.1  # of the budget, at most, spent validating
VALIDATIONS = (4, 25)  # how many validations a run gets (each one also writes the checkpoints)
CPU_PIXELS_PER_STEP, GPU_PIXELS_PER_STEP = 2**17, 2**20
CPU_MAX_PATCH, GPU_MAX_PATCH = 256, 512
LR = 3e-3  # AdamW, the trainer's measured default


@dataclass
class Choice:
    """One setting of the recipe, and why."""

    setting: str
    value: Any
    reason: str
    given: bool = False


@dataclass
class Plan:
    """The recipe for `minutes` of training on this data and machine; `settings` are TrainConfig fields."""

    minutes: float
    device: str
    settings: dict[str, Any]
    choices: list[Choice]
    estimate: dict[str, Any]
    fingerprint: dict[str, Any]
    probe: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        e = self.estimate
        return (f"{self.minutes:g} minutes on {self.device}: about {e['steps']:,} steps of {e['step_seconds']:.3f} s "
                f"({e['images_seen']:,} images seen), {e['validations']} validations")

    def to_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "device": self.device, "summary": self.summary, "settings": self.settings,
                "choices": [asdict(c) for c in self.choices], "estimate": self.estimate,
                "fingerprint": self.fingerprint, "probe": self.probe}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Plan:
        return cls(values["minutes"], values["device"], values["settings"],
                   [Choice(**c) for c in values.get("choices", [])], values["estimate"], values["fingerprint"],
                   values.get("probe", {}))

    def to_text(self) -> str:
        width = max(len(c.setting) for c in self.choices)
        lines = [f"plan: {self.summary}"]
        for c in self.choices:
            lines.append(f"  {c.setting:<{width}}  {_show(c.value):<12} {'(given) ' if c.given else ''}{c.reason}")
        return "\n".join(lines)


def make_plan(found: Fingerprint, minutes: float, device: torch.device, given: dict[str, Any] | None = None,
              optimizer: str = "adamw", sample_cost: Callable[[int, str, str], float] | None = None) -> Plan:
    """The recipe for `minutes` of training on the data `found` describes, on `device`;
    `given` are the settings the user chose (they are kept as they are); `sample_cost(patch,
    augment, flips)` measures the seconds to read and augment one training sample (without
    it, loading is taken as free)."""
    given = dict(given or {})
    choices: list[Choice] = []
    gpu = device.type == "cuda"

    def choose(setting: str, value: Any, reason: str) -> Any:
        if setting in given:
            choices.append(Choice(setting, given[setting], "you gave it", True))
            return given[setting]
        choices.append(Choice(setting, value, reason))
        return value

    side = min(found.median_size)
    cap = GPU_MAX_PATCH if gpu else CPU_MAX_PATCH
    objects = found.object_diameter_median or 0.0
    target = min(side, max(cap, 2 * objects))
    why = (f"toward the median image's {side} px shorter side, at most {cap} px on a {'GPU' if gpu else 'CPU'}"
           + (f" or twice the typical object's {objects:.0f} px" if objects and 2 * objects > cap else "")
           + f" (objects: {objects:.0f} px across)")
    given_patch = int(given["patch_size"]) if "patch_size" in given else None
    span = given_patch or target  # the depth follows the patch that is trained, given or planned
    depth = max(2, min(5, int(math.log2(max(span, 32) / 8))))
    depth = choose("depth", depth, f"the bottleneck keeps at least 8 px a side of a {int(span)} px patch")
    multiple = 2**depth
    patch = choose("patch_size", max(multiple, int(target) // multiple * multiple), why)
    pixels = GPU_PIXELS_PER_STEP if gpu else CPU_PIXELS_PER_STEP
    batch = choose("batch_size", max(2, min(32, round(pixels / patch**2))),
                   f"about {pixels:,} pixels a step (at least 2 images, for batch norm)")
    budget = minutes * 60.0
    classes = 1 if found.task == "binary" else len(found.classes)

    def options(base: int) -> UNetOptions:
        return UNetOptions(in_channels=found.bands, num_classes=classes, depth=depth, base_channels=base,
                           **{k: given[k] for k in ("up_mode", "norm", "dropout", "padding") if k in given})

    precision = given.get("precision", "auto")
    if precision == "auto":
        precision, why_precision = training_precision(options(int(given.get("base_channels", 16))), patch, batch,
                                                      device)
        choose("precision", precision, why_precision)
    else:
        choose("precision", precision, "you gave it")
    train_seconds = budget * (1 - VALIDATION_SHARE) * 0.97  # 3 %: checkpoints and the last validation's margin
    flips = given.get("flips", "horizontal" if found.has_up else "all")
    augment = given.get("augment", "default")
    loading = batch * sample_cost(patch, augment, flips) if sample_cost is not None else 0.0
    workers = given.get("workers")
    workers = runtime.default_workers() if workers is None else int(workers)

    def with_loading(network: float) -> float:
        """A step: the network's, plus the batch's loading in this process, or overlapped by workers."""
        return network + loading if workers <= 0 else max(network, loading / workers)

    given_layout = given.get("channels_last")
    compare = given_layout is None and device.type == "cpu"  # off the CPU: channels-last (probe.training_layout)

    def network_cost(base: int) -> tuple[float, bool, str]:
        """(seconds, channels_last, why) of a step of the network `base` wide, in the faster layout."""
        if not compare:
            channels_last = True if given_layout is None else bool(given_layout)
            layout = LAYOUTS[0] if channels_last else LAYOUTS[1]
            seconds = step_cost(options(base), patch, batch, precision, device, steps=2, layout=layout).seconds
            return seconds, channels_last, f"{device.type}: channels-last"
        seconds_of = {layout: step_cost(options(base), patch, batch, precision, device, steps=2,
                                        layout=layout).seconds for layout in LAYOUTS}
        channels_last, why = layout_choice(seconds_of)
        return seconds_of[LAYOUTS[0] if channels_last else LAYOUTS[1]], channels_last, why

    measured: dict[int, float] = {}
    network_seconds: dict[int, float] = {}
    layouts: dict[int, tuple[bool, str]] = {}
    widths = [int(given["base_channels"])] if "base_channels" in given else list(WIDTHS)
    for base in widths:
        seconds, channels_last, why_layout = network_cost(base)
        network_seconds[base], layouts[base] = seconds, (channels_last, why_layout)
        measured[base] = with_loading(network_seconds[base])
        if width_to_train(measured, train_seconds)[0] != base:
            break  # not taken: a wider one, dearer still and with fewer steps, would not be either
    base, why_width = width_to_train(measured, train_seconds)
    of_which = (f", {loading:.3f} s of it loading the batch" if loading and workers <= 0 else "")
    reason = f"{why_width}; it gets {train_seconds / measured[base]:,.0f} steps of {measured[base]:.3f} s{of_which}"
    base = choose("base_channels", base, reason)
    channels_last, why_layout = layouts[base]
    choose("channels_last", channels_last,
           ("the fused channels-last network" if channels_last else "NCHW, the network as written") + f": {why_layout}")
    step_seconds = measured[base]
    steps = max(1, int(train_seconds / step_seconds))

    validations, val_seconds = _validations(found, patch, batch, step_seconds, budget)
    steps_per_epoch = max(1, steps // validations)
    epochs = math.ceil(steps / steps_per_epoch)
    choose("steps_per_epoch", steps_per_epoch, f"{validations} validations (each about {val_seconds:.1f} s, "
                                               f"at most a tenth of the budget together)")
    choose("epochs", epochs, "the steps the budget holds, re-estimated as training goes")
    choose("schedule", "poly", "(1 - t)^0.9 over the planned steps: it reaches 0 when the budget ends")
    choose("warmup_steps", min(200, steps // 33), "about 3 % of the steps")
    choose("optimizer", optimizer, "AdamW")
    choose("lr", LR if optimizer == "adamw" else 1e-2, "the trainer's measured default")
    choose("flips", flips,
           f"the classes sit at fixed heights (vertical layout {found.vertical_layout:.2f}): mirror only"
           if found.has_up else "no class keeps to a height: every flip and 90-degree turn")
    choose("augment", augment, "scale, elastic, intensity: for data of any size")
    rare = found.rare_classes
    if found.task == "multiclass" and rare:
        weights = [round(min(10.0, max(1.0, math.sqrt(0.01 / s))) if 0 < s < 0.01 else 1.0, 2)
                   for s in found.class_shares]
        choose("class_weights", weights, f"{', '.join(rare)} under 1 % of the pixels: weight 1/sqrt(share), "
                                         "at most 10")
    settings = {c.setting: c.value for c in choices if not c.given}
    estimate = {"step_seconds": step_seconds, "steps": steps, "images_seen": steps * batch,
                "validations": validations, "validation_seconds": val_seconds, "train_seconds": train_seconds,
                "budget_seconds": budget, "measured_widths": {str(k): v for k, v in measured.items()},
                "network_seconds": {str(k): v for k, v in network_seconds.items()}, "loading_seconds": loading,
                "workers": workers, "layouts": {str(k): LAYOUTS[0] if v[0] else LAYOUTS[1] for k, v in layouts.items()}}
    return Plan(minutes, device.type, settings, choices, estimate, found.to_dict(),
                {"precision": precision, "step_seconds": measured})


def width_to_train(seconds: dict[int, float], train_seconds: float) -> tuple[int, str]:
    """Of the widths measured (`seconds`: a training step's cost per base width), the one to
    train for `train_seconds`, and why: the narrowest, widened while the wider network gets at
    least MIN_STEPS steps and either costs under WIDENING_COST times a step of the one it widens
    or still gets MANY_STEPS."""
    widths = sorted(seconds)
    steps = {width: train_seconds / cost for width, cost in seconds.items()}
    base = widths[0]
    if steps[base] < MIN_STEPS:
        return base, f"even the narrowest gets only {steps[base]:,.0f} steps"
    rule = (f"base {widths[0]} widened while the wider network gets at least {MIN_STEPS:,} steps in the time "
            f"and costs under {WIDENING_COST:g}x a step of the narrower one, or gets {MANY_STEPS:,}")
    for wider in widths[1:]:
        dearer = seconds[wider] / seconds[base]
        if steps[wider] < MIN_STEPS:
            return base, f"{rule} (base {wider}: {steps[wider]:,.0f} steps)"
        if dearer >= WIDENING_COST and steps[wider] < MANY_STEPS:
            return base, f"{rule} (base {wider}: {dearer:.2f}x a step, {steps[wider]:,.0f} steps)"
        base = wider
    return base, f"{rule} (the widest candidate)"


def _validations(found: Fingerprint, patch: int, batch: int, step_seconds: float, budget: float) -> tuple[int, float]:
    """How many validations fit a tenth of the budget, and the estimate of one with its
    checkpoints: the predictor's tiles (twice the patch, half overlapping: about twice the
    pixels) at about a third of a training step's cost per pixel, plus reading each image and
    writing two model folders."""
    h, w = found.median_size
    per_pixel = step_seconds / (3 * batch * patch**2)
    seconds = 0.3 + found.val_pairs * (0.02 + h * w * 2.25 * per_pixel)
    count = int(VALIDATION_SHARE * budget / seconds)
    return max(VALIDATIONS[0], min(VALIDATIONS[1], count)), seconds


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


__all__ = ["Choice", "MANY_STEPS", "MIN_STEPS", "Plan", "WIDENING_COST", "make_plan", "width_to_train"]
