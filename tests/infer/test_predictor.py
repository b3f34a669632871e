"""The Predictor: whole-image exactness, tiled-vs-whole tolerance, TTA, 'valid' models, decoding.

Stated tolerance (measured on untrained depth-2, base-8 models, whose 44-pixel receptive
field is large for a 64-pixel tile, on normalised smooth images, six seeds): tiled
prediction with overlap 0.5 agrees with the whole-image pass on >= 99% of pixels' arg-max
(measured 99.40-99.80% on 128 x 128 images), with mean |probability difference| <= 0.005
(measured 0.0006-0.0019), every pixel and seam included. Where one tile covers the image the result
is bitwise the whole-image forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unetkit
from unetkit.errors import UnetkitError, UnetkitWarning
from unetkit.infer import Predictor, predict
from unetkit.infer.engines import TorchEngine
from unetkit.infer.predictor import default_batch
from unetkit.infer.tiling import reflect_indices
from unetkit.model.record import SavedModel
from unetkit.nn import probabilities


def whole_image_probs(model, image: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """The reference: one forward pass of the whole (H, W[, 1]) image, normalised by hand, by
    the engine the predictor runs (the fused engine on the CPU; tests/nn/test_fused.py holds
    it against the plain network)."""
    image = image[:, :, 0] if image.ndim == 3 else image
    x = torch.from_numpy(((image.astype(np.float32) - mean) / std)[None, None])
    return probabilities(TorchEngine(model, "cpu", "fp32")(x), "multiclass")[0].numpy()


def test_an_image_within_one_tile_is_exactly_the_whole_image_pass(make_model, make_meta, smooth_image):
    model, meta = make_model(), make_meta()
    image = smooth_image(45, 37)  # not a multiple of 2**depth: the model pads it itself
    got = Predictor(model, meta=meta, tile=64, precision="fp32").predict_probabilities(image)
    expected = whole_image_probs(model, image, 100.0, 50.0)
    assert got.dtype == np.float32 and got.shape == (3, 45, 37)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_prediction_matches_the_whole_image_within_the_stated_tolerance(seed, make_model, make_meta,
                                                                              smooth_image):
    model, meta = make_model(seed=seed), make_meta(mean=128.0, std=50.0)
    image = smooth_image(128, 128, seed=seed)
    predictor = Predictor(model, meta=meta, tile=64, overlap=0.5, precision="fp32")
    assert predictor.tile_count(128, 128) == 9
    tiled = predictor.predict_probabilities(image)
    whole = whole_image_probs(model, image, 128.0, 50.0)
    assert np.allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.99
    assert np.abs(tiled - whole).mean() <= 0.005


def test_gaussian_blending_hides_the_seams_of_tiles_that_just_meet(make_model, make_meta, smooth_image):
    """Overlap 0 (four tiles meeting at row and column 64) vs 0.5 with Gaussian weights:
    measured (six seeds) mean error 16-20x and largest error 10-23x smaller."""
    model, meta = make_model(seed=1), make_meta(mean=128.0, std=50.0)
    image = smooth_image(128, 128, seed=1)
    whole = whole_image_probs(model, image, 128.0, 50.0)
    hard = Predictor(model, meta=meta, tile=64, overlap=0.0, precision="fp32").predict_probabilities(image)
    blended = Predictor(model, meta=meta, tile=64, overlap=0.5, precision="fp32").predict_probabilities(image)
    assert np.abs(blended - whole).mean() * 5 < np.abs(hard - whole).mean()
    assert np.abs(blended - whole).max() * 3 < np.abs(hard - whole).max()


@pytest.mark.parametrize("size", [(160, 160), (150, 131), (97, 203)])
def test_tiles_aligned_to_the_pooling_grid_are_exact_away_from_their_borders(size, make_model):
    """A depth-1 model sees 18 pixels: with 64-pixel tiles every pixel has one tile with full
    context, so only the Gaussian's small weight on border pixels differs from the whole pass.
    Tiles off the 2**depth grid would differ everywhere (pooling sees other pixel pairs)."""
    model = make_model(depth=1)
    image = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    tiled = Predictor(model, tile=64, overlap=0.5, precision="fp32").predict_probabilities(image)
    assert np.abs(tiled - whole_image_probs(model, image)).max() < 0.01


def test_flip_tta_makes_predictions_flip_equivariant(make_model, smooth_image):
    model, image = make_model(), smooth_image(48, 40).astype(np.float32)
    flips = Predictor(model, tta="flips", tile=64, precision="fp32")
    plain = Predictor(model, tta="none", tile=64, precision="fp32")
    flipped = np.ascontiguousarray(image[:, ::-1])
    assert np.allclose(flips.predict_probabilities(flipped), flips.predict_probabilities(image)[:, :, ::-1], atol=1e-5)
    assert not np.allclose(plain.predict_probabilities(flipped), plain.predict_probabilities(image)[:, :, ::-1],
                           atol=1e-3)


def test_full_tta_makes_predictions_rotation_equivariant(make_model, smooth_image):
    predictor = Predictor(make_model(), tta="full", tile=64, precision="fp32")
    image = smooth_image(40, 40).astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(image))
    expected = np.rot90(predictor.predict_probabilities(image), axes=(1, 2))
    assert np.allclose(predictor.predict_probabilities(turned), expected, atol=1e-5)


def test_tta_is_the_average_of_the_flipped_predictions(make_model, smooth_image):
    model, image = make_model(), smooth_image(32, 48).astype(np.float32)
    image = image[:, :, 0]
    views = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    undo = [lambda p: p, lambda p: p[:, :, ::-1], lambda p: p[:, ::-1], lambda p: p[:, ::-1, ::-1]]
    expected = np.mean([u(whole_image_probs(model, np.ascontiguousarray(v))) for v, u in zip(views, undo)], axis=0)
    got = Predictor(model, tta="flips", tile=64, precision="fp32").predict_probabilities(image)
    assert np.allclose(got, expected, atol=1e-6)


def test_valid_padding_model_uses_mirrored_context_and_tiles_seamlessly(make_model):
    """Unpadded convolutions see no zeros, so aligned tiles reproduce the whole (mirror-padded)
    image exactly: the paper's overlap-tile strategy."""
    model = make_model(num_classes=2, padding="valid")
    predictor = Predictor(model, tile=100, overlap=0.5, precision="fp32")
    margin = (predictor.tile - model.output_size(predictor.tile)[0]) // 2
    image = np.random.default_rng(0).standard_normal((100, 100)).astype(np.float32)
    size = model.nearest_valid_sizes(100 + 2 * margin)[1]
    rows = reflect_indices(-margin, size - margin, 100)
    expected = whole_image_probs(model, image[np.ix_(rows, rows)])[:, :100, :100]
    assert predictor.tile_count(100, 100) > 1
    assert np.abs(predictor.predict_probabilities(image) - expected).max() < 1e-5
    assert predictor.predict(np.zeros((5, 7), np.float32)).shape == (5, 7)


def test_binary_threshold_decides_foreground(make_model, make_meta, constant_logits):
    model = constant_logits(make_model(num_classes=1), [0.4])  # sigmoid(0.4) = 0.599
    meta = make_meta(task="binary", class_ids=[0, 1])
    image = np.zeros((20, 24), np.uint8)
    assert (Predictor(model, meta=meta).predict(image) == 1).all()
    assert (Predictor(model, meta=meta, threshold=0.65).predict(image) == 0).all()
    meta["threshold"] = 0.65  # the model's own threshold is the default
    assert (Predictor(model, meta=meta).predict(image) == 0).all()


def test_multilabel_decodes_one_plane_per_label(make_model, make_meta, constant_logits):
    model = constant_logits(make_model(num_classes=3), [5.0, -5.0, 0.4])
    meta = make_meta(task="multilabel", class_ids=[0, 1, 2])
    mask = predict(model, np.zeros((16, 16), np.uint8), meta=meta)
    assert mask.shape == (3, 16, 16) and mask.dtype == np.uint8
    assert mask[0].all() and not mask[1].any() and mask[2].all()
    strict = predict(model, np.zeros((16, 16), np.uint8), meta=meta, threshold=0.7)
    assert strict[0].all() and not strict[1].any() and not strict[2].any()


def test_multiclass_masks_hold_the_class_ids(make_model, make_meta, constant_logits):
    model = constant_logits(make_model(), [0.0, 1.0, 3.0])
    mask = predict(model, np.zeros((16, 16), np.uint8), meta=make_meta(class_ids=[0, 3, 300]))
    assert mask.dtype == np.uint16 and (mask == 300).all()


def test_band_count_is_checked_against_the_model(model_folder):
    predictor = Predictor(model_folder)
    with pytest.raises(UnetkitError, match=r"has 3 band\(s\) but .* trained on 1"):
        predictor.predict(np.zeros((16, 16, 3), np.uint8), "rgb.png")


def test_channels_first_arrays_get_a_hint(make_model, make_meta):
    predictor = Predictor(make_model(in_channels=3), meta=make_meta(in_channels=3))
    with pytest.raises(UnetkitError, match="looks like \\(C, H, W\\)"):
        predictor.predict(np.zeros((3, 32, 32), np.uint8))


def test_small_images_of_one_size_share_a_batch_and_match_single_calls(model_folder, smooth_image):
    predictor = Predictor(model_folder, precision="fp32", batch_size=4)
    images = [smooth_image(40, 30, seed=s) for s in range(3)] + [smooth_image(70, 60, seed=3)]
    together = predictor.predict_many(images)
    for image, probs in zip(images, together):
        assert np.allclose(probs, predictor.predict_probabilities(image), atol=1e-5)


def test_public_api_accepts_a_folder_a_model_or_a_predictor(model_folder, smooth_image):
    image = smooth_image(24, 24)
    model, meta = unetkit.load(model_folder)
    masks = [unetkit.predict(model_folder, image, precision="fp32"),
             unetkit.predict(model, image, meta=meta, precision="fp32"),
             unetkit.predict(unetkit.Predictor(model_folder, precision="fp32"), image)]
    assert all(np.array_equal(m, masks[0]) for m in masks)
    assert set(np.unique(masks[0])) <= {0, 3, 7}


def test_default_tile_is_twice_the_patch_as_a_multiple_of_two_to_the_depth():
    info = SavedModel.from_json({"model": {"depth": 4}, "train": {"patch_size": 100}}, "m")
    assert info.default_tile() == 208
    assert SavedModel.from_json({"model": {"depth": 2}}, "m").default_tile() == 512


def test_default_tile_batch_holds_about_512_squared_pixels_on_the_cpu(model_folder):
    assert Predictor(model_folder, tile=512, precision="fp32").batch_size == 1
    assert Predictor(model_folder, tile=256, precision="fp32").batch_size == 4
    assert Predictor(model_folder, tile=64, precision="fp32").batch_size == 8  # capped
    assert Predictor(model_folder, tile=512, precision="fp32", batch_size=3).batch_size == 3
    assert default_batch(512, on_gpu=True) == 4


@pytest.mark.parametrize("option, message", [
    ({"overlap": 1.0}, "--overlap"), ({"tta": "rotate"}, "--tta"), ({"threshold": 1.5}, "--threshold"),
    ({"batch_size": 0}, "--batch-size"), ({"engine": "tensorrt"}, "--engine"),
])
def test_bad_settings_are_refused_in_one_sentence(option, message, model_folder):
    with pytest.raises(UnetkitError, match=message):
        Predictor(model_folder, **option)


def test_a_16_bit_image_for_an_8_bit_model_is_scaled_with_a_warning(make_model, make_meta, smooth_image):
    """The issue's case: an 8-bit-trained model given the same picture as 16 bits (x 257)."""
    meta = {**make_meta(), "input": {"dtype": "uint8", "low": [0.0], "high": [255.0]}}
    model = make_model()
    image8 = smooth_image(40, 40)
    image16 = image8.astype(np.uint16) * 257
    expected = Predictor(model, meta=meta, precision="fp32").predict_probabilities(image8)
    with pytest.warns(UnetkitWarning, match="uint16 but .* trained on uint8 images: its values are scaled"):
        scaled = Predictor(model, meta=meta, precision="fp32").predict_probabilities(image16)
    assert np.abs(scaled - expected).max() < 1e-4
    raw = Predictor(model, meta=meta, precision="fp32", rescale="none").predict_probabilities(image16)
    assert np.abs(raw - expected).max() > 0.1  # used as it is, the picture reads differently


def test_values_far_outside_the_training_range_are_warned_about(make_model, make_meta, smooth_image):
    meta = {**make_meta(), "input": {"dtype": "uint8", "low": [0.0], "high": [255.0]}}
    unit = smooth_image(32, 32).astype(np.float32) / 255  # 0-1 floats for a 0-255 model
    with pytest.warns(UserWarning, match="far outside the training images' range"):
        Predictor(make_model(), meta=meta, precision="fp32").predict(unit)


def test_pixels_without_data_come_out_as_the_nodata_value(make_model, make_meta, smooth_image):
    image = smooth_image(40, 40).astype(np.float32)
    image[5:9, 10:20] = np.nan
    predictor = Predictor(make_model(), meta=make_meta(class_ids=[0, 3, 7]), precision="fp32")
    mask = predictor.predict(image)
    assert (mask[5:9, 10:20] == 255).all() and set(np.unique(mask[10:])) <= {0, 3, 7}
    probs = predictor.predict_probabilities(image)
    assert np.isnan(probs[:, 5:9, 10:20]).all() and np.isfinite(probs[:, 10:]).all()
