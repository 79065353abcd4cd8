"""Writing a group's changed weights: the delta against the base weights (checked finite, its
float32 round-off logged), or the whole model when the method added modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ksmith.errors import KsmithError
from ksmith.methods import artifacts as art


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
