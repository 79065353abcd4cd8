"""The update folder (docs/contracts.md section 5): writing group artifacts and reading them back.

    UPDATE_DIR/update.json            the run record (see `ksmith.methods.runner`)
    UPDATE_DIR/spec.yaml              the resolved method spec
    UPDATE_DIR/g<i>/delta.safetensors param name -> (new - old), float32, changed tensors only
    UPDATE_DIR/g<i>/model/            a full HF model, when the method added modules
    UPDATE_DIR/g<i>/attach/<j>/       a hook-based memory (GRACE's codebook) re-attached on
                                      load, beside the delta (`ksmith.methods.attach`)
    UPDATE_DIR/g<i>/prefix.json       request_id -> prompt prefix (in-context editing)
    UPDATE_DIR/g<i>/log.json          the method's per-step log (losses), for inspection
    UPDATE_DIR/g<i>/checkpoints/<n>/  sequential mode with declared checkpoints: the state after
                                      the group's first n requests (n < k), as the same files
                                      (delta, attach/, prefix.json, or model/), plus
                                      checkpoint.json: {"edits": n, "requests": [ids made]}

Names are those of ``model.named_parameters()`` (tied weights appear once). A delta is *the*
update: every reader applies it with `delta_applied` (float32 ``old + delta``). For float32
weights ``old + (new - old)`` can differ from the method's ``new`` by one rounding step in
elements whose magnitude changed by more than 2x (e.g. a sign flip); the runner records the
largest such difference in the group log (``delta_roundoff_max``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ksmith.errors import KsmithError
from ksmith.io import save_safetensors

UPDATE_JSON = "update.json"
DELTA_FILE = "delta.safetensors"
MODEL_DIR = "model"
PREFIX_FILE = "prefix.json"
LOG_FILE = "log.json"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_JSON = "checkpoint.json"


def group_dir(update_dir: str | Path, group: int) -> Path:
    return Path(update_dir) / f"g{int(group)}"


def checkpoint_dir(update_dir: str | Path, group: int, edits: int) -> Path:
    """``g<group>/checkpoints/<edits>/``: the group's state after its first `edits` requests."""
    return group_dir(update_dir, group) / CHECKPOINTS_DIR / str(int(edits))


# --- weights: snapshot, diff, apply, restore ------------------------------------------------


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter (the base weights), keyed by parameter name."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def changed_names(model: torch.nn.Module, base: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of parameters whose values differ from `base` (NaN counts as a difference)."""
    out = []
    for n, p in model.named_parameters():
        old = base.get(n)
        if old is None or old.shape != p.shape:
            raise KsmithError(f"parameter {n} appeared or changed shape during the update")
        if not torch.equal(p.detach().cpu(), old):
            out.append(n)
    return out


def delta_applied(old: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``old + delta`` computed in float32, cast back to ``old``'s dtype: the single
    definition of "apply a delta", shared by the runner and `applied_update`."""
    d = delta.to(device=old.device, dtype=torch.float32)
    return (old.detach().float() + d).to(old.dtype)


def add_delta_(param: torch.Tensor, delta: torch.Tensor) -> None:
    """``param <- delta_applied(param, delta)``, in place."""
    with torch.no_grad():
        param.copy_(delta_applied(param, delta))


def restore_(model: torch.nn.Module, base: Mapping[str, torch.Tensor], names=None) -> None:
    """Copy the `base` values back into `names` (default: every parameter that differs)."""
    params = dict(model.named_parameters())
    names = changed_names(model, base) if names is None else names
    with torch.no_grad():
        for n in names:
            params[n].copy_(base[n].to(params[n].device))


def save_delta(path: str | Path, delta: Mapping[str, torch.Tensor]) -> None:
    """Write a delta (float32, contiguous, CPU) as safetensors; an empty delta is allowed."""
    tensors = {n: d.detach().to("cpu", torch.float32).contiguous() for n, d in delta.items()}
    save_safetensors(tensors, path, metadata={"format": "ksmith-delta", "dtype": "float32"})


def load_delta(path: str | Path) -> dict[str, torch.Tensor]:
    """A group's delta; an unreadable file or a non-finite value is an error naming the file."""
    try:
        delta = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise KsmithError(f"{path}: cannot read delta: {e}") from e
    for n, d in delta.items():
        if d.is_floating_point() and not torch.isfinite(d).all():
            raise KsmithError(f"{path}/{n}: non-finite values in the delta")
    return delta


def save_prefixes(path: str | Path, prefixes: Mapping[str, str]) -> None:
    Path(path).write_text(json.dumps(dict(prefixes), indent=2, sort_keys=True) + "\n")


# --- readers ---------------------------------------------------------------------------------


def read_update(update_dir: str | Path) -> dict[str, Any]:
    """The update record (``update.json``) of an update folder."""
    path = Path(update_dir) / UPDATE_JSON
    if not path.is_file():
        raise KsmithError(f"{update_dir}: not an update folder (no {UPDATE_JSON})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KsmithError(f"{path}: not valid JSON: {e}") from e


def read_prefixes(
    update_dir: str | Path, group: int, checkpoint: int | None = None
) -> dict[str, str]:
    """request_id -> prompt prefix for a group (or one of its checkpoints); empty unless the
    method edits in context."""
    return _read_prefix_file(_state_dir(update_dir, group, checkpoint) / PREFIX_FILE)


def _read_prefix_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def _state_dir(update_dir: str | Path, group: int, checkpoint: int | None) -> Path:
    if checkpoint is None:
        return group_dir(update_dir, group)
    return checkpoint_dir(update_dir, group, checkpoint)


def read_checkpoint(update_dir: str | Path, group: int, edits: int) -> dict[str, Any]:
    """A checkpoint's record (checkpoint.json): ``edits`` and the ``requests`` made so far."""
    path = checkpoint_dir(update_dir, group, edits) / CHECKPOINT_JSON
    if not path.is_file():
        raise KsmithError(
            f"{update_dir}: group {group} has no checkpoint after {edits} edits "
            f"(missing {path.relative_to(update_dir)})"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KsmithError(f"{path}: not valid JSON: {e}") from e
    requests = data.get("requests")
    if data.get("edits") != edits or not isinstance(requests, list) or len(requests) != edits:
        raise KsmithError(f"{path}: expected 'edits': {edits} and a list of {edits} 'requests'")
    return data


def load_attachments(model: torch.nn.Module, gdir: Path) -> list:
    """Re-attach a group's saved attachments (``g<i>/attach/``) to `model`; none: []."""
    from ksmith.methods.attach import ATTACH_DIR, load_all

    return load_all(model, gdir) if (gdir / ATTACH_DIR).is_dir() else []


@contextlib.contextmanager
def applied_update(
    model: torch.nn.Module, update_dir: str | Path, group: int, checkpoint: int | None = None
) -> Iterator[tuple[torch.nn.Module, dict[str, str]]]:
    """Yield ``(updated_model, prefixes)`` for one group of an update folder (with
    `checkpoint`: the group's state after that many edits, ``g<i>/checkpoints/<n>/``).

    With a delta, `model` itself is updated in place (and any saved attachment hooked onto it)
    and its changed parameters are restored bit for bit on exit (also on error), so an
    evaluator loads the base model once and loops over groups. With a full ``g<i>/model/`` the
    group's model is loaded (same device and dtype as `model`) and `model` is untouched.
    `prefixes` maps request ids to prompt prefixes.
    """
    gdir = _state_dir(update_dir, group, checkpoint)
    if not gdir.is_dir():
        missing = gdir.relative_to(update_dir).as_posix()
        what = f"no group {group}"
        if checkpoint is not None:
            what = f"group {group} has no checkpoint after {checkpoint} edits"
        raise KsmithError(f"{update_dir}: {what} (missing {missing}/)")
    prefixes = _read_prefix_file(gdir / PREFIX_FILE)
    if (gdir / MODEL_DIR).is_dir():
        from transformers import AutoModelForCausalLM

        from ksmith.models.loading import check_weight_files

        ref = next(model.parameters())
        check_weight_files(gdir / MODEL_DIR)
        try:
            full = AutoModelForCausalLM.from_pretrained(str(gdir / MODEL_DIR), dtype=ref.dtype)
        except Exception as e:  # noqa: BLE001 - loaders raise many types for a damaged folder
            raise KsmithError(f"{gdir / MODEL_DIR}: cannot load the group's model: {e}") from e
        for n, p in full.named_parameters():
            if p.is_floating_point() and not torch.isfinite(p.detach()).all():
                raise KsmithError(
                    f"{gdir / MODEL_DIR}/{n}: non-finite weights in the group's model"
                )
        yield full.to(ref.device).eval(), prefixes
        return
    delta = load_delta(gdir / DELTA_FILE) if (gdir / DELTA_FILE).is_file() else {}
    params = dict(model.named_parameters())
    for n, d in delta.items():
        if n not in params:
            raise KsmithError(f"{gdir / DELTA_FILE}: parameter {n!r} is not in the model")
        if tuple(d.shape) != tuple(params[n].shape):
            raise KsmithError(
                f"{gdir / DELTA_FILE}: {n} has shape {tuple(d.shape)}, "
                f"the model's is {tuple(params[n].shape)}"
            )
    saved = {n: params[n].detach().clone() for n in delta}
    hooked: list = []
    try:
        for n, d in delta.items():
            add_delta_(params[n], d)
        hooked = load_attachments(model, gdir)
        yield model, prefixes
    finally:
        for a in hooked:
            a.detach()
        with torch.no_grad():
            for n, old in saved.items():
                params[n].copy_(old)
