"""Progress for long work: a live bar on a terminal, a few plain lines in a log.

A tqdm bar redraws itself many times a second; written to a file or a CI log that is
hundreds of frames of escape codes. So the bar is drawn only when stderr is a terminal;
otherwise a line is printed about every tenth of the work (and at the end), and nothing
at all when the caller turned progress off (`--no-progress`).
"""

from __future__ import annotations

import sys
import time
from typing import Any


def bar(total: int, description: str, unit: str = "it", enabled: bool = True, leave: bool = False) -> Any:
    """A context manager with `update(n)`, `set_postfix(**values)` and `close()`."""
    if not enabled or total <= 0:
        return _Silent()
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)
    return _Lines(total, description, unit)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Lines(_Silent):
    """About ten lines over the whole task, each with the count, the rate and the postfix."""

    def __init__(self, total: int, description: str, unit: str) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.done, self.step, self.next = 0, max(1, total // 10), max(1, total // 10)
        self.started = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.next and self.done < self.total:
            self._line()
            self.next = self.done + self.step

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.done >= self.total and self.total > self.step:
            self._line()
        self.done = -(10**9)  # once

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.description}: {self.done}/{self.total} {self.unit}s, {self.done / elapsed:.1f} {self.unit}/s"
              f"{extra}", file=sys.stderr, flush=True)
