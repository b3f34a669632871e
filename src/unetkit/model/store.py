"""Model folders: written so that a kill cannot damage them, read without executing pickled code.

A shareable model is a folder: config.json (the `SavedModel` record) + model.safetensors.
Training adds resume.pt (see `unetkit.train.state`) to last/. A folder is built complete
beside its target and swapped in by two renames (`unetkit.atomic`); if a kill lands between
them, `resolve_folder` finds the previous one set aside.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unetkit.atomic import aside_name, write_folder
from unetkit.errors import UnetkitError
from unetkit.model.record import FORMAT, SavedModel
from unetkit.nn import UNet, UNetError

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EXTRA_FILES = ("resume.pt",)  # also mark a folder as a model folder when a user points at them


def save_model(folder: str | Path, model: torch.nn.Module, record: SavedModel | Mapping[str, Any],
               extra: Callable[[Path], None] | None = None) -> Path:
    """Write a model folder so that `folder` is always whole; `extra(staging)` adds files (resume.pt).
    `record` may also be a config.json-style dict (the network's own options are used)."""
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the UNet
    model = getattr(model, "_orig_mod", model)  # and torch.compile too
    model = getattr(model, "model", model) if not isinstance(model, UNet) else model  # the training wrapper
    if not isinstance(record, SavedModel):
        record = SavedModel.from_json({**record, "model": model.config}, str(folder))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = record.to_json()

    def fill(staging: Path) -> None:
        save_file(state, str(staging / MODEL_FILE), metadata={"format": FORMAT})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if extra is not None:
            extra(staging)

    return write_folder(folder, fill)


def resolve_folder(path: str | Path) -> Path:
    """A model folder from what a user may pass: the folder, its config.json or model file,
    or a run folder (its best/, else last/). Falls back to the folder a killed swap set aside."""
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_FILE, MODEL_FILE, *EXTRA_FILES):
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


def read_record(path: str | Path) -> SavedModel:
    """The record in a model folder's config.json, checked field by field."""
    folder = resolve_folder(path)
    config_path = folder / CONFIG_FILE
    try:
        values: Any = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnetkitError(f"{config_path}: corrupt or truncated JSON; restore it or use RUN_DIR/last.") from None
    except OSError as error:
        raise UnetkitError(f"{config_path}: cannot be read ({error.strerror or error}); check its permissions.") \
            from None
    if not isinstance(values, dict) or values.get("format") != FORMAT or "model" not in values:
        raise UnetkitError(f"{config_path}: not a unetkit model config; pass a folder written by `unetkit train`.")
    return SavedModel.from_json(values, str(folder))


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, SavedModel]:
    """Load a model folder: (the U-Net in eval mode, its record)."""
    record = read_record(path)
    folder = Path(record.source)
    try:
        model = UNet(record.options)
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
        raise UnetkitError(f"{weights}: weights do not fit the model in {CONFIG_FILE}; the folder is mixed up.") \
            from None
    model.to(device).eval()
    return model, record


__all__ = ["CONFIG_FILE", "MODEL_FILE", "load", "read_record", "resolve_folder", "save_model"]
