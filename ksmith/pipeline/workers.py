"""Run a stage's cells one after another, or side by side in worker processes.

The cells of a stage are independent (each reads the base model and writes its own folder, and
seeds itself), so they can run in any order and in parallel with the same results. On a small
model one torch thread per cell leaves the other cores idle; `workers` processes with
`threads` threads each use them. Workers are *spawned* (never forked from a process that has
already started torch's thread pools) and run the longest cells first, so that the stage ends
with short cells rather than one long straggler.

An error in any cell stops the stage: cells not yet started are cancelled and the error is
raised in the parent with the cell named, so the caller's atomic output folder is discarded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One cell's work: ``fn(*args, **kwargs)``. `fn` must be a module-level function (workers
    import it); `cost` orders the jobs, largest first."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    cost: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


class CellFailed(KsmithError):
    """A cell raised; the message names the cell and carries the original error."""


# Set in the workers' environment from their start (tqdm reads its defaults when imported):
# the parent shows one bar for the stage, so the cells' own bars are off.
WORKER_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _init_worker(threads: int) -> None:
    import torch

    from ksmith.runtime import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ inside the block (so processes started there inherit them),
    and the previous values restored after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _call(job: Job) -> tuple[str, str | None]:
    """Run one job; errors come back as text (exception objects may not survive pickling)."""
    try:
        job.fn(*job.args, **job.kwargs)
    except KsmithError as e:
        return job.name, str(e)
    except Exception:  # an unexpected failure: keep its traceback for the report
        return job.name, traceback.format_exc()
    return job.name, None


def run_jobs(
    jobs: Sequence[Job], *, workers: int = 1, threads: int = 1, desc: str = "cells"
) -> None:
    """Run every job, with a progress bar over jobs. ``workers == 1`` runs them in this process
    (in the given order); more run the largest-cost jobs first in a pool of spawned processes."""
    from tqdm import tqdm

    if workers < 1:
        raise KsmithError(f"workers must be at least 1, got {workers}")
    workers = min(workers, len(jobs))
    if workers <= 1:
        for job in tqdm(jobs, desc=desc, unit="cell"):
            name, error = _call(job)
            if error is not None:
                raise CellFailed(f"cell {name}: {error}")
        return
    ordered = sorted(jobs, key=lambda j: -j.cost)
    context = multiprocessing.get_context("spawn")
    with (
        _environment(WORKER_ENV),
        ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
        ) as pool,
        tqdm(total=len(jobs), desc=f"{desc} ({workers} workers)", unit="cell") as bar,
    ):
        pending = {pool.submit(_call, job) for job in ordered}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name, error = future.result()  # a crashed worker raises BrokenProcessPool here
                bar.update()
                if error is not None:
                    pool.shutdown(wait=True, cancel_futures=True)  # running cells finish
                    raise CellFailed(f"cell {name}: {error}")
