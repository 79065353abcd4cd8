"""Running a stage's cells in this process or in spawned worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ksmith.errors import KsmithError
from ksmith.pipeline.workers import CellFailed, Job, LocalWorkers, run_jobs


def record(path: str, value: int) -> None:
    """A cell: writes its value, the torch thread count, the process id, TQDM_DISABLE."""
    import os

    import torch

    quiet = os.environ.get("TQDM_DISABLE", "-")
    Path(path).write_text(f"{value} {torch.get_num_threads()} {os.getpid()} {quiet}")


def refuse(name: str) -> None:
    raise KsmithError(f"bad input in {name}")


def crash() -> None:
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_runs(tmp_path, workers):
    import os

    jobs = [Job(f"c{i}", record, (str(tmp_path / f"c{i}"), i), cost=i) for i in range(5)]
    run_jobs(jobs, workers=workers, threads=1)
    rows = [(tmp_path / f"c{i}").read_text().split() for i in range(5)]
    assert [int(r[0]) for r in rows] == list(range(5))
    in_parent = {r[2] for r in rows} == {str(os.getpid())}
    assert in_parent == (workers == 1)  # workers are separate processes...
    if workers > 1:
        assert {r[1] for r in rows} == {"1"}  # ...with the declared torch threads
        assert {r[3] for r in rows} == {"1"}  # ...and their own progress bars off
    assert "TQDM_DISABLE" not in os.environ  # the parent's environment is restored


@pytest.mark.parametrize("workers", [1, 2])
def test_a_refused_cell_names_itself(tmp_path, workers):
    jobs = [Job("ok", record, (str(tmp_path / "ok"), 1)), Job("bad.cell", refuse, ("x",))]
    with pytest.raises(CellFailed, match=r"cell bad.cell: bad input in x"):
        run_jobs(jobs, workers=workers)


def test_an_unexpected_error_keeps_its_traceback():
    with pytest.raises(CellFailed, match=r"(?s)cell c[01]: Traceback.*ZeroDivisionError: boom"):
        run_jobs([Job("c0", crash, ()), Job("c1", crash, ())], workers=2)


def test_workers_must_be_positive():
    with pytest.raises(KsmithError, match="workers must be at least 1"):
        run_jobs([], workers=0)


def test_a_stage_pool_starts_its_workers_at_once_and_runs_cells_here_too(tmp_path):
    """`stage_workers`: `workers - 1` processes spawned before any job is known (their imports
    overlap the parent's planning), the parent's cell thread as the last runner; every job runs
    once, with the same results as in separate processes."""
    import multiprocessing
    import os

    before = len(multiprocessing.active_children())
    pool = LocalWorkers(2, 1, warm=("json", "no_such_module_for_ksmith", "json:no_attr"), here=True)
    try:
        assert len(multiprocessing.active_children()) == before + 1  # one spawned, started now
        jobs = [Job(f"c{i}", record, (str(tmp_path / f"c{i}"), i), cost=i) for i in range(6)]
        run_jobs(jobs, workers=2, threads=1, pool=pool)  # closes the pool when done
    finally:
        pool.close()  # again: harmless
    rows = [(tmp_path / f"c{i}").read_text().split() for i in range(6)]
    assert [int(r[0]) for r in rows] == list(range(6))
    pids = {r[2] for r in rows}
    assert str(os.getpid()) in pids and len(pids) == 2  # here and in the worker
    assert len(multiprocessing.active_children()) == before  # the worker has left


def test_a_refused_cell_run_here_names_itself(tmp_path):
    pool = LocalWorkers(1, 1, here=True)  # this process only
    jobs = [Job("ok", record, (str(tmp_path / "ok"), 1)), Job("bad.cell", refuse, ("x",))]
    with pytest.raises(CellFailed, match=r"cell bad.cell: bad input in x"):
        run_jobs(jobs, workers=1, pool=pool)
    assert (tmp_path / "ok").read_text().split()[2] == str(os.getpid())
