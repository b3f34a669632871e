"""Shared test settings and tiny data sets the tests make themselves (no generator, no download).

Torch runs small and deterministic, two threads at most (CI has 2 cores).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_disks(root: Path, count: int = 10, size: int = 48, seed: int = 0, classes: int = 2) -> Path:
    """Bright disks (and, for 3 classes, dim squares) on a noisy background, 7 train / 3 val."""
    from unetkit.data.io import write_image, write_mask

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 8)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        if classes == 3:
            y0, x0 = rng.integers(0, size - 10, 2)
            mask[y0 : y0 + 8, x0 : x0 + 8] = 2
        image = 60 + 120 * (mask == 1) + 50 * (mask == 2) + rng.normal(0, 25, mask.shape)
        write_image(root / "images" / f"img{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_mask(root / "masks" / f"img{i:02d}.png", mask)
    names = ["background", "disk", "square"][:classes]
    (root / "classes.json").write_text(json.dumps({
        "classes": [{"id": k, "name": n, "color": [0, 0, 0] if k == 0 else [255, 40 * k, 0]}
                    for k, n in enumerate(names)],
        "ignore_index": 255,
    }))
    (root / "splits").mkdir()
    stems = [f"img{i:02d}" for i in range(count)]
    (root / "splits" / "train.txt").write_text("\n".join(stems[: count - 3]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[count - 3 :]) + "\n")
    return root


@pytest.fixture(scope="session")
def disks(tmp_path_factory) -> Path:
    return make_disks(tmp_path_factory.mktemp("disks"))


@pytest.fixture(scope="session")
def disks3(tmp_path_factory) -> Path:
    return make_disks(tmp_path_factory.mktemp("disks3"), classes=3)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths for selenium: Debian's packages, installed with apt-get
    when missing (as root); the test is skipped, saying why, when that is impossible."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if shutil.which("apt-get") is None:
            pytest.skip("chromium is missing and apt-get is not available to install it")
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True,
                           capture_output=True, timeout=900, env={"DEBIAN_FRONTEND": "noninteractive",
                                                                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"chromium could not be installed with apt-get: {error}")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def tiny() -> dict:
    """Settings of a tiny, fast run: depth 2, 4 base channels, 32x32 patches, 2 epochs."""
    return dict(depth=2, base_channels=4, patch_size=32, batch_size=2, epochs=2, progress=False, workers=0)
