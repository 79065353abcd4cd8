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

One group's steps are `ksmith.methods.group`; the checkpoint writer is
`ksmith.methods.checkpoints`, the saving of changed weights `ksmith.methods.save`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Mapping, Sequence
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
from ksmith.methods.base import (
    Kind,
    Mode,
    TargetKind,
    UpdateMethod,
    UpdateProblem,
)
from ksmith.methods.checkpoints import check_checkpoints
from ksmith.methods.group import apply_group

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
