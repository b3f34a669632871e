"""Export a trained model to ONNX or TorchScript, checked against PyTorch before it is written.

Any input size, inside the graph: the U-Net pads its input to a multiple of 2**depth and
crops the logits back. Its own PadToMultiple/CropBack skip the work when no padding is
needed, a Python branch that an exporter would freeze at the example's size; the exported
copy uses branch-free versions (a pad or crop of zero is a no-op), so batch, height and
width are all dynamic and no runtime wrapper is needed. ONNX goes through `torch.export`
(the dynamo exporter); TorchScript through `torch.jit.trace`, which records the shape
arithmetic too. Only padding='same' models export: a 'valid' model accepts a lattice of
sizes that the exporters cannot express.

Before anything is written, the exported graph runs on random inputs of sizes it was not
traced with (one a multiple of 2**depth, one not) and its logits are compared with the
PyTorch model's in float32; the file is refused when the largest difference reaches the
tolerance (1e-4). The model's config (task, classes, normalisation, threshold, patch size)
is stored in the file (ONNX metadata_props key "unetkit"; a TorchScript extra file
"unetkit.json"), so `unetkit predict --engine onnx` needs only the .onnx file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unetkit.atomic import atomic_write_bytes
from unetkit.errors import UnetkitError
from unetkit.infer.engines import META_KEY
from unetkit.model.record import SavedModel, record_for
from unetkit.model.store import load
from unetkit.nn import UNet
from unetkit.nn.blocks import crop_center, pad_to_multiple

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
TORCHSCRIPT_META = "unetkit.json"


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely it matches PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    checked_shapes: tuple[tuple[int, ...], ...]
    multiple: int

    def to_line(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.checked_shapes)
        return (
            f"wrote {self.path} ({self.format}; dynamic batch, height and width; padding to a multiple of "
            f"{self.multiple} inside the graph): max |{self.format} - torch| = {self.max_abs_diff:.2e} "
            f"on new input sizes {shapes}"
        )


def export(model: UNet | str | Path, out: str | Path, *, format: str = "onnx", meta: dict[str, Any] | None = None,
           tolerance: float = TOLERANCE, overwrite: bool = False) -> ExportReport:
    """Export `model` (a model folder, or a UNet with its `meta`) to `out`; refuses, writing
    nothing, if the exported graph differs from PyTorch by `tolerance` or more, or if `out`
    exists (unless `overwrite`)."""
    if format not in FORMATS:
        raise UnetkitError(f"--format {format!r} is not known: use onnx or torchscript.")
    out = Path(out)
    if out.is_dir():
        raise UnetkitError(f"--out {out} is a folder; name the file to write, e.g. {out / ('model.' + format)}.")
    if out.exists() and not overwrite:
        raise UnetkitError(f"--out {out} already exists, and unetkit never writes over a file: choose another name, "
                           "or pass --overwrite to replace it.")
    if format == "onnx" and out.suffix.lower() != ".onnx":
        raise UnetkitError(f"--out {out}: name the ONNX file *.onnx, so that `unetkit predict` recognises it.")
    unet, info = _model_and_info(model, meta)
    graph = exportable(unet)
    examples = _example_inputs(info)
    if format == "onnx":
        data, run = _to_onnx(graph, examples["trace"], info)
    else:
        data, run = _to_torchscript(graph, examples["trace"], info)
    diff = _max_difference(unet, run, examples["check"])
    if not diff < tolerance:
        raise UnetkitError(
            f"the {format} export differs from PyTorch by {diff:.2e} (>= {tolerance:.0e}) on new input sizes, "
            f"so {out} was not written; report this with the model's config.json."
        )
    atomic_write_bytes(out, data)
    shapes = tuple(tuple(x.shape) for x in examples["check"])
    return ExportReport(out, format, diff, shapes, info.multiple)


def exportable(unet: UNet) -> nn.Module:
    """A copy of `unet` whose pad-to-multiple and crop-back have no size-dependent branch."""
    if unet.padding != "same":
        raise UnetkitError(
            "only padding='same' models export (any input size); a padding='valid' model needs the torch engine."
        )
    graph = copy.deepcopy(unet).float().cpu().eval()
    graph.pad = _AlwaysPad(unet.pad.multiple)
    graph.crop = _AlwaysCrop()
    return graph


class _AlwaysPad(nn.Module):
    """PadToMultiple without the 'nothing to pad' shortcut: the pad amounts stay symbolic."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.multiple, always=True)


class _AlwaysCrop(nn.Module):
    """CropBack without the 'nothing to crop' shortcut."""

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return crop_center(x, height, width, always=True)


# --- the two formats ----------------------------------------------------------------------


def _to_onnx(graph: nn.Module, example: torch.Tensor, info: SavedModel) -> tuple[bytes, Any]:
    try:
        import onnxruntime
        from torch.export import Dim
    except ImportError:
        raise UnetkitError("ONNX export needs the onnx extra: pip install 'unetkit[onnx]'.") from None
    dims = {0: Dim("batch", min=1), 2: Dim("height", min=1), 3: Dim("width", min=1)}
    with _quiet():
        program = torch.onnx.export(
            graph, (example,), None, dynamo=True, input_names=["image"], output_names=["logits"],
            dynamic_shapes={"x": dims}, optimize=True, verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = (
        "unetkit U-Net: image (N, C, H, W) float32, normalised with the metadata's mean/std -> logits "
        f"(N, K, H, W); any H and W (padded to a multiple of {info.multiple} inside the graph)."
    )
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(info.to_json())
    data = proto.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: x.numpy()})[0]

    return data, run


def _to_torchscript(graph: nn.Module, example: torch.Tensor, info: SavedModel) -> tuple[bytes, Any]:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
    buffer = io.BytesIO()
    with _quiet():
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_META: json.dumps(info.to_json())})
        data = buffer.getvalue()
        reloaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return reloaded(x).numpy()

    return data, run


# --- helpers ---------------------------------------------------------------------------------


def _model_and_info(model: UNet | str | Path, meta: Any) -> tuple[UNet, SavedModel]:
    if isinstance(model, UNet):
        return model.eval(), record_for(model, meta)
    return load(model)


def _example_inputs(info: SavedModel) -> dict[str, Any]:
    """A trace input and two check inputs of other sizes and batches (one a multiple of
    2**depth, one not), at least 16 pixels per multiple so that small models see real maps."""
    m, c = max(info.multiple, 16), info.in_channels
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "trace": randn(2, c, 2 * m + 3, 3 * m + 5),
        "check": [randn(1, c, 3 * m + 1, 2 * m + 7), randn(3, c, 4 * m, 2 * m)],
    }


def _max_difference(unet: UNet, run: Any, inputs: list[torch.Tensor]) -> float:
    reference = copy.deepcopy(unet).float().cpu().eval()
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            expected = reference(x).numpy()
        got = run(x)
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@contextlib.contextmanager
def _quiet():
    """Silence exporter chatter (progress lines on stdout, deprecation and tracer warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


__all__ = ["FORMATS", "TOLERANCE", "ExportReport", "export", "exportable"]
