"""The saved model: one typed record (`SavedModel`), its folder (load, save, atomic), and where
and in which precision it runs (device). Names load on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unetkit.model.record import InputRange, SavedModel
    from unetkit.model.store import load, read_record, resolve_folder, save_model

_LAZY = {"InputRange": "unetkit.model.record", "SavedModel": "unetkit.model.record",
         "load": "unetkit.model.store", "read_record": "unetkit.model.store",
         "resolve_folder": "unetkit.model.store", "save_model": "unetkit.model.store"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetkit.model' has no attribute {name!r}")


__all__ = ["InputRange", "SavedModel", "load", "read_record", "resolve_folder", "save_model"]
