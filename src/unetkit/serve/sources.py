"""Where a client may point the server at an image: a `data:` URL, or a file under a folder
the user allowed (`--allow-folder`). Nothing else is opened, and nothing is fetched.

A labelling tool names its images in several ways; all end here:
- `data:image/png;base64,...`: the bytes themselves;
- `/data/local-files/?d=REL` (Label Studio's local files, with or without its host): REL
  under an allowed folder (the folder Label Studio's LOCAL_FILES_DOCUMENT_ROOT points at);
- `/data/upload/PROJECT/FILE` (files uploaded to Label Studio): `upload/PROJECT/FILE` or
  `PROJECT/FILE` under an allowed folder (Label Studio's media folder);
- `file:///abs/path`, `/abs/path` or `rel/path`: the file itself, or REL under an allowed folder.
Every candidate is resolved (symlinks and `..` followed) before it is compared with the
allowed folders, so a link or `../` cannot lead outside them. Web addresses are refused:
the server makes no requests of its own.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from unetkit.errors import UnetkitError


class SourceError(UnetkitError):
    """A reference the server will not or cannot read; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def allowed_folders(folders: Sequence[str | Path]) -> list[Path]:
    """The resolved folders given with --allow-folder; one sentence for one that is not a folder."""
    out = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise UnetkitError(f"--allow-folder {folder}: not a folder; give an existing folder of images")
        out.append(path.resolve())
    return out


def read_reference(reference: str, folders: Sequence[Path], max_bytes: int, what: str = "the image") -> tuple[bytes, str]:
    """(the bytes, a name for messages) of an image reference; SourceError (one sentence) when
    it is not allowed, missing, or larger than `max_bytes`."""
    if not isinstance(reference, str) or not reference.strip():
        raise SourceError(f"{what} is not given: put the image's address (a data: URL or a file path) in the task")
    reference = reference.strip()
    if reference[:5].lower() == "data:":
        return _data_url(reference, max_bytes, what), "the data: URL"
    path = _local_path(reference, folders, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise SourceError(f"{what} ({path.name}) is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.0f} MB; "
                          "raise --max-upload-mb or cut the image into tiles", 413)
    try:
        return path.read_bytes(), path.name
    except OSError as error:
        raise SourceError(f"{what} ({path.name}) cannot be read ({error.strerror}); check its permissions") from None


def resolve_under(candidate: str, folders: Sequence[Path], what: str = "the image") -> Path:
    """The file `candidate` names (absolute, or relative to one of `folders`), resolved, if it
    lies under one of `folders`; SourceError otherwise."""
    if not folders:
        raise SourceError(f"{what} is a file path ({_short(candidate)}), but this server reads no files: start it with "
                          "--allow-folder DIR to let it read images under DIR", 403)
    if "\x00" in candidate:
        raise SourceError(f"{what} has a NUL byte in its path; send a plain path", 400)
    raw = Path(candidate).expanduser()
    tries = [raw] if raw.is_absolute() else [folder / raw for folder in folders]
    outside = False
    for attempt in tries:
        resolved = Path(os.path.realpath(attempt))
        if not any(resolved == folder or resolved.is_relative_to(folder) for folder in folders):
            outside = True  # not even whether it exists is told
        elif resolved.is_file():
            return resolved
    if outside:
        raise SourceError(f"{what} ({_short(candidate)}) lies outside the folders this server may read; "
                          "put it under a folder given with --allow-folder", 403)
    raise SourceError(f"{what} ({_short(candidate)}) is not a file under the allowed folders; check the path "
                      "(a relative path is read from each --allow-folder)", 404)


def _local_path(reference: str, folders: Sequence[Path], what: str) -> Path:
    parts = urlsplit(reference)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return resolve_under(unquote(parts.path), folders, what)
    if scheme in ("http", "https") or (scheme and len(scheme) > 1):
        local = _label_studio_path(parts.path, parts.query)
        if local is None:
            raise SourceError(f"{what} is a web address ({_short(reference)}); this server fetches nothing: serve the "
                              "images from a folder given with --allow-folder, or send them as data: URLs", 400)
        return _first_under(local, folders, what)
    local = _label_studio_path(parts.path, parts.query)
    if local is not None:
        return _first_under(local, folders, what)
    return resolve_under(reference, folders, what)


def _label_studio_path(path: str, query: str) -> list[str] | None:
    """The relative paths a Label Studio file address stands for, or None if it is not one."""
    if path.rstrip("/").endswith("/data/local-files"):
        values = parse_qs(query).get("d")
        return [values[0].lstrip("/")] if values else []
    marker = "/data/upload/"
    if marker in path:
        rest = unquote(path.split(marker, 1)[1])
        return [f"upload/{rest}", rest]
    return None


def _first_under(candidates: list[str], folders: Sequence[Path], what: str) -> Path:
    if not candidates:
        raise SourceError(f"{what} is a local-files address without ?d=PATH; give the file's path in d", 400)
    error: SourceError | None = None
    for candidate in candidates:
        if Path(candidate).is_absolute():
            candidate = candidate.lstrip("/")
        try:
            return resolve_under(candidate, folders, what)
        except SourceError as problem:
            error = problem if error is None or problem.status == 403 else error
    assert error is not None
    raise error


def _data_url(reference: str, max_bytes: int, what: str) -> bytes:
    header, comma, payload = reference.partition(",")
    if not comma:
        raise SourceError(f"{what} is a data: URL without a comma; write data:image/png;base64,...")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise SourceError(f"{what} (a data: URL) is over the limit of {max_bytes / 1e6:.0f} MB; raise --max-upload-mb "
                          "or cut the image into tiles", 413)
    if not header.lower().endswith(";base64"):
        raise SourceError(f"{what} is a data: URL that is not base64; encode the image as data:image/...;base64,...")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise SourceError(f"{what} is a data: URL whose base64 is damaged; encode the image again") from None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["SourceError", "allowed_folders", "read_reference", "resolve_under"]
