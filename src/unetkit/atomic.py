"""Atomic writes: a file or a folder appears whole or not at all, with the mode the umask gives.

Every file unetkit writes goes through here, so three promises hold everywhere:
- a reader (or a resumed run) never sees half a file: the bytes go to a temporary name in
  the same folder, are flushed to disk, and are renamed over the target in one step;
- the result has the permissions any other program would give it (0666 and 0777 less the
  umask): `tempfile` makes 0600 files and 0700 folders, which would lock out a group;
- a kill leaves nothing that cannot be recognised: temporary names carry the marker
  `unetkit-partial` (files) or `unetkit-staging` / `unetkit-old` (folders), and
  `remove_leftovers` clears exactly those, never a user's file.

A model folder is replaced by two renames (`swap_in_folder`): the old one moves aside to
`.NAME.unetkit-old`, the new one takes its name, the old one is deleted. A kill between the
renames leaves the previous folder whole under the aside name; `recover_folder` moves it back.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from unetkit.errors import UnetkitError

PARTIAL = "unetkit-partial"
STAGING = "unetkit-staging"
ASIDE = "unetkit-old"


class WriteError(UnetkitError, OSError):
    """A file or folder that could not be written; str(error) is one sentence with the path."""


@functools.cache
def umask() -> int:
    """The process umask, read once (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def file_mode() -> int:
    return 0o666 & ~umask()


def folder_mode() -> int:
    return 0o777 & ~umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same extension, for writers that go by it); when
    the block succeeds it is renamed over `path`, when it fails it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{PARTIAL}{path.suffix}", dir=path.parent)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}; choose a folder you can write to") from None
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        _flush(temp)
        os.chmod(temp, file_mode())
        os.replace(temp, path)
        _flush_folder(path.parent)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}; check the disk and permissions") from None
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def staging_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside `folder` to fill; on failure it is removed. The
    caller moves it into place with `swap_in_folder` (or `os.replace` for a new folder)."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=f".{STAGING}", dir=folder.parent))
        os.chmod(staging, folder_mode())
    except OSError as error:
        raise WriteError(f"cannot create {folder}: {error.strerror or error}; choose a folder you can write to") \
            from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_folder(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with `fill(staging)`, flush every file, and swap it in for `folder`."""
    folder = Path(folder)
    with staging_folder(folder) as staging:
        fill(staging)
        for item in staging.rglob("*"):
            if item.is_file():
                os.chmod(item, file_mode())
                _flush(item)
        swap_in_folder(staging, folder)
    return folder


def swap_in_folder(staging: Path, folder: Path) -> None:
    """Replace `folder` by the complete `staging` folder; the previous one is whole at every moment."""
    aside = aside_name(folder)
    try:
        if folder.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(folder, aside)
        os.rename(staging, folder)
        _flush_folder(folder.parent)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as error:
        raise WriteError(f"cannot write {folder}: {error.strerror or error}; check the disk and permissions") from None


def aside_name(folder: Path) -> Path:
    """Where `swap_in_folder` keeps the previous folder while the new one moves in."""
    return folder.with_name(f".{folder.name}.{ASIDE}")


def recover_folder(folder: str | Path) -> bool:
    """After a kill between the two renames of a swap: move the previous folder back. True if it did."""
    folder = Path(folder)
    aside = aside_name(folder)
    if folder.exists() or not aside.is_dir():
        return False
    os.rename(aside, folder)
    return True


def is_leftover(path: Path) -> bool:
    """A temporary file or folder of an interrupted unetkit write (never a user's file)."""
    name = path.name
    return name.startswith(".") and (f".{PARTIAL}" in name or name.endswith((f".{STAGING}", f".{ASIDE}")))


def remove_leftovers(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete what interrupted unetkit writes left in `folder`; returns what was removed.

    A folder set aside by a swap whose new folder is missing is moved back, not deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    entries = folder.rglob(".*") if recursive else folder.glob(".*")
    for path in sorted(entries, key=lambda p: len(p.parts), reverse=True):
        if not is_leftover(path) or not path.exists():
            continue
        if path.name.endswith(f".{ASIDE}"):
            original = path.with_name(path.name[1 : -len(f".{ASIDE}")])
            if not original.exists():
                os.rename(path, original)
                continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _flush(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _flush_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: fsync the directory); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "WriteError", "aside_name", "atomic_path", "atomic_write_bytes", "atomic_write_text", "file_mode", "folder_mode",
    "is_leftover", "recover_folder", "remove_leftovers", "staging_folder", "swap_in_folder", "umask", "write_folder",
]
