"""Progress in logs: a few plain lines, never a redrawn bar (which writes hundreds of frames)."""

from __future__ import annotations

import subprocess
import sys

from unetkit import progress


def test_without_a_terminal_a_bar_is_about_ten_lines(capsys):
    with progress.bar(1000, "predict", "image") as shown:
        for _ in range(1000):
            shown.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert 8 <= len(err.splitlines()) <= 11 and "predict: 1000/1000 images" in err


def test_off_means_silent(capsys):
    with progress.bar(50, "x", enabled=False) as shown:
        shown.update(50)
    assert capsys.readouterr().err == ""


def test_train_and_predict_write_no_bar_frames_into_a_log(disks, tmp_path):
    """The CLI's output is a pipe here, as in CI or `> log.txt`: one line per epoch, no escape codes."""
    train = subprocess.run([sys.executable, "-m", "unetkit", "train", "--data", str(disks), "--out",
                            str(tmp_path / "run"), "--depth", "2", "--base_channels", "4", "--patch_size", "32",
                            "--batch_size", "2", "--epochs", "3", "--steps_per_epoch", "20"],
                           capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    for stream in (train.stdout, train.stderr):
        assert "\r" not in stream and "\x1b" not in stream
    assert sum(line.startswith("epoch ") for line in train.stdout.splitlines()) == 3
    predicted = subprocess.run([sys.executable, "-m", "unetkit", "predict", "--model", str(tmp_path / "run"),
                                "--input", str(disks / "images"), "--out", str(tmp_path / "out")],
                               capture_output=True, text=True)
    assert predicted.returncode == 0, predicted.stderr
    assert "\r" not in predicted.stderr and len(predicted.stderr.splitlines()) <= 11
    quiet = subprocess.run([sys.executable, "-m", "unetkit", "predict", "--model", str(tmp_path / "run"),
                            "--input", str(disks / "images"), "--out", str(tmp_path / "out2"), "--no-progress"],
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    for command in (["evaluate", "--model", str(tmp_path / "run"), "--data", str(disks), "--out",
                     str(tmp_path / "eval")], ["demo", "--help"]):
        done = subprocess.run([sys.executable, "-m", "unetkit", *command, "--no-progress"], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
