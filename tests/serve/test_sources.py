"""Which client-supplied images the server reads: data: URLs, and files under allowed folders only."""

from __future__ import annotations

import base64
import os

import pytest

from unetkit.serve.sources import SourceError, read_reference, resolve_under

LIMIT = 1 << 20


@pytest.fixture
def folders(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "upload" / "3").mkdir(parents=True)
    (allowed / "a.png").write_bytes(b"A")
    (allowed / "upload" / "3" / "u.png").write_bytes(b"U")
    (tmp_path / "secret.png").write_bytes(b"S")
    os.symlink(tmp_path / "secret.png", allowed / "escape.png")
    os.symlink(allowed / "a.png", allowed / "inside.png")
    return [allowed.resolve()], tmp_path


@pytest.mark.parametrize("reference, data", [
    ("a.png", b"A"), ("./a.png", b"A"), ("inside.png", b"A"), ("/data/local-files/?d=a.png", b"A"),
    ("http://ls:8080/data/local-files/?d=upload%2F3%2Fu.png", b"U"), ("/data/upload/3/u.png", b"U"),
    ("upload/3/../../a.png", b"A"),
])
def test_files_under_an_allowed_folder_are_read(folders, reference, data):
    allowed, _ = folders
    assert read_reference(reference, allowed, LIMIT)[0] == data
    assert read_reference(str(allowed[0] / "a.png"), allowed, LIMIT)[0] == b"A"
    assert read_reference("file://" + str(allowed[0] / "a.png"), allowed, LIMIT)[0] == b"A"


@pytest.mark.parametrize("reference, status", [
    ("escape.png", 403), ("../secret.png", 403), ("/data/local-files/?d=../secret.png", 403),
    ("/etc/passwd", 403), ("/data/local-files/?d=/etc/passwd", 404), ("nothing.png", 404),
    ("https://example.org/a.png", 400), ("s3://bucket/a.png", 400), ("/data/local-files/", 400),
])
def test_anything_else_is_refused(folders, reference, status):
    allowed, root = folders
    with pytest.raises(SourceError) as caught:
        read_reference(reference, allowed, LIMIT)
    assert caught.value.status == status, str(caught.value)
    assert b"S" not in str(caught.value).encode()  # never the content


def test_without_allowed_folders_no_file_is_read(folders):
    _, root = folders
    with pytest.raises(SourceError, match="--allow-folder") as caught:
        resolve_under(str(root / "secret.png"), [])
    assert caught.value.status == 403


def test_data_urls_and_their_limits():
    payload = base64.b64encode(b"PNGDATA").decode()
    assert read_reference(f"data:image/png;base64,{payload}", [], LIMIT)[0] == b"PNGDATA"
    with pytest.raises(SourceError) as caught:
        read_reference("data:image/png;base64," + "A" * (LIMIT * 2), [], LIMIT)
    assert caught.value.status == 413
    with pytest.raises(SourceError, match="not base64"):
        read_reference("data:text/plain,hello", [], LIMIT)


def test_a_file_over_the_limit_is_413(folders):
    allowed, _ = folders
    (allowed[0] / "big.png").write_bytes(b"x" * 2000)
    with pytest.raises(SourceError, match="--max-upload-mb") as caught:
        read_reference("big.png", allowed, 1000)
    assert caught.value.status == 413
