"""The `unetkit` command: parses arguments and calls the Python API, nothing more.

Each command group has one `_add_*` function that declares its flags and one `_run_*`
function per sub-command. User errors (`USER_ERRORS`) are printed as one line, without a
traceback, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from unetkit.errors import USER_ERRORS, UnetkitError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as error:
        print(f"unetkit: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("unetkit: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="U-Net semantic segmentation: train, evaluate, predict, and see how it works.",
    )
    from unetkit import __version__

    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_explain(commands)
    return parser


# --- shared argument types ---------------------------------------------------------------


def size_hw(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '67x45' -> (67, 45) (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write 256 or HxW such as 67x45") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write 256 or HxW such as 67x45")
    return values[0], values[1]


def norm_choice(text: str) -> str | None:
    """'none' means no normalisation layer (the conv keeps its bias)."""
    return None if text.lower() == "none" else text


def add_model_options(parser: argparse.ArgumentParser, in_channels: int, num_classes: int) -> None:
    """The UNet constructor's options, one flag each, named as the keyword arguments."""
    parser.add_argument("--in-channels", type=int, default=in_channels, help="input bands (default %(default)s)")
    parser.add_argument("--num-classes", type=int, default=num_classes, help="output channels (default %(default)s)")
    parser.add_argument("--depth", type=int, default=4, help="encoder levels (default %(default)s)")
    parser.add_argument("--base-channels", type=int, default=64, help="channels of level 1 (default %(default)s)")
    parser.add_argument(
        "--up-mode", default="transpose", choices=["transpose", "nearest", "bilinear"],
        help="decoder up-sampling (default %(default)s)",
    )
    parser.add_argument(
        "--norm", default="batch", type=norm_choice, choices=["batch", "instance", "group", None],
        help="batch, instance, group or none (default %(default)s)",
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate at the end of the encoder")
    parser.add_argument(
        "--padding", default="same", choices=["same", "valid"],
        help="same: output size = input size, any size; valid: the paper's unpadded convs",
    )


def model_kwargs(args: argparse.Namespace) -> dict:
    return {
        "in_channels": args.in_channels,
        "num_classes": args.num_classes,
        "depth": args.depth,
        "base_channels": args.base_channels,
        "up_mode": args.up_mode,
        "norm": args.norm,
        "dropout": args.dropout,
        "padding": args.padding,
    }


def print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


# --- explain -----------------------------------------------------------------------------


def _add_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="print a U-Net computation step by step")
    topics = explain.add_subparsers(title="topics", metavar="TOPIC")

    model = topics.add_parser(
        "model",
        help="the forward pass layer by layer: shapes, parameters, MACs, skips",
        description="Defaults print the classic table: 3 bands in, 5 classes, 256x256.",
    )
    add_model_options(model, in_channels=3, num_classes=5)
    model.add_argument("--size", type=size_hw, default=(256, 256), help="input size, 256 or HxW (default 256)")
    model.add_argument("--json", action="store_true", help="print JSON instead of the table")
    model.set_defaults(run=_run_explain_model)


def _run_explain_model(args: argparse.Namespace) -> int:
    from unetkit.nn import UNet, summarize

    with _meta_device():
        model = UNet(**model_kwargs(args))
    if args.padding == "valid":
        model.output_size(args.size)  # a one-line error naming the nearest valid sizes
    summary = summarize(model, args.size)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(summary.to_text())
    return 0


def _meta_device():
    """Build big models without allocating their weights: `explain` needs only shapes."""
    import torch

    return torch.device("meta")


__all__ = ["main", "build_parser", "UnetkitError"]
