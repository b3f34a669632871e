"""The `unetkit` command as a user runs it (through a subprocess where exit codes matter)."""

from __future__ import annotations

import argparse
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


def test_both_spellings_of_every_flag_work_everywhere(tmp_path):
    """The issue's two failures: `data check --val_fraction` and `explain model --in_channels`."""
    assert run_cli("explain", "model", "--in_channels", "1", "--num_classes", "2", "--size", "64").returncode == 0
    assert run_cli("explain", "model", "--in-channels", "1", "--num-classes", "2", "--size", "64").returncode == 0
    done = run_cli("data", "check", str(tmp_path / "nowhere"), "--val_fraction", "0.3")
    assert "unrecognized" not in done.stderr and "does not exist" in done.stderr
    from unetkit.cli import build_parser

    multiword = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            for option in action.option_strings:
                if option.startswith("--") and ("_" in option or "-" in option[2:]) and not option.startswith("--no-"):
                    multiword.add((parser.prog, option))
    for prog, option in multiword:
        other = "--" + (option[2:].replace("_", "-") if "_" in option else option[2:].replace("-", "_"))
        assert (prog, other) in multiword, f"{prog} {option} has no {other}"


def test_a_wrong_flag_shows_the_usage_of_its_own_command():
    done = run_cli("train", "--resume-from", "run2")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: unetkit train") and "unrecognized arguments: --resume-from" in done.stderr
    done = run_cli("predict", "--model", "m", "--input", "x", "--out", "o", "--bogus")
    assert done.stderr.startswith("usage: unetkit predict")


def test_every_flag_has_a_help_text_with_its_real_default():
    from unetkit.cli import build_parser

    stack, seen = [build_parser()], 0
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.dest not in ("help", "version"):
                seen += 1
                assert action.help and len(action.help) > 12, f"{parser.prog} {action.option_strings[0]}"
                assert "(default none)" not in action.help, f"{parser.prog} {action.option_strings[0]}"
    assert seen > 80
    text = run_cli("train", "--help").stdout
    for words in ("ce+dice for multiclass", "3e-3 for adamw", "0 on 2 cores", "inferred from the masks"):
        assert words in " ".join(text.split()), words


def test_help_and_argument_errors_load_no_torch():
    for args in (["--help"], ["train", "--help"], ["train", "--bogus"], ["predict", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "unetkit", *args], capture_output=True,
                              text=True)
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
        assert imported and not [m for m in imported if m.split(".")[0] == "torch"], args
