"""`unetkit data check` / `data prepare` as a user runs them: output, exit status, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from unetkit.cli import main

from .test_check import EVERY_PROBLEM, seeded_with_every_problem


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetkit", *args], capture_output=True, text=True)


def test_check_clean_set_exits_0(builder, capsys):
    builder.pairs(4)
    assert main(["data", "check", str(builder.root)]) == 0
    out = capsys.readouterr().out
    assert "pairs: 4" in out and "no problems found" in out


def test_check_lists_every_problem_and_exits_1(builder):
    seeded_with_every_problem(builder)
    done = run_cli("data", "check", str(builder.root), "--val-fraction", "0.1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    for _code, file in EVERY_PROBLEM:
        assert any(line.startswith(("error: ", "warning: ")) and f" {file}: " in line for line in lines), file


def test_check_json_is_machine_readable(builder, capsys):
    seeded_with_every_problem(builder)
    assert main(["data", "check", str(builder.root), "--json", "--val-fraction", "0.1"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {(p["code"], p["file"]) for p in data["problems"]} == EVERY_PROBLEM
    assert data["ok"] is False and data["pairs"] == 13


def test_check_of_a_missing_folder_is_one_line_exit_2(tmp_path):
    done = run_cli("data", "check", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"unetkit: error: {tmp_path / 'nowhere'} does not exist; check the path\n"


def test_check_of_an_empty_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path} has no images/ folder" in err


def test_prepare_without_src_says_where_to_download(tmp_path, capsys):
    assert main(["data", "prepare", "oxford-pet", "--out", str(tmp_path / "pet")]) == 2
    err = capsys.readouterr().err
    assert "robots.ox.ac.uk" in err and err.count("\n") == 1
    assert not (tmp_path / "pet").exists()


def test_prepare_then_check(tmp_path, capsys):
    src = tmp_path / "download"
    src.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(src / "train-volume.tif", rng.integers(0, 256, (5, 8, 8), dtype=np.uint8),
                     photometric="minisblack")
    labels = np.full((5, 8, 8), 255, np.uint8)
    labels[:, ::3] = 0
    tifffile.imwrite(src / "train-labels.tif", labels, photometric="minisblack")
    assert main(["data", "prepare", "isbi2012", "--src", str(src), "--out", str(tmp_path / "isbi")]) == 0
    assert "wrote 5 pairs of isbi2012" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "isbi")]) == 0


def test_unknown_source_is_refused_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data", "prepare", "imagenet", "--out", str(tmp_path / "x")])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err
