"""Tiled prediction of one very large image: wall time and peak memory (RSS).

The claim under test: memory is bounded by the tile batch plus one float32 running average
per class over the image, never by a forward pass of the whole image. A 10000 x 10000 one-band
image with a depth-4, base-32 U-Net (2 classes) must stay well under 4 GiB on the CPU.

    .venv/bin/python benchmarks/predict_large.py                 # the 10000 x 10000 case
    .venv/bin/python benchmarks/predict_large.py --size 2000     # a quick look

Prints one JSON line; with --out also writes it to a file. Peak RSS is the process's
maximum resident set size (resource.getrusage), which includes torch itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unetkit.infer import Predictor
from unetkit.nn import UNet


def rss_now_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="image side in pixels (default %(default)s)")
    parser.add_argument("--patch-size", type=int, default=256, help="training patch; the tile is twice it")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=args.classes, depth=4, base_channels=32).eval()
    meta = {"task": "multiclass", "threshold": 0.5, "train": {"patch_size": args.patch_size},
            "data": {"task": "multiclass", "in_channels": 1, "mean": [127.5], "std": [73.6],
                     "classes": [{"id": i, "name": str(i), "color": [0, 0, 0]} for i in range(args.classes)]}}
    predictor = Predictor(model, meta=meta, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                          precision=args.precision, progress=sys.stderr.isatty())
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size), dtype=np.uint8)
    before = rss_now_mib()

    start = time.perf_counter()
    mask = predictor.predict(image)
    seconds = time.perf_counter() - start

    tiles = predictor.tile_count(args.size, args.size)
    result = {
        "size": f"{args.size}x{args.size}",
        "model": f"UNet depth 4, base 32, 1 band -> {args.classes} classes",
        "tile": predictor.tile, "overlap": args.overlap, "batch_size": args.batch_size, "tiles": tiles,
        "precision": predictor.engine.precision, "threads": torch.get_num_threads(),
        "cpus": len(os.sched_getaffinity(0)), "load_average_1min": os.getloadavg()[0],
        "wall_s": round(seconds, 1),
        "tile_pixels_per_s": round(tiles * predictor.tile**2 / seconds),
        "rss_before_predict_mib": round(before),
        "peak_rss_mib": round(peak_rss_mib()),
        "running_average_mib": round(args.classes * args.size**2 * 4 / 2**20),
        "mask_dtype": str(mask.dtype),
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
