"""Resume state: everything besides the weights that a killed run needs to go on exactly.

The optimizer, scheduler and scaler states, the epoch, the best score so far, and every RNG
(torch, CUDA, NumPy, Python) go into resume.pt beside last/'s weights. It holds only
tensors, numbers, strings, lists and dicts, so it is read with `torch.load(weights_only=True)`
and can never run code. A file that is damaged, foreign or from another run is refused with
one sentence that says the weights in best/ and last/ are untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import UnetkitError

RESUME_FILE = "resume.pt"
KEYS = ("epoch", "best", "best_epoch", "stale", "optimizer", "scheduler", "scaler", "rng_torch", "rng_cuda",
        "rng_numpy", "rng_python")


def capture(epoch: int, best: float | None, best_epoch: int | None, stale: int, optimizer: Any, scheduler: Any,
            scaler: Any, *, step: int | None = None, total_steps: int | None = None,
            budget_spent: float | None = None) -> dict[str, Any]:
    """The state to save with the weights after `epoch` epochs (and `step` steps; with a time
    budget, the steps it now holds and the seconds of it already spent)."""
    return {
        "step": step,
        "total_steps": total_steps,
        "budget_spent": budget_spent,
        "epoch": epoch,
        "best": best,
        "best_epoch": best_epoch,
        "stale": stale,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_numpy": _numpy_state_to_tensor(np.random.get_state()),
        "rng_python": _python_state_to_list(random.getstate()),
    }


def writer(resume: dict[str, Any]) -> Callable[[Path], None]:
    """A function that writes `resume` into a model folder being built (for `save_model`)."""

    def write(folder: Path) -> None:
        torch.save(resume, folder / RESUME_FILE)

    return write


def read(folder: Path) -> dict[str, Any]:
    """resume.pt of `folder`, checked to hold every key; refused in one sentence otherwise."""
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        raise unusable(path, "it is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for truncated, foreign or crafted files
        raise unusable(path, "it is damaged or not a unetkit resume state") from None
    if not isinstance(state, dict):
        raise unusable(path, "it is not a unetkit resume state")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise unusable(path, f"it lacks {', '.join(missing[:3])}")
    return state


def restore(state: dict[str, Any], path: Path, optimizer: Any, scheduler: Any, scaler: Any) -> None:
    """Load `state` into the optimizer, scheduler, scaler and every RNG."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        np.random.set_state(_numpy_state_from_tensor(state["rng_numpy"]))
        random.setstate(_python_state_from_list(state["rng_python"]))
        int(state["epoch"]), int(state["stale"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError):
        raise unusable(path, "it does not fit this run's network and optimizer") from None


def unusable(path: Path, why: str) -> UnetkitError:
    run = path.parent.parent
    return UnetkitError(
        f"{path}: the resume state is unusable ({why}); the weights in {run / 'best'} and {run / 'last'} are "
        f"intact and load as models, but this run cannot continue: train a new run in another --out."
    )


def _numpy_state_to_tensor(state: tuple) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_tensor(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, state["pos"], state["has_gauss"], state["cached"])


def _python_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


__all__ = ["KEYS", "RESUME_FILE", "capture", "read", "restore", "unusable"]
