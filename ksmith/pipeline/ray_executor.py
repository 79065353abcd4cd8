"""The Ray executor (`executor: ray` in params.yaml): each cell of a stage is one Ray task.

Ray Core tasks, nothing more: a task per cell with the resources params.yaml declares
(`resources.cpus`, `resources.gpus`, fractions allowed, so that several small world-model cells
share one GPU), submitted largest cost first; the driver (the stage's process) waits for them
and moves one progress bar. A task runs `ksmith.pipeline.workers.call`, so a cell behaves as in
a local worker: it writes its folder atomically (into the stage's `CellStore`), logs to its cell
log, and returns its own error as a value. Hence Ray retries only what a value cannot report:
a worker process or node that died mid-cell (killed, out of memory, preempted) is run again, up
to `resources.retries` times, and the atomic write leaves nothing of the dead attempt. A cell's
own error fails the stage once, and the cells not finished are cancelled (running ones killed).

Paths are passed as they are, so on a cluster of several machines the project (dataset, model,
outputs, `.ksmith/`) must be on a file system every node mounts at the same path, and ksmith
installed on each node (docs/scaling.md). Ray is imported only here, only when chosen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ksmith.errors import KsmithError
from ksmith.pipeline.worker_init import WORKER_ENV, init_worker
from ksmith.pipeline.workers import Call, call

if TYPE_CHECKING:
    from ksmith.pipeline.params import PipelineParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """Where and how cells run on Ray (params.yaml `ray_address` and `resources`)."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 3

    @classmethod
    def from_params(cls, params: PipelineParams) -> RayOptions:
        r = params.resources
        cpus = r.cpus if r.cpus is not None else float(params.threads)
        return cls(address=params.ray_address, cpus=cpus, gpus=r.gpus, retries=r.retries)


_initialized_threads: int | None = None


def _task(c: Call, threads: int, cwd: str) -> tuple[str, str | None]:
    """One cell, in a Ray worker process (set up on its first cell), in the driver's working
    directory: paths stay as the user wrote them, and so do the outputs that record them."""
    global _initialized_threads
    if _initialized_threads != threads:
        init_worker(threads)
        _initialized_threads = threads
    if os.path.isdir(cwd):
        os.chdir(cwd)
    store = os.path.dirname(c.out) if c.out is not None else None
    if store is not None and not os.path.isdir(store):
        import socket

        return c.job.name, (
            f"{store} does not exist on node {socket.gethostname()}: with executor: ray on "
            "several machines the project must be on a file system every node mounts at the "
            "same path (docs/scaling.md)"
        )
    return call(c)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise KsmithError(
            "params.yaml field 'executor' is ray, but Ray is not installed: "
            "pip install 'ksmith[ray]' (or set executor: local)"
        ) from None
    return ray


def _connect(ray: Any, options: RayOptions) -> bool:
    """Attach to `options.address`, or start a local instance; True if this call started or
    attached Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": dict(WORKER_ENV)},
        "log_to_driver": True,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    if options.address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # a local instance with this machine's cores
    try:
        ray.init(address=options.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise KsmithError(
            f"params.yaml field 'ray_address': cannot attach to Ray at {options.address!r}: {e}"
        ) from None
    return True


def _death(e: Exception, retries: int) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (
        f"its worker died {retries + 1} time(s) (killed, out of memory, or its node lost); "
        f"Ray gave up after {retries} retries (params.yaml resources.retries). "
        f"{type(e).__name__}: {first}"
    )


CANCEL_WAIT_S = 60.0  # a force-cancelled task ends within seconds; never wait forever


def ray_cells(
    calls: Sequence[Call], *, threads: int, options: RayOptions
) -> Iterator[tuple[str, str | None]]:
    """Run `calls` as Ray tasks; yield ``(cell name, error or None)`` as each finishes.

    Closing the generator (the stage failed, or Ctrl-C) cancels the tasks not finished, and
    shuts Ray down if this call started it.
    """
    ray = _import_ray()
    started = _connect(ray, options)
    try:
        remote = ray.remote(_task).options(
            num_cpus=options.cpus,
            num_gpus=options.gpus,
            max_retries=options.retries,
            retry_exceptions=False,  # a cell's own errors come back as values, never retried
            name="ksmith-cell",
        )
        cwd = os.getcwd()
        pending = {remote.remote(c, threads, cwd): c.job.name for c in calls}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    name = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # raised past `call`'s handler
                        result = name, str(e)
                    except ray.exceptions.RayError as e:  # the worker or node died
                        result = name, _death(e, options.retries)
                    yield result
        finally:
            # A running cell's worker is killed, not interrupted: an interrupt could land in
            # the middle of an import and leave that worker unusable for the next cell. What
            # it was writing is a temporary folder that the next run removes.
            for ref in pending:
                ray.cancel(ref, force=True)
            # Cancelling is asynchronous: wait until those tasks have ended, so that no cell
            # of this stage still runs (and writes) once it has returned or failed.
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
    finally:
        if started:
            ray.shutdown()
