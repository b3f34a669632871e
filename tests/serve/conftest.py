"""Fixtures for tests/serve: tiny untrained models, images on disk, and a real server.

The server is the app on uvicorn in a background thread, on a free loopback port, with a
short upload limit so the limits are cheap to reach; it stops when the module's tests end.
Requests go through urllib with a timeout, so a hung server fails a test instead of CI.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from unetkit.data.spec import default_colors
from unetkit.model.store import save_model
from unetkit.nn import UNet

TIMEOUT = 60
UPLOAD_MB = 1.0
QUEUE, WORKERS = 3, 1


def make_model_folder(folder: Path, *, class_ids=(0, 3, 7), in_channels: int = 1, task: str = "multiclass",
                      seed: int = 0, names=None, mean: float = 100.0, std: float = 50.0) -> Path:
    """A tiny untrained U-Net (depth 2, 4 base channels) saved as a model folder, patch 32."""
    torch.manual_seed(seed)
    outputs = 1 if task == "binary" else len(class_ids)
    model = UNet(in_channels=in_channels, num_classes=outputs, depth=2, base_channels=4).eval()
    names = names or [f"class{i}" for i in class_ids]
    colors = default_colors(len(class_ids))
    classes = [{"id": i, "name": n, "color": c} for i, n, c in zip(class_ids, names, colors)]
    data = {"task": task, "classes": classes, "ignore_index": None, "in_channels": in_channels,
            "mean": [mean] * in_channels, "std": [std] * in_channels}
    meta = {"task": task, "threshold": 0.5, "data": data, "train": {"patch_size": 32, "epoch": 3},
            "input": {"dtype": "uint8", "low": [0.0] * in_channels, "high": [255.0] * in_channels},
            "metrics": {"headline": 0.5, "mean_iou_fg": 0.4, "pixel_accuracy": 0.9, "images": 3,
                        "per_class": [{"name": n, "dice": 0.5, "iou": 0.4} for n in names]}}
    return save_model(folder, model, meta)


def smooth_image(height: int, width: int, seed: int = 0, bands: int = 1, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((height, width, bands)), (3, 3, 0))
    field = (field - field.mean()) / (field.std() + 1e-9)
    image = np.clip(128 + 60 * field, 0, 255)
    if dtype == np.uint16:
        return (image * 257).astype(np.uint16)
    return image.astype(dtype)


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class Http:
    """Small urllib client: every call bounded by a timeout; 4xx/5xx come back as answers."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None,
                timeout: float = TIMEOUT) -> Answer:
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    def get(self, path: str, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: bytes, content_type: str = "application/octet-stream", **kw) -> Answer:
        return self.request("POST", path, data, {"Content-Type": content_type}, **kw)

    def post_json(self, path: str, value, **kw) -> Answer:
        return self.post(path, json.dumps(value).encode(), "application/json", **kw)

    def post_file(self, path: str, data: bytes, filename: str, fields: dict | None = None, **kw) -> Answer:
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self.post(path, b"".join(parts), f"multipart/form-data; boundary={boundary}", **kw)


def one_sentence(answer: Answer) -> str:
    """The error of a refusal, checked to be one short sentence."""
    text = answer.json()["error"]
    assert "\n" not in text and text.endswith(".") and 10 < len(text) < 400, text
    assert "Traceback" not in text
    return text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("serve-model") / "run" / "best")


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    """The folder clients may name images in (Label Studio local files)."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def served(model_dir, allowed):
    """(server, models): the app with one model on a free loopback port, stopped at the end."""
    from unetkit.serve.app import ServerSettings, create_app
    from unetkit.serve.models import PredictorSettings, load_models
    from unetkit.serve.server import BackgroundServer

    models = load_models([str(model_dir)], PredictorSettings(device="cpu"))
    settings = ServerSettings(max_upload_bytes=int(UPLOAD_MB * 1024 * 1024), workers=WORKERS, queue=QUEUE,
                              allow_folders=(allowed.resolve(),), keep_bytes=64 * 1024 * 1024)
    with BackgroundServer(create_app(models, settings), capacity=WORKERS + QUEUE) as server:
        yield server, models


@pytest.fixture(scope="module")
def http(served) -> Http:
    return Http(served[0].url)


@pytest.fixture(scope="session")
def sentence():
    return one_sentence


@pytest.fixture(scope="session")
def picture():
    return smooth_image


@pytest.fixture(scope="session")
def limits() -> dict:
    return {"upload_mb": UPLOAD_MB, "queue": QUEUE, "workers": WORKERS}


@pytest.fixture(scope="session")
def expected_mask():
    """What `unetkit predict` writes for one image file: {suffix: bytes} of its outputs."""

    def run(model: Path, image: Path, out: Path) -> dict[str, bytes]:
        from unetkit.infer.predictor import Predictor
        from unetkit.infer.run import predict_files

        report = predict_files(Predictor(model, device="cpu"), [image], out)
        assert not report.failed, report.failed
        return {path.suffix: path.read_bytes() for path in report.written}

    return run
