"""inspect_dataset + SegmentationDataset: the contract the trainer relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from unetkit.data import DataSpec, SegmentationDataset, inspect_dataset
from unetkit.data.io import read_image, write_mask
from unetkit.errors import UnetkitError

from .conftest import blob_mask, noise_image


@pytest.fixture
def binary_set(builder):
    builder.pairs(6, size=(20, 16))
    return builder.root


def test_inspect_returns_spec_and_splits(binary_set):
    spec, splits = inspect_dataset(binary_set, val_fraction=0.34, seed=1)
    assert spec.task == "binary" and spec.num_outputs == 1 and spec.in_channels == 3
    assert [c["id"] for c in spec.classes] == [0, 1] and spec.ignore_index is None
    assert len(spec.mean) == len(spec.std) == 3
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 2, "test": 0}
    assert DataSpec.from_dict(spec.to_dict()) == spec


def test_inspect_refuses_a_corrupting_set_with_one_sentence(builder):
    builder.pairs(3, size=(20, 16))
    write_mask(builder.root / "masks" / "p01.png", np.zeros((5, 5), np.uint8))
    write_mask(builder.root / "masks" / "orphan.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(UnetkitError) as caught:
        inspect_dataset(builder.root)
    message = str(caught.value)
    assert "masks/orphan.png" in message and "(and 1 more problem(s))" in message
    assert f"unetkit data check {builder.root}" in message and "\n" not in message


def test_items_are_normalised_chw_images_and_int64_masks(binary_set):
    spec, splits = inspect_dataset(binary_set)
    dataset = SegmentationDataset(binary_set, splits["val"], spec)
    item = dataset[0]
    assert item["stem"] == splits["val"][0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 20, 16)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (20, 16)
    raw = read_image(binary_set / "images" / f"{item['stem']}.png").astype(np.float32)
    expected = (raw - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(item["mask"].numpy(), blob_mask(20, 16, int(item["stem"][1:])))


def test_training_split_is_normalised_to_zero_mean_unit_std(binary_set):
    spec, splits = inspect_dataset(binary_set)
    images = torch.stack([item["image"] for item in SegmentationDataset(binary_set, splits["train"], spec)])
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (images.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4


def test_patches_are_seeded_by_epoch_and_index_not_by_worker(binary_set):
    spec, splits = inspect_dataset(binary_set)
    dataset = SegmentationDataset(binary_set, splits["train"], spec, patch_size=(8, 8), seed=5)
    first = [dataset[i]["image"] for i in range(len(dataset))]
    assert all(t.shape == (3, 8, 8) for t in first)
    again = [dataset[i]["image"] for i in range(len(dataset))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    dataset.set_epoch(1)
    moved = [dataset[i]["image"] for i in range(len(dataset))]
    assert not all(torch.equal(a, b) for a, b in zip(first, moved))
    dataset.set_epoch(0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batched = torch.cat([batch["image"] for batch in loader])
    assert torch.equal(batched, torch.stack(first))


def test_a_second_draw_of_an_image_in_one_epoch_is_a_new_sample(binary_set):
    """A sampler's second pass (index + len) reads the same pair with a crop of its own: an
    epoch longer than the data set must not train on the same few patches over and over."""
    spec, splits = inspect_dataset(binary_set)
    dataset = SegmentationDataset(binary_set, splits["train"], spec, patch_size=(8, 8), seed=5)
    n = len(dataset)
    assert [dataset[i + n]["stem"] for i in range(n)] == [dataset[i]["stem"] for i in range(n)]
    assert not all(torch.equal(dataset[i]["image"], dataset[i + n]["image"]) for i in range(n))


def test_small_images_are_padded_with_zeros_and_the_ignore_index(builder):
    builder.classes([{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}], ignore_index=255).pairs(3, size=(6, 5))
    spec, splits = inspect_dataset(builder.root)
    item = SegmentationDataset(builder.root, splits["train"], spec, patch_size=(9, 7))[0]
    assert item["image"].shape == (3, 9, 7) and item["mask"].shape == (9, 7)
    assert (item["mask"][6:] == 255).all() and (item["mask"][:, 5:] == 255).all()
    assert (item["image"][:, 6:] == 0).all()
    assert set(item["mask"][:6, :5].unique().tolist()) <= {0, 1}


def test_transform_gets_hwc_float_and_a_reproducible_seed(binary_set):
    spec, splits = inspect_dataset(binary_set)
    seen = []

    def transform(image, mask, seed):
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3 and mask.ndim == 2
        seen.append(seed)
        return image[::-1].copy(), mask[::-1].copy()

    dataset = SegmentationDataset(binary_set, splits["train"], spec, transform=transform, patch_size=(4, 4))
    item = dataset[1]
    assert item["image"].shape == (3, 20, 16)  # the transform owns the patch size
    plain = SegmentationDataset(binary_set, splits["train"], spec)[1]
    assert torch.equal(item["mask"], plain["mask"].flip(0))
    dataset[1]
    dataset.set_epoch(3)
    dataset[1]
    assert seen[0] == seen[1] != seen[2]


def test_multilabel_items_are_label_stacks(builder):
    for i in range(3):
        stack = np.stack([blob_mask(8, 6, i), 1 - blob_mask(8, 6, i)])
        builder.pair(f"p{i}", noise_image(8, 6, 3, i), stack, mask_ext=".tif")
    spec, splits = inspect_dataset(builder.root)
    assert spec.task == "multilabel" and spec.num_outputs == 2
    seeds = []

    def transform(image, mask, seed):
        seeds.append(mask.shape)
        return image, mask

    item = SegmentationDataset(builder.root, splits["train"], spec, transform=transform)[0]
    assert seeds == [(8, 6, 2)]
    assert item["mask"].shape == (2, 8, 6) and item["mask"].dtype == torch.int64
    np.testing.assert_array_equal(item["mask"][0].numpy(), blob_mask(8, 6, int(item["stem"][1:])))


def test_colour_coded_and_zero_255_masks_become_indices(builder):
    classes = [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 3, "name": "b", "color": [0, 255, 0]},
               {"id": 7, "name": "c", "color": [255, 0, 0]}]
    builder.classes(classes)
    for i in range(2):
        ids = blob_mask(9, 6, i, classes=3)
        builder.pair(f"p{i}", noise_image(9, 6, 3, i), np.array([c["color"] for c in classes], np.uint8)[ids])
    spec, splits = inspect_dataset(builder.root)
    item = SegmentationDataset(builder.root, splits["train"] + splits["val"], spec)[0]
    np.testing.assert_array_equal(item["mask"].numpy(), blob_mask(9, 6, 0, classes=3))


def test_cache_serves_the_same_items(binary_set):
    spec, splits = inspect_dataset(binary_set)
    cached = SegmentationDataset(binary_set, splits["val"], spec, cache=True)
    first = cached[0]
    (binary_set / "images" / f"{splits['val'][0]}.png").unlink()
    assert torch.equal(cached[0]["image"], first["image"])


def test_unknown_stem_and_changed_files_are_one_sentence(binary_set):
    spec, splits = inspect_dataset(binary_set)
    with pytest.raises(UnetkitError, match="no image/mask pair named 'ghost'"):
        SegmentationDataset(binary_set, ["ghost"], spec)
    dataset = SegmentationDataset(binary_set, splits["train"], spec)
    write_mask(binary_set / "masks" / f"{splits['train'][0]}.png", np.full((20, 16), 9, np.uint8))
    with pytest.raises(UnetkitError, match="outside the class map"):
        dataset[0]
    narrow = DataSpec.from_dict({**spec.to_dict(), "in_channels": 1, "mean": [0.0], "std": [1.0]})
    with pytest.raises(UnetkitError, match="has 3 band"):
        SegmentationDataset(binary_set, splits["train"], narrow)[1]


def test_spec_num_outputs_per_task():
    classes = [{"id": i, "name": str(i), "color": [i, i, i]} for i in range(4)]
    assert DataSpec("multiclass", classes, None, 3, [0.0] * 3, [1.0] * 3).num_outputs == 4
    assert DataSpec("multilabel", classes, None, 3, [0.0] * 3, [1.0] * 3).num_outputs == 4
    assert DataSpec("binary", classes[:2], None, 3, [0.0] * 3, [1.0] * 3).num_outputs == 1
    with pytest.raises(UnetkitError):
        DataSpec("regression", classes, None, 3, [], [])
