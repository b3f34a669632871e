"""Every command in README.md runs as written, in order, in an empty folder.

Blocks fenced ```sh run in bash (-e: a failing line fails the test), ```python blocks in the
venv's Python; ```text blocks are templates (several machines) and are not run. The folder
holds links to the repository's .venv and Makefile, so `. .venv/bin/activate` and `make demo`
work as a user types them. `make test` is the one line left out: it is what runs this test.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIPPED = {"make test"}  # the suite itself


def blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in FENCE.findall((ROOT / "README.md").read_text()) if kind in ("sh", "python")]


def test_the_readme_has_commands_to_run():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("sh") >= 6 and kinds.count("python") >= 2


def test_every_readme_command_runs_as_written(tmp_path):
    # `make demo` in the linked folder must find the install up to date: a pip install run
    # from there would write that folder's path into the venv's scripts. So bring it up to
    # date here first, in the repository itself (a no-op after `make test`).
    subprocess.run(["make", "-s", "-C", str(ROOT), ".venv/.installed"], check=True, capture_output=True,
                   timeout=1800)
    for name in (".venv", "Makefile", "pyproject.toml", "constraints.txt", "src", "README.md"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for index, (kind, body) in enumerate(blocks()):
        lines = [line for line in body.splitlines() if line.split("#")[0].strip() not in SKIPPED]
        script = "\n".join(lines)
        if kind == "sh":
            command = ["bash", "-e", "-o", "pipefail", "-c", script]
        else:
            command = [str(ROOT / ".venv" / "bin" / "python"), "-c", script]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (
            f"README block {index + 1} ({kind}) failed:\n{script}\n--- stdout\n{done.stdout[-3000:]}\n"
            f"--- stderr\n{done.stderr[-3000:]}"
        )
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "model.onnx").is_file()
