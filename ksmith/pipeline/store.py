"""A stage's store of finished cells, so that a stage resumes and reruns only what changed.

With a `CellStore`, a job that has a `key` (a hash of everything its output depends on,
`ksmith.pipeline.cells`) writes its folder into the store, named by cell and key, atomically: a
folder there is a finished cell. A stage that was interrupted (killed, Ctrl-C, one cell's error)
finds those cells on its next run and does not compute them again; once every cell is done they
are copied into the stage's output (`ksmith.pipeline.workers.run_jobs`) and stay in the store.
So the next run of the stage, which DVC starts when any of its deps changed (one method's
hyper-parameters, say), computes only the cells whose key changed and copies the others: a
stage of every method reruns one method's cells, not all of them. The store keeps the last
run's cells only: each run drops the entries no job of it wants. Delete the store
(``.ksmith/<out>``) to compute every cell again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ksmith.io import LEFTOVER, MARKER, pid_alive

if TYPE_CHECKING:
    from ksmith.pipeline.workers import Job

STATE_DIR = ".ksmith"


@dataclass(frozen=True)
class CellStore:
    """A stage's finished cells (`cells/<cell>-<key>/`) and per-cell logs (`logs/<cell>.log`).

    It lives outside every output (DVC neither removes it before a stage nor hashes it as a
    dependency): see `for_output`.
    """

    root: Path

    @classmethod
    def for_output(cls, out: str | Path) -> CellStore:
        """The store of the stage writing `out`: ``.ksmith/<out>`` under the working directory
        (the DVC project) when `out` is inside it, else ``.ksmith/<name>`` beside `out`."""
        target = Path(os.path.abspath(out))
        cwd = Path.cwd()
        if target.is_relative_to(cwd) and target != cwd:
            return cls(cwd / STATE_DIR / target.relative_to(cwd))
        return cls(target.parent / STATE_DIR / target.name)

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def entry(self, job: Job) -> Path:
        assert job.key is not None, "only keyed jobs are stored"
        return self.cells / f"{job.name}-{job.key[:16]}"

    def finished(self, job: Job) -> bool:
        return job.key is not None and (self.entry(job) / MARKER).is_file()

    def log(self, job: Job) -> Path:
        return self.root / "logs" / f"{job.name}.log"

    def prepare(self, jobs: Sequence[Job]) -> None:
        """Make the folders; drop stored cells no job here wants (their inputs changed) and
        temporary folders of runs that are no longer alive."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.cells.mkdir(parents=True, exist_ok=True)
        wanted = {self.entry(j).name for j in jobs if j.key is not None}
        for path in self.cells.iterdir():
            m = LEFTOVER.match(path.name)
            if m is None and path.name in wanted:
                continue
            if m is not None and (m["name"] in wanted or pid_alive(int(m["pid"]))):
                continue  # the cell's next atomic write recovers it / a live run's
            shutil.rmtree(path, ignore_errors=True)

    def deliver(self, job: Job) -> None:
        """Copy a finished cell to its output folder (the store keeps it for the next run)."""
        assert job.out is not None  # inside the stage's atomic output folder: no half copy stays
        shutil.copytree(self.entry(job), job.out)

    def close(self) -> None:
        """Remove the cells folder when empty (the logs stay)."""
        with contextlib.suppress(OSError):
            self.cells.rmdir()
