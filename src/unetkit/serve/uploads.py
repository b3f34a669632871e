"""Request bodies, read into memory with a byte limit: a raw image, or multipart form data.

Starlette's own form parser spools files over 1 MB to a temporary file; the server writes
nothing to disk, so uploads are parsed here, with python-multipart's streaming parser, into
bytes. The limit is checked against Content-Length before anything is read and again while
reading, so a client that lies about the length is cut off at the limit too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from unetkit.errors import UnetkitError

FORM_SLACK = 64 * 1024  # boundaries and small fields on top of the file
MAX_PARTS = 16
READ_SECONDS = 120.0
DRAIN_BYTES = 64 * 1024 * 1024  # a body this much over the limit is still read (and dropped) before the 413


class BadRequest(UnetkitError):
    """A request the server refuses; `status` is the HTTP status (4xx), str() the one sentence."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """The file of a request (its bytes and name) and its other form fields."""

    data: bytes
    name: str
    fields: dict[str, str] = field(default_factory=dict)


async def read_body(request, limit: int, what: str = "the upload") -> bytes:  # noqa: ANN001
    """The whole body, refused with 413 past `limit` bytes and with 408 when it takes too long.

    A body a little over the limit is read to its end and dropped before the 413 is sent:
    clients that send the whole request before they read the answer (most do) would see a
    broken connection instead of the sentence. One far over the limit is cut off at once."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number; send a valid request") from None
        if declared > limit + DRAIN_BYTES:
            raise BadRequest(_too_big(what, declared, limit), 413)

    async def collect() -> bytes:
        body = bytearray()
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= limit:
                body += chunk
            elif seen > limit + DRAIN_BYTES:
                break
            else:
                body = bytearray()  # over the limit: the rest is read and dropped, so the client hears why
        if seen > limit:
            raise BadRequest(_too_big(what, int(length) if length is not None else seen, limit), 413)
        return bytes(body)

    try:
        return await asyncio.wait_for(collect(), READ_SECONDS)
    except asyncio.TimeoutError:
        raise BadRequest(f"{what} took over {READ_SECONDS:.0f} s to arrive; send it again on a faster link", 408) \
            from None


def _too_big(what: str, size: int, limit: int) -> str:
    return (f"{what} is {size / 1e6:.1f} MB, over the server's limit of {limit / 1e6:.0f} MB; "
            "cut the image into tiles or start the server with a larger --max-upload-mb")


async def read_upload(request, max_bytes: int) -> Upload:  # noqa: ANN001
    """The image of a request: the `file` part of multipart form data, or the raw body
    (then `?name=` names it). Query parameters are fields too; form fields win."""
    content_type = request.headers.get("content-type", "")
    query = {k: v for k, v in request.query_params.items()}
    if content_type.lower().startswith("multipart/form-data"):
        body = await read_body(request, max_bytes + FORM_SLACK)
        upload = parse_multipart(body, content_type)
        upload.fields = {**query, **upload.fields}
        upload.name = upload.name or query.get("name") or "the upload"
        return upload
    body = await read_body(request, max_bytes)
    if not body:
        raise BadRequest("the request has no image: send the file as multipart form data (field `file`) "
                         "or as the request body")
    return Upload(body, query.get("name") or "the upload", query)


def parse_multipart(body: bytes, content_type: str) -> Upload:
    """The `file` part (else the first part with a file name) and the text fields."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart request has no boundary; let your HTTP client build the form")
    parts: list[dict] = []
    header = {"field": bytearray(), "value": bytearray()}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise BadRequest(f"the form has over {MAX_PARTS} parts; send one file and a few fields")
        parts.append({"headers": {}, "data": bytearray()})

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][bytes(header["field"]).lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise BadRequest(f"the multipart form is malformed ({error}); let your HTTP client build the form") from None
    fields: dict[str, str] = {}
    files: list[tuple[str, str, bytes]] = []
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        if filename is not None:
            files.append((name, filename.decode("utf-8", "replace"), bytes(part["data"])))
        elif name:
            fields[name] = bytes(part["data"]).decode("utf-8", "replace")[:1000]
    if not files:
        raise BadRequest("the form has no file: send the image in a field named `file` (curl -F file=@image.png)")
    chosen = next((f for f in files if f[0] == "file"), files[0])
    return Upload(chosen[2], chosen[1] or "the upload", fields)


__all__ = ["BadRequest", "Upload", "parse_multipart", "read_body", "read_upload"]
