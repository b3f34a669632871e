"""The `unetkit` command as a user runs it (through a subprocess where exit codes matter)."""

from __future__ import annotations

import json
import subprocess
import sys

from unetkit.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetkit", *args], capture_output=True, text=True)


def test_explain_model_prints_the_classic_table(capsys):
    assert main(["explain", "model", "--in-channels", "3", "--num-classes", "5", "--size", "256"]) == 0
    text = capsys.readouterr().out
    expected = "256×256×64 → encoder 2 128×128×128 → encoder 3 64×64×256 → encoder 4 32×32×512 → bottleneck 16×16×1024"
    assert expected in text
    assert "32×32×512 + 32×32×512 -> 32×32×1024" in text
    assert "parameters: 31,037,893" in text
    assert text.strip().splitlines()[-1].startswith("receptive field:")


def test_explain_model_json_counts_match(capsys):
    assert main(["explain", "model", "--size", "64x48", "--base-channels", "8", "--up-mode", "nearest",
                 "--norm", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input"] == [64, 48, 3] and data["output"] == [64, 48, 5]
    assert data["config"]["norm"] is None and data["config"]["up_mode"] == "nearest"
    assert data["total_params"] == sum(r["params"] for r in data["rows"])


def test_explain_model_valid_padding():
    done = run_cli("explain", "model", "--padding", "valid", "--size", "572", "--in-channels", "1",
                   "--num-classes", "2")
    assert done.returncode == 0
    assert "output 388×388×2 logits" in done.stdout


def test_impossible_valid_size_is_one_line_and_nonzero():
    done = run_cli("explain", "model", "--padding", "valid", "--size", "570")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "556 or 572" in done.stderr


def test_bad_size_flag_is_refused():
    done = run_cli("explain", "model", "--size", "big")
    assert done.returncode == 2 and "is not a size" in done.stderr
