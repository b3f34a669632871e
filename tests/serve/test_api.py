"""The JSON API on a real server: the mask `unetkit predict` writes, areas, limits, the queue."""

from __future__ import annotations

import io
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.io import write_image


def test_the_api_mask_is_byte_for_byte_what_predict_writes(http, served, model_dir, tmp_path, expected_mask, picture):
    image = tmp_path / "cells.png"
    write_image(image, picture(512, 512))
    expected = expected_mask(model_dir, image, tmp_path / "out")[".png"]
    started = time.perf_counter()
    answer = http.post_file("/api/predict", image.read_bytes(), "cells.png")
    wall = time.perf_counter() - started
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["content-type"] == "image/png"
    assert 'filename="cells.png"' in answer.headers["content-disposition"]
    assert answer.body == expected
    # the model is loaded and warm: the answer costs about the segmentation, not a start-up
    _, models = served
    predictor = next(iter(models.values())).predictor
    started = time.perf_counter()
    predictor.predict(picture(512, 512))
    direct = time.perf_counter() - started
    assert wall < 3 * direct + 1.0, (wall, direct)


@pytest.mark.filterwarnings("ignore:.*is uint16 but")
def test_a_raw_body_and_a_sixteen_bit_tiff_work_too(http, model_dir, tmp_path, expected_mask, picture):
    image = tmp_path / "deep.tif"
    write_image(image, picture(96, 80, dtype=np.uint16))
    expected = expected_mask(model_dir, image, tmp_path / "out")[".png"]
    answer = http.post("/api/predict?name=deep.tif", image.read_bytes())
    assert answer.status == 200, answer.body[:300]
    assert answer.body == expected


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_a_geotiff_keeps_its_georeferencing_and_its_nodata(http, model_dir, tmp_path, expected_mask, picture):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    pixels = picture(64, 72)[:, :, 0].astype(np.float32)
    pixels[:5, :7] = -9999
    image = tmp_path / "field.tif"
    profile = {"driver": "GTiff", "width": 72, "height": 64, "count": 1, "dtype": "float32", "nodata": -9999,
               "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 10, 10)}
    with rasterio.open(image, "w", **profile) as sink:
        sink.write(pixels[None])
    outputs = expected_mask(model_dir, image, tmp_path / "out")
    answer = http.post_file("/api/predict", image.read_bytes(), "field.tif")
    assert answer.status == 200 and answer.body == outputs[".png"]
    answer = http.post_file("/api/predict", image.read_bytes(), "field.tif", {"format": "tif"})
    assert answer.status == 200, answer.body[:300]
    with rasterio.MemoryFile(answer.body) as memory, memory.open() as mask:
        assert str(mask.crs) == "EPSG:32633"
        assert mask.transform == profile["transform"]
        values = mask.read(1)
        assert mask.nodata == 255 and (values[:5, :7] == 255).all()
    with rasterio.open(tmp_path / "out" / "field.tif") as written:
        assert np.array_equal(written.read(1), values)
    stream = http.post_file("/api/segment", image.read_bytes(), "field.tif")
    result = json.loads(stream.body.decode().splitlines()[-1])["result"]
    assert result["geo"] and result["nodata_pixels"] == 35
    page = http.get(f"/api/results/{result['id']}/mask.tif")
    assert page.status == 200 and 'filename="field.tif"' in page.headers["content-disposition"]
    with rasterio.MemoryFile(page.body) as memory, memory.open() as mask:
        assert str(mask.crs) == "EPSG:32633" and np.array_equal(mask.read(1), values)


def test_json_gives_each_class_its_pixels_and_share(http, tmp_path, picture):
    image = tmp_path / "a.png"
    write_image(image, picture(60, 50, seed=3))
    answer = http.post_file("/api/predict", image.read_bytes(), "a.png", {"format": "json"})
    assert answer.status == 200
    data = answer.json()
    assert data["width"] == 50 and data["height"] == 60 and data["bands"] == 1
    assert [c["id"] for c in data["classes"]] == [0, 3, 7]
    assert sum(c["pixels"] for c in data["classes"]) == 3000
    assert abs(sum(c["share"] for c in data["classes"]) - 1) < 1e-9
    assert data["model"] == "run/best" and data["seconds"] >= 0


def test_models_lists_each_model_with_its_card(http, limits):
    data = http.get("/api/models").json()
    assert data["default"] == "run/best"
    (card,) = data["models"]
    assert [c["name"] for c in card["classes"]] == ["class0", "class3", "class7"]
    assert card["bands"] == 1 and card["task"] == "multiclass" and card["patch_size"] == 32
    assert card["epoch"] == 3 and card["scores"]["headline"] == 0.5 and card["tile"] == 64
    assert data["limits"]["queue"] == limits["queue"]


def _bomb_png(side: int = 40_000) -> bytes:
    """A valid PNG header that claims side x side pixels, with a tiny body."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("case", ["not an image", "too big", "bomb", "wrong bands", "bad format", "no model",
                                  "no file", "empty"])
def test_a_bad_upload_is_one_sentence_and_the_next_request_succeeds(http, tmp_path, case, picture, sentence, limits):
    good = tmp_path / "good.png"
    write_image(good, picture(40, 40))
    if case == "not an image":
        answer, status = http.post_file("/api/predict", b"hello, this is text", "notes.png"), 415
    elif case == "too big":
        answer, status = http.post("/api/predict", b"\0" * int(limits["upload_mb"] * 1024 * 1024 + 10)), 413
    elif case == "bomb":
        answer, status = http.post_file("/api/predict", _bomb_png(), "bomb.png"), 413
    elif case == "wrong bands":
        rgb = tmp_path / "rgb.png"
        write_image(rgb, picture(40, 40, bands=3))
        answer, status = http.post_file("/api/predict", rgb.read_bytes(), "rgb.png"), 422
    elif case == "bad format":
        answer, status = http.post_file("/api/predict", good.read_bytes(), "good.png", {"format": "gif"}), 400
    elif case == "no model":
        answer, status = http.post_file("/api/predict", good.read_bytes(), "good.png", {"model": "nope"}), 404
    elif case == "no file":
        answer, status = http.post("/api/predict", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
                                   "multipart/form-data; boundary=x"), 400
    else:
        answer, status = http.post_file("/api/predict", b"", "empty.png"), 415
    assert answer.status == status, answer.body[:300]
    text = sentence(answer)
    if case == "bomb":
        assert "40000x40000" in text and "--max-pixels" in text
    if case == "too big":
        assert "--max-upload-mb" in text
    assert http.post_file("/api/predict", good.read_bytes(), "good.png").status == 200


def test_unknown_paths_and_methods_are_sentence(http, sentence):
    assert http.get("/nowhere").status == 404 and sentence(http.get("/nowhere"))
    answer = http.get("/api/predict")
    assert answer.status == 405 and sentence(answer)


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_sixteen_concurrent_requests_are_all_answered_within_bounded_memory(http, tmp_path, picture, sentence, limits):
    image = tmp_path / "busy.png"
    write_image(image, picture(256, 256))
    data = image.read_bytes()
    http.post_file("/api/predict", data, "busy.png")  # allocator pools filled once
    before = _rss_mb()

    def call(_: int):
        return http.post_file("/api/predict", data, "busy.png", timeout=120)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(16)))
    growth = _rss_mb() - before
    statuses = [a.status for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= limits["workers"] + limits["queue"]
    for answer in answers:
        if answer.status == 503:
            assert "busy" in sentence(answer) and answer.headers.get("retry-after") == "1"
    masks = {a.body for a in answers if a.status == 200}
    assert len(masks) == 1  # the same image, the same mask, whatever the interleaving
    assert growth < 200, f"RSS grew {growth:.0f} MB"
    assert http.post_file("/api/predict", data, "busy.png").status == 200


def test_the_page_stream_and_its_downloads(http, model_dir, tmp_path, expected_mask, picture, sentence):
    image = tmp_path / "page.png"
    write_image(image, picture(200, 180, seed=5))
    outputs = expected_mask(model_dir, image, tmp_path / "out")
    answer = http.post_file("/api/segment", image.read_bytes(), "page.png")
    assert answer.status == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in answer.body.decode().splitlines()]
    stages = [e["stage"] for e in events]
    assert stages[0] == "segmenting" and stages[-1] == "done"
    progress = [e for e in events if e["stage"] == "segmenting"]
    assert progress[0]["tiles"] > 1 and progress[-1]["done"] == progress[-1]["total"]
    result = events[-1]["result"]
    assert result["kept"] and result["width"] == 180 and result["height"] == 200
    assert result["preview"]["width"] == 180 and len(result["probabilities"]) == 3
    mask = http.get(f"/api/results/{result['id']}/mask.png")
    assert mask.status == 200 and mask.body == outputs[".png"]
    assert 'filename="page.png"' in mask.headers["content-disposition"]
    overlay = http.get(f"/api/results/{result['id']}/overlay.png")
    from unetkit.data.io import read_image

    (tmp_path / "o.png").write_bytes(overlay.body)
    predicted = expected_overlay(model_dir, image, tmp_path / "out2")
    assert np.array_equal(read_image(tmp_path / "o.png"), predicted)
    prob = http.get(f"/api/results/{result['id']}/probabilities.tif")
    import tifffile

    assert tifffile.imread(io.BytesIO(prob.body)).shape == (200, 180, 3)
    assert http.get(f"/api/results/{result['id']}/overlay.png?alpha=2").status == 400
    gone = http.get("/api/results/nothing/mask.png")
    assert gone.status == 404 and "again" in sentence(gone)


def expected_overlay(model: Path, image: Path, out: Path) -> np.ndarray:
    from unetkit.data.io import read_image
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.run import predict_files

    predict_files(Predictor(model, device="cpu"), [image], out, overlay=True)
    return read_image(out / f"{image.stem}_overlay.png")


def test_a_bad_page_upload_is_a_4xx_not_a_stream(http, sentence):
    answer = http.post_file("/api/segment", b"GIF89a not really", "x.gif")
    assert answer.status == 415 and sentence(answer)
