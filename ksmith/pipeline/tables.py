"""Cell formatting the report's tables share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt_entry(entry: Mapping[str, Any] | None) -> str:
    """``value [lo, hi] n`` (95% bootstrap interval over the cell's probes, probe count)."""
    if entry is None:
        return "–"
    lo, hi = (entry.get("ci") or [None, None])[:2]
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    n = entry.get("n")
    return f"{entry['value']:.3f}{ci}" + (f" {n}" if n is not None else "")
