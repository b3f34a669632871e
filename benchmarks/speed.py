"""Speed of unetkit's U-Net against the machine's arithmetic peak and against MONAI's BasicUNet.

    .venv/bin/python benchmarks/speed.py            # everything (about an hour on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick    # fewer repeats, no 4096 / 10000 images
    .venv/bin/python benchmarks/speed.py --only-scaling    # redo the image-size rows of the last run

A smoke test (a few minutes; its numbers mean nothing):

    .venv/bin/python benchmarks/speed.py --quick --repeats 1 --warmup 1 --no-scaling --no-rss --no-loader
        --only unetkit monai-plain --no-markdown --quiet-limit 5

What it measures, in this order (see BENCHMARKS.md for the tables it writes):
1. The ceiling of each precision, two ways. Theoretical peaks: the fp32 (vfmadd231ps) and
   AVX-512 bf16 (vdpbf16ps) rates of the cores, from a tiny C kernel (benchmarks/peak.c) built
   with the machine's gcc now, and, where the CPU has AMX (amx_bf16), AMX's bf16 rate from
   1024 FLOP per cycle per core x cores x the clock /proc/cpuinfo reports ("cpu MHz"; turbo
   can differ). Practical ceilings: the measured rate of one large oneDNN convolution (3x3,
   512 -> 512 channels, 64 x 64, batch 8, channels-last) in bf16 and in fp32. Then the rate of
   one 3x3 convolution (256 -> 256 channels, 64 x 64, batch 8) in bf16 and fp32, channels-last
   and NCHW. Every "of ceiling" / "of peak" is against the ceiling / peak of the precision
   that phase ran in (bf16 against bf16's, AMX where present; fp32 against fp32's).
2. FLOPs per image of each network, counted by torch.utils.flop_counter.FlopCounterMode
   (a multiply-add is 2 FLOPs): forward, and a training step (forward + backward).
3. Contenders at 256 x 256, 3 bands in, 5 classes: inference latency at batch 1, throughput at
   batch 8, training throughput at batch 4 (forward, backward, AdamW step, CE + Dice, exactly
   unetkit's trainer step). unetkit runs as the product runs it: inference through the fused
   engine (`unetkit.nn.fused.inference_engine`, as the predictor's TorchEngine calls it),
   training through `fused.training_network` with fused AdamW (`plan.probe.make_adamw`), or in
   NCHW as written where the probe's `training_layout` picks that, in the precisions unetkit
   picks here (`pick_precision("auto")` for inference, the probe's `training_precision` for
   training); each of those settings is then switched off one at a
   time. Contenders are measured round robin (one unit of each in turn, repeated), after a
   warm-up, and the median is kept; before each round the benchmark waits for idle CPUs.
   Those that need glibc's default allocator run in a second process (the allocator is set
   once per process) whose rounds alternate with this one's.
4. Peak RSS of a training run at batch 4 (a fresh process per contender, 4 steps).
5. How cost grows with work: the predictor at its defaults, with a base-32 network
   on one image of 256 ... 4096 pixels square and on a 10000 x 10000 one-band image
   (a fresh process each: time and peak RSS).
6. The data loader alone (the trainer's, at its defaults) against the model's training rate.

Writes benchmarks/results/speed-<date>.json and the speed section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"
SIZE = 256
BANDS, CLASSES = 3, 5
BATCH_LATENCY, BATCH_INFER, BATCH_TRAIN = 1, 8, 4
MONAI_FEATURES = (64, 128, 256, 512, 1024, 64)
SCALING_BASE = 32  # twice the trainer's default width (base 16); a quarter of the classic network's FLOPs
# unetkit's trainer: AdamW(lr, weight_decay) + clip_grad_norm_(grad_clip), CE + Dice for multiclass
TRAIN_LR, TRAIN_WEIGHT_DECAY, TRAIN_GRAD_CLIP = 1e-3, 1e-4, 12.0


# --- contenders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One way of running one network. `malloc="default"` runs in the second process.
    `precision` is bf16 or fp32 for both uses, or "infer/train" (e.g. "bf16/fp32")."""

    key: str
    label: str
    network: str = "unetkit"  # unetkit | basicunet
    precision: str = "bf16"
    channels_last: bool = True
    # training's own layout where it differs (None: as channels_last): unetkit's trainer measures
    # it (plan.probe.training_layout); NCHW trains the network as written, without the fused path
    train_channels_last: bool | None = None
    # unetkit's fused paths: inference through fused.inference_engine, training through
    # fused.training_network; off: the plain model(x) (under autocast) for both
    fused: bool = True
    optimizer: str = "fused"  # fused: unetkit's make_adamw (fused AdamW) | plain: torch.optim.AdamW's default
    compile: bool = False
    malloc: str = "tuned"  # tuned | default

    def trains_channels_last(self) -> bool:
        return self.channels_last if self.train_channels_last is None else self.train_channels_last

    def precision_for(self, phase: str) -> str:
        infer, _, train = self.precision.partition("/")
        return (train or infer) if phase == "train" else infer


CPU = torch.device("cpu")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def default_precision() -> str:
    """What unetkit picks on this CPU, "inference/training": the predictor's
    `pick_precision("auto", cpu)` and the trainer's probe, `training_precision`, for the classic
    network (3 -> 5 classes) at this benchmark's training batch and size."""
    return f"{inference_precision()}/{training_precision_here()[0]}"


def inference_precision() -> str:
    from unetkit.model.device import pick_precision

    return pick_precision("auto", CPU)


def training_precision_here() -> tuple[str, str]:
    """(precision, reason) of unetkit's training probe for the classic network, batch 4, 256 x 256."""
    from unetkit.nn import UNetOptions
    from unetkit.plan.probe import training_precision

    return training_precision(UNetOptions(in_channels=BANDS, num_classes=CLASSES), SIZE, BATCH_TRAIN, CPU)


def training_layout_here(precision: str) -> tuple[bool, str]:
    """(channels_last, reason) of unetkit's layout probe for the classic network, batch 4, 256 x 256."""
    from unetkit.nn import UNetOptions
    from unetkit.plan.probe import training_layout

    return training_layout(UNetOptions(in_channels=BANDS, num_classes=CLASSES), SIZE, BATCH_TRAIN, precision, CPU)


def _show(precision: str) -> str:
    infer, _, train = precision.partition("/")
    return infer if not train or train == infer else f"inference {infer}, training {train}"


def _flip(precision: str) -> str:
    """The other precision in each use: "bf16/fp32" -> "fp32/bf16"."""
    other = {"bf16": "fp32", "fp32": "bf16"}
    infer, _, train = precision.partition("/")
    flipped = [other.get(p, p) for p in (infer, train or infer)]
    return flipped[0] if flipped[0] == flipped[1] else "/".join(flipped)


def contenders() -> list[Spec]:
    """unetkit as it runs by default (its precisions and its training layout are the measured
    choices: bf16 only where it pays, per use; NCHW training where it pays), the same in the
    other precision, and every setting switched off one at a time from there; the plain
    network; BasicUNet plain and with the generic recipe (the peers keep torch's default AdamW)."""
    auto = default_precision()
    shown = _show(auto)
    layout = training_layout_here(auto.partition("/")[2] or auto)[0]
    specs = [
        Spec("unetkit", f"unetkit, defaults ({shown}{'' if layout else '; training NCHW, as its probe chose'})",
             precision=auto, train_channels_last=layout),
        Spec("unetkit-other", f"unetkit {_show(_flip(auto))}, all else default", precision=_flip(auto),
             train_channels_last=layout),
        Spec("unetkit-unfused", f"unetkit ({shown}), fused inference engine and training network off",
             precision=auto, fused=False, train_channels_last=layout),
        Spec("unetkit-adamw", f"unetkit ({shown}), fused AdamW off (torch's default AdamW)", precision=auto,
             optimizer="plain", train_channels_last=layout),
        Spec("unetkit-nchw", f"unetkit ({shown}), channels_last off (and so the fused paths, which need it)",
             precision=auto, channels_last=False, fused=False),
        Spec("unetkit-malloc", f"unetkit ({shown}), allocator fix off", precision=auto, malloc="default",
             train_channels_last=layout),
        Spec("unetkit-plain", "unetkit, every setting off (fp32 eager NCHW, torch's AdamW, default malloc)",
             precision="fp32", channels_last=False, fused=False, optimizer="plain", malloc="default"),
        Spec("monai-plain", "BasicUNet, plain (fp32 eager NCHW, default malloc)", network="basicunet",
             precision="fp32", channels_last=False, fused=False, optimizer="plain", malloc="default"),
        Spec("monai-generic", "BasicUNet, generic recipe: bf16 + channels_last + compile + allocator fix",
             network="basicunet", fused=False, optimizer="plain", compile=True),
        Spec("monai-generic-fp32", "BasicUNet, generic recipe in fp32: channels_last + compile + allocator fix",
             network="basicunet", precision="fp32", fused=False, optimizer="plain", compile=True),
    ]
    return specs


def build_network(spec: Spec, bands: int = BANDS, classes: int = CLASSES) -> torch.nn.Module:
    """The network as written (a plain `model(x)`); the fused paths are switched on by the Runner."""
    torch.manual_seed(0)
    if spec.network == "unetkit":
        from unetkit.nn import UNet

        return UNet(in_channels=bands, num_classes=classes)
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=bands, out_channels=classes, features=MONAI_FEATURES,
                     norm="batch", act="relu")


class Runner:
    """A contender's model, optimizer and loss, and one timed unit of each measurement."""

    def __init__(self, spec: Spec) -> None:
        from unetkit.nn import fused
        from unetkit.plan.probe import make_adamw
        from unetkit.train.losses import SegmentationLoss

        self.spec = spec
        self.model = build_network(spec)
        if spec.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model = self.model  # training's own copy where its layout differs (the same weights)
        if spec.trains_channels_last() != spec.channels_last:
            fmt = torch.channels_last if spec.trains_channels_last() else torch.contiguous_format
            self.train_model = build_network(spec).to(memory_format=fmt)
        # unetkit's fused paths, as the product switches them on: the predictor's TorchEngine
        # runs the fused inference engine (channels-last by construction), the trainer steps
        # fused.training_network(model)
        self.engine = spec.fused and spec.network == "unetkit" and fused.supported(self.model)
        self.engine_missing = False  # inference_engine returned None: that contender ran model(x)
        # dynamic=False: one graph per shape (automatic dynamic shapes trip an inductor stride
        # assertion in replication_pad2d_backward for channels-last BasicUNet, torch 2.13)
        if spec.compile:
            # several models, batch sizes, autocast states and train/eval share BasicUNet.forward's
            # code object: dynamo's default limit of 8 graphs per code object would silently
            # leave later variants eager
            torch._dynamo.config.recompile_limit = 64
            self.net = torch.compile(self.model, dynamic=False)
            self.train_net = self.net
        else:
            self.net = self.model
            self.train_net = (fused.training_network(self.train_model)
                              if spec.fused and spec.network == "unetkit" and spec.trains_channels_last()
                              else self.train_model)
        self.compile_failed: str | None = None
        self.eager_phases: set[str] = set()  # phases where torch.compile failed and the model runs eager
        self.loss = SegmentationLoss("ce+dice", "multiclass")
        if spec.optimizer == "fused":
            self.optimizer = make_adamw(self.train_model.parameters(), TRAIN_LR, TRAIN_WEIGHT_DECAY, CPU)
        else:
            self.optimizer = torch.optim.AdamW(self.train_model.parameters(), lr=TRAIN_LR,
                                               weight_decay=TRAIN_WEIGHT_DECAY)
        generator = torch.Generator().manual_seed(1)
        self.inputs = {
            n: torch.randn(n, BANDS, SIZE, SIZE, generator=generator) for n in (BATCH_LATENCY, BATCH_INFER, BATCH_TRAIN)
        }
        self.target = torch.randint(0, CLASSES, (BATCH_TRAIN, SIZE, SIZE), generator=generator)

    def autocast(self, phase: str) -> contextlib.AbstractContextManager:
        if self.spec.precision_for(phase) == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def infer(self, batch: int, net: torch.nn.Module) -> torch.Tensor:
        """As unetkit's predictor runs a batch (infer/engines.py, TorchEngine): eval, inference
        mode; unetkit's fused engine in the compute dtype where it applies, else the network
        under autocast; float logits."""
        from unetkit.nn import fused

        self.model.eval()
        x = self.inputs[batch]
        with torch.inference_mode():
            if self.spec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.engine and net is self.model:
                engine = fused.inference_engine(self.model, DTYPES[self.spec.precision_for("infer")])
                if engine is not None:
                    return engine(x).float()
                if not self.engine_missing:
                    print(f"  {self.spec.key}: fused.inference_engine returned None; running model(x)",
                          file=sys.stderr, flush=True)
                    self.engine_missing = True
            with self.autocast("infer"):
                return net(x).float()

    def train_step(self, net: torch.nn.Module) -> float:
        """As unetkit's trainer runs a step (train/trainer.py, _train_epoch)."""
        self.train_model.train()
        x = self.inputs[BATCH_TRAIN]
        if self.spec.trains_channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast("train"):
            logits = net(x)
        loss = self.loss(logits, self.target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.train_model.parameters(), TRAIN_GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # as the trainer: gradients freed after the step
        return loss.item()

    def unit(self, phase: str) -> float:
        start = time.perf_counter()
        try:
            self._run(phase)
        except Exception as error:  # torch.compile failing on a peer: measure that phase eager, say so
            if not self.spec.compile or phase in self.eager_phases:
                raise
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            reason = f"{type(error).__name__}: {lines[0][:160] if lines else ''}"
            self.compile_failed = "; ".join(filter(None, [self.compile_failed, f"{phase}: {reason}"]))
            print(f"  {self.spec.key}: torch.compile failed in {phase} ({reason}); that phase runs eager",
                  file=sys.stderr, flush=True)
            self.eager_phases.add(phase)
            start = time.perf_counter()
            self._run(phase)
        return time.perf_counter() - start

    def _run(self, phase: str) -> None:
        if phase == "train":
            self.train_step(self.train_model if phase in self.eager_phases else self.train_net)
        else:
            self.infer(BATCH_LATENCY if phase == "latency" else BATCH_INFER,
                       self.model if phase in self.eager_phases else self.net)


PHASES = {"latency": BATCH_LATENCY, "infer": BATCH_INFER, "train": BATCH_TRAIN}


# --- the second process (glibc's default allocator) --------------------------------------------


def serve() -> int:
    """Answer one JSON command per line on stdin: {"setup": [keys]} or {"run": phase}."""
    runners: dict[str, Runner] = {}
    for line in sys.stdin:
        command = json.loads(line)
        if "setup" in command:
            runners = {spec["key"]: Runner(Spec(**spec)) for spec in command["setup"]}
            reply: dict[str, Any] = {"ok": True, "malloc": _runtime_record()}
        elif "status" in command:
            reply = {key: {"engine_missing": runner.engine_missing, "compile_failed": runner.compile_failed}
                     for key, runner in runners.items()}
        else:
            reply = {key: runner.unit(command["run"]) for key, runner in runners.items()}
        print(json.dumps(reply), flush=True)
    return 0


class Second:
    """The child process that holds the default-allocator contenders."""

    def __init__(self, specs: list[Spec]) -> None:
        env = {**os.environ, "UNETKIT_MALLOC": "default"}
        self.process = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env) if specs else None
        self.record = self._ask({"setup": [asdict(spec) for spec in specs]}) if specs else {}

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process and self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the default-allocator process stopped; run it alone: speed.py --serve")
        return json.loads(line)

    def run(self, phase: str) -> dict[str, float]:
        return self._ask({"run": phase}) if self.process else {}

    def status(self) -> dict[str, dict[str, Any]]:
        return self._ask({"status": True}) if self.process else {}

    def close(self) -> None:
        if self.process:
            assert self.process.stdin
            self.process.stdin.close()
            self.process.wait(timeout=60)


def _runtime_record() -> dict[str, Any]:
    from unetkit import runtime

    return runtime.configure()


# --- the ceiling ----------------------------------------------------------------------------------


_PEAK_DIR: tempfile.TemporaryDirectory | None = None  # made on the first build, not at import
_PEAK_BINARY: Path | None = None


def measure_peak(threads: int, seconds: float = 3.0) -> dict[str, Any]:
    """Build (once) and run peak.c; None values (with the reason) where gcc or AVX512-BF16 is missing."""
    global _PEAK_BINARY, _PEAK_DIR
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return {"fp32_gflops": None, "bf16_gflops": None, "how": "not measured: no C compiler on PATH"}
    flags = _cpu_flags()
    if {"avx512f", "avx512_bf16"} <= flags:
        isa, chains = ["-mavx512f", "-mavx512bf16"], "16 independent zmm chains each"
    elif "avx512f" in flags:  # AVX-512 without bf16: fp32 only (bf16 null)
        isa, chains = ["-mavx512f"], "16 independent zmm chains each, no bf16 instruction"
    elif {"avx2", "fma"} <= flags:  # AVX2: fp32 FMAs on ymm registers, no bf16 instruction
        isa, chains = ["-mavx2", "-mfma"], "14 independent ymm chains each, no bf16 instruction"
    else:
        return {"fp32_gflops": None, "bf16_gflops": None, "how": "not measured: the CPU has neither AVX-512 nor AVX2"}
    build = [gcc, "-O2", *isa, "-fopenmp", str(HERE / "peak.c"), "-o"]
    if _PEAK_BINARY is None:
        _PEAK_DIR = _PEAK_DIR or tempfile.TemporaryDirectory(prefix="unetkit-peak-")
        binary = Path(_PEAK_DIR.name) / "peak"
        made = subprocess.run(build + [str(binary)], capture_output=True, text=True)
        if made.returncode:
            return {"fp32_gflops": None, "bf16_gflops": None, "how": f"not measured: {made.stderr.strip()[:200]}"}
        _PEAK_BINARY = binary
    out = subprocess.run([str(_PEAK_BINARY), str(threads), str(seconds)], capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out)
    result.pop("sink", None)
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result["how"] = (f"benchmarks/peak.c built now with `{' '.join(['gcc'] + build[1:-2])}` ({version}); "
                     f"{threads} OpenMP threads, {chains}; best of 5 alternating runs")
    return result


def _cpu_flags() -> set[str]:
    """The CPU's flags as the project reads them (model/device.py: the ones its caches key on)."""
    from unetkit.model.device import _cpu_flags as flags

    return flags()


def cpu_mhz() -> float | None:
    """The clock /proc/cpuinfo reports ("cpu MHz"), averaged over the CPUs this process may
    run on. On many machines (and VMs) it is the base or TSC clock: turbo can be higher."""
    if not Path("/proc/cpuinfo").exists():
        return None
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    values, processor = [], None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            processor = int(value)
        elif key == "cpu MHz" and (mine is None or processor in mine):
            values.append(float(value))
    return statistics.mean(values) if values else None


AMX_FLOP_PER_CYCLE = 1024  # bf16 per core: one TDPBF16PS (16 x 16 x 32 products, 2 FLOP each) per 16 cycles


def amx_peak(cores: int) -> dict[str, Any]:
    """AMX's theoretical bf16 rate: 1024 FLOP per cycle per core x cores x the clock
    /proc/cpuinfo reports; None (and why) where the CPU has no amx_bf16."""
    if "amx_bf16" not in _cpu_flags():
        return {"amx_bf16_gflops": None, "amx_how": "no AMX on this CPU (no amx_bf16 flag in /proc/cpuinfo)"}
    mhz = cpu_mhz()
    if mhz is None:
        return {"amx_bf16_gflops": None, "amx_how": "AMX present, but /proc/cpuinfo gives no cpu MHz"}
    return {
        "amx_bf16_gflops": AMX_FLOP_PER_CYCLE * cores * mhz * 1e6 / 1e9, "clock_mhz": mhz,
        "amx_how": f"theoretical: {AMX_FLOP_PER_CYCLE} FLOP per cycle per core x {cores} cores (one per torch "
                   f"thread, each with its own AMX unit) x {mhz:.0f} MHz (the 'cpu MHz' of /proc/cpuinfo; the "
                   "turbo clock under load can differ, and so can this peak)",
    }


CEILING_SHAPE = (8, 512, 512, 64)  # batch, in channels, out channels, side of the map
_CEILING_CASES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def measure_ceiling(runs: int = 3) -> dict[str, Any]:
    """The practical ceiling of each precision: the rate of one large oneDNN convolution (3x3,
    512 -> 512 channels, 64 x 64, batch 8, channels-last) in bf16 and in fp32, best of `runs`
    alternating runs after a warm-up (the tensors are made once per process)."""
    n, c_in, c_out, side = CEILING_SHAPE
    if not _CEILING_CASES:
        generator = torch.Generator().manual_seed(2)
        x = torch.randn(n, c_in, side, side, generator=generator).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(c_out, c_in, 3, 3, generator=generator) * 0.02).contiguous(memory_format=torch.channels_last)
        _CEILING_CASES.update({"bf16": (x.bfloat16(), w.bfloat16()), "fp32": (x, w)})
        with torch.inference_mode():
            for a, b in _CEILING_CASES.values():  # warm-up: oneDNN primitive creation, page faults
                torch.nn.functional.conv2d(a, b, padding=1)
    flops = 2 * c_in * c_out * 9 * side * side * n
    best = dict.fromkeys(_CEILING_CASES, float("inf"))
    with torch.inference_mode():
        for _ in range(runs):
            for key, (a, b) in _CEILING_CASES.items():
                start = time.perf_counter()
                torch.nn.functional.conv2d(a, b, padding=1)
                best[key] = min(best[key], time.perf_counter() - start)
    return {
        "bf16_gflops": flops / best["bf16"] / 1e9, "fp32_gflops": flops / best["fp32"] / 1e9,
        "how": f"one 3x3 convolution, {c_in} -> {c_out} channels, {side} x {side}, batch {n}, channels-last, "
               f"torch.nn.functional.conv2d (oneDNN), {flops / 1e9:.1f} GFLOP; best of {runs} alternating runs",
    }


def theoretical(peak: dict[str, Any]) -> dict[str, float | None]:
    """The theoretical peak of each precision: fp32 the FMA peak (peak.c); bf16 AMX's where the
    CPU has it, else the AVX-512 dot-product peak (peak.c)."""
    return {"fp32": peak.get("fp32_gflops"), "bf16": peak.get("amx_bf16_gflops") or peak.get("bf16_gflops")}


def _bf16_peak_name(peak: dict[str, Any]) -> str:
    return "AMX bf16 (theoretical)" if peak.get("amx_bf16_gflops") else "AVX-512 bf16 dot-product (peak.c)"


def wait_for_quiet(seconds: float = 3.0, limit: float = 180.0) -> float:
    """Wait until the machine's CPUs were >= 90 % idle for `seconds` in a row (other people's
    work would otherwise land in some contenders' units and not others'); returns the wait.
    Gives up after `limit` seconds (the round then runs anyway and is marked as not quiet)."""
    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)

    start, quiet = time.monotonic(), 0.0
    idle0, total0 = snapshot()
    while time.monotonic() - start < limit:
        time.sleep(0.5)
        idle1, total1 = snapshot()
        share = (idle1 - idle0) / max(1, total1 - total0)
        idle0, total0 = idle1, total1
        quiet = quiet + 0.5 if share >= 0.9 else 0.0
        if quiet >= seconds:
            return time.monotonic() - start
    return -1.0


def measure_conv(repeats: int) -> list[dict[str, Any]]:
    """One 3x3 convolution (256 -> 256, 64 x 64, batch 8) per precision and layout, round robin."""
    cases = []
    for dtype in (torch.bfloat16, torch.float32):
        for layout in ("channels_last", "nchw"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(8, 256, 64, 64).to(dtype).contiguous(memory_format=fmt)
            w = torch.randn(256, 256, 3, 3).to(dtype).contiguous(memory_format=fmt)
            cases.append((str(dtype).replace("torch.", ""), layout, x, w))
    flops = 2 * 256 * 256 * 9 * 64 * 64 * 8
    times: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    with torch.inference_mode():
        for _, _, x, w in cases:
            torch.nn.functional.conv2d(x, w, padding=1)
        for _ in range(max(repeats, 5)):
            for i, (_, _, x, w) in enumerate(cases):
                start = time.perf_counter()
                torch.nn.functional.conv2d(x, w, padding=1)
                times[i].append(time.perf_counter() - start)
    return [{"dtype": d, "layout": lay, "gflops": flops / statistics.median(times[i]) / 1e9}
            for i, (d, lay, _, _) in enumerate(cases)]


def count_flops(network: str) -> dict[str, float]:
    """FLOPs per 256 x 256 image: forward, and forward + backward of a training step."""
    from torch.utils.flop_counter import FlopCounterMode

    from unetkit.train.losses import SegmentationLoss

    model = build_network(Spec("count", "count", network=network, fused=False)).train()
    x = torch.randn(2, BANDS, SIZE, SIZE)
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops() / 2
    with FlopCounterMode(display=False) as counter:
        SegmentationLoss("ce+dice", "multiclass")(model(x), torch.randint(0, CLASSES, (2, SIZE, SIZE))).backward()
    return {"forward": forward, "train": counter.get_total_flops() / 2}


# --- the contenders, round robin -------------------------------------------------------------------


def measure_contenders(specs: list[Spec], repeats: int, warmup: int, quiet_limit: float = 180.0) -> dict[str, Any]:
    here = [s for s in specs if s.malloc == "tuned"]
    there = [s for s in specs if s.malloc == "default"]
    second = Second([s for s in there])
    runners = {s.key: Runner(s) for s in here}
    times: dict[str, dict[str, list[float]]] = {s.key: {p: [] for p in PHASES} for s in specs}
    first_call: dict[str, dict[str, float]] = {s.key: {} for s in here}
    probes: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    waits: dict[str, list[float]] = {p: [] for p in PHASES}
    threads = torch.get_num_threads()
    try:
        for phase in PHASES:
            for spec in here:  # warm-up (and compilation), not counted
                first_call[spec.key][phase] = runners[spec.key].unit(phase)
                for _ in range(warmup - 1):
                    runners[spec.key].unit(phase)
            for _ in range(warmup):
                second.run(phase)
            for _ in range(repeats):
                waits[phase].append(wait_for_quiet(limit=quiet_limit))
                # the clock drifts with the host's load: track both ceilings at every round
                probe = measure_peak(threads, seconds=0.5)
                conv = measure_ceiling(runs=2)
                probe.update(conv_fp32_gflops=conv["fp32_gflops"], conv_bf16_gflops=conv["bf16_gflops"])
                probes[phase].append(probe)
                for spec in here:
                    times[spec.key][phase].append(runners[spec.key].unit(phase))
                for key, seconds in second.run(phase).items():
                    times[key][phase].append(seconds)
            print(f"  {phase}: done", file=sys.stderr, flush=True)
        there_status = second.status()
    finally:
        second.close()
    failed = {key: runner.compile_failed for key, runner in runners.items() if runner.compile_failed}
    failed.update({key: v["compile_failed"] for key, v in there_status.items() if v.get("compile_failed")})
    missing = {key: runner.engine_missing for key, runner in runners.items()}
    missing.update({key: bool(v.get("engine_missing")) for key, v in there_status.items()})
    peaks = {phase: {key: statistics.median([p[key] for p in rows if p.get(key)]) if any(p.get(key) for p in rows)
                     else None for key in ("fp32_gflops", "bf16_gflops", "conv_fp32_gflops", "conv_bf16_gflops")}
             for phase, rows in probes.items()}
    return {"times": times, "first_call_s": first_call, "second_process": second.record, "compile_failed": failed,
            "engine_missing": missing, "phase_peaks": peaks, "quiet_waits": waits}


def peak_rss(spec: Spec, steps: int = 4) -> float | None:
    """Peak RSS (MiB) of a fresh process that builds the contender and trains `steps` steps."""
    record = rss_record(spec, steps)
    return record["peak_rss_mib"] if record else None


def rss_record(spec: Spec, steps: int = 4) -> dict[str, Any] | None:
    """What `rss_child` reports for a fresh process of this contender (None if it failed)."""
    env = {**os.environ}
    if spec.malloc == "default":
        env["UNETKIT_MALLOC"] = "default"
    else:
        env.pop("UNETKIT_MALLOC", None)
    out = subprocess.run([sys.executable, __file__, "--rss", json.dumps(asdict(spec)), "--steps", str(steps)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        last = [line for line in out.stderr.strip().splitlines() if line.strip()]
        print(f"  peak RSS of {spec.key} failed: {last[-1] if last else out.returncode}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the parent through fork and exec, so a child started by a big parent reports
    the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(spec: str, steps: int) -> int:
    """The peak of training alone: one network, built in training's layout (a Runner whose
    inference layout differs keeps a second copy for inference, which training never has)."""
    runtime = _runtime_record()
    chosen = Spec(**json.loads(spec))
    runner = Runner(replace(chosen, channels_last=chosen.trains_channels_last(), train_channels_last=None))
    before = _rss_now_mib()
    seconds = [runner.unit("train") for _ in range(steps)]
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "rss_before_steps_mib": before, "step_seconds": seconds,
                      "allocator": runtime.get("malloc"), "compile_failed": runner.compile_failed}))
    return 0


# --- cost against image size ----------------------------------------------------------------------


def scale_child(size: int, bands: int, classes: int, repeats: int) -> int:
    """Predict one size x size image with unetkit's Predictor at its defaults; print time and RSS."""
    import numpy as np

    from unetkit.infer import Predictor
    from unetkit.nn import UNet

    _runtime_record()
    torch.manual_seed(0)
    model = UNet(in_channels=bands, num_classes=classes, base_channels=SCALING_BASE).eval()
    meta = {"task": "multiclass", "threshold": 0.5, "train": {},
            "data": {"task": "multiclass", "in_channels": bands, "mean": [127.5] * bands, "std": [64.0] * bands,
                     "classes": [{"id": i, "name": str(i), "color": [0, 0, 0]} for i in range(classes)]}}
    predictor = Predictor(model, meta=meta)
    rng = np.random.default_rng(0)
    shape = (size, size) if bands == 1 else (size, size, bands)
    predictor.predict(rng.integers(0, 256, (64, 64, bands) if bands > 1 else (64, 64), dtype=np.uint8))
    base = peak_rss_mib()
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "size": size, "bands": bands, "classes": classes, "tile": predictor.tile, "overlap": predictor.overlap,
        "tiles": predictor.tile_count(size, size) if hasattr(predictor, "tile_count") else None,
        "precision": predictor.engine.precision, "seconds": statistics.median(times),
        "peak_rss_mib": peak_rss_mib(), "rss_after_warmup_mib": base,
    }))
    return 0


def measure_scaling(sizes: list[int], large: int | None) -> list[dict[str, Any]]:
    rows = []
    jobs = [(s, BANDS, CLASSES, 3 if s <= 1024 else 1) for s in sizes]
    if large:
        jobs.append((large, 1, 2, 1))
    for size, bands, classes, repeats in jobs:
        out = subprocess.run([sys.executable, __file__, "--scale", str(size), "--bands", str(bands),
                              "--classes", str(classes), "--repeats", str(repeats)], capture_output=True, text=True)
        if out.returncode:
            rows.append({"size": size, "bands": bands, "error": out.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  scaling {size}: done", file=sys.stderr, flush=True)
    return rows


# --- the data loader alone ------------------------------------------------------------------------


def measure_loader(data: Path | None, batches: int) -> dict[str, Any]:
    """The trainer's training DataLoader at its defaults, alone, against the trainer's model step
    on the same batches (1 band in, the trainer's defaults for the network, patch and batch)."""
    from torch.utils.data import DataLoader

    from unetkit.data import SegmentationDataset, inspect_dataset
    from unetkit.data.transforms import build_augmentation
    from unetkit.nn import UNet, UNetOptions, fused
    from unetkit.plan.probe import make_adamw, training_precision
    from unetkit.runtime import default_workers
    from unetkit.train.config import DEFAULT_LOSS, TrainConfig
    from unetkit.train.losses import SegmentationLoss

    c = TrainConfig()
    with tempfile.TemporaryDirectory() as folder:
        source = "ISBI 2012"
        if data is None or not data.exists():
            from unetkit.data.synth import write_dataset

            data, source = Path(folder) / "cells", "generated cells (ISBI 2012 absent)"
            write_dataset("cells", data, count=40, size=256, seed=0)
        spec, splits = inspect_dataset(str(data), val_fraction=c.val_fraction, seed=c.seed)
        patch = (c.patch_size, c.patch_size)
        dataset = SegmentationDataset(str(data), splits["train"], spec, patch_size=patch, seed=c.seed,
                                      transform=build_augmentation(patch, level=c.augment,
                                                                   ignore_index=spec.ignore_index))
        workers = default_workers()
        loader = DataLoader(dataset, batch_size=c.batch_size, shuffle=True, num_workers=workers, drop_last=False)
        batches_seen, images, start = 0, 0, time.perf_counter()
        kept = []
        while batches_seen < batches:
            for batch in loader:
                images += batch["image"].shape[0]
                batches_seen += 1
                if len(kept) < 2:
                    kept.append(batch)
                if batches_seen >= batches:
                    break
        loader_ips = images / (time.perf_counter() - start)
        # the model step as the trainer runs it: its network, precision, training path and optimizer
        options = UNetOptions(in_channels=spec.in_channels, num_classes=spec.num_outputs, **c.model_options())
        precision, _ = training_precision(options, c.patch_size, c.batch_size, CPU)
        model = UNet(options).to(memory_format=torch.channels_last).train()
        network = fused.training_network(model)
        loss_fn = SegmentationLoss(DEFAULT_LOSS[spec.task], spec.task, ignore_index=spec.ignore_index)
        optimizer = make_adamw(model.parameters(), c.learning_rate, c.weight_decay, CPU)
        step_times = []
        for i in range(8):
            batch = kept[i % len(kept)]
            start = time.perf_counter()
            x = batch["image"].contiguous(memory_format=torch.channels_last)
            with contextlib.nullcontext() if precision == "fp32" else torch.autocast("cpu", dtype=torch.bfloat16):
                logits = network(x)
            loss = loss_fn(logits, batch["mask"])
            loss.backward()
            if c.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_times.append(time.perf_counter() - start)
        model_ips = kept[0]["image"].shape[0] / statistics.median(step_times[2:])
    return {"data": source, "workers": workers, "batch_size": c.batch_size, "patch_size": c.patch_size,
            "augment": c.augment, "precision": precision, "loader_images_per_s": loader_ips, "model_images_per_s": model_ips,
            "loader_share_of_step": (1 / loader_ips) / (1 / loader_ips + 1 / model_ips) if workers == 0 else None}


# --- the report -----------------------------------------------------------------------------------


def precision_choice() -> dict[str, Any]:
    """What unetkit picks here and the measurements behind it."""
    from unetkit.model import device

    train, reason = training_precision_here()
    return {"picked": f"{inference_precision()}/{train}", "training_reason": reason,
            "bf16_speedup": device.bf16_speedup(use_cache=False), "bf16_pays": device.bf16_pays(),
            "forced": os.environ.get("UNETKIT_CPU_BF16")}


def machine() -> dict[str, Any]:
    from unetkit import runtime
    from unetkit.model import device

    flag_set = _cpu_flags()
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    return {
        "cpu": device._cpu_model() or platform.processor(), "generation": device._cpu_generation(),
        "cores": runtime.cores(),
        "isa": sorted(flag_set & set(device.SPEED_FLAGS)),
        "clock_mhz": cpu_mhz(), "torch": torch.__version__, "onednn": onednn.group(1) if onednn else None,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "glibc": platform.libc_ver()[1], "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                               / 2**30, 1),
    }


def phase_ceilings(result: dict[str, Any], phase: str) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(theoretical peak, practical ceiling) of each precision for one phase, GFLOP/s: the
    medians of the probes taken at that phase's rounds where there are any, else the values
    measured before and after the contenders; AMX's theoretical peak comes from the clock."""
    peak, ceiling = result.get("peak") or {}, result.get("ceiling") or {}
    pp = (result.get("phase_peaks") or {}).get(phase) or {}
    theory = theoretical({**peak, **{k: v for k, v in pp.items() if k in ("fp32_gflops", "bf16_gflops") and v}})
    practical = {"fp32": pp.get("conv_fp32_gflops") or ceiling.get("fp32_gflops"),
                 "bf16": pp.get("conv_bf16_gflops") or ceiling.get("bf16_gflops")}
    return theory, practical


def summarise(specs: list[Spec], measured: dict[str, Any], flops: dict[str, dict[str, float]],
              peak: dict[str, Any], ceiling: dict[str, Any], rss: dict[str, float],
              engine_missing: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """One row per contender. `X_of_ceiling` is the phase's rate over the practical ceiling of
    the precision that phase ran in (the large convolution), `X_of_peak` over its theoretical
    peak (fp32: the FMA peak; bf16: AMX's where present, else the AVX-512 dot-product peak)."""
    context = {"peak": peak, "ceiling": ceiling, "phase_peaks": measured.get("phase_peaks")}
    rows = []
    for spec in specs:
        t = measured["times"][spec.key]
        f = flops[spec.network]
        latency = statistics.median(t["latency"])
        infer_ips = BATCH_INFER / statistics.median(t["infer"])
        train_ips = BATCH_TRAIN / statistics.median(t["train"])
        row = {
            "key": spec.key, "label": spec.label, "spec": asdict(spec),
            "infer_precision": spec.precision_for("infer"), "train_precision": spec.precision_for("train"),
            "latency_ms": latency * 1e3, "infer_images_per_s": infer_ips, "train_images_per_s": train_ips,
            "infer_gflops": infer_ips * f["forward"] / 1e9, "train_gflops": train_ips * f["train"] / 1e9,
            "spread": {p: (max(v) - min(v)) / statistics.median(v) for p, v in t.items()},
            "first_call_s": measured["first_call_s"].get(spec.key),
            "peak_rss_mib": rss.get(spec.key),
            "compile_failed": measured.get("compile_failed", {}).get(spec.key),
            "engine_missing": (engine_missing or {}).get(spec.key, False),
        }
        for phase in ("infer", "train"):
            theory, practical = phase_ceilings(context, phase)
            precision, rate = row[f"{phase}_precision"], row[f"{phase}_gflops"]
            row[f"{phase}_ceiling_gflops"], row[f"{phase}_peak_gflops"] = practical[precision], theory[precision]
            row[f"{phase}_of_ceiling"] = rate / practical[precision] if practical[precision] else None
            row[f"{phase}_of_peak"] = rate / theory[precision] if theory[precision] else None
        rows.append(row)
    return rows


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _row_precision(row: dict[str, Any], phase: str) -> str:
    """The precision a contender's phase ran in (also for results files written before it was a key)."""
    if row.get(f"{phase}_precision"):
        return row[f"{phase}_precision"]
    infer, _, train = str((row.get("spec") or {}).get("precision", "?")).partition("/")
    return (train or infer) if phase == "train" else infer


def markdown(result: dict[str, Any]) -> str:
    m, peak, rows = result["machine"], result["peak"], result["contenders"]
    ceiling = result.get("ceiling") or {}
    theory = theoretical(peak)
    bf16_name = _bf16_peak_name(peak)
    lines = [
        f"Measured {result['date']} with `{result['command']}` "
        f"({result['wall_minutes']:.0f} min; {result['noise']}; load average {result['load_before'][0]:.2f} "
        f"before, {result['load_after'][0]:.2f} after, the benchmark's own work included).",
        "",
        f"Machine: {m['cpu']}{', ' + m['generation'] if m.get('generation') else ''}, {m['cores']} cores ({', '.join(m['isa'])}), {m['memory_gib']} GiB"
        + (f", cpu MHz {m['clock_mhz']:.0f}" if m.get("clock_mhz") else "")
        + f"; torch {m['torch']} (oneDNN {m['onednn']}), {m['torch_threads']} threads, Python {m['python']}, "
        f"glibc {m['glibc']}.",
        "",
        "**Ceiling of each precision.** Theoretical peaks: fp32 FMA "
        f"{_f(peak.get('fp32_gflops'), 0)} GFLOP/s and AVX-512 bf16 dot product {_f(peak.get('bf16_gflops'), 0)} "
        f"GFLOP/s ({peak.get('how')}; measured before and after the contenders (fp32 "
        f"{_f(peak.get('fp32_gflops_before'), 0)} / {_f(peak.get('fp32_gflops_after'), 0)}), the higher kept); "
        + (f"AMX bf16 {_f(peak.get('amx_bf16_gflops'), 0)} GFLOP/s ({peak.get('amx_how')})."
           if peak.get("amx_bf16_gflops") else f"{peak.get('amx_how', 'AMX not looked for')}.")
        + f" Practical ceilings, measured: bf16 {_f(ceiling.get('bf16_gflops'), 0)} GFLOP/s, fp32 "
        f"{_f(ceiling.get('fp32_gflops'), 0)} GFLOP/s ({ceiling.get('how', 'not measured')}; before and after the "
        "contenders, the higher kept). Every 'of ceiling' below is against the practical ceiling of the precision "
        f"that ran, every 'of peak' against its theoretical peak (fp32: the FMA peak; bf16: the {bf16_name} peak).",
        "",
        "| one 3x3 conv, 256->256 ch, 64x64, batch 8 | GFLOP/s | of its precision's ceiling | of its precision's peak |",
        "|---|---:|---:|---:|",
    ]
    for case in result["conv"]:
        precision = "bf16" if case["dtype"] == "bfloat16" else "fp32"
        practical, peak_rate = ceiling.get(f"{precision}_gflops"), theory[precision]
        lines.append(f"| {case['dtype']}, {case['layout']} | {case['gflops']:.0f} | "
                     f"{_f(case['gflops'] / practical if practical else None)} | "
                     f"{_f(case['gflops'] / peak_rate if peak_rate else None)} |")
    pc = result["precision"]
    infer_pick, _, train_pick = pc["picked"].partition("/")
    lines += [
        "",
        f"**Precision.** A bf16 3x3 convolution runs at {pc['bf16_speedup']:.2f}x the fp32 speed here "
        f"(unetkit.model.device.bf16_speedup); bf16_pays() = {pc['bf16_pays']}, so inference "
        f"(pick_precision('auto', cpu)) picks **{infer_pick}**; training (unetkit.plan.probe.training_precision, "
        f"the classic network at batch {BATCH_TRAIN}, {SIZE}^2) picks **{train_pick or infer_pick}**"
        + (f" ({pc['training_reason']})" if pc.get("training_reason") else "")
        + (f"; UNETKIT_CPU_BF16={pc['forced']} forced both" if pc.get("forced") in ("0", "1") else "") + ".",
    ]
    fl = result["flops"]
    lines += [
        "",
        f"FLOPs per 256x256 image (FlopCounterMode, multiply-add = 2): unetkit UNet(3 -> 5, 64..1024) "
        f"{fl['unetkit']['forward'] / 1e9:.1f} G forward, {fl['unetkit']['train'] / 1e9:.1f} G per training step; "
        f"BasicUNet{MONAI_FEATURES} {fl['basicunet']['forward'] / 1e9:.1f} G / {fl['basicunet']['train'] / 1e9:.1f} G.",
        "",
        "'of ceiling' / 'of peak': the phase's rate over the practical ceiling (the large convolution) / the "
        "theoretical peak of the precision that phase ran in (its column).",
        "",
        "| contender | inference precision | latency b1 (ms) | inference b8 (img/s) | GFLOP/s | of ceiling | of peak "
        "| training precision | training b4 (img/s) | GFLOP/s | of ceiling | of peak | peak RSS train b4 (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        infer_p, train_p = _row_precision(r, "infer"), _row_precision(r, "train")
        lines.append(
            f"| {r['label']} | {infer_p} | {r['latency_ms']:.0f} | {r['infer_images_per_s']:.2f} | "
            f"{r['infer_gflops']:.0f} | {_f(r.get('infer_of_ceiling'))} | {_f(r.get('infer_of_peak'))} | {train_p} | "
            f"{r['train_images_per_s']:.2f} | {r['train_gflops']:.0f} | {_f(r.get('train_of_ceiling'))} | "
            f"{_f(r.get('train_of_peak'))} | {_f(r['peak_rss_mib'], 0)} |")
    base = {r["key"]: r for r in rows}
    ref_key = "unetkit-best" if "unetkit-best" in base else "unetkit"  # unetkit-best: results files before 2026-12
    ablations = ("unetkit-other", "unetkit-unfused", "unetkit-adamw", "unetkit-nchw", "unetkit-malloc", "unetkit-plain")
    if ref_key in base and any(key in base for key in ablations):
        d = base[ref_key]
        lines += ["", f"What each setting buys, from `{d['label']}` (its rate / the rate with that setting off; "
                      "> 1 means the setting pays):", ""]
        lines += ["| setting | inference b8 | latency b1 | training b4 |", "|---|---:|---:|---:|"]
        for key, name in (("unetkit-other", "its precision (vs the other one)"),
                          ("unetkit-unfused", "fused inference engine + training network"),
                          ("unetkit-adamw", "fused AdamW (training only)"),
                          ("unetkit-nchw", "channels_last (+ the fused paths)"), ("unetkit-malloc", "allocator fix"),
                          ("unetkit-plain", "all of them")):
            if key in base:
                o = base[key]
                lines.append(f"| {name} | {d['infer_images_per_s'] / o['infer_images_per_s']:.2f}x | "
                             f"{o['latency_ms'] / d['latency_ms']:.2f}x | "
                             f"{d['train_images_per_s'] / o['train_images_per_s']:.2f}x |")
    if ref_key in base:
        d = base[ref_key]
        for key in ("monai-generic", "monai-generic-fp32"):
            if key not in base:
                continue
            g = base[key]
            lines += ["", f"{d['label']} / {g['label']}: inference "
                          f"{d['infer_images_per_s'] / g['infer_images_per_s']:.2f}x, training "
                          f"{d['train_images_per_s'] / g['train_images_per_s']:.2f}x (images/s; BasicUNet does "
                          f"{fl['basicunet']['forward'] / fl['unetkit']['forward']:.3f}x the FLOPs per image). "
                          "Its compilation (first calls, not in the rates): "
                          + ", ".join(f"{p} {s:.0f} s" for p, s in (g["first_call_s"] or {}).items()) + "."]
    for r in rows:
        if r.get("compile_failed"):
            lines += ["", f"{r['label']}: torch.compile failed ({r['compile_failed']}); that phase ran eager."]
        if r.get("engine_missing"):
            lines += ["", f"{r['label']}: unetkit.nn.fused.inference_engine did not apply; its inference ran "
                          "model(x) under autocast."]
    pp = result.get("phase_peaks") or {}
    waits = result.get("quiet_waits") or {}
    unquiet = sum(1 for w in waits.values() for x in w if x < 0)
    probes = []
    for ph in pp:
        th, pr = phase_ceilings(result, ph)
        probes.append(f"{ph}: ceiling bf16 {_f(pr['bf16'], 0)} / fp32 {_f(pr['fp32'], 0)}, peak bf16 "
                      f"{_f(th['bf16'], 0)} / fp32 {_f(th['fp32'], 0)}")
    lines += ["", f"Medians of {result['repeats']} round-robin repeats after {result['warmup']} warm-up units each; "
              "before each round the benchmark waits until the CPUs have been idle for 3 s (other people's work "
              f"would land in some contenders' units and not others'; {unquiet} round(s) ran without that). "
              "The clock drifts with the host's load, so 'of ceiling' and 'of peak' are against the medians of "
              "short probes taken at each round of that phase (the large convolution, best of 2, and peak.c; AMX's "
              "peak is from the clock and does not drift here), in GFLOP/s: " + "; ".join(probes)
              + ". Spreads are in the JSON file."]
    if result.get("scaling"):
        s0 = result["scaling"][0]
        sl = result.get("scaling_load")
        lines += ["", f"**Cost against image size**: unetkit's Predictor at its defaults (tile {s0.get('tile')}, "
                      f"overlap {s0.get('overlap')}, {s0.get('precision')}) with a U-Net of depth 4 "
                      f"and base {SCALING_BASE} (twice the trainer's default width; {BANDS} bands -> {CLASSES} classes; the 10000 x 10000 "
                      "row 1 band -> 2 classes), a fresh process per image; peak RSS is the process's VmHWM"
                  + (f" (measured apart, load average {sl[0]:.2f} -> {sl[1]:.2f})" if sl else "") + ".", "",
                  "| image | tiles | seconds | ms per 256x256 of image | peak RSS (MiB) |", "|---|---:|---:|---:|---:|"]
        for s in result["scaling"]:
            if "error" in s:
                lines.append(f"| {s['size']}x{s['size']} | | failed: {s['error']} | | |")
                continue
            per = s["seconds"] / (s["size"] ** 2 / SIZE**2) * 1e3
            lines.append(f"| {s['size']}x{s['size']}, {s['bands']} band(s) | {s['tiles']} | {s['seconds']:.1f} | "
                         f"{per:.0f} | {s['peak_rss_mib']:.0f} |")
    if result.get("loader"):
        ld = result["loader"]
        share = ld["loader_share_of_step"]
        lines += ["", f"**Data loader alone** ({ld['data']}, trainer defaults: patch {ld['patch_size']}, batch "
                      f"{ld['batch_size']}, augment {ld['augment']}, {ld['workers']} workers): "
                      f"{ld['loader_images_per_s']:.0f} images/s; the model trains at {ld['model_images_per_s']:.0f} "
                      "images/s on the same batches"
                  + (f" (as the trainer steps: {ld['precision']}, fused training network, fused AdamW)"
                     if ld.get("precision") else "")
                  + (f", so loading takes {share:.0%} of a step (no workers: it runs in turn with the model)."
                     if share is not None else ".")]
    return "\n".join(lines)


def update_markdown(section: str, body: str) -> None:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = MARKDOWN.read_text() if MARKDOWN.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    MARKDOWN.write_text(f"{head}{start}\n{body}\n{end}{tail}")


def only_scaling(args: argparse.Namespace) -> int:
    latest = max(RESULTS.glob("speed-*.json"), key=lambda path: path.stat().st_mtime)
    result = json.loads(latest.read_text())
    load_before = os.getloadavg()
    sizes = args.sizes or [256, 512, 1024, 2048] + ([] if args.quick else [4096])
    result["scaling"] = measure_scaling(sizes, None if args.quick else (args.large or None))
    result["scaling_load"] = [load_before[0], os.getloadavg()[0]]
    latest.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if not args.no_markdown:
        update_markdown("speed", text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats; no 4096 or 10000 pixel images")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="contender keys to run (default: all)")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--only-scaling", action="store_true",
                        help="measure the image-size rows only, into the latest results file")
    parser.add_argument("--sizes", type=int, nargs="*", help="image sides for the scaling rows")
    parser.add_argument("--large", type=int, default=10000, help="side of the one-band tiled image (0: skip)")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--no-loader", action="store_true")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "isbi2012")
    parser.add_argument("--no-markdown", action="store_true", help="write the JSON only")
    parser.add_argument("--quiet-limit", type=float, default=180.0,
                        help="seconds to wait for idle CPUs before each round; a round that waited in vain runs "
                             "anyway and is counted as noisy (default 180; a smoke test on a busy machine: 5)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bands", type=int, default=BANDS, help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, default=CLASSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _runtime_record()
        return serve()
    if args.rss:
        return rss_child(args.rss, args.steps)
    if args.scale:
        return scale_child(args.scale, args.bands, args.classes, args.repeats or 1)

    runtime = _runtime_record()
    if args.only_scaling:
        return only_scaling(args)
    started, load_before = time.time(), os.getloadavg()
    repeats = args.repeats or (3 if args.quick else 7)
    specs = [s for s in contenders() if not args.only or s.key in args.only]
    print("machine and ceilings ...", file=sys.stderr, flush=True)
    info = machine()
    threads = torch.get_num_threads()
    peak = {**measure_peak(threads), **amx_peak(threads)}
    ceiling = measure_ceiling(runs=max(3, min(repeats, 5)))
    conv = measure_conv(repeats)
    flops = {net: count_flops(net) for net in ("unetkit", "basicunet")}
    choice = precision_choice()
    print("contenders ...", file=sys.stderr, flush=True)
    measured = measure_contenders(specs, repeats, args.warmup, quiet_limit=args.quiet_limit)
    for before, after in ((peak, measure_peak(threads)), (ceiling, measure_ceiling(runs=max(3, min(repeats, 5))))):
        for key in ("fp32_gflops", "bf16_gflops"):  # the clock drifts: keep the higher of the two
            before[f"{key}_before"], before[f"{key}_after"] = before.get(key), after.get(key)
            if after.get(key) and (before.get(key) is None or after[key] > before[key]):
                before[key] = after[key]
    rss = {} if args.no_rss else {s.key: peak_rss(s) for s in specs}
    sizes = args.sizes or [256, 512, 1024, 2048] + ([] if args.quick else [4096])
    scaling = [] if args.no_scaling else measure_scaling(sizes, None if args.quick else (args.large or None))
    loader = None if args.no_loader else measure_loader(args.data, 12)
    load_after = os.getloadavg()
    unquiet = sum(1 for waits in measured["quiet_waits"].values() for wait in waits if wait < 0)
    noise = ("every round started on idle CPUs" if unquiet == 0 else
             f"NOISY: {unquiet} round(s) started while other work shared the {info['cores']} cores")
    result = {
        "date": dt.date.today().isoformat(),
        "command": ".venv/bin/python benchmarks/speed.py" + "".join(f" {a}" for a in sys.argv[1:])
        + ("  (make bench)" if len(sys.argv) == 1 else ""),
        "machine": info, "runtime": runtime, "peak": peak, "ceiling": ceiling, "theoretical": theoretical(peak),
        "bf16_peak_kind": _bf16_peak_name(peak), "precision": choice, "conv": conv, "flops": flops,
        "repeats": repeats, "warmup": args.warmup, "load_before": load_before, "load_after": load_after,
        "noise": noise,
        "contenders": summarise(specs, measured, flops, peak, ceiling, rss, measured["engine_missing"]),
        "raw_times": measured["times"],
        "phase_peaks": measured["phase_peaks"], "quiet_waits": measured["quiet_waits"],
        "second_process": measured["second_process"], "scaling": scaling, "loader": loader,
        "wall_minutes": (time.time() - started) / 60,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"speed-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if not args.no_markdown:
        update_markdown("speed", text)
    print(f"wrote {out}" + ("" if args.no_markdown else f" and {MARKDOWN}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
