"""The `unetkit` command: parses arguments and calls the Python API, nothing more.

Each command group has one `_add_*` function that declares its flags and one `_run_*`
function per sub-command. Every flag takes both spellings (`--batch-size` and
`--batch_size`) and has a help text; a wrong flag is answered with that sub-command's
usage. User errors (`user_errors()`) are printed as one line, without a traceback, and
exit with status 2; warnings as one `unetkit: warning:` line each. Building the parser
imports no torch, so `--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from unetkit.errors import UnetkitError, UnetkitWarning, user_errors

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "run"):
        getattr(args, "parser", parser).print_help()
        return EXIT_USER_ERROR
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        from unetkit import runtime

        runtime.configure()  # allocator and threads, before any tensor exists; UNETKIT_NO_TUNING=1 opts out
        if getattr(args, "max_pixels", None) is not None:
            from unetkit.data.io import set_max_pixels

            set_max_pixels(args.max_pixels)
        return int(args.run(args) or 0)
    except user_errors() as error:
        print(f"unetkit: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("unetkit: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    if issubclass(category, UnetkitWarning):
        print(f"unetkit: warning: {message}", file=sys.stderr)
    else:
        warnings._showwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, file, line))  # type: ignore[attr-defined]


class Parser(argparse.ArgumentParser):
    """argparse with both spellings of every multi-word flag, and errors that show the
    usage of the sub-command that failed (not the top level's)."""

    def add_argument(self, *names: str, **kwargs):  # type: ignore[override]
        return super().add_argument(*_spellings(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):  # type: ignore[override]
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument
        group.add_argument = lambda *names, **kw: plain(*_spellings(names), **kw)  # type: ignore[method-assign]
        return group

    def leaf(self, run) -> Parser:  # noqa: ANN001
        """Mark this parser as a command: it runs `run(args)` and owns its errors."""
        self.set_defaults(run=run, parser=self)
        return self


def _spellings(names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        out.append(name)
        if name.startswith("--") and ("_" in name or "-" in name[2:]):
            other = "--" + (name[2:].replace("_", "-") if "_" in name else name[2:].replace("-", "_"))
            if other not in names and other not in out:
                out.append(other)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unetkit",
        description="U-Net semantic segmentation: train, evaluate, predict, and see how it works. "
        "Run `unetkit COMMAND --help` for a command's flags.",
    )
    from unetkit import __version__

    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    _add_demo(commands)
    _add_train(commands)
    _add_predict(commands)
    _add_explain(commands)
    _add_data(commands)
    _add_serve(commands)
    return parser


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="a live bar on a terminal, a few lines in a log; --no-progress for none")


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest image read, in pixels (a guard against decompression bombs; "
                        "default 250,000,000)")


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
    """The UNet constructor's options (`UNetOptions`), one flag each, named as the options."""
    from dataclasses import fields

    from unetkit.nn.options import UNetOptions

    defaults = {"in_channels": in_channels, "num_classes": num_classes}
    for f in fields(UNetOptions):
        default = defaults.get(f.name, f.default)
        choices = f.metadata.get("choices")
        text = f"{f.metadata['help']} (default {'none' if default is None else default})"
        if choices is not None:
            parser.add_argument(f"--{f.name}", default=default, type=norm_choice if None in choices else str,
                                choices=list(choices), help=text, metavar="NAME")
        else:
            parser.add_argument(f"--{f.name}", type=type(default), default=default, help=text,
                                metavar="N" if isinstance(default, int) else "X")


def model_kwargs(args: argparse.Namespace) -> dict:
    from unetkit.nn.options import OPTION_NAMES

    return {name: getattr(args, name) for name in OPTION_NAMES}


def print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


# --- explain -----------------------------------------------------------------------------


def _add_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="print a U-Net computation step by step")
    explain.set_defaults(parser=explain)
    topics = explain.add_subparsers(title="topics", metavar="TOPIC", parser_class=Parser)

    model = topics.add_parser(
        "model",
        help="the forward pass layer by layer: shapes, parameters, MACs, skips",
        description="Defaults print the classic table: 3 bands in, 5 classes, 256x256.",
    )
    add_model_options(model, in_channels=3, num_classes=5)
    model.add_argument("--size", type=size_hw, default=(256, 256), help="input size, 256 or HxW (default 256)")
    model.add_argument("--json", action="store_true", help="print JSON instead of the table")
    model.leaf(_run_explain_model)

    transpose = topics.add_parser(
        "transpose",
        help="a transposed convolution: each input value stamps the scaled kernel on the output",
        description="Matrices are written row by row: \"1 2; 3 4\". The convention decides the output size "
        "and crop: keras (default) or torch.",
    )
    transpose.add_argument("--input", default="1 2; 3 4", help="input matrix (default \"%(default)s\")")
    transpose.add_argument("--kernel", default="1 2; 3 4", help="kernel matrix (default \"%(default)s\")")
    transpose.add_argument("--stride", type=int, default=2, help="stride (default %(default)s)")
    transpose.add_argument("--padding", default="valid", help="valid, same or a number of pixels (default %(default)s)")
    transpose.add_argument("--output-padding", type=int, default=None, help="extra rows/columns at the end")
    transpose.add_argument(
        "--convention", choices=["keras", "torch"], default=None,
        help="output size and crop: keras (the default) or torch",
    )
    transpose.add_argument("--bias", type=float, default=0.0, help="added to every output (default 0)")
    transpose.add_argument("--json", action="store_true", help="print JSON instead of text")
    transpose.leaf(_run_explain_transpose)

    upsample = topics.add_parser(
        "upsample", help="parameter-free up-sampling: rows repeated (or interpolated), then columns"
    )
    upsample.add_argument("--input", default="1 2; 3 4", help="input matrix (default \"%(default)s\")")
    upsample.add_argument("--scale", type=int, default=2, help="scale factor (default %(default)s)")
    upsample.add_argument("--mode", choices=["nearest", "bilinear"], default="nearest", help="default nearest")
    upsample.add_argument("--json", action="store_true", help="print JSON instead of text")
    upsample.leaf(_run_explain_upsample)

    conv = topics.add_parser("conv", help="an ordinary convolution: each output reads one window of the input")
    conv.add_argument("--input", default="1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16",
                      help="input matrix, rows separated by ';' (default the 4x4 of 1..16)")
    conv.add_argument("--kernel", default="0 1 2; 2 2 0; 0 1 2", help="kernel matrix (default \"%(default)s\")")
    conv.add_argument("--stride", type=int, default=1, help="stride (default %(default)s)")
    conv.add_argument("--padding", default="0", help="valid, same or a number of pixels (default %(default)s)")
    conv.add_argument("--bias", type=float, default=0.0, help="added to every output (default 0)")
    conv.add_argument("--json", action="store_true", help="print JSON instead of text")
    conv.leaf(_run_explain_conv)

    soft = topics.add_parser("softmax", help="logits -> class probabilities, the arg-max, the loss gradient p - y")
    soft.add_argument(
        "--logits", default="2.1 -0.5 -1.2 0.3 -0.8",
        help="class scores (default \"%(default)s\"); write --logits=\"-1 2\" when the first is negative",
    )
    soft.add_argument("--target", type=int, default=None, help="true class: adds the cross-entropy and p - y")
    soft.add_argument("--json", action="store_true", help="print JSON instead of text")
    soft.leaf(_run_explain_softmax)

    backward = topics.add_parser(
        "backward",
        help="the gradient through a small U-Net: shapes, the split at every skip, what skips do",
        description="A seeded depth-2 U-Net (8x8x1 -> 4 -> 8 -> 16 channels -> 8x8x2) on a synthetic cell image.",
    )
    backward.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    backward.add_argument("--up-mode", default="transpose", choices=["transpose", "nearest", "bilinear"],
                          help="decoder up-sampling of the small U-Net (default transpose)")
    backward.add_argument(
        "--norm", default=None, type=norm_choice, choices=["batch", None], help="none (default) or batch"
    )
    backward.add_argument("--pixel", default="4,4", help="the pixel whose loss is shown, ROW,COL (default 4,4)")
    backward.add_argument("--json", action="store_true", help="print JSON instead of text")
    backward.leaf(_run_explain_backward)


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


def _run_explain_transpose(args: argparse.Namespace) -> int:
    from unetkit.reference.explain import explain_transpose

    return _run_explain_print(args, explain_transpose(
        args.input, args.kernel, stride=args.stride, padding=args.padding,
        output_padding=args.output_padding, convention=args.convention, bias=args.bias,
    ))


def _run_explain_upsample(args: argparse.Namespace) -> int:
    from unetkit.reference.explain import explain_upsample

    return _run_explain_print(args, explain_upsample(args.input, scale=args.scale, mode=args.mode))


def _run_explain_conv(args: argparse.Namespace) -> int:
    from unetkit.reference.explain import explain_conv

    return _run_explain_print(args, explain_conv(
        args.input, args.kernel, stride=args.stride, padding=args.padding, bias=args.bias
    ))


def _run_explain_softmax(args: argparse.Namespace) -> int:
    from unetkit.reference.explain import explain_softmax

    return _run_explain_print(args, explain_softmax(args.logits, target=args.target))


def _run_explain_backward(args: argparse.Namespace) -> int:
    from unetkit.reference.explain import explain_backward, parse_pixel

    return _run_explain_print(args, explain_backward(
        seed=args.seed, up_mode=args.up_mode, norm=args.norm, pixel=parse_pixel(args.pixel)
    ))


def _run_explain_print(args: argparse.Namespace, explanation) -> int:
    """Print an `explain` topic from reference/: its JSON with --json, else its text."""
    if args.json:
        print_json(explanation.to_dict())
    else:
        print(explanation.to_text())
    return 0


def _meta_device():
    """Build big models without allocating their weights: `explain` needs only shapes."""
    import torch

    return torch.device("meta")


# --- demo ----------------------------------------------------------------------------------


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="the whole job on generated cells: data, train, evaluate, predict, export, report"
    )
    demo.add_argument("--out", default="demo-run", help="folder for everything; an earlier demo's folder is "
                      "replaced, any other is refused (default %(default)s)")
    demo.add_argument("--scenes", action="store_true", help="also the 5-class road-scene set")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the weights (default 0)")
    add_progress(demo)
    demo.leaf(_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from unetkit.demo import run_demo

    result = run_demo(args.out, scenes=args.scenes, seed=args.seed, progress=args.progress)
    print(result.to_text())
    return 0


# --- train and evaluate ----------------------------------------------------------------------


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a U-Net on a data set folder",
        description="Every setting is a field of TrainConfig and a flag of the same name "
        "(--patch_size or --patch-size). Flags override --config run.yaml.",
    )
    train.add_argument("--config", dest="config_file", help="YAML file of settings (field: value)")
    _add_config_flags(train)
    train.leaf(_run_train)

    evaluate = commands.add_parser("evaluate", help="score a trained model on a split of a data set")
    evaluate.add_argument("--model", required=True, help="RUN_DIR/best, any model folder, or an exported .onnx file")
    evaluate.add_argument("--data", required=True, help="the data set folder")
    evaluate.add_argument("--split", default="val", choices=["train", "val", "test"],
                          help="which split to score, as the model was trained with it (default val)")
    evaluate.add_argument("--out", help="where to write summary.json, per_image.csv, confusion.png and the predicted "
                          "masks (default: RUN_DIR/eval beside the model folder)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")
    evaluate.add_argument("--rand-objects", dest="rand_objects", default="auto",
                          choices=["auto", "foreground", "background"],
                          help="regions the adapted Rand error compares (auto: background for membrane-like classes)")
    evaluate.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    add_inference_options(evaluate)
    add_progress(evaluate)
    add_max_pixels(evaluate)
    evaluate.leaf(_run_evaluate)

    plan = commands.add_parser(
        "plan", help="the recipe `train --minutes N` would use on this machine, with the reasons (no training)",
        description="Reads the data set (the data check and its fingerprint: sizes, bands, classes, objects), "
        "measures training steps of candidate networks on this machine (cached), and prints the recipe that "
        "fits N minutes, each choice with its reason. Training flags given here win over the plan, as in train.")
    plan.add_argument("--data", required=True, help="the data set folder")
    plan.add_argument("--minutes", type=float, required=True, help="the time budget of the whole run, in minutes")
    plan.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                      help="plan for this device (default auto: cuda, then mps, then cpu)")
    plan.add_argument("--set", dest="settings", nargs="*", default=[], metavar="NAME=VALUE",
                      help="training settings you fix yourself, e.g. --set base_channels=32 patch_size=256")
    plan.add_argument("--json", action="store_true", help="print the plan (fingerprint, probe, recipe) as JSON")
    plan.leaf(_run_plan)

    report = commands.add_parser("report", help="write RUN_DIR/report.html: curves, scores, worst samples")
    report.add_argument("run_dir", help="the --out folder of `unetkit train`")
    report.add_argument("--data", help="the data set (default: the one the run was trained on)")
    report.add_argument("--samples", type=int, default=12, help="validation samples to show, worst first (default 12)")
    report.add_argument("--overwrite", action="store_true", help="replace RUN_DIR/report.html if it exists")
    report.leaf(_run_report)


def _run_plan(args: argparse.Namespace) -> int:
    from unetkit.api import plan
    from unetkit.plan.fingerprint import Fingerprint

    given = {}
    for item in args.settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise UnetkitError(f"--set {item!r}: write NAME=VALUE, e.g. --set base_channels=32.")
        given[name.replace("-", "_")] = value
    recipe = plan(args.data, args.minutes, device=args.device, **given)
    if args.json:
        print_json(recipe.to_dict())
    else:
        print(Fingerprint.from_dict(recipe.fingerprint).to_text())
        print(recipe.to_text())
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from unetkit.report.html import build_report

    print(f"wrote {build_report(args.run_dir, data=args.data, samples=args.samples, overwrite=args.overwrite)}")
    return 0


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, named as the field (both spellings), with its help text,
    allowed values and real default; unset flags stay out of the namespace."""
    from dataclasses import fields

    from unetkit.train.config import TrainConfig, field_type

    groups = {"model": parser.add_argument_group("the network (UNet options)")}
    for f in fields(TrainConfig):
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        base, optional, is_list = field_type(f)
        target = groups.get(f.metadata.get("group"), parser)
        choices = f.metadata.get("choices")
        shown = f.metadata.get("default_text") or ("none" if f.default is None else _show_default(f.default))
        text = f.metadata.get("help", "")
        if choices:
            text += " (" + ", ".join("none" if c is None else str(c) for c in choices) + ")"
        text += f"; default: {shown}"
        if f.name == "resume":
            target.add_argument(*names, dest=f.name, nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="RUN_DIR", help=text)
        elif base is bool:  # --flag / --no-flag; an optional one unset means "decide" (None)
            target.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        else:
            metavar = "N" if base is int else "X" if base is float else "DIR" if f.name in ("data", "out") \
                else "NAME" if choices else base.__name__.upper()
            target.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                                nargs="+" if is_list else None, help=text.replace("%", "%%"))


def _show_default(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "none"


def _run_train(args: argparse.Namespace) -> int:
    from unetkit.train import TrainConfig, train
    from unetkit.train.config import load_yaml

    values = load_yaml(args.config_file) if args.config_file else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("run", "parser", "config_file")}
    config = TrainConfig.from_dict({**values, **flags}, source="flags" if flags else "the config")
    from unetkit.report.plots import draw_progress

    run = train(config, on_epoch=draw_progress)
    if not run.is_main:
        return 0
    best = "none" if run.best_metric is None else f"{run.best_metric:.4f} at epoch {run.best_epoch}"
    where = f"model in {run.best}" if run.best.is_dir() else "no model saved yet"
    print(f"done ({run.stopped}): best validation Dice {best}; {where}; resume with --resume {run.out}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unetkit.infer.evaluate import evaluate, format_table
    from unetkit.model.store import resolve_folder
    from unetkit.report.plots import plot_confusion

    model = Path(args.model) if args.model.lower().endswith(".onnx") else resolve_folder(args.model)
    out = Path(args.out) if args.out else model.parent / "eval"
    summary = evaluate(model, args.data, split=args.split, out=out, threshold=args.threshold,
                       rand_objects=args.rand_objects, device=args.device, precision=args.precision,
                       tile=args.tile, overlap=args.overlap, tta=args.tta, batch_size=args.batch_size,
                       overwrite=args.overwrite, progress=args.progress)
    if summary["task"] != "multilabel":
        plot_confusion(summary["confusion"], [c["name"] for c in summary["per_class"]], out / "confusion.png")
    if args.json:
        print_json({k: v for k, v in summary.items() if k != "per_image"})
    else:
        print(format_table(summary))
        print(f"wrote {out / 'summary.json'}, {out / 'per_image.csv'}, {out / 'predictions'}/")
    return 0


# --- data --------------------------------------------------------------------------------


def _add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="check a data set, or convert a public one to the standard layout")
    data.set_defaults(parser=data)
    topics = data.add_subparsers(title="data commands", metavar="COMMAND", parser_class=Parser)

    check = topics.add_parser(
        "check",
        help="summarise a data set and list every problem that would corrupt training",
        description="DIR holds images/ and masks/ (paired by file name), optionally classes.json and "
        "splits/{train,val,test}.txt. Exit status 1 when a problem would corrupt training.",
    )
    check.add_argument("dir", metavar="DIR", help="the data set folder")
    check.add_argument("--val-fraction", type=float, default=0.2,
                       help="validation share when there is no splits/val.txt (default %(default)s)")
    check.add_argument("--ignore-nodata", action="store_true",
                       help="check as training with --ignore_nodata would: labelled pixels without data left out")
    add_max_pixels(check)
    check.add_argument("--seed", type=int, default=0, help="seed of the validation draw (default %(default)s)")
    check.add_argument("--task", choices=["binary", "multiclass", "multilabel"], default=None,
                       help="override the task inferred from the masks")
    check.add_argument("--include-alpha", action="store_true", help="keep the alpha band of RGBA images")
    check.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    check.leaf(_run_data_check)

    from unetkit.data.sources import SOURCES

    prepare = topics.add_parser(
        "prepare",
        help="convert a downloaded public data set to images/ + masks/ (nothing is downloaded)",
        description="Sources: " + "; ".join(f"{name}: {source.where}" for name, source in SOURCES.items()),
    )
    prepare.add_argument("name", metavar="NAME", choices=sorted(SOURCES), help=", ".join(sorted(SOURCES)))
    prepare.add_argument("--src", default=None, help="the folder the downloaded data set was unpacked in")
    prepare.add_argument("--out", required=True, help="the new data set folder (must not exist or be empty)")
    prepare.leaf(_run_data_prepare)

    synth = topics.add_parser(
        "synth",
        help="write a generated data set (cells, scenes, multispectral) for demos and tests",
        description="cells: 1-band microscopy, touching cells split by thin gaps (binary); scenes: RGB road "
        "scenes, 5 classes; multispectral: 10-band TIFFs, 5 land-cover classes. Same seed, same files.",
    )
    synth.add_argument("name", metavar="NAME", choices=["cells", "scenes", "multispectral"],
                       help="cells, scenes or multispectral")
    synth.add_argument("--count", type=int, default=200, help="image/mask pairs (default %(default)s)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default %(default)s)")
    synth.add_argument("--out", required=True, help="the new data set folder (must not exist or be empty)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    synth.leaf(_run_data_synth)


def _run_data_check(args: argparse.Namespace) -> int:
    from unetkit.data.check import check_dataset

    report = check_dataset(args.dir, val_fraction=args.val_fraction, seed=args.seed, task=args.task,
                           include_alpha=args.include_alpha, ignore_nodata=args.ignore_nodata)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.to_text())
    return 0 if report.ok else 1


def _run_data_prepare(args: argparse.Namespace) -> int:
    from unetkit.data.sources import prepare

    result = prepare(args.name, args.src, args.out)
    print(result.to_text())
    return 0


def _run_data_synth(args: argparse.Namespace) -> int:
    from unetkit.data.synth import write_dataset

    summary = write_dataset(args.name, args.out, count=args.count, size=args.size, seed=args.seed)
    print(summary.to_text())
    return 0


# --- predict and export ----------------------------------------------------------------------


def _add_predict(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="segment images (files, folders, glob patterns) with a trained model",
        description="Bands, normalisation, classes, task and threshold come from the model. Images larger "
        "than --tile are segmented tile by tile with Gaussian-weighted blending. Writes OUT/<name>.png "
        "(class ids, class colours as palette), and OUT/<name>.tif for GeoTIFF inputs; exit status 1 "
        "when some inputs could not be read or written (the others are still done).",
    )
    predict.add_argument("--model", required=True, help="RUN_DIR/best, a model folder, or an exported .onnx file")
    predict.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image files, folders, or patterns")
    predict.add_argument("--out", required=True, help="output folder (never an input folder)")
    predict.add_argument("--probabilities", nargs="?", const="tif", choices=["tif", "npy"],
                         help="also write probabilities, float16, one band per class: tif (default) or npy")
    predict.add_argument("--overlay", action="store_true", help="also write the image with the classes blended in")
    predict.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"],
                         help="auto: onnx for a .onnx model, torch otherwise")
    predict.add_argument("--rescale", default="auto", choices=["auto", "none"],
                         help="auto: an image of another integer dtype than the training images (16-bit for an "
                         "8-bit model) is scaled to their range, with a warning; none: used as it is")
    add_inference_options(predict)
    predict.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    predict.add_argument("--resume", action="store_true",
                         help="keep the outputs already in --out and segment only the images not done yet")
    add_progress(predict)
    add_max_pixels(predict)
    predict.leaf(_run_predict)

    export = commands.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript, checked against PyTorch",
        description="Batch, height and width stay dynamic (padding to a multiple of 2**depth happens inside "
        "the graph). The file is written only if it matches PyTorch within 1e-4 on new input sizes.",
    )
    export.add_argument("--model", required=True, help="RUN_DIR/best or a model folder")
    export.add_argument("--format", default="onnx", choices=["onnx", "torchscript"],
                        help="onnx (predict can run it with onnxruntime) or torchscript (default onnx)")
    export.add_argument("--out", required=True, help="the file to write (FILE.onnx for ONNX)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.leaf(_run_export)


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """How the model runs over an image: shared by predict and evaluate, which score the same output."""
    parser.add_argument("--tile", type=int, help="tile side in pixels (default: twice the training patch size)")
    parser.add_argument("--overlap", type=float, default=0.5, help="tile overlap, a fraction of the tile "
                        "(default %(default)s)")
    parser.add_argument("--tta", default="none", choices=["none", "flips", "full"],
                        help="test-time augmentation: none, flips (4), or full (flips and 90-degree turns, 8); "
                        "default none")
    parser.add_argument("--threshold", type=float, help="binary/multilabel threshold (default: the model's)")
    parser.add_argument("--batch-size", type=int, help="tiles (or small images) per forward pass (default: about "
                        "512 x 512 pixels of tiles on the CPU, 4 on a GPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run (default auto: cuda, then mps, then cpu)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: bf16 where it measures faster on this CPU, bf16/fp16 on CUDA")


def _add_serve(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`unetkit serve`: its flags here, what it runs in unetkit.serve.command."""
    from unetkit.serve.command import DEFAULT_MAX_UPLOAD_MB, DEFAULT_SERVE_MAX_PIXELS, run
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
    add_inference_options(parser)
    parser.add_argument("--rescale", default="auto", choices=["auto", "none"],
                        help="auto: an image of another integer dtype than the training images is scaled to "
                        "their range; none: used as it is")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="server log detail; info logs each request (default %(default)s)")
    parser.leaf(run)
    return parser


def _run_predict(args: argparse.Namespace) -> int:
    from unetkit.infer.predictor import Predictor
    from unetkit.infer.run import predict_files

    predictor = Predictor(args.model, tile=args.tile, overlap=args.overlap, tta=args.tta, threshold=args.threshold,
                          batch_size=args.batch_size, engine=args.engine, device=args.device,
                          precision=args.precision, progress=args.progress, rescale=args.rescale)
    report = predict_files(predictor, args.input, args.out, probabilities=args.probabilities,
                           overlay=args.overlay, progress=args.progress, overwrite=args.overwrite, resume=args.resume)
    if report.is_main:  # under torchrun the other processes' reports are gathered here
        for _, reason in report.failed:
            print(f"unetkit: skipped: {reason}", file=sys.stderr)
        earlier = f", {len(report.skipped)} done earlier" if report.skipped else ""
        print(f"segmented {len(report.done)} image(s) into {args.out} ({len(report.written)} files){earlier}; "
              f"{len(report.failed)} failed")
    return 1 if report.failed else 0


def _run_export(args: argparse.Namespace) -> int:
    from unetkit.infer.export import export

    print(export(args.model, args.out, format=args.format, overwrite=args.overwrite).to_line())
    return 0


__all__ = ["main", "build_parser", "UnetkitError"]
