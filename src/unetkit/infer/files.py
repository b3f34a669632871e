"""Which files to segment, and where each one's outputs go (never next to or over an input).

Inputs are files, folders (searched recursively for images) or glob patterns. Outputs
mirror the inputs' layout below their deepest common folder, so `a/x.png` and `b/x.png`
become OUT/a/x.png and OUT/b/x.png instead of overwriting each other; two inputs with the
same stem in one folder (x.png, x.tif) keep their full names (OUT/x.png.png, OUT/x.tif.png).
When OUT is a sub-folder of an input folder, OUT is not searched, so running twice does not
segment the previous run's masks; any plan that would overwrite an input is refused, and so
is one that would write over any existing file unless the user passed `--overwrite`
(replace) or `--resume` (keep what is there and do only the images not done yet).
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.atomic import remove_leftovers
from unetkit.data.io import IMAGE_EXTENSIONS
from unetkit.errors import UnetkitError

MASK_SUFFIXES = (".png", ".tif")
PROBABILITY_SUFFIXES = ("_prob.tif", "_prob.npy")
OVERLAY_SUFFIX = "_overlay.png"


@dataclass(frozen=True)
class Job:
    """One input image and the stem of its outputs (OUT/sub/folders/name, no extension)."""

    source: Path
    stem: Path

    def output(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def possible_outputs(self) -> list[Path]:
        return [self.output(s) for s in (*MASK_SUFFIXES, *PROBABILITY_SUFFIXES, OVERLAY_SUFFIX)]

    def outputs(self, probabilities: str | None = None, overlay: bool = False) -> list[Path]:
        """What this run may write for the job: the mask (.png or .tif) and the asked-for extras."""
        wanted = [*MASK_SUFFIXES]
        if probabilities is not None:
            wanted.append(f"_prob.{probabilities}")
        if overlay:
            wanted.append(OVERLAY_SUFFIX)
        return [self.output(s) for s in wanted]

    def done(self, probabilities: str | None = None, overlay: bool = False) -> bool:
        """Whether an earlier run already wrote this job's mask and extras (for --resume)."""
        mask, extras = self.outputs(probabilities, overlay)[:2], self.outputs(probabilities, overlay)[2:]
        return any(p.is_file() for p in mask) and all(p.is_file() for p in extras)


@dataclass(frozen=True)
class Plan:
    """The jobs to run, and the inputs that matched nothing (reported as failures)."""

    jobs: list[Job]
    missing: list[tuple[str, str]]
    skipped: list[Job] = field(default_factory=list)  # done by an earlier run (--resume)


def plan(inputs: list[str | Path], out: str | Path, *, probabilities: str | None = None, overlay: bool = False,
         overwrite: bool = False, resume: bool = False) -> Plan:
    """Expand `inputs` and give every image its output stem under `out`; refuses (one
    sentence) an `out` that would put outputs beside or over the inputs, or over any file
    that exists unless `overwrite` (replace it) or `resume` (skip the images already done)."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UnetkitError(f"--out {out} is a file; --out names a folder for the masks.")
    files, roots, missing = _expand([str(i) for i in inputs], out)
    if not files:
        shown = ", ".join(str(i) for i in inputs)
        raise UnetkitError(f"--input {shown}: no images found; pass image files, folders or patterns "
                           f"such as 'images/*.tif'.")
    base = Path(os.path.commonpath([*roots, *(f.parent for f in files)]))
    relative = [f.relative_to(base) for f in files]
    clashes = Counter(r.with_suffix("") for r in relative)
    jobs = [Job(f, out / (r.with_suffix("") if clashes[r.with_suffix("")] == 1 else r)) for f, r in zip(files, relative)]
    _refuse_overlaps(jobs, out)
    if overwrite and resume:
        raise UnetkitError("--overwrite and --resume contradict each other: replace the outputs, or keep them.")
    remove_leftovers(out, recursive=True)
    skipped = [job for job in jobs if job.done(probabilities, overlay)] if resume else []
    if not (overwrite or resume):
        existing = [p for job in jobs for p in job.outputs(probabilities, overlay) if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise UnetkitError(
                f"--out {out}: {existing[0]} already exists{more}, and unetkit never writes over a file: choose a "
                "new --out folder, pass --resume to do only the images not done yet, or --overwrite to replace them."
            )
    return Plan([job for job in jobs if job not in skipped], missing, skipped)


def _expand(inputs: list[str], out: Path) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    files: dict[Path, None] = {}
    roots: list[Path] = []
    missing: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            roots.append(path.resolve())
            found = _images_in(path.resolve(), out)
            if not found:
                missing.append((text, f"the folder {text} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
            files.update(dict.fromkeys(found))
        elif path.exists():
            files[path.resolve()] = None
        elif glob.has_magic(text):
            matches = [Path(m).resolve() for m in sorted(glob.glob(text, recursive=True))]
            found = [m for m in matches if m.is_file() and _is_image(m)]
            for folder in (m for m in matches if m.is_dir()):
                found += _images_in(folder, out)
            if not found:
                missing.append((text, f"the pattern {text} matches no images"))
            files.update(dict.fromkeys(found))
        else:
            missing.append((text, f"cannot read {text}: it does not exist; check the path"))
    return list(files), roots, missing


def _images_in(folder: Path, out: Path) -> list[Path]:
    """Images below `folder`, skipping hidden ones and, when OUT is a sub-folder of it, OUT."""
    skip = out if folder in out.parents else None
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not (skip and skip in p.parents)
    )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _refuse_overlaps(jobs: list[Job], out: Path) -> None:
    sources = {job.source for job in jobs}
    folders = {job.source.parent for job in jobs}
    for job in jobs:
        if job.stem.parent in folders:
            raise UnetkitError(
                f"--out {out}: the outputs of {job.source} would go into an input folder ({job.stem.parent}); "
                "predictions never go next to the inputs, so choose another --out folder."
            )
    owners: dict[Path, Path] = {}
    for job in jobs:
        for path in job.possible_outputs():
            if path in sources:
                raise UnetkitError(f"--out {out}: {path} is an input and would be overwritten; choose another --out.")
            if path in owners:
                raise UnetkitError(
                    f"--out {out}: {owners[path]} and {job.source} would both write {path}; rename one of them."
                )
            owners[path] = job.source


__all__ = ["Job", "Plan", "plan"]
