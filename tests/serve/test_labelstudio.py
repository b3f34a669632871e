"""The Label Studio ML backend: /health, /setup, /predict answered as Label Studio reads them."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

from unetkit.data.io import write_image
from unetkit.serve.labelstudio import ProtocolError, class_labels, parse_label_config
from unetkit.serve.rle import decode_mask

CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Class3" background="#ff0000"/>
    <Label value="class7" background="#00ff00"/>
  </BrushLabels>
</View>"""


def _mask_of(http, data: bytes) -> np.ndarray:
    answer = http.post_file("/api/predict", data, "x.png")
    assert answer.status == 200
    return np.array(Image.open(io.BytesIO(answer.body)))


def _decoded(result: dict, label: str) -> np.ndarray:
    (region,) = [r for r in result["result"] if r["value"]["brushlabels"] == [label]]
    assert region["type"] == "brushlabels" and region["from_name"] == "tag" and region["to_name"] == "image"
    assert region["value"]["format"] == "rle"
    return decode_mask(region["value"]["rle"], region["original_height"], region["original_width"])


def test_health_and_setup(http):
    assert http.get("/health").json()["status"] == "UP"
    answer = http.post_json("/setup", {"project": "1.1700000000", "schema": CONFIG, "hostname": "http://x",
                                       "access_token": "t"})
    assert answer.status == 200 and answer.json()["model_version"] == "unetkit:run/best@epoch3"
    assert http.get("/models/run/best/health").json()["model"] == "run/best"  # Label Studio's URL picks a model
    assert http.get("/models/other/health").status == 404


def test_predict_answers_brush_masks_that_decode_to_the_mask(http, allowed, picture, tmp_path):
    image = allowed / "sub" / "cells.png"
    write_image(image, picture(70, 90, seed=7))
    data = image.read_bytes()
    expected = _mask_of(http, data)
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    tasks = [{"id": 11, "data": {"image": data_url}},
             {"id": 12, "data": {"image": "/data/local-files/?d=sub/cells.png"}},
             {"id": 13, "data": {"image": "http://localhost:8080/data/local-files/?d=sub%2Fcells.png"}},
             {"id": 14, "data": {"image": str(image)}}]
    answer = http.post_json("/predict", {"tasks": tasks, "label_config": CONFIG, "project": "1.1700000000",
                                         "params": {"login": None, "password": None, "context": None}})
    assert answer.status == 200, answer.body[:300]
    body = answer.json()
    assert len(body["results"]) == 4
    for result in body["results"]:
        assert result["model_version"] == "unetkit:run/best@epoch3" and 0 < result["score"] <= 1
        labels = {r["value"]["brushlabels"][0] for r in result["result"]}
        assert labels <= {"Class3", "class7"}  # config labels, matched to the classes by name
        for label, class_id in (("Class3", 3), ("class7", 7)):
            if label in labels:
                assert np.array_equal(_decoded(result, label), expected == class_id)
            else:
                assert not (expected == class_id).any()
        assert not any(r["value"]["brushlabels"] == ["class0"] for r in result["result"])  # background left out


def test_files_outside_the_allowed_folder_are_refused(http, allowed, tmp_path, picture, sentence):
    outside = tmp_path / "secret.png"
    write_image(outside, picture(20, 20))
    link = allowed / "link.png"
    if not link.exists():
        os.symlink(outside, link)
    for reference, status in [(str(outside), 403), ("../" * 8 + str(outside).lstrip("/"), 403),
                              ("/data/local-files/?d=../" + outside.name, 403), ("link.png", 403),
                              ("file://" + str(outside), 403), ("missing.png", 404),
                              ("https://example.org/x.png", 400), ("data:image/png;base64,@@@", 415)]:
        answer = http.post_json("/predict", {"tasks": [{"id": 5, "data": {"image": reference}}],
                                             "label_config": CONFIG})
        assert answer.status == status, (reference, answer.body[:300])
        text = sentence(answer)
        assert "task 5" in text
        if status == 403:
            assert "--allow-folder" in text
    missing = http.post_json("/predict", {"tasks": [{"id": 5, "data": {"image": str(outside) + ".gone"}}]})
    assert missing.status == 403  # outside: not even whether it exists is told
    good = allowed / "ok.png"
    write_image(good, picture(20, 20))
    answer = http.post_json("/predict", {"tasks": [{"id": 6, "data": {"image": "ok.png"}}], "label_config": CONFIG})
    assert answer.status == 200


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b'{"tasks": 3}', "tasks list"),
    (b'{"tasks": [{"id": 1}], "label_config": "<View>"}', "not valid XML"),
    (b'{"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Image name=\\"i\\" value=\\"$img\\"/></View>"}',
     "BrushLabels"),
])
def test_malformed_requests_are_one_sentence(http, body, fragment, sentence):
    answer = http.post("/predict", body, "application/json")
    assert answer.status == 400 and fragment in sentence(answer)
    assert http.get("/health").status == 200


def test_labels_match_classes_by_name_else_by_order():
    class Record:
        task = "multiclass"
        class_names = ["background", "nucleus", "cell wall"]

    target = parse_label_config(CONFIG.replace("Class3", "Cell_Wall").replace("class7", "Nucleus"))
    assert class_labels(Record, target) == [(1, "Nucleus"), (2, "Cell_Wall")]
    target = parse_label_config(CONFIG.replace("Class3", "A").replace("class7", "B"))
    assert class_labels(Record, target) == [(1, "A"), (2, "B")]
    target = parse_label_config(CONFIG.replace('<Label value="class7" background="#00ff00"/>', ""))
    with pytest.raises(ProtocolError, match="match none"):
        class_labels(Record, target)
