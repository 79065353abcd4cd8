"""One group of an update run: apply the method, check the result, save the change, restore
the base weights, and record time, peak memory and changed parameters (the steps:
`ksmith.methods.runner`'s docstring). With checkpoints (sequential mode) the states after the
declared counts of edits are saved along the way (`ksmith.methods.checkpoints`).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ksmith.errors import KsmithError
from ksmith.io import write_json
from ksmith.methods import artifacts as art
from ksmith.methods import attach
from ksmith.methods.base import UpdateMethod, UpdateProblem
from ksmith.methods.checkpoints import _CheckpointWriter
from ksmith.methods.save import _save_delta, _save_full_model


@dataclass
class GroupRecord:
    """What the run record keeps per group."""

    group: int
    requests: int
    artifact: str  # "delta" | "model" | "prefix" | "attachment" (delta + g<i>/attach/)
    wall_seconds: float
    peak_memory_bytes: int
    changed_parameters: int
    changed_tensors: list[str] = field(default_factory=list)
    checkpoints: list[int] | None = None  # counts of edits saved under g<i>/checkpoints/

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not (k == "checkpoints" and v is None)}


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: allocated CUDA memory since the last reset on GPU, else the process's peak
    resident set size (monotone over the run on CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def _non_finite_losses(obj: Any, path: str = "", in_loss: bool = False) -> list[str]:
    """Paths of non-finite numbers under keys containing "loss" in a method's log."""
    bad = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{path}.{k}" if path else str(k)
            bad += _non_finite_losses(v, key, in_loss or "loss" in str(k).lower())
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += _non_finite_losses(v, f"{path}[{i}]", in_loss)
    elif in_loss and isinstance(obj, (int, float)) and not math.isfinite(float(obj)):
        bad.append(path)
    return bad


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def apply_group(
    model: torch.nn.Module,
    tokenizer: Any,
    method: UpdateMethod,
    problem: UpdateProblem,
    group: int,
    gdir: Path,
    *,
    reload_model: Callable[[], torch.nn.Module] | None = None,
    checkpoints: Sequence[int] = (),
) -> tuple[GroupRecord, torch.nn.Module]:
    """Apply `method` to one group, write its artifact into `gdir`, restore the base weights.

    With `checkpoints` (sequential mode) the states after those counts of edits are saved
    too (module docstring). Returns the record and the model to use for the next group (the
    same object, unless the method added modules and the base had to be reloaded).
    """
    where = f"method '{method.name}', group {group}"
    device = next(model.parameters()).device
    base = art.snapshot(model)
    gdir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    torch.manual_seed(problem.seed)
    restored = False
    writer = None
    if checkpoints:
        writer = _CheckpointWriter(model, base, problem, gdir, checkpoints, where)
        method.on_step = writer
    try:
        t0 = time.perf_counter()
        try:
            result = method.apply(model, tokenizer, problem)
        finally:
            method.on_step = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0 - (writer.seconds if writer else 0.0)
        if writer is not None and writer.saved != sorted(writer.counts):
            raise KsmithError(
                f"{where}: checkpoints after {sorted(writer.counts)} edits were declared but "
                f"only {writer.saved} were reached: the method's `apply` does not run the "
                "sequential loop of UpdateMethod.apply (which calls `on_step` after each request)"
            )
        peak = peak_memory_bytes(device)
        bad = _non_finite_losses(result.log)
        if bad:
            raise KsmithError(
                f"{where}: non-finite loss at {bad[0]} ({len(bad)} in all); the update diverged "
                "(try a smaller lr); nothing was written"
            )
        group_log: dict[str, Any] = {"method": _jsonable(result.log)}
        # Hook-based memories (GRACE's codebook) are saved beside the delta, then removed.
        live = attach.attached(model)
        stored = attach.save_all(model, gdir)
        attach.detach_all(model)
        if result.added_modules:
            record, model = _save_full_model(model, base, gdir, where, reload_model)
            restored = True
        else:
            record = _save_delta(model, base, gdir, where, group_log)
        if live:
            record["artifact"] = "attachment"
            record["changed_parameters"] += stored
            record["changed_tensors"] += [
                f"{attach.ATTACH_DIR}/{j}:{a.kind}" for j, a in enumerate(live)
            ]
        if result.prompt_prefix:
            unknown = set(result.prompt_prefix) - {r.request_id for r in problem.requests}
            if unknown:
                raise KsmithError(f"{where}: prefixes for unknown request ids {sorted(unknown)}")
            art.save_prefixes(gdir / art.PREFIX_FILE, result.prompt_prefix)
            if record["changed_parameters"] == 0:
                record["artifact"] = "prefix"
        write_json(gdir / art.LOG_FILE, group_log)
    finally:
        attach.detach_all(model)
        if not restored:
            art.restore_(model, base)
    rec = GroupRecord(
        group=group,
        requests=len(problem.requests),
        wall_seconds=round(wall, 4),
        peak_memory_bytes=peak,
        checkpoints=None if writer is None else writer.saved,
        **record,
    )
    return rec, model
