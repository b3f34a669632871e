"""The run folder: resume from any kill, the saved settings win, one-sentence refusals, nothing stale."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from unetkit import load, train
from unetkit.atomic import aside_name
from unetkit.errors import UnetkitError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cmd(data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unetkit", "train", "--data", str(data), "--depth", "2", "--base_channels", "8",
            "--patch_size", "32", "--batch_size", "2", "--epochs", "3", "--steps_per_epoch", "8", "--workers", "0",
            "--no-progress", *extra]


def _same_weights(a: Path, b: Path) -> None:
    first, _ = load(a)
    second, _ = load(b)
    for (name, x), y in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(x, y), name


def test_random_kills_including_before_the_first_checkpoint_all_resume(disks, tmp_path):
    """Kill at random moments (the first ones before any checkpoint exists), `--resume RUN_DIR` each
    time, and the run still ends on the uninterrupted run's weights and metrics."""
    subprocess.run(_cmd(disks, "--out", str(tmp_path / "whole")), check=True, env=ENV, capture_output=True)
    run = tmp_path / "killed"
    rng = random.Random(1)
    proc = subprocess.Popen(_cmd(disks, "--out", str(run)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kills, before_checkpoint = 0, 0
    for delay in [0.5, 1.5, 2.5] + [rng.uniform(0.5, 4.0) for _ in range(3)]:
        time.sleep(delay)
        if proc.poll() is not None:
            break
        before_checkpoint += not (run / "last").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = subprocess.Popen(_cmd(disks, "--resume", str(run)), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert kills >= 3 and before_checkpoint >= 1
    _same_weights(tmp_path / "whole" / "last", run / "last")
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (run / "metrics.csv").read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_resume_uses_the_saved_settings_and_refuses_conflicting_flags(disks, tmp_path):
    run = tmp_path / "run"
    subprocess.run(_cmd(disks, "--out", str(run), "--epochs", "1"), check=True, env=ENV, capture_output=True)
    plain = [sys.executable, "-m", "unetkit", "train", "--resume", str(run), "--epochs", "2", "--no-progress"]
    ok = subprocess.run(plain, env=ENV, capture_output=True, text=True)  # no need to repeat --base_channels 8
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # config.yaml is not stale
    for flag, value in (("--lr", "0.1"), ("--batch_size", "4"), ("--base_channels", "16")):
        bad = subprocess.run(plain[:-1] + ["--epochs", "3", flag, value], env=ENV, capture_output=True, text=True)
        assert bad.returncode == 2, bad.stdout
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        assert flag in bad.stderr and "config.yaml" in bad.stderr


def test_config_yaml_holds_the_resolved_values(disks, tmp_path, tiny):
    train(data=str(disks), out=str(tmp_path / "run"), **tiny)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"] == "binary" and saved["loss"] == "bce+dice"
    assert saved["lr"] == pytest.approx(3e-3) and saved["workers"] == 0
    assert saved["precision"] in ("fp32", "bf16")  # measured once; a resume goes on in it
    assert saved["channels_last"] in (True, False)  # measured too, and kept the same way


def test_a_crafted_resume_state_says_the_weights_are_intact(disks, tmp_path, tiny):
    out = tmp_path / "run"
    train(data=str(disks), out=str(out), **tiny)
    torch.save({"epoch": 2}, out / "last" / "resume.pt")
    with pytest.raises(UnetkitError) as error:
        train(data=str(disks), out=str(out), resume=True, epochs=3)
    message = str(error.value)
    assert "resume state is unusable" in message and "intact" in message and "--overwrite" not in message
    load(out / "best")  # still a model


def test_leftovers_of_a_kill_are_cleared_and_a_set_aside_checkpoint_comes_back(disks, tmp_path, tiny):
    out = tmp_path / "run"
    train(data=str(disks), out=str(out), **tiny)
    os.rename(out / "best", aside_name(out / "best"))  # killed between the two renames of a swap
    (out / ".metrics.csv.x1.unetkit-partial.csv").write_text("half")
    run = train(data=str(disks), out=str(out), resume=True, epochs=3)
    assert run.best.is_dir() and not aside_name(out / "best").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_non_finite_numbers_are_one_sentence(disks, tmp_path):
    for value in ("nan", "inf"):
        bad = subprocess.run([sys.executable, "-m", "unetkit", "train", "--data", str(disks), "--out",
                              str(tmp_path / "r"), "--lr", value], capture_output=True, text=True)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and "lr" in bad.stderr


def test_resume_of_nothing_and_two_names_for_the_run_are_refused(disks, tmp_path):
    with pytest.raises(UnetkitError, match="no run to resume"):
        train(resume=str(tmp_path / "none"))
    with pytest.raises(UnetkitError, match="name different runs"):
        train(data=str(disks), out=str(tmp_path / "a"), resume=str(tmp_path / "b"))


def test_a_run_is_refused_inside_the_data_set_and_over_a_file_it_did_not_write(disks, tmp_path, tiny):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(disks, data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    for out, words in ((data, "the data set folder"), (data / "images", "images/ folder"),
                       (data / "masks" / "run", "masks/ folder")):
        with pytest.raises(UnetkitError, match=words):
            train(data=str(data), out=str(out), **tiny)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written there
    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "progress.png").write_bytes(b"the user's own picture")
    with pytest.raises(UnetkitError, match="progress.png: not part of a run"):
        train(data=str(data), out=str(mine), **tiny)
    assert (mine / "progress.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in mine.iterdir()) == ["progress.png"]
    train(data=str(data), out=str(mine), overwrite=True, **tiny)  # the user said so
    assert (mine / "best").is_dir()
