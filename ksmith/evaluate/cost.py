"""Cost of an update, read from update.json (docs/contracts.md, section 5).

update.json records, per group, ``wall_seconds``, ``peak_memory_bytes`` and
``changed_parameters``. They are reported as ``cost.<field>@update``: the mean over groups, with
a bootstrap interval over groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ksmith.errors import KsmithError
from ksmith.evaluate.stats import summarize

COST_FIELDS: tuple[str, ...] = ("wall_seconds", "peak_memory_bytes", "changed_parameters")


def per_group_values(update: Mapping[str, Any], field: str) -> list[float]:
    """One number per group for `field`, whichever of the per-group layouts update.json uses:
    ``{field: [..]}``, ``{field: {"0": ..}}``, a scalar, or ``{"groups": [{field: ..}, ..]}`` /
    ``{"groups": {"0": {field: ..}}}``."""
    groups = update.get("groups")
    if isinstance(groups, Mapping):
        groups = [groups[k] for k in sorted(groups, key=lambda k: int(str(k).lstrip("g")))]
    if isinstance(groups, list) and groups and isinstance(groups[0], Mapping):
        if all(field in g for g in groups):
            return [float(g[field]) for g in groups]
    value = update.get(field)
    if isinstance(value, Mapping):
        return [float(value[k]) for k in sorted(value, key=lambda k: int(str(k).lstrip("g")))]
    if isinstance(value, list):
        return [float(v) for v in value]
    if isinstance(value, int | float):
        return [float(value)]
    raise KsmithError(f"update.json: no per-group '{field}' found")


def cost_metrics(
    update: Mapping[str, Any] | None, n_groups: int, *, seed: int = 0, n_boot: int = 1000
) -> dict[str, dict[str, Any]]:
    """``cost.<field>@update`` entries; the no-update baseline (`update` None) costs 0."""
    out = {}
    for field in COST_FIELDS:
        name = f"cost.{field}@update"
        values = [0.0] * n_groups if update is None else per_group_values(update, field)
        out[name] = summarize(name, values, "update", seed=seed, n_boot=n_boot)
    return out
