"""Segment many files: read, predict (small images batched together), decode, write.

A file that cannot be read, has the wrong band count or cannot be written is reported and
skipped; the others are still done, and the caller learns which ones failed (the CLI exits
non-zero). One image is held at a time unless images are small enough to share a batch.

Under torchrun (`torchrun --nproc_per_node N -m unetkit predict ...`, on one machine or many)
every process plans the same outputs and makes the same checks, then takes every N-th image:
each image is done once, the files are those of one process, and the report (failures
included, each once) is gathered on every process; rank 0 prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.io import read_geo_profile, read_image_nodata
from unetkit.errors import UnetkitError
from unetkit.infer.files import Job, plan
from unetkit.infer.outputs import PROBABILITY_FORMATS, write_outputs
from unetkit.infer.predictor import Predictor
from unetkit.model.device import join_process_group, leave_process_group
from unetkit.progress import bar as progress_bar


@dataclass
class FilesReport:
    """What `predict_files` did: images done, files written, and (input, reason) failures."""

    done: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already done by an earlier run (--resume)
    is_main: bool = True  # False on the other processes of a distributed run (rank 0 prints)


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out: str | Path, *,
                  probabilities: str | None = None, overlay: bool = False, progress: bool = False,
                  overwrite: bool = False, resume: bool = False) -> FilesReport:
    """Segment every image in `inputs` (files, folders, glob patterns) into `out`; existing
    files are refused unless `overwrite` (replace) or `resume` (skip images already done)."""
    if probabilities is not None and probabilities not in PROBABILITY_FORMATS:
        raise UnetkitError(f"--probabilities {probabilities!r}: use tif or npy.")
    rank, world, owned = join_process_group()
    try:
        jobs = plan(list(inputs), out, probabilities=probabilities, overlay=overlay, overwrite=overwrite,
                    resume=resume)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # nobody writes before every process has checked and tidied --out
        report = FilesReport(failed=list(jobs.missing) if rank == 0 else [],
                             skipped=[job.source for job in jobs.skipped] if rank == 0 else [], is_main=rank == 0)
        _segment(predictor, jobs.jobs[rank::world], report, probabilities, overlay, resume, progress and rank == 0)
        return _gathered(report) if world > 1 else report
    finally:
        leave_process_group(owned)


def _segment(predictor: Predictor, jobs: list[Job], report: FilesReport, probabilities: str | None, overlay: bool,
             resume: bool, progress: bool) -> None:
    pending: list[tuple[Job, np.ndarray, np.ndarray | None]] = []

    def finish(batch: list[tuple[Job, np.ndarray, np.ndarray | None]]) -> None:
        results = predictor.predict_many([image for _, image, _ in batch], [str(job.source) for job, _, _ in batch],
                                         [nodata for _, _, nodata in batch])
        for (job, image, _), probs in zip(batch, results):
            _write(job, image, probs, predictor, report, probabilities, overlay, resume)

    with progress_bar(len(jobs), "predict", "image", progress and len(jobs) > 1) as bar:
        for job in jobs:
            read = _read(job, predictor, report)
            if read is not None and predictor.tile_count(*read[0].shape[:2]) == 1:
                pending.append((job, *read))
                if len(pending) == predictor.batch_size:
                    finish(pending)
                    bar.update(len(pending))
                    pending = []
                continue
            if read is not None:
                finish([(job, *read)])
            bar.update(1)
        if pending:
            finish(pending)
            bar.update(len(pending))


def _gathered(report: FilesReport) -> FilesReport:
    """Every process's report, joined (on every process)."""
    import torch.distributed as dist

    reports: list[FilesReport | None] = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report)
    joined = FilesReport(is_main=report.is_main)
    for part in reports:
        assert part is not None
        joined.done += part.done
        joined.written += part.written
        joined.failed += part.failed
        joined.skipped += part.skipped
    return joined


def _read(job: Job, predictor: Predictor, report: FilesReport) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The image and where it has no data, or None (reported) when it cannot be used."""
    try:
        image, nodata = read_image_nodata(job.source, include_alpha=predictor.record.include_alpha)
        predictor.record.check_bands(image.shape[2], str(job.source))  # the rest of `prepare` runs once, later
        return image, nodata
    except UnetkitError as error:
        report.failed.append((str(job.source), str(error)))
        return None


def _write(job: Job, image: np.ndarray, probs: np.ndarray, predictor: Predictor, report: FilesReport,
           probabilities: str | None, overlay: bool, keep_existing: bool) -> None:
    try:
        mask = predictor.decode(probs)
        profile = read_geo_profile(job.source)
        report.written += write_outputs(job, image, probs, mask, predictor.record, probabilities=probabilities,
                                        overlay=overlay, geo_profile=profile, keep_existing=keep_existing)
        report.done.append(job.source)
    except UnetkitError as error:
        report.failed.append((str(job.source), str(error)))


__all__ = ["FilesReport", "predict_files"]
