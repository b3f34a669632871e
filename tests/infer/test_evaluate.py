"""Evaluation scores exactly what prediction writes, tile by tile, on images larger than a tile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.data.io import write_image, write_mask
from unetkit.data.spec import DataSpec, read_mask
from unetkit.infer import Predictor
from unetkit.infer.evaluate import evaluate
from unetkit.infer.metrics import ConfusionCounter, scores
from unetkit.infer.run import predict_files
from unetkit.model.store import save_model


@pytest.fixture
def large_set(tmp_path, smooth_image) -> Path:
    """Three images of 150 x 190 (a 32-pixel-patch model tiles them in 64-pixel tiles), ids 0, 3, 7."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        image = smooth_image(150, 190, seed=i)[:, :, 0]
        write_image(root / "images" / f"im{i}.png", image)
        mask = np.where(image > 140, 7, np.where(image < 110, 3, 0)).astype(np.uint8)
        mask[rng.integers(0, 150, 40), rng.integers(0, 190, 40)] = 3
        write_mask(root / "masks" / f"im{i}.png", mask)
    (root / "classes.json").write_text(json.dumps({"classes": [{"id": k, "name": f"class{k}", "color": [k * 30] * 3}
                                                               for k in (0, 3, 7)]}))
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("im0\nim1\nim2\n")
    (root / "splits" / "train.txt").write_text("")
    return root


def test_evaluate_gives_exactly_the_dice_of_the_masks_predict_writes(tmp_path, large_set, make_model, make_meta):
    folder = save_model(tmp_path / "model", make_model(), make_meta(class_ids=[0, 3, 7]))
    predictor = Predictor(folder, precision="fp32")
    assert predictor.tile_count(150, 190) > 1  # the tiled path, not one whole-image pass
    summary = evaluate(folder, large_set, out=tmp_path / "eval", precision="fp32")
    report = predict_files(predictor, [large_set / "images"], tmp_path / "predicted")
    assert not report.failed
    spec = DataSpec.from_dict(predictor.record.data.to_dict())
    matrix = np.zeros((3, 3), np.int64)
    for i in range(3):
        written = tmp_path / "predicted" / f"im{i}.png"
        assert written.read_bytes() == (tmp_path / "eval" / "predictions" / f"im{i}.png").read_bytes()
        counter = ConfusionCounter("multiclass", 3, None)
        import torch

        counter.update(torch.from_numpy(read_mask(written, spec))[None],
                       torch.from_numpy(read_mask(large_set / "masks" / f"im{i}.png", spec))[None])
        matrix += counter.matrix().numpy()
    assert summary["confusion"] == matrix.tolist()
    assert summary["headline"] == scores(matrix, ["class0", "class3", "class7"], "multiclass")["headline"]


def test_a_large_image_goes_through_the_network_in_tiles(tmp_path, large_set, make_model, make_meta, monkeypatch):
    from unetkit.infer.engines import TorchEngine

    seen = []
    original = TorchEngine.__call__
    monkeypatch.setattr(TorchEngine, "__call__", lambda self, batch: seen.append(batch.shape[-2:]) or
                        original(self, batch))
    folder = save_model(tmp_path / "model", make_model(), make_meta(class_ids=[0, 3, 7]))
    evaluate(folder, large_set)
    assert seen and max(max(shape) for shape in seen) == 64  # the tile, never the 150 x 190 image


def test_evaluation_never_writes_over_an_earlier_one(tmp_path, large_set, make_model, make_meta, capsys):
    folder = save_model(tmp_path / "model", make_model(), make_meta(class_ids=[0, 3, 7]))
    args = ["evaluate", "--model", str(folder), "--data", str(large_set), "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    before = (tmp_path / "eval" / "summary.json").read_bytes()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "eval" / "summary.json").read_bytes() == before
    assert main(args + ["--overwrite", "--tta", "flips"]) == 0
    assert (tmp_path / "eval" / "confusion.png").is_file()
