"""What runs the network: PyTorch (the model folder) or onnxruntime (an exported .onnx file).

Both take a normalised (N, C, h, w) float32 batch on the CPU and give back (N, K, h', w')
float32 logits on the CPU, so tiling, test-time augmentation and decoding are shared. The
torch engine picks the device and precision as training does; on the CPU, in float32 or
bf16, it runs the U-Net through its fused inference engine (`unetkit.nn.fused`: the same
logits, faster), elsewhere the network as written under autocast. The ONNX engine runs the
graph in float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from unetkit.errors import UnetkitError
from unetkit.model.device import autocast, pick_device, pick_precision
from unetkit.model.record import SavedModel
from unetkit.nn import fused


class Engine(Protocol):
    """A callable from a normalised input batch to logits, both float32 CPU tensors."""

    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """The PyTorch model in eval mode: BatchNorm uses its running statistics, so tiles are
    independent of each other and of the batch they share. `fast=False` runs the network as
    written (for comparisons)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "auto", precision: str = "auto",
                 fast: bool = True) -> None:
        from unetkit import runtime

        runtime.configure()
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.fast = fast and self.device.type == "cpu" and self.precision in ("fp32", "bf16") and fused.supported(model)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            engine = fused.inference_engine(self.model, _DTYPES[self.precision]) if self.fast else None
            if engine is not None:
                return engine(batch).float()
            with autocast(self.device, self.precision):
                logits = self.model(batch.to(self.device, non_blocking=True))
        return logits.float().cpu()


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
META_KEY = "unetkit"  # the ONNX metadata_props key that `unetkit export` writes


class OnnxEngine:
    """An exported graph run by onnxruntime (CUDA when that provider is installed and usable)."""

    name = "onnx"
    precision = "fp32"

    def __init__(self, session: Any, path: str | Path = "the ONNX model") -> None:
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto") -> OnnxEngine:
        try:
            import onnxruntime
        except ImportError:
            raise UnetkitError("--engine onnx needs onnxruntime: pip install 'unetkit[onnx]'.") from None
        path = Path(path)
        if not path.is_file():
            raise UnetkitError(f"{path}: no such ONNX file; export one with `unetkit export --format onnx`.")
        wanted = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            wanted.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: shape-inference notes are not for users
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=wanted)
        except Exception as error:  # onnxruntime raises its own untyped errors for bad files
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise UnetkitError(f"{path}: not a loadable ONNX model ({first}); export it again.") from None
        return cls(session, path)

    def record(self) -> SavedModel:
        """The model record `unetkit export` stored in the file's metadata."""
        text = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if text is None:
            raise UnetkitError(
                f"{self.path}: this ONNX file has no unetkit metadata; export it with `unetkit export --format onnx`."
            )
        try:
            values = json.loads(text)
        except ValueError:
            raise UnetkitError(f"{self.path}: its unetkit metadata is not JSON; export the model again.") from None
        return SavedModel.from_json(values, str(self.path))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # where its inputs and outputs live

    @property
    def on_gpu(self) -> bool:
        return "CUDAExecutionProvider" in self.session.get_providers()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: batch.contiguous().numpy()})
        return torch.from_numpy(logits)


__all__ = ["Engine", "OnnxEngine", "TorchEngine"]
