"""`unetkit predict` on files and folders: outputs, palettes, GeoTIFFs, refusals, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image, write_image
from unetkit.errors import UnetkitError
from unetkit.infer import Predictor
from unetkit.infer.files import plan
from unetkit.infer.run import predict_files
from unetkit.model.store import save_model


def write_images(folder: Path, smooth_image, names: dict[str, tuple[int, int]]) -> list[Path]:
    paths = []
    for seed, (name, (height, width)) in enumerate(names.items()):
        paths.append(folder / name)
        write_image(paths[-1], smooth_image(height, width, seed=seed))
    return paths


def test_masks_are_palette_pngs_of_class_ids_that_round_trip(tmp_path, model_folder, smooth_image):
    write_images(tmp_path / "in", smooth_image, {"a.png": (40, 50), "b.tif": (90, 70)})
    assert main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"), "--precision", "fp32"]) == 0
    predictor = Predictor(model_folder, precision="fp32")
    for name in ("a", "b"):
        picture = Image.open(tmp_path / "out" / f"{name}.png")
        assert picture.mode == "P"
        palette = np.array(picture.getpalette()[:768]).reshape(256, 3)
        assert palette[3].tolist() == [128, 0, 0] and palette[7].tolist() == [0, 128, 0]  # VOC colours
        source = next((tmp_path / "in").glob(f"{name}.*"))
        assert np.array_equal(np.array(picture), predictor.predict(read_image(source)))
        assert set(np.unique(np.array(picture))) <= {0, 3, 7}


def test_probabilities_and_overlay_are_written_on_request(tmp_path, model_folder, smooth_image):
    write_images(tmp_path / "in", smooth_image, {"a.png": (40, 50)})
    common = ["predict", "--model", str(model_folder), "--input", str(tmp_path / "in" / "a.png"), "--overlay"]
    assert main([*common, "--out", str(tmp_path / "npy"), "--probabilities", "npy"]) == 0
    assert main([*common, "--out", str(tmp_path / "tif"), "--probabilities"]) == 0
    probs = np.load(tmp_path / "npy" / "a_prob.npy")
    assert probs.dtype == np.float16 and probs.shape == (3, 40, 50)
    assert np.allclose(probs.astype(np.float32).sum(0), 1.0, atol=3e-3)
    as_tiff = tifffile.imread(tmp_path / "tif" / "a_prob.tif")
    assert as_tiff.dtype == np.float16 and as_tiff.shape == (40, 50, 3)
    assert np.array_equal(as_tiff, probs.transpose(1, 2, 0))  # the same numbers in both formats
    overlay = np.array(Image.open(tmp_path / "npy" / "a_overlay.png"))
    assert overlay.shape == (40, 50, 3) and overlay.dtype == np.uint8


def test_class_ids_above_255_go_to_a_tiff(tmp_path, make_model, make_meta, constant_logits, smooth_image):
    model = constant_logits(make_model(), [0.0, 0.0, 4.0])
    folder = save_model(tmp_path / "model", model, make_meta(class_ids=[0, 1, 300]))
    write_images(tmp_path / "in", smooth_image, {"a.png": (20, 30)})
    assert main(["predict", "--model", str(folder), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    mask = tifffile.imread(tmp_path / "out" / "a.tif")
    assert mask.dtype == np.uint16 and (mask == 300).all()
    assert not (tmp_path / "out" / "a.png").exists()


def test_multilabel_masks_are_tiff_pages_one_per_label(tmp_path, make_model, make_meta, constant_logits,
                                                       smooth_image):
    model = constant_logits(make_model(), [3.0, -3.0, 3.0])
    folder = save_model(tmp_path / "model", model, make_meta(task="multilabel"))
    write_images(tmp_path / "in", smooth_image, {"a.png": (20, 30)})
    assert main(["predict", "--model", str(folder), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--overlay"]) == 0
    pages = tifffile.imread(tmp_path / "out" / "a.tif")
    assert pages.shape == (3, 20, 30) and pages[0].all() and not pages[1].any() and pages[2].all()
    assert (tmp_path / "out" / "a_overlay.png").is_file()


def test_inputs_sharing_a_stem_in_different_folders_do_not_overwrite(tmp_path, model_folder, smooth_image):
    (tmp_path / "in" / "x").mkdir(parents=True)
    (tmp_path / "in" / "y").mkdir()
    write_images(tmp_path / "in", smooth_image, {"x/img.png": (20, 20), "y/img.png": (30, 20), "y/img.tif": (20, 30)})
    jobs = plan([str(tmp_path / "in" / "x" / "img.png"), str(tmp_path / "in" / "y")], tmp_path / "out").jobs
    stems = sorted(str(job.stem.relative_to((tmp_path / "out").resolve())) for job in jobs)
    assert stems == ["x/img", "y/img.png", "y/img.tif"]


def test_predict_refuses_to_write_into_the_input_folder(tmp_path, model_folder, smooth_image):
    write_images(tmp_path, smooth_image, {"a.png": (20, 20)})
    with pytest.raises(UnetkitError, match="never go next to the inputs"):
        plan([str(tmp_path / "a.png")], tmp_path)
    assert main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "a.png"),
                 "--out", str(tmp_path)]) == 2


def test_predict_refuses_to_overwrite_an_input_file(tmp_path, model_folder, smooth_image):
    """OUT = in/pred, and in/pred/a.png is itself an input (passed by pattern): refused, untouched."""
    (tmp_path / "in" / "pred").mkdir(parents=True)
    write_images(tmp_path / "in", smooth_image, {"a.png": (20, 20), "pred/a.png": (20, 20)})
    before = (tmp_path / "in" / "pred" / "a.png").read_bytes()
    assert main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "in" / "**" / "*.png"),
                 "--out", str(tmp_path / "in" / "pred")]) == 2
    assert (tmp_path / "in" / "pred" / "a.png").read_bytes() == before


def test_an_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, model_folder, smooth_image):
    write_images(tmp_path, smooth_image, {"a.png": (20, 20)})
    args = ["predict", "--model", str(model_folder), "--input", str(tmp_path), "--out", str(tmp_path / "pred")]
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0  # the second run does not segment pred/a.png
    assert sorted(p.name for p in (tmp_path / "pred").rglob("*")) == ["a.png"]


def test_an_unreadable_input_is_reported_and_the_others_still_done(tmp_path, model_folder, smooth_image, capsys):
    write_images(tmp_path / "in", smooth_image, {"good.png": (20, 20), "rgb.png": (20, 20)})
    write_image(tmp_path / "in" / "rgb.png", np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "in"),
                 str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")])
    assert code == 1
    assert (tmp_path / "out" / "good.png").is_file()
    assert not (tmp_path / "out" / "broken.png").exists() and not (tmp_path / "out" / "rgb.png").exists()
    err = capsys.readouterr().err
    assert "broken.png" in err and "rgb.png has 3 band(s)" in err and "missing.png" in err
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_many_small_images_are_batched_with_the_same_results(tmp_path, model_folder, smooth_image):
    write_images(tmp_path / "in", smooth_image, {f"{i}.png": (24, 24) for i in range(5)})
    predictor = Predictor(model_folder, precision="fp32", batch_size=2)
    report = predict_files(predictor, [tmp_path / "in"], tmp_path / "out")
    assert len(report.done) == 5 and not report.failed
    for i in range(5):
        mask = np.array(Image.open(tmp_path / "out" / f"{i}.png"))
        assert np.array_equal(mask, predictor.predict(read_image(tmp_path / "in" / f"{i}.png")))


def test_geotiff_inputs_give_georeferenced_masks(tmp_path, model_folder, smooth_image):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    (tmp_path / "in").mkdir()
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)
    with rasterio.open(tmp_path / "in" / "scene.tif", "w", driver="GTiff", height=40, width=30, count=1,
                       dtype="uint8", crs="EPSG:32633", transform=transform) as sink:
        sink.write(smooth_image(40, 30)[None, :, :, 0])
    assert main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out")]) == 0
    with rasterio.open(tmp_path / "out" / "scene.tif") as mask:
        assert mask.crs.to_epsg() == 32633 and mask.transform == transform
        ids = mask.read(1)
    assert np.array_equal(ids, np.array(Image.open(tmp_path / "out" / "scene.png")))


def test_a_raster_with_nodata_gets_nodata_in_its_mask(tmp_path, model_folder, smooth_image):
    """A float GeoTIFF with NaN and a uint16 one with a nodata value (as Sentinel-2 scenes cut to
    an area): the mask holds the nodata value there, and the GeoTIFF mask says so."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    (tmp_path / "in").mkdir()
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)
    image = smooth_image(40, 30)[:, :, 0].astype(np.float32)
    image[:8] = np.nan
    with rasterio.open(tmp_path / "in" / "nan.tif", "w", driver="GTiff", height=40, width=30, count=1,
                       dtype="float32", crs="EPSG:32633", transform=transform) as sink:
        sink.write(image[None])
    coded = smooth_image(40, 30)[:, :, 0].astype(np.uint16) + 1  # 0 only where there is no data
    coded[:, :5] = 0
    with rasterio.open(tmp_path / "in" / "coded.tif", "w", driver="GTiff", height=40, width=30, count=1,
                       dtype="uint16", crs="EPSG:32633", transform=transform, nodata=0) as sink:
        sink.write(coded[None])
    assert main(["predict", "--model", str(model_folder), "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"), "--rescale", "none"]) == 0
    for name, where in (("nan", (slice(0, 8), slice(None))), ("coded", (slice(None), slice(0, 5)))):
        with rasterio.open(tmp_path / "out" / f"{name}.tif") as mask:
            assert mask.nodata == 255
            ids = mask.read(1)
        assert (ids[where] == 255).all()
        rest = np.ones(ids.shape, bool)
        rest[where] = False
        assert set(np.unique(ids[rest])) <= {0, 3, 7}


def test_predict_never_writes_over_existing_ground_truth(tmp_path, model_folder, smooth_image):
    """The issue's command: `predict --input gt/images --out gt/masks` beside 24 ground-truth masks."""
    gt = tmp_path / "gt"
    write_images(gt / "images", smooth_image, {f"{i}.png": (24, 24) for i in range(3)})
    truth = {}
    for i in range(3):
        write_image(gt / "masks" / f"{i}.png", np.full((24, 24), i, np.uint8))
        truth[i] = (gt / "masks" / f"{i}.png").read_bytes()
    args = ["predict", "--model", str(model_folder), "--input", str(gt / "images"), "--out", str(gt / "masks")]
    assert main(args) == 2
    assert main(args + ["--resume"]) == 0  # every image already has a mask there: nothing is written
    assert main(args + ["--overlay", "--resume"]) == 0  # only the missing overlays are added
    assert all((gt / "masks" / f"{i}.png").read_bytes() == truth[i] for i in range(3))
    assert all((gt / "masks" / f"{i}_overlay.png").is_file() for i in range(3))
    assert main(args + ["--overwrite"]) == 0
    assert (gt / "masks" / "0.png").read_bytes() != truth[0]


def test_resume_does_the_images_a_killed_run_did_not(tmp_path, model_folder, smooth_image, capsys):
    write_images(tmp_path / "in", smooth_image, {"a.png": (20, 20), "b.png": (20, 20)})
    args = ["predict", "--model", str(model_folder), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    (tmp_path / "out" / "b.png").unlink()  # the kill: b was never written
    (tmp_path / "out" / ".b.png.x1.unetkit-partial.png").write_bytes(b"half")
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "segmented 1 image(s)" in printed and "1 done earlier" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
