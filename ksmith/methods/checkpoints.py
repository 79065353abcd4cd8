"""Checkpoints of lifelong editing: the declared counts of edits, and the writer that saves the
model's state after each of them (the rule: `ksmith.methods.runner`'s docstring).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ksmith.errors import KsmithError
from ksmith.io import write_json
from ksmith.methods import artifacts as art
from ksmith.methods import attach
from ksmith.methods.base import UpdateProblem, UpdateResult
from ksmith.methods.save import _save_delta


def check_checkpoints(checkpoints: Sequence[int], where: str = "checkpoints") -> list[int]:
    """Declared checkpoints: positive, strictly increasing integers (may be empty)."""
    out = list(checkpoints)
    if any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in out):
        raise KsmithError(f"{where}: counts of edits must be positive integers, got {out}")
    if any(a >= b for a, b in zip(out, out[1:], strict=False)):
        raise KsmithError(f"{where}: counts of edits must be strictly increasing, got {out}")
    return out


class _CheckpointWriter:
    """`UpdateMethod.on_step` for one group: saves the model's state after each declared count
    of edits below k (the state after all k is the group's own artifact)."""

    def __init__(
        self,
        model: torch.nn.Module,
        base: Mapping[str, torch.Tensor],
        problem: UpdateProblem,
        gdir: Path,
        counts: Sequence[int],
        where: str,
    ):
        self.model, self.base, self.gdir, self.where = model, base, gdir, where
        self.order = [r.request_id for r in problem.requests]
        self.counts = {n for n in counts if n < len(self.order)}
        self.saved: list[int] = []
        self.seconds = 0.0

    def __call__(self, edits: int, merged: UpdateResult) -> None:
        if edits not in self.counts:
            return
        t0 = time.perf_counter()
        cdir = self.gdir / art.CHECKPOINTS_DIR / str(edits)
        cdir.mkdir(parents=True)
        where = f"{self.where}, checkpoint after {edits} edits"
        changed = 0
        if merged.added_modules:
            self.model.save_pretrained(str(cdir / art.MODEL_DIR))
            artifact = "model"
        else:
            changed = _save_delta(self.model, self.base, cdir, where, {})["changed_parameters"]
            artifact = "delta"
        if attach.save_all(self.model, cdir):
            artifact = "attachment"
        elif merged.prompt_prefix and artifact == "delta" and changed == 0:
            artifact = "prefix"  # as the runner labels a group's in-context update
        if merged.prompt_prefix:
            art.save_prefixes(cdir / art.PREFIX_FILE, merged.prompt_prefix)
        write_json(
            cdir / art.CHECKPOINT_JSON,
            {"edits": edits, "artifact": artifact, "requests": self.order[:edits]},
        )
        self.saved.append(edits)
        self.seconds += time.perf_counter() - t0
