"""The ASGI app of `unetkit serve`: the web page, the JSON API, the Label Studio backend.

Routes:
    GET  /                      the page (HTML, CSS and JavaScript from `serve.page`, nothing fetched)
    GET  /api/models            the loaded models and their cards
    POST /api/predict           an image -> its mask (PNG, as `unetkit predict` writes it), a
                                TIFF (`format=tif`: the GeoTIFF for a georeferenced upload) or
                                per-class areas (`format=json`); `model=NAME` picks a model
    POST /api/segment           the page's call: progress lines, then the previews (NDJSON)
    GET  /api/results/ID/...    downloads of a page result: mask.png, mask.tif, overlay.png,
                                probabilities.tif, display.png (another band choice)
    GET  /health, POST /setup, POST /predict, POST /webhook   the Label Studio ML backend
                                (also under /models/NAME/ to pick a model)

Every model call runs in a small thread pool (`workers`); at most `queue` more requests wait
for it, and any beyond that are answered 503 at once, so memory stays bounded however many
clients call. Every refusal is a 4xx with one sentence in `{"error": ...}`; an unexpected
failure is a 500 with one sentence, logged with its traceback, and the server keeps serving.
Uploads are decoded from memory; nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from unetkit.data.io import UnreadableFile, read_geo_profile_bytes, read_image_bytes
from unetkit.errors import UnetkitError, user_errors
from unetkit.infer.outputs import OVERLAY_ALPHA, overlay_image
from unetkit.serve import labelstudio, page, results
from unetkit.serve.models import ServedModel, json_safe
from unetkit.serve.sources import SourceError, read_reference
from unetkit.serve.uploads import BadRequest, read_body, read_upload

log = logging.getLogger("unetkit.serve")
PROGRESS_EVERY = 0.1  # seconds between progress lines on the page's stream


@dataclass(frozen=True)
class ServerSettings:
    """The server's limits (the flags of `unetkit serve` of the same names)."""

    max_upload_bytes: int = 100 * 1024 * 1024
    workers: int = 1
    queue: int = 8
    allow_folders: tuple[Path, ...] = ()
    keep_bytes: int = 1024 * 1024 * 1024
    preview_side: int = 2048
    max_tasks: int = 64


class Busy(Exception):
    """More requests than workers plus queue: answered 503."""


@dataclass
class Gate:
    """Admission for model work: `workers` run, `queue` wait, the rest are turned away."""

    workers: int
    queue: int
    admitted: int = 0
    executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="unetkit-serve")

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    def admit(self) -> Ticket:
        """A place for one request (Busy when there is none), given back when its work ends."""
        if self.admitted >= self.capacity:
            raise Busy
        self.admitted += 1
        return Ticket(self)


class Ticket:
    """One admitted request. `with gate.admit() as ticket:` gives the place back on leaving,
    unless work was started: then it goes back when the work ends, even if the client left
    (a cancelled request cannot free a place while its image is still being segmented)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.started = False
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.admitted -= 1

    def start(self, work: Callable[..., Any], *args: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.gate.executor, work, *args)
        self.started = True
        future.add_done_callback(lambda _: self.release())
        return future

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.shield(self.start(work, *args))

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.started:
            self.release()


def create_app(models: dict[str, ServedModel], settings: ServerSettings | None = None) -> FastAPI:
    """The app serving `models` (name -> loaded model; the first is the default)."""
    if not models:
        raise UnetkitError("--model is missing: give a trained model, e.g. --model RUN/best")
    settings = settings or ServerSettings()
    gate = Gate(settings.workers, settings.queue)
    store = results.ResultStore(settings.keep_bytes)
    default = next(iter(models))
    app = FastAPI(title="unetkit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models, app.state.settings, app.state.gate, app.state.store = models, settings, gate, store

    # --- errors: one sentence each -------------------------------------------------------------

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            text = f"there is no {request.url.path} here; the page is at / and the API under /api"
        elif error.status_code == 405:
            text = f"{request.method} is not how {request.url.path} is called; see the API list on the page"
        else:
            text = str(error.detail).rstrip(".")
        return _error(text, error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(f"the request to {request.url.path} is malformed; check its parameters", 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return _error(f"the server failed on this request ({type(error).__name__}); see the server's log", 500)

    # --- the page ----------------------------------------------------------------------------

    headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
               "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> Response:
        return HTMLResponse(page.INDEX_HTML, headers=headers)

    @app.get("/static/app.js")
    async def script() -> Response:
        return Response(page.SCRIPT_JS, media_type="text/javascript", headers=headers)

    @app.get("/static/app.css")
    async def style() -> Response:
        return Response(page.STYLE_CSS, media_type="text/css", headers=headers)

    # --- the JSON API --------------------------------------------------------------------------

    @app.get("/api/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({
            "default": default,
            "models": [model.card() for model in models.values()],
            "limits": {"max_upload_mb": settings.max_upload_bytes / 1024 / 1024, "workers": settings.workers,
                       "queue": settings.queue, "max_pixels": _max_pixels(), "local_files": bool(settings.allow_folders)},
        })

    @app.post("/api/predict")
    async def api_predict(request: Request) -> Response:
        with gate.admit() as ticket:
            upload = await _upload(request)
            model = _model(upload.fields.get("model"))
            kind = (upload.fields.get("format") or "png").lower()
            if kind not in ("png", "json", "tif", "tiff"):
                raise BadRequest(f"format={kind!r} is not known: use png (the mask), tif (the mask as TIFF or "
                                 "GeoTIFF) or json (the areas)")
            return await ticket.run(_api_predict, model, upload.data, upload.name, kind)

    def _api_predict(model: ServedModel, data: bytes, name: str, kind: str) -> Response:
        image, nodata = _decode(model, data, name)
        done = model.segment(image, nodata, name)
        record = model.record
        stem = results.file_stem(name)
        timing = {"X-Unetkit-Seconds": f"{done.seconds:.3f}", "X-Unetkit-Tiles": str(done.tiles)}
        if kind == "json":
            areas = results.class_areas(record, done.mask, done.nodata)
            return JSONResponse(json_safe({"model": model.name, "image": name, "task": record.task, **areas,
                                           "bands": int(image.shape[2]), "seconds": round(done.seconds, 4),
                                           "tiles": done.tiles, "confidence": results.confidence(done.probs,
                                                                                                 record.task)}),
                                headers=timing)
        if kind == "png":
            data_out, ext, media = results.mask_file(record, done.mask, name)
            if ext != ".png":
                why = "a multi-label stack" if record.task == "multilabel" else "class ids above 255"
                raise BadRequest(f"{model.name}'s masks do not fit a PNG ({why}); ask format=tif")
        else:
            profile = read_geo_profile_bytes(data, name)
            if profile is not None:
                data_out, ext, media = results.geo_mask_file(record, done.mask, done.probs, profile), ".tif", \
                    "image/tiff"
            else:
                from unetkit.data.io import encode_mask_tiff

                data_out, ext, media = encode_mask_tiff(done.mask, name), ".tif", "image/tiff"
        return Response(data_out, media_type=media,
                        headers={**timing, "Content-Disposition": f'attachment; filename="{stem}{ext}"'})

    @app.post("/api/segment")
    async def api_segment(request: Request) -> Response:
        with gate.admit() as ticket:
            upload = await _upload(request)
            model = _model(upload.fields.get("model"))
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()

            def emit(event: dict | None) -> None:
                loop.call_soon_threadsafe(events.put_nowait, event)

            def work() -> None:
                try:
                    _segment_for_page(model, upload.data, upload.name, emit)
                except Exception as error:  # noqa: BLE001 - every failure becomes one sentence
                    emit(_failure(error))
                finally:
                    emit(None)

            ticket.start(work)
        first = await events.get()
        if first is None or "error" in first:
            error = first or {"error": "the server stopped before answering", "status": 500}
            return _error(error["error"], error.get("status", 400))

        async def lines():
            event = first
            while event is not None:
                yield (json.dumps(json_safe(event)) + "\n").encode()
                event = await events.get()

        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    def _segment_for_page(model: ServedModel, data: bytes, name: str, emit: Callable[[dict | None], None]) -> None:
        image, nodata = _decode(model, data, name)
        profile = read_geo_profile_bytes(data, name)
        total = model.predictor.tile_count(image.shape[0], image.shape[1])
        emit({"stage": "segmenting", "done": 0, "total": 1, "tiles": total, "width": int(image.shape[1]),
              "height": int(image.shape[0])})
        last = [0.0]

        def progress(done: int, passes: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or done == passes:
                last[0] = now
                emit({"stage": "segmenting", "done": done, "total": passes, "tiles": total})

        done = model.segment(image, nodata, name, progress)
        emit({"stage": "drawing"})
        result = results.Result(name, model.name, image, done.mask, done.probs.astype(np.float16), done.nodata,
                                profile)
        kept = store.add(result)
        emit({"stage": "done", "result": results.page_payload(result, model.record, done, settings.preview_side,
                                                              kept)})

    @app.get("/api/results/{result_id}/{what}")
    async def result_file(result_id: str, what: str, request: Request) -> Response:
        result = store.get(result_id)
        if result is None:
            raise BadRequest("this result is no longer kept on the server (only the latest are); drop the image "
                             "on the page again", 404)
        if what not in ("mask.png", "mask.tif", "overlay.png", "probabilities.tif", "display.png"):
            raise BadRequest(f"there is no {what} for a result; ask mask.png, mask.tif, overlay.png, "
                             "probabilities.tif or display.png", 404)
        with gate.admit() as ticket:
            return await ticket.run(_result_file, result, what, dict(request.query_params))

    def _result_file(result: results.Result, what: str, query: dict[str, str]) -> Response:
        model = models.get(result.model)
        if model is None:
            raise BadRequest(f"the model {result.model} is no longer loaded; drop the image again", 404)
        record = model.record
        try:
            bands = results.parse_bands(query.get("bands"), result.image.shape[2])
        except ValueError as error:
            raise BadRequest(str(error)) from None
        attachment = {"Cache-Control": "no-store"}

        def named(filename: str) -> dict[str, str]:
            return {**attachment, "Content-Disposition": f'attachment; filename="{filename}"'}

        if what == "display.png":
            grid = results.preview_grid(result.image.shape[0], result.image.shape[1], settings.preview_side)
            chosen = bands or results.default_bands(result.image.shape[2])
            return Response(results.display_preview(result.image, grid, chosen), media_type="image/png",
                            headers=attachment)
        if what == "mask.png":
            data, ext, media = results.mask_file(record, result.mask, result.name)
            return Response(data, media_type=media, headers=named(f"{result.stem}{ext}"))
        if what == "mask.tif":
            if result.geo_profile is None:
                raise BadRequest("this image is not a GeoTIFF (or rasterio is not installed), so its mask has no "
                                 "georeferencing; download mask.png", 404)
            data = results.geo_mask_file(record, result.mask, result.probs, result.geo_profile)
            return Response(data, media_type="image/tiff", headers=named(f"{result.stem}.tif"))
        if what == "probabilities.tif":
            return Response(results.probabilities_file(result.probs), media_type="image/tiff",
                            headers=named(f"{result.stem}_prob.tif"))
        alpha = _number(query.get("alpha"), "alpha", OVERLAY_ALPHA, 0.0, 1.0)
        hidden = _indices(query.get("hide"), len(record.class_names))
        picture = overlay_image(result.image, result.mask, record, alpha, hidden=hidden, bands=bands)
        return Response(results.png(picture), media_type="image/png", headers=named(f"{result.stem}_overlay.png"))

    # --- the Label Studio ML backend ------------------------------------------------------------

    def health_body(model: ServedModel | None) -> dict:
        return {"status": "UP", "model_class": "unetkit", "models": list(models),
                "model": (model or models[default]).name}

    async def ls_setup(request: Request, model: ServedModel | None) -> JSONResponse:
        body = await _json(request, 1024 * 1024)
        chosen = model or _model_for_config(body.get("schema") or body.get("label_config"))
        return JSONResponse({"model_version": _version(chosen)})

    async def ls_predict(request: Request, model: ServedModel | None) -> JSONResponse:
        with gate.admit() as ticket:
            body = await _json(request, settings.max_upload_bytes * 4 // 3 + 1024 * 1024)
            tasks = body.get("tasks")
            if not isinstance(tasks, list):
                raise BadRequest("the request has no tasks list; send {\"tasks\": [...]} as Label Studio does")
            if len(tasks) > settings.max_tasks:
                raise BadRequest(f"the request holds {len(tasks)} tasks, over the limit of {settings.max_tasks}; "
                                 "send them in smaller batches")
            config = body.get("label_config")
            chosen = model or _model_for_config(config)
            return JSONResponse(await ticket.run(_ls_predict, chosen, tasks, config))

    def _ls_predict(model: ServedModel, tasks: list, config: str | None) -> dict:
        target = labelstudio.parse_label_config(config) or labelstudio.BrushTarget(labels=())
        pairs = labelstudio.class_labels(model.record, target)
        answers = []
        for number, task in enumerate(tasks, 1):
            reference, label = labelstudio.task_reference(task, target, number)
            data, name = read_reference(reference, settings.allow_folders, settings.max_upload_bytes,
                                        f"{label}'s image")
            image, nodata = _decode(model, data, f"{label}'s image ({name})")
            done = model.segment(image, nodata, name)
            answers.append({
                "result": labelstudio.brush_results(model.record, done.mask, done.probs, target, pairs),
                "score": results.confidence(done.probs, model.record.task),
                "model_version": _version(model),
            })
        return json_safe({"results": answers, "model_version": _version(model)})

    async def ls_webhook(request: Request) -> JSONResponse:
        await _json(request, 16 * 1024 * 1024)
        return JSONResponse({"status": "ok", "message": "this backend does not train; train with `unetkit train`"})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(health_body(None))

    @app.post("/setup")
    async def setup(request: Request) -> JSONResponse:
        return await ls_setup(request, None)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        return await ls_predict(request, None)

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        return await ls_webhook(request)

    @app.get("/models/{name:path}/health")
    async def model_health(name: str) -> JSONResponse:
        return JSONResponse(health_body(_model(name)))

    @app.post("/models/{name:path}/setup")
    async def model_setup(name: str, request: Request) -> JSONResponse:
        return await ls_setup(request, _model(name))

    @app.post("/models/{name:path}/predict")
    async def model_predict(name: str, request: Request) -> JSONResponse:
        return await ls_predict(request, _model(name))

    @app.post("/models/{name:path}/webhook")
    async def model_webhook(name: str, request: Request) -> JSONResponse:
        _model(name)
        return await ls_webhook(request)

    # --- helpers ---------------------------------------------------------------------------------

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return _error(str(error), error.status)

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        return _error(f"the server is busy ({gate.capacity} requests running or waiting); retry in a moment", 503,
                      {"Retry-After": "1"})

    for kind in (*user_errors(), SourceError):
        app.add_exception_handler(kind, _user_error)  # type: ignore[arg-type]

    async def _upload(request: Request):  # noqa: ANN202
        return await read_upload(request, settings.max_upload_bytes)

    def _model(name: str | None) -> ServedModel:
        if name is None or name == "":
            return models[default]
        if name not in models:
            raise BadRequest(f"there is no model named {name!r}; this server has {', '.join(models)}", 404)
        return models[name]

    def _model_for_config(config: str | None) -> ServedModel:
        """The model whose class names the labeling config's labels match best (the first on a tie)."""
        try:
            target = labelstudio.parse_label_config(config) if isinstance(config, str) else None
        except labelstudio.ProtocolError:
            return models[default]
        if target is None or not target.labels or len(models) == 1:
            return models[default]
        wanted = {label.lower() for label in target.labels}
        return max(models.values(), key=lambda m: len(wanted & {n.lower() for n in m.record.class_names}))

    return app


def _decode(model: ServedModel, data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The upload's pixels and no-data mask, read as `unetkit predict` reads a file."""
    image, nodata = read_image_bytes(data, name, include_alpha=model.record.include_alpha)
    model.record.check_bands(image.shape[2], name)
    return image, nodata


async def _json(request: Request, limit: int) -> dict:
    body = await read_body(request, limit, "the request")
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON; send a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body is not a JSON object; send {\"tasks\": [...]} as Label Studio does")
    return value


def _version(model: ServedModel) -> str:
    epoch = model.record.epoch
    return f"unetkit:{model.name}" + (f"@epoch{epoch}" if epoch is not None else "")


def _status(error: BaseException) -> int:
    if isinstance(error, (BadRequest, SourceError)):
        return error.status
    if isinstance(error, UnreadableFile) and "over the limit of" in error.reason:
        return 413
    if isinstance(error, UnreadableFile):
        return 415
    return 422 if isinstance(error, user_errors()) else 500


def _failure(error: BaseException) -> dict:
    status = _status(error)
    if status == 500:
        log.error("unexpected failure while segmenting", exc_info=error)
        return {"error": f"the server failed on this image ({type(error).__name__}); see the server's log",
                "status": 500}
    return {"error": _sentence(str(error)), "status": status}


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    return _error(str(error), _status(error))


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


def _error(text: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _sentence(text)}, status_code=status, headers=headers)


def _number(text: str | None, name: str, default: float, low: float, high: float) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a number; give a value from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={text!r} is out of range; give a value from {low:g} to {high:g}")
    return value


def _indices(text: str | None, count: int) -> list[int]:
    if not text:
        return []
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadRequest(f"hide={text!r}: give class indices separated by commas, such as 0,2") from None
    if any(not 0 <= v < count for v in values):
        raise BadRequest(f"hide={text!r}: class indices run from 0 to {count - 1}")
    return values


def _max_pixels() -> int | None:
    from unetkit.data.io import max_pixels

    return max_pixels()


__all__ = ["Gate", "ServerSettings", "Ticket", "create_app"]
