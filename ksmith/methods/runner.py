"""``ksmith update``: apply one method to every group of a config and save the updates.

The model is loaded once. For each group: snapshot the base weights, seed torch, apply the
method, check that every changed weight and every logged loss is finite, save the change
(a delta, a full model, or prompt prefixes; see `ksmith.methods.artifacts`), then restore the
base weights exactly for the next group. Per group the record keeps wall time, peak memory and
the number of changed parameter elements. The folder is written atomically: a failure in any
group (a non-finite loss, an exception in the method) leaves no output.

Checkpoints (lifelong editing, sequential mode): at each declared count n of edits made so far
(n < the group's k; the final state is the group's ordinary artifact), the state of the model is
saved as ``g<i>/checkpoints/<n>/`` in the same form as a group's artifact, from the method's
after-request callback (`UpdateMethod.on_step`). Saving reads the model and changes nothing, so
the final artifact is the same with or without checkpoints; its time is not counted in the
group's wall_seconds.
"""

from __future__ import annotations

import logging
import math
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

import ksmith
from ksmith.errors import KsmithError
from ksmith.io import atomic_output_dir, write_json
from ksmith.methods import artifacts as art
from ksmith.methods import attach
from ksmith.methods.base import (
    Kind,
    Mode,
    TargetKind,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class UpdateSpec(BaseModel):
    """The resolved method spec of one run, saved as ``spec.yaml`` next to the update."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(FORMAT_VERSION, description="format version of this spec")
    method: str = Field(description="registered method name")
    kind: Kind = Field(description="edit or unlearn")
    target: TargetKind = Field(description="what updated Q+ prompts should produce")
    mode: Mode = Field(description="batch: all requests at once; sequential: one after another")
    seed: int = Field(description="torch seed set before each group")
    params: dict[str, Any] = Field(description="the method's resolved hyper-parameters")


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


def _save_delta(
    model: torch.nn.Module,
    base: Mapping[str, torch.Tensor],
    gdir: Path,
    where: str,
    group_log: dict[str, Any],
) -> dict[str, Any]:
    params = dict(model.named_parameters())
    delta: dict[str, torch.Tensor] = {}
    roundoff = 0.0
    for n in art.changed_names(model, base):
        new = params[n].detach()
        if not torch.isfinite(new).all():
            raise KsmithError(
                f"{where}: non-finite weights in {n} after the update (diverged; try a smaller "
                "lr); nothing was written"
            )
        d = new.float() - base[n].to(new.device).float()  # same shape as the parameter
        if not torch.isfinite(d).all():
            raise KsmithError(f"{where}: the change of {n} overflows float32; nothing was written")
        # The saved update IS base + delta (artifacts module docstring); record how far that
        # is from the method's own weights (float32 rounding of new - old).
        recon = art.delta_applied(base[n].to(new.device), d)
        roundoff = max(roundoff, float((recon.float() - new.float()).abs().max()))
        mask = d != 0
        if mask.any():
            delta[n] = d.cpu()
    art.save_delta(gdir / art.DELTA_FILE, delta)
    group_log["delta_roundoff_max"] = roundoff
    return {
        "artifact": "delta",
        "changed_parameters": int(sum(int((d != 0).sum()) for d in delta.values())),
        "changed_tensors": sorted(delta),
    }


def _save_full_model(
    model: torch.nn.Module,
    base: Mapping[str, torch.Tensor],
    gdir: Path,
    where: str,
    reload_model: Callable[[], torch.nn.Module] | None,
) -> tuple[dict[str, Any], torch.nn.Module]:
    if reload_model is None:
        raise KsmithError(f"{where}: the method added modules but the base cannot be reloaded")
    for n, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            raise KsmithError(f"{where}: non-finite weights in {n}; nothing was written")
    changed = 0
    names = []
    for n, p in model.named_parameters():
        old = base.get(n)
        if old is None or old.shape != p.shape:
            changed += p.numel()
            names.append(n)
        elif not torch.equal(p.detach().cpu(), old):
            changed += int((p.detach().cpu() != old).sum())
            names.append(n)
    model.save_pretrained(str(gdir / art.MODEL_DIR))
    fresh = reload_model()
    return {"artifact": "model", "changed_parameters": changed, "changed_tensors": names}, fresh


def git_revision() -> str | None:
    """The source checkout's commit, if ksmith runs from one."""
    root = Path(ksmith.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_update(
    model: torch.nn.Module,
    tokenizer: Any,
    method: UpdateMethod,
    problems: Mapping[int, UpdateProblem],
    out: str | Path,
    *,
    record: Mapping[str, Any] | None = None,
    reload_model: Callable[[], torch.nn.Module] | None = None,
    checkpoints: Sequence[int] = (),
) -> dict[str, Any]:
    """Apply `method` to each group's problem and write the update folder atomically.

    `record` adds run facts to update.json (model, dataset_fingerprint, config, ...).
    `checkpoints` (sequential mode only): counts of edits after which each group's state is
    saved too (module docstring); update.json then lists them. Returns the update.json
    content. `model` holds the base weights again afterwards.
    """
    if not problems:
        raise KsmithError("no groups to update")
    checkpoints = check_checkpoints(checkpoints)
    first = next(iter(problems.values()))
    if checkpoints and first.mode != "sequential":
        raise KsmithError(
            f"checkpoints {checkpoints} are states along a sequential stream of edits; "
            "they need mode sequential (--mode sequential / params mode: sequential)"
        )
    if first.kind != method.kind:
        raise KsmithError(
            f"method '{method.name}' is of kind {method.kind} but the requests are of kind "
            f"{first.kind}; list methods and their kinds with `ksmith methods`"
        )
    spec = UpdateSpec(
        method=method.name,
        kind=method.kind,
        target=first.target,
        mode=first.mode,
        seed=first.seed,
        params=method.params.model_dump(mode="json"),
    )
    device = next(model.parameters()).device
    groups = []
    with atomic_output_dir(out, kind="update") as tmp:
        for g, problem in tqdm(problems.items(), desc=f"update {method.name}", unit="group"):
            rec, model = apply_group(
                model,
                tokenizer,
                method,
                problem,
                g,
                art.group_dir(tmp, g),
                reload_model=reload_model,
                checkpoints=checkpoints,
            )
            log.info(
                "group %d: %d requests, %.2fs, %d parameters changed",
                g,
                rec.requests,
                rec.wall_seconds,
                rec.changed_parameters,
            )
            groups.append(rec.as_json())
        info = {
            **dict(record or {}),
            "format_version": FORMAT_VERSION,
            "method": method.name,
            "paper": method.paper,
            "kind": method.kind,
            "target": spec.target,
            "mode": spec.mode,
            "seed": spec.seed,
            "params": spec.params,
            "device": str(device),
            "groups": groups,
            **({"checkpoints": checkpoints} if checkpoints else {}),
            "wall_seconds": round(sum(g["wall_seconds"] for g in groups), 4),
            "ksmith_version": ksmith.__version__,
            "torch_version": torch.__version__,
            "git_revision": git_revision(),
        }
        write_json(tmp / art.UPDATE_JSON, info)
        spec_text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=True)
        (tmp / "spec.yaml").write_text(spec_text)
    return info
