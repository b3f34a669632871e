"""`unetkit serve`: its flags on cli.py's parser class, and the command run as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from unetkit.cli import Parser, _add_serve
from unetkit.errors import UnetkitError

RUNNER = """
import sys
from unetkit.cli import Parser, _add_serve
parser = Parser(prog="unetkit")
_add_serve(parser.add_subparsers(parser_class=Parser))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.run(args))
"""


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="unetkit")
    _add_serve(parser.add_subparsers(parser_class=Parser))
    return parser


def test_flags_have_help_both_spellings_and_safe_defaults():
    parser = _parser()
    args = parser.parse_args(["serve", "--model", "a/best", "--model", "other=b", "--allow_folder", "x",
                              "--max_upload_mb", "5"])
    assert args.model == ["a/best", "other=b"] and args.allow_folder == ["x"] and args.max_upload_mb == 5
    assert args.host == "127.0.0.1" and args.port == 8000 and args.workers == 1 and args.queue == 8
    assert args.parser.prog == "unetkit serve" and callable(args.run)
    serve = args.parser
    for action in serve._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
        long = [o for o in action.option_strings if o.startswith("--") and ("-" in o[2:] or "_" in o)]
        if long:
            assert len(long) == 2, long  # --max-upload-mb and --max_upload_mb
    assert "Label Studio" in serve.format_help()


def test_building_the_parser_loads_neither_torch_nor_fastapi():
    code = ("import sys; from unetkit.cli import Parser, _add_serve; "
            "p = Parser(); _add_serve(p.add_subparsers(parser_class=Parser)); "
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_port_in_use_is_one_sentence(model_dir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        args = _parser().parse_args(["serve", "--model", str(model_dir), "--port", str(holder.getsockname()[1])])
        with pytest.raises(UnetkitError, match="is in use"):
            args.run(args)
    finally:
        holder.close()


def test_a_missing_folder_to_allow_is_one_sentence(model_dir, tmp_path):
    args = _parser().parse_args(["serve", "--model", str(model_dir), "--allow-folder", str(tmp_path / "no")])
    with pytest.raises(UnetkitError, match="--allow-folder"):
        args.run(args)


def test_the_command_serves_until_interrupted(model_dir, tmp_path):
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", RUNNER, "serve", "--model", f"cells={model_dir}", "--port", "0",
                                "--log-level", "warning", "--device", "cpu"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url, lines = None, []
        while url is None and time.monotonic() - started < 120:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0]
        assert url is not None and url.startswith("http://127.0.0.1:"), lines
        assert any("loaded cells" in line and "warm-up" in line for line in lines), lines
        with urllib.request.urlopen(url + "api/models", timeout=30) as answer:
            assert json.load(answer)["default"] == "cells"
        with urllib.request.urlopen(url, timeout=30) as answer:
            page = answer.read().decode()
        assert "<title>unetkit" in page and "http" not in page.split("<body>")[1].replace("http-equiv", "")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()
