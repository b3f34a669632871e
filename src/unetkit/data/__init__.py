"""Data: read images and masks (io), check a data set (check), serve it to training (dataset).

`unetkit.data.io` imports no torch; the torch-backed names (SegmentationDataset,
inspect_dataset) load on first use, so `unetkit data check` starts quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unetkit.data.io import read_geo_profile, read_image, read_mask_raw, write_image, write_mask
from unetkit.data.spec import DataSpec, read_mask

if TYPE_CHECKING:
    from unetkit.data.check import CheckReport, check_dataset
    from unetkit.data.dataset import SegmentationDataset, inspect_dataset

_LAZY = {
    "SegmentationDataset": "unetkit.data.dataset",
    "inspect_dataset": "unetkit.data.dataset",
    "check_dataset": "unetkit.data.check",
    "CheckReport": "unetkit.data.check",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetkit.data' has no attribute {name!r}")


__all__ = [
    "CheckReport",
    "DataSpec",
    "SegmentationDataset",
    "check_dataset",
    "inspect_dataset",
    "read_geo_profile",
    "read_image",
    "read_mask",
    "read_mask_raw",
    "write_image",
    "write_mask",
]
