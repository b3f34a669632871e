"""The `unetkit serve` sub-command: its flags (`add_parser`) and what it runs (`run`).

cli.py calls `add_parser(commands)` while building its parser, so this module imports
nothing heavy at the top: torch, FastAPI and uvicorn load inside `run`, and `unetkit --help`
stays instant. `run` loads and warms every model, binds the socket, prints the address and
serves until Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MAX_UPLOAD_MB = 100
DEFAULT_SERVE_MAX_PIXELS = 64_000_000  # 8000 x 8000: what a page and a few waiting requests can hold


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare `serve` on cli.py's sub-command set (whose parser class is `unetkit.cli.Parser`)."""
    parser = commands.add_parser(
        "serve",
        help="serve trained models: a web page, a JSON API and a Label Studio ML backend",
        description="Loads each --model once and keeps it warm. Open the printed address in a browser to "
        "segment images by dropping them on the page; POST /api/predict returns the mask `unetkit predict` "
        "writes; Label Studio connects to the same address as an ML backend. Binds 127.0.0.1 (this machine "
        "only) unless --host says otherwise; writes nothing to disk.",
    )
    parser.add_argument("--model", required=True, action="append", metavar="[NAME=]PATH",
                        help="RUN_DIR/best, a model folder or an exported .onnx file; repeat for more models "
                        "(the first is the default; NAME= names it in requests)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for every "
                        "network, with no login)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on, 0 for any free one "
                        "(default %(default)s)")
    parser.add_argument("--allow-folder", action="append", default=[], metavar="DIR",
                        help="a folder whose images clients may name by path (Label Studio local files or "
                        "uploads); repeat for more; without it no file is opened")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help="largest upload or image file read, in megabytes (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_SERVE_MAX_PIXELS, metavar="N",
                        help="largest image decoded, in pixels, checked from the file header (a guard against "
                        "decompression bombs; default 64,000,000 when serving)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="images segmented at the same time (default %(default)s; each model runs one "
                        "image at a time)")
    parser.add_argument("--queue", type=int, default=8, metavar="N",
                        help="requests that may wait for a worker; more are answered 503 (default %(default)s)")
    parser.add_argument("--keep-mb", type=float, default=1024, metavar="MB",
                        help="memory for the page's latest results, kept for downloads (default %(default)s)")
    parser.add_argument("--tile", type=int, help="tile side in pixels (default: twice the training patch size)")
    parser.add_argument("--overlap", type=float, default=0.5, help="tile overlap, a fraction of the tile "
                        "(default %(default)s)")
    parser.add_argument("--tta", default="none", choices=["none", "flips", "full"],
                        help="test-time augmentation: none, flips (4) or full (8); default none")
    parser.add_argument("--threshold", type=float, help="binary/multilabel threshold (default: the model's)")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass (default: about 512 x 512 pixels "
                        "of tiles on the CPU, 4 on a GPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run (default auto: cuda, then mps, then cpu)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: bf16 where it measures faster on this CPU, bf16/fp16 on CUDA")
    parser.add_argument("--rescale", default="auto", choices=["auto", "none"],
                        help="auto: an image of another integer dtype than the training images is scaled to "
                        "their range; none: used as it is")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="server log detail; info logs each request (default %(default)s)")
    parser.leaf(run)  # type: ignore[attr-defined]  (unetkit.cli.Parser)
    return parser


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


__all__ = ["add_parser", "run"]
