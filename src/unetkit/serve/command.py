"""What `unetkit serve` runs (its flags are declared in cli.py, with predict's).

`run` loads and warms every model, binds the socket, prints the address and serves until
Ctrl+C. Nothing heavy is imported at the top: torch, FastAPI and uvicorn load inside `run`.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MAX_UPLOAD_MB = 100
DEFAULT_SERVE_MAX_PIXELS = 64_000_000  # 8000 x 8000: what a page and a few waiting requests can hold


def run(args: argparse.Namespace) -> int:
    """Load the models, bind, serve until interrupted."""
    from unetkit.data.io import set_max_pixels
    from unetkit.errors import UnetkitError

    _check(args)
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UnetkitError("`unetkit serve` needs the serve extra: pip install 'unetkit[serve]'") from None
    set_max_pixels(args.max_pixels)  # cli.main sets it too; the server may also be run without it
    from unetkit.serve.app import ServerSettings, create_app
    from unetkit.serve.models import PredictorSettings, load_models
    from unetkit.serve.server import bind, is_loopback, serve_forever, url_of
    from unetkit.serve.sources import allowed_folders

    folders = tuple(allowed_folders(args.allow_folder))
    sock = bind(args.host, args.port)  # before loading: a port in use is said at once
    try:
        settings = PredictorSettings(tile=args.tile, overlap=args.overlap, tta=args.tta, batch_size=args.batch_size,
                                     device=args.device, precision=args.precision, threshold=args.threshold,
                                     rescale=args.rescale)
        models = load_models(args.model, settings, log=_say)
        server = ServerSettings(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers,
                                queue=args.queue, allow_folders=folders, keep_bytes=int(args.keep_mb * 1024 * 1024))
        app = create_app(models, server)
    except (UnetkitError, KeyboardInterrupt):
        sock.close()
        raise
    if not is_loopback(args.host):
        _say(f"warning: listening on {args.host}: anyone who can reach this machine can use the models "
             "(there is no login); use --host 127.0.0.1 to keep it to this machine")
    for folder in folders:
        _say(f"clients may read images under {folder}")
    _say(f"serving {len(models)} model(s) at {url_of(sock)} (open it in a browser; Ctrl+C stops)")
    try:
        serve_forever(app, sock, server.workers + server.queue, args.log_level)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled: stopping is the normal end
        pass
    _say("stopped")
    return 0


def _check(args: argparse.Namespace) -> None:
    from unetkit.errors import UnetkitError

    if not 0 <= args.port <= 65535:
        raise UnetkitError(f"--port {args.port} is not a port; give a number from 1 to 65535 (0: any free one)")
    if args.max_upload_mb <= 0:
        raise UnetkitError(f"--max-upload-mb {args.max_upload_mb:g} must be above 0; e.g. --max-upload-mb 100")
    if args.workers < 1:
        raise UnetkitError(f"--workers {args.workers} must be at least 1")
    if args.queue < 0:
        raise UnetkitError(f"--queue {args.queue} must be 0 or more")
    if args.keep_mb < 0:
        raise UnetkitError(f"--keep-mb {args.keep_mb:g} must be 0 or more (0: results are not kept for downloads)")


def _say(text: str) -> None:
    print(f"unetkit serve: {text}", file=sys.stderr, flush=True)


__all__ = ["DEFAULT_MAX_UPLOAD_MB", "DEFAULT_SERVE_MAX_PIXELS", "run"]
