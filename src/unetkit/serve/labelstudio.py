"""The Label Studio ML-backend protocol: pre-annotations as brush masks.

Label Studio sends `POST /predict` with `{"tasks": [...], "label_config": "<View>...",
...}` and reads back `{"results": [{"result": [...], "score": s, "model_version": v}]}`,
one entry per task, in order. Each region is a `brushlabels` result whose `value.rle` is
the mask in Label Studio's run-length code (`serve.rle`). The labeling config says where:
the first `<BrushLabels name=... toName=...>` and the `<Image name=... value="$key">` it
points at (the task's `data[key]` is the image). Classes go to the `<Label value=...>` of
the same name (case and spaces aside); when no name matches, a config with as many labels
as the model has foreground classes takes them in order. The background class is left out
unless a label is named after it.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.serve.rle import encode_mask
from unetkit.serve.uploads import BadRequest

MAX_CONFIG_CHARS = 200_000


class ProtocolError(BadRequest):
    """A request Label Studio (or a script speaking its protocol) got wrong; answered with 400."""


@dataclass(frozen=True)
class BrushTarget:
    """Where brush regions go: the control's name, the image's name, the task key, the labels."""

    from_name: str = "tag"
    to_name: str = "image"
    data_key: str = "image"
    labels: tuple[str, ...] = ()


def parse_label_config(config: str | None) -> BrushTarget | None:
    """The BrushLabels target of a labeling config; None when there is no config at all."""
    if config is None or not str(config).strip():
        return None
    if len(config) > MAX_CONFIG_CHARS:
        raise ProtocolError(f"the labeling config is over {MAX_CONFIG_CHARS:,} characters; send the project's own config")
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as error:
        raise ProtocolError(f"the labeling config is not valid XML ({error}); check it in the project's settings") \
            from None
    elements = list(root.iter())
    images = {e.get("name"): e for e in elements if e.tag.lower() == "image"}
    for element in elements:
        if element.tag.lower() != "brushlabels":
            continue
        to_name = element.get("toName") or element.get("toname") or ""
        image = images.get(to_name)
        if image is None:
            continue
        value = (image.get("value") or "$image").strip()
        labels = tuple(label.get("value") or label.get("alias") or "" for label in element
                       if label.tag.lower() == "label")
        return BrushTarget(element.get("name") or "tag", to_name, value.lstrip("$") or "image",
                           tuple(label for label in labels if label))
    raise ProtocolError("the labeling config has no <BrushLabels> tied to an <Image>: add "
                        "<BrushLabels name=\"tag\" toName=\"image\"> with one <Label value=...> per class")


def class_labels(record: Any, target: BrushTarget) -> list[tuple[int, str]]:
    """(class index, label) pairs: which decoded class becomes which brush label."""
    names = list(record.class_names)
    foreground = list(range(len(names))) if record.task == "multilabel" else list(range(1, len(names)))
    if not target.labels:
        return [(index, names[index]) for index in foreground]
    wanted = {_key(label): label for label in target.labels}
    pairs = [(index, wanted[_key(name)]) for index, name in enumerate(names) if _key(name) in wanted]
    if pairs:
        return pairs
    if len(target.labels) == len(foreground):
        return list(zip(foreground, target.labels))
    raise ProtocolError(f"the labeling config's labels ({', '.join(target.labels)}) match none of the model's "
                        f"classes ({', '.join(names)}); name the <Label> values after the classes")


def _key(name: str) -> str:
    return "".join(name.lower().split()).replace("_", "").replace("-", "")


def task_reference(task: Any, target: BrushTarget, number: int) -> tuple[str, str]:
    """(the task's image reference, a name for the task in messages)."""
    if not isinstance(task, dict):
        raise ProtocolError(f"task {number} is not a JSON object; send tasks as Label Studio does")
    label = f"task {task.get('id', number)}"
    data = task.get("data")
    if not isinstance(data, dict):
        raise ProtocolError(f"{label} has no data object; send tasks with a data field as Label Studio does")
    reference = data.get(target.data_key)
    if reference is None:
        strings = [v for v in data.values() if isinstance(v, str)]
        if len(strings) != 1:
            raise ProtocolError(f"{label} has no data.{target.data_key}; the labeling config's <Image value="
                                f"\"${target.data_key}\"> must name the task's image field")
        reference = strings[0]
    if not isinstance(reference, str):
        raise ProtocolError(f"{label}'s data.{target.data_key} is not text; give the image's address")
    return reference, label


def brush_results(record: Any, mask: np.ndarray, probs: np.ndarray, target: BrushTarget,
                  pairs: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """One `brushlabels` region per class present in the mask."""
    height, width = mask.shape[-2:]
    ids = record.class_ids()
    regions = []
    for index, label in pairs:
        where = (mask[index] == 1) if record.task == "multilabel" else (mask == ids[index])
        if not where.any():
            continue
        regions.append({
            "id": secrets.token_hex(5),
            "from_name": target.from_name,
            "to_name": target.to_name,
            "type": "brushlabels",
            "origin": "prediction",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_mask(where), "brushlabels": [label]},
            "score": _region_score(record, probs, index, where),
        })
    return regions


def _region_score(record: Any, probs: np.ndarray, index: int, where: np.ndarray) -> float | None:
    output = 0 if record.task == "binary" else index
    if output >= probs.shape[0]:
        return None
    values = probs[output][where]
    values = values[np.isfinite(values)]
    return round(float(values.mean()), 4) if values.size else None


__all__ = ["BrushTarget", "ProtocolError", "brush_results", "class_labels", "parse_label_config", "task_reference"]
