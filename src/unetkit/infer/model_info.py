"""What prediction needs to know about a model, read once from its config (or ONNX metadata).

Bands, normalisation, task, threshold, class ids and colours, the training patch size and
the network's geometry all come from the model, so `unetkit predict` repeats nothing. The
same dictionary as config.json is stored in an exported .onnx file, so both engines read it
through `ModelInfo.from_meta`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.errors import UnetkitError

DEFAULT_TILE = 512


@dataclass(frozen=True)
class ModelInfo:
    """The data contract and geometry of a trained model, as prediction uses them."""

    source: str
    task: str
    threshold: float
    in_channels: int
    num_outputs: int
    depth: int
    padding: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    classes: tuple[dict, ...]
    include_alpha: bool = False
    patch_size: int | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any], source: str) -> ModelInfo:
        """From a config.json dictionary (`unetkit.load`'s meta, or an ONNX file's metadata)."""
        model = meta.get("model", {})
        data = meta.get("data") or {}
        num_outputs = int(model.get("num_classes", 1))
        task = meta.get("task") or data.get("task") or _task_for(num_outputs)
        patch = (meta.get("train") or {}).get("patch_size")
        if isinstance(patch, (list, tuple)):
            patch = max(patch)
        mean, std = data.get("mean"), data.get("std")
        return cls(
            source=source,
            task=task,
            threshold=float(meta.get("threshold", 0.5)),
            in_channels=int(model.get("in_channels", data.get("in_channels", 1))),
            num_outputs=num_outputs,
            depth=int(model.get("depth", 4)),
            padding=model.get("padding", "same"),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            classes=tuple(data.get("classes") or ()),
            include_alpha=bool(data.get("include_alpha", False)),
            patch_size=int(patch) if patch else None,
        )

    @classmethod
    def for_bare_model(cls, config: dict[str, Any], source: str = "the model") -> ModelInfo:
        """A UNet without a saved config: images are used as given (no normalisation) and
        the task follows the channel count (1 -> binary, more -> multiclass)."""
        return cls.from_meta({"model": config}, source)

    # --- derived ---------------------------------------------------------------------------

    @property
    def multiple(self) -> int:
        """Tile sides are multiples of this, so the model's pad-to-multiple adds nothing."""
        return 2**self.depth

    def default_tile(self) -> int:
        """Twice the training patch (context like training's, fewer seams), as a multiple of
        2**depth; 512 when the patch size is unknown."""
        wanted = 2 * self.patch_size if self.patch_size else DEFAULT_TILE
        return round_up(wanted, self.multiple)

    def class_ids(self) -> np.ndarray:
        """Mask value per decoded index: the classes' ids (which need not be 0..K-1)."""
        count = 2 if self.task == "binary" else self.num_outputs
        if len(self.classes) == count:
            return np.array([int(c["id"]) for c in self.classes], dtype=np.int64)
        return np.arange(count, dtype=np.int64)

    def colors(self) -> list[tuple[int, int, int]]:
        """One colour per decoded index (per label for multilabel), from the classes or VOC."""
        from unetkit.data.spec import default_colors

        count = len(self.class_ids()) if self.task != "multilabel" else self.num_outputs
        if len(self.classes) == count and all("color" in c for c in self.classes):
            return [tuple(int(v) for v in c["color"]) for c in self.classes]  # type: ignore[misc]
        return [tuple(c) for c in default_colors(count)]  # type: ignore[misc]

    def palette(self) -> list[tuple[int, int, int]] | None:
        """A 256-entry PNG palette with each class's colour at its id; None when ids exceed 255."""
        ids = self.class_ids()
        if self.task == "multilabel" or ids.max(initial=0) > 255:
            return None
        table = [(0, 0, 0)] * 256
        for class_id, color in zip(ids, self.colors()):
            table[int(class_id)] = color
        return table

    def check_bands(self, bands: int, name: str) -> None:
        """Refuse an image whose band count differs from the model's, naming the fix."""
        if bands != self.in_channels:
            hint = (" (RGBA: the alpha band is dropped unless the model was trained with it)"
                    if bands == 4 or self.in_channels == 4 else "")
            raise UnetkitError(
                f"{name} has {bands} band(s) but {self.source} was trained on {self.in_channels}{hint}: "
                f"convert the image to {self.in_channels} band(s) or use a model trained on such images."
            )

    def to_meta(self) -> dict[str, Any]:
        """The parts of config.json an exported file needs to be predicted with alone."""
        return {
            "task": self.task,
            "threshold": self.threshold,
            "model": {"in_channels": self.in_channels, "num_classes": self.num_outputs, "depth": self.depth,
                      "padding": self.padding},
            "data": {"task": self.task, "classes": list(self.classes), "in_channels": self.in_channels,
                     "mean": None if self.mean is None else list(self.mean),
                     "std": None if self.std is None else list(self.std), "include_alpha": self.include_alpha},
            "train": {"patch_size": self.patch_size},
        }


def round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-int(value) // multiple) * multiple)


def _task_for(num_outputs: int) -> str:
    return "binary" if num_outputs == 1 else "multiclass"


__all__ = ["DEFAULT_TILE", "ModelInfo", "round_up"]
