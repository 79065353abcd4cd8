"""Run a stage's cells: in this process, in local worker processes, or as tasks on Ray.

The cells of a stage are independent (each reads the base model and writes its own folder, and
seeds itself), so they can run in any order, in any process, on any machine, with the same
results. On a small model one torch thread per cell leaves the other cores idle; `workers`
processes with `threads` threads each use them. Workers are *spawned* (never forked from a
process that has already started torch's thread pools) and run the longest cells first, so that
the stage ends with short cells rather than one long straggler. A stage starts its workers
first (`stage_workers`), before it imports torch and plans its cells, so that the workers'
imports (torch and transformers, about 4 s of CPU each) overlap the parent's; a worker leaves
without the interpreter's teardown (about 1 s with torch loaded), since it has nothing left
to write once the pool shuts down. With Ray
(`ksmith.pipeline.ray_executor`) each cell is one task with declared resources.

Resume and reuse. With a `CellStore` (`ksmith.pipeline.store`), a job that has a `key` writes
its folder into the store, atomically, and the stage copies it to its output; a stage that was
interrupted, or that runs again with some of its inputs changed, does not compute the cells it
finished under the same key again.

Logs. Each cell's records (`logging`, INFO and up, one header per attempt) go to
`<store>/logs/<cell>.log`, kept after the stage; a failure names that file.

Errors. An error in any cell stops the stage: cells not yet started are cancelled and the error
is raised in the parent with the cell named, once, so the caller's atomic output folder is
discarded. A cell's own error is never retried; on Ray a cell whose worker *died* is.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ksmith.errors import KsmithError
from ksmith.pipeline.store import CellStore
from ksmith.pipeline.worker_init import WORKER_ENV, init_worker

if TYPE_CHECKING:
    from ksmith.pipeline.params import PipelineParams
    from ksmith.pipeline.ray_executor import RayOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One cell's work: ``fn(*args, **kwargs)``, plus ``out=`` when `out` is set.

    `fn` must be a module-level function (workers import it); `cost` orders the jobs, largest
    first. `out` is the cell's output folder, which `fn` writes atomically; `key` a hash of
    everything that output depends on, so that a `CellStore` can keep a finished cell.
    """

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    cost: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    key: str | None = None


class CellFailed(KsmithError):
    """A cell raised; the message names the cell and carries the original error."""


@dataclass(frozen=True)
class Call:
    """What a worker runs: a job, where it writes (None: as the job says), where it logs."""

    job: Job
    out: str | None
    log: str | None


class _CellLog:
    """One cell's log file: this process's records of level INFO and up while the cell runs,
    and notes (header, outcome) written straight to the file, not to the console."""

    def __init__(self, path: str | None):
        self.path = path

    def note(self, text: str) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text.rstrip("\n") + "\n")

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        level, others = root.level, [(h, h.level) for h in root.handlers]
        if level > logging.INFO:  # the other handlers keep showing only what they showed
            for h, h_level in others:
                h.setLevel(max(h_level, level))
            root.setLevel(logging.INFO)
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(level)
            for h, h_level in others:
                h.setLevel(h_level)


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


def call(c: Call) -> tuple[str, str | None]:
    """Run one job; errors come back as text (exception objects may not survive pickling)."""
    job = c.job
    out = c.out if c.out is not None else job.out
    kwargs = job.kwargs if out is None else {**job.kwargs, "out": out}
    cell_log = _CellLog(c.log)
    if c.log is not None:
        Path(c.log).parent.mkdir(parents=True, exist_ok=True)
    cell_log.note(f"== cell {job.name}: started on {socket.gethostname()}, process {os.getpid()}")
    error = None
    with cell_log.capture():
        try:
            job.fn(*job.args, **kwargs)
        except KsmithError as e:
            error = str(e)
        except Exception:  # an unexpected failure: keep its traceback for the report
            error = traceback.format_exc()
    cell_log.note(f"== cell {job.name}: " + ("done" if error is None else f"failed: {error}"))
    return job.name, error


def _in_process(calls: Sequence[Call]) -> Iterator[tuple[str, str | None]]:
    for c in calls:
        yield call(c)


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool spawn its processes now."""


class LocalWorkers:
    """`workers` cell runners with `threads` torch threads each, started on creation: spawned
    processes, or with `here` this process and ``workers - 1`` spawned ones.

    Create it before the stage's heavy imports and planning (`stage_workers`): the workers
    import torch and the `warm` modules meanwhile. With `here` the stage process, which imports
    torch to plan anyway, runs cells too (on its main thread: measured, a cell in a second
    thread took a third longer), so a stage starts one interpreter fewer (about 4 s of CPU
    each); a cell that kills its process then kills the stage, whose finished cells are kept
    (`CellStore`). `run` hands the calls out largest-first, yielding each (name, error) as it
    finishes; each spawned worker holds one call queued behind its running one, so it never
    waits for a cell of this process. `close` (again harmless) shuts the workers down, letting
    running cells finish. `run_jobs` closes it when its cells are done, inside the caller's
    atomic output folder, so no cell is still running when that folder is kept or discarded.
    """

    def __init__(self, workers: int, threads: int, warm: Sequence[str] = (), *, here: bool = False):
        if workers < 1:
            raise KsmithError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.here = here
        self._spawned = workers - 1 if here else workers
        self._pool: ProcessPoolExecutor | None = None
        if self._spawned:
            context = multiprocessing.get_context("spawn")
            with _environment(WORKER_ENV):  # a spawned process takes the environment at start
                self._pool = ProcessPoolExecutor(
                    self._spawned, mp_context=context, initializer=init_worker,
                    initargs=(threads, tuple(warm), True),
                )  # fmt: skip
                for _ in range(self._spawned):  # with spawn: one process per task while none idle
                    self._pool.submit(_ready)

    def run(self, calls: Sequence[Call]) -> Iterator[tuple[str, str | None]]:
        todo = list(reversed(calls))  # popped from the end: largest first
        pending: set[Future] = set()
        depth = (2 if self.here else 1) * self._spawned

        def top_up() -> None:
            while self._pool is not None and todo and len(pending) < depth:
                pending.add(self._pool.submit(call, todo.pop()))

        def finished(block: bool) -> Iterator[tuple[str, str | None]]:
            done, _ = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise KsmithError(
                        "a worker process died (killed, or out of memory) while running "
                        "this stage's cells; run the stage again: finished cells are kept"
                    ) from None
                top_up()  # before the caller (or this process's next cell) takes its time
                yield result

        top_up()
        try:
            while todo or pending:
                yield from finished(block=False)
                if self.here and todo:
                    yield _call_quietly(todo.pop())
                elif pending:
                    yield from finished(block=True)
                top_up()
        finally:
            todo.clear()
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Shut the spawned workers down; running cells finish."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _call_quietly(c: Call) -> tuple[str, str | None]:
    """`call` in this process: the console shows warnings only while the cell runs, as a
    worker's does (its records go to the cell log), so the stage's bar stays readable."""
    root = logging.getLogger()
    saved = [(h, h.level) for h in root.handlers if not isinstance(h, logging.FileHandler)]
    for h, level in saved:
        h.setLevel(max(level, logging.WARNING))
    try:
        return call(c)
    finally:
        for h, level in saved:
            h.setLevel(level)


@contextlib.contextmanager
def stage_workers(
    params: PipelineParams, warm: Sequence[str] = ()
) -> Iterator[LocalWorkers | None]:
    """The local runners a stage will use (None when it runs on Ray or in this process alone),
    started now: this process and ``workers - 1`` spawned ones. `run_stage` takes it. Call
    this first, before importing torch."""
    if params.executor == "ray" or params.workers <= 1:
        yield None
        return
    pool = LocalWorkers(params.workers, params.threads, warm, here=True)
    try:  # the cells run here load models without transformers' bars, as in a worker
        with _environment({"HF_HUB_DISABLE_PROGRESS_BARS": "1"}):
            yield pool
    finally:
        pool.close()


def run_jobs(
    jobs: Sequence[Job],
    *,
    workers: int = 1,
    threads: int = 1,
    desc: str = "cells",
    store: CellStore | None = None,
    ray: RayOptions | None = None,
    pool: LocalWorkers | None = None,
) -> None:
    """Run every job, with one progress bar over the stage's jobs.

    With `ray`, each job is a Ray task; else `pool` (started by the caller) or, for ``workers >
    1``, a pool of spawned processes started here runs the largest-cost jobs first, and
    ``workers == 1`` runs them in this process (in the given order). With a
    `store`, finished keyed jobs are kept there and skipped on the next run (see the module
    docstring), and each job logs to its file there.
    """
    from tqdm import tqdm

    if workers < 1:
        raise KsmithError(f"workers must be at least 1, got {workers}")
    todo = list(jobs)
    if store is not None:
        store.prepare(jobs)
        todo = [j for j in jobs if not store.finished(j)]
        if len(todo) < len(jobs):
            log.info(
                "%s: %d of %d cells already finished under the same key (%s), not computed again",
                desc, len(jobs) - len(todo), len(jobs), store.cells,
            )  # fmt: skip
        for job in todo:
            store.log(job).unlink(missing_ok=True)
        log.info("%s: cell logs in %s", desc, store.root / "logs")
    in_order = [_call_for(job, store) for job in todo]
    calls = sorted(in_order, key=lambda c: -c.job.cost)
    workers = min(workers, len(calls))
    if calls and ray is not None:
        from ksmith.pipeline.ray_executor import ray_cells

        results, label = ray_cells(calls, threads=threads, options=ray), f"{desc} (ray)"
    elif calls and pool is not None:
        results, label = pool.run(calls), f"{desc} ({pool.workers} workers)"
    elif workers <= 1:  # also when every cell had finished before: no executor to start
        results, label = _in_process(in_order), desc
    else:
        pool = LocalWorkers(workers, threads)
        results, label = pool.run(calls), f"{desc} ({workers} workers)"
    logs = {c.job.name: c.log for c in calls}
    with (
        contextlib.closing(pool) if pool is not None else contextlib.nullcontext(),
        contextlib.closing(results),
        tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=label, unit="cell") as bar,
    ):
        for name, error in results:
            bar.update()
            if error is not None:
                where = f"\n(cell log: {logs[name]})" if logs.get(name) else ""
                raise CellFailed(f"cell {name}: {error}{where}")
    if store is not None:
        for job in jobs:
            if job.key is not None and job.out is not None:
                store.deliver(job)
        store.close()


def _call_for(job: Job, store: CellStore | None) -> Call:
    if store is None:
        return Call(job, None, None)
    out = str(store.entry(job)) if job.key is not None else None
    return Call(job, out, str(store.log(job)))


def run_stage(
    jobs: Sequence[Job],
    params: PipelineParams,
    *,
    out: str | Path,
    desc: str,
    pool: LocalWorkers | None = None,
) -> None:
    """`run_jobs` on the executor params.yaml chose (`pool`: its local workers, started by
    `stage_workers`), resuming from the store of `out`."""
    ray = None
    if params.executor == "ray":
        from ksmith.pipeline.ray_executor import RayOptions

        ray = RayOptions.from_params(params)
    run_jobs(
        jobs,
        workers=params.workers,
        threads=params.threads,
        desc=desc,
        store=CellStore.for_output(out),
        ray=ray,
        pool=pool,
    )
