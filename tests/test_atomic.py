"""Atomic writes keep the umask's mode, leave nothing half-written, and clean up only their own leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from unetkit import atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    atomic.umask.cache_clear()
    yield
    os.umask(old)
    atomic.umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_umask_mode(tmp_path, umask_027):
    atomic.atomic_write_text(tmp_path / "a.txt", "x")
    assert mode(tmp_path / "a.txt") == 0o640
    atomic.write_folder(tmp_path / "model", lambda d: (d / "w.bin").write_bytes(b"1"))
    assert mode(tmp_path / "model") == 0o750
    assert mode(tmp_path / "model" / "w.bin") == 0o640


def test_predictions_synth_images_and_weights_are_not_0600(tmp_path):
    """The issue's three cases under the usual umask 022: a prediction, a generated image, model.safetensors."""
    from unetkit.data.io import write_mask
    from unetkit.data.synth import write_dataset
    from unetkit.model.store import save_model
    from unetkit.nn import UNet

    old = os.umask(0o022)
    atomic.umask.cache_clear()
    try:
        write_mask(tmp_path / "pred.png", np.zeros((4, 4), np.uint8))
        write_dataset("cells", tmp_path / "cells", count=2, size=64)
        save_model(tmp_path / "best", UNet(depth=1, base_channels=2), {})
    finally:
        os.umask(old)
        atomic.umask.cache_clear()
    assert mode(tmp_path / "pred.png") == 0o644
    image = next((tmp_path / "cells" / "images").iterdir())
    assert mode(image) == 0o644
    assert mode(tmp_path / "cells") == 0o755
    assert mode(tmp_path / "best" / "model.safetensors") == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_unwritable_folder_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(atomic.WriteError, match=r"cannot write .*file/x\.txt: .*; choose a folder you can write to"):
        atomic.atomic_write_text(blocker / "x.txt", "x")


def test_swap_recovers_the_previous_folder_after_a_kill_between_renames(tmp_path):
    folder = tmp_path / "best"
    atomic.write_folder(folder, lambda d: (d / "v").write_text("1"))
    os.rename(folder, atomic.aside_name(folder))  # the kill: moved aside, new one never renamed in
    assert atomic.recover_folder(folder)
    assert (folder / "v").read_text() == "1"


def test_remove_leftovers_clears_only_unetkit_temporaries(tmp_path):
    (tmp_path / ".metrics.csv.abc.unetkit-partial.csv").write_text("")
    (tmp_path / ".best.x1.unetkit-staging").mkdir()
    (tmp_path / ".hidden-user-file").write_text("mine")
    (tmp_path / "notes.partial").write_text("mine too")
    aside = tmp_path / ".last.unetkit-old"
    aside.mkdir()
    removed = atomic.remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [".best.x1.unetkit-staging", ".metrics.csv.abc.unetkit-partial.csv"]
    assert (tmp_path / ".hidden-user-file").exists() and (tmp_path / "notes.partial").exists()
    assert (tmp_path / "last").is_dir()  # set aside and never replaced: moved back, not deleted
