"""Checkpoints a killed run cannot damage, and that load without executing pickled code.

A shareable model is a folder: config.json (model options, data spec with class names,
colours and normalisation, task, threshold) + model.safetensors. Resume state (optimizer,
scheduler, scaler, epoch, best metric, every RNG state) is resume.pt in the same folder,
read with `torch.load(weights_only=True)`. A folder is written complete beside its target
and swapped in by two renames (`unetkit.atomic`); if a kill lands between them,
`resolve_folder` finds the previous one set aside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unetkit.atomic import aside_name, atomic_write_bytes, atomic_write_text, write_folder  # noqa: F401
from unetkit.errors import UnetkitError
from unetkit.nn import UNet, UNetError

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RESUME_FILE = "resume.pt"
FORMAT = "unetkit-model/1"


def save_model(
    folder: str | Path, model: UNet, meta: dict[str, Any], resume_state: dict[str, Any] | None = None
) -> Path:
    """Write a model folder (and resume.pt when given) so that `folder` is always whole."""
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the UNet
    model = getattr(model, "_orig_mod", model)  # and torch.compile too
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "model": model.config, **meta}

    def fill(staging: Path) -> None:
        save_file(state, str(staging / MODEL_FILE), metadata={"format": FORMAT})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if resume_state is not None:
            torch.save(resume_state, staging / RESUME_FILE)

    return write_folder(folder, fill)


def resolve_folder(path: str | Path) -> Path:
    """A model folder from what a user may pass: the folder, its config.json or model file,
    or a run folder (its best/, else last/). Falls back to `<name>.old` after a killed swap."""
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_FILE, MODEL_FILE, RESUME_FILE):
        path = path.parent
    for candidate in (path, path / "best", path / "last"):
        for folder in (candidate, aside_name(candidate), candidate.with_name(candidate.name + ".old")):
            if (folder / CONFIG_FILE).is_file():
                return folder
    if not path.exists():
        raise UnetkitError(f"{path}: no such model folder; pass RUN_DIR/best or a folder with {CONFIG_FILE}.")
    raise UnetkitError(
        f"{path}: not a unetkit model folder (no {CONFIG_FILE}); pass RUN_DIR/best or RUN_DIR/last."
    )


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = resolve_folder(folder)
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnetkitError(f"{path}: corrupt or truncated JSON; restore it or use RUN_DIR/last.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise UnetkitError(f"{path}: not a unetkit model config; pass a folder written by `unetkit train`.")
    return config


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Load a model folder: returns (model in eval mode, its config.json as a dict)."""
    folder = resolve_folder(path)
    meta = read_config(folder)
    try:
        model = UNet(**meta["model"])
    except (TypeError, UNetError) as error:
        raise UnetkitError(f"{folder / CONFIG_FILE}: model options are invalid ({error}).") from None
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise UnetkitError(f"{weights}: missing; the folder is incomplete, use RUN_DIR/last or retrain.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError):
        raise UnetkitError(f"{weights}: corrupt or truncated weights; use RUN_DIR/last or retrain.") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UnetkitError(f"{weights}: weights do not fit the model in {CONFIG_FILE}; the folder is mixed up.") from None
    model.to(device).eval()
    meta["folder"] = str(folder)
    return model, meta


def load_resume_state(folder: str | Path) -> dict[str, Any]:
    """The optimizer/scheduler/RNG state saved beside the last model, without unpickling code."""
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        raise UnetkitError(f"{path}: missing, so the run cannot be resumed; start it again with --overwrite.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for truncated or foreign files
        raise UnetkitError(f"{path}: corrupt or truncated resume state; start again with --overwrite.") from None
