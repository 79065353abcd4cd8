"""The report's input: every evaluated cell under a results root, with its headline values.

``<root>/<method>/<config>.s<seed>/``: `metrics.json` (the cell's metrics), `eval.json` (its
knowledge warning) and, for a cell evaluated along a sequential stream, `checkpoints.json`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.evaluate.metrics import HEADLINE_MODES, headline, parse_metric_name
from ksmith.pipeline.matrix import parse_config


@dataclass(frozen=True)
class CellResult:
    method: str
    config: str
    domain: str
    kind: str
    level: str
    scale: int
    seed: int
    metrics: dict[str, dict[str, Any]]  # full metrics.json "metrics"
    knowledge_warning: str | None = None  # eval.json's: the model barely knew the facts
    # checkpoints.json's points along a sequential stream (ksmith.evaluate.checkpoints)
    checkpoints: tuple[dict[str, Any], ...] = ()

    @property
    def cell_id(self) -> str:
        return f"{self.method}/{self.config}.s{self.seed}"

    def entry(self, base: str) -> dict[str, Any] | None:
        """A metric's record (value, ci, n, mode) in its headline mode: the first mode of
        HEADLINE_MODES that has a value. `base` is a metric name, possibly sliced
        (``efficacy``, ``propagation.known``)."""
        for mode in HEADLINE_MODES:
            entry = self.metrics.get(f"{base}@{mode}", {})
            if entry.get("value") is not None:
                return entry
        return None

    def value(self, base: str) -> float | None:
        """The headline value of `base` (see `entry`)."""
        entry = self.entry(base)
        return None if entry is None else entry["value"]

    def bases(self) -> list[str]:
        """The cell's headline metric names (no mode)."""
        return [parse_metric_name(n)[0] for n in headline(self.metrics)]

    def stream(self) -> list[tuple[int, CellResult]]:
        """(edits made so far, the cell as it stood then) for each point along its sequential
        stream, the final state last; [] for a cell not evaluated along one."""
        return [
            (int(p["edits"]), dataclasses.replace(self, metrics=p["metrics"], checkpoints=()))
            for p in self.checkpoints
        ]


def collect(root: str | Path) -> list[CellResult]:
    """Every `<root>/<method>/<config>.s<seed>/metrics.json`, in a stable order."""
    cells = []
    for path in sorted(Path(root).glob("*/*/metrics.json")):
        method = path.parent.parent.name
        config, _, seed = path.parent.name.rpartition(".s")
        domain, kind, level, scale = parse_config(config)
        data = json.loads(path.read_text())
        ev_path = path.parent / "eval.json"
        ev = json.loads(ev_path.read_text()) if ev_path.exists() else {}
        warning = (ev.get("knowledge") or {}).get("warning")
        cp_path = path.parent / "checkpoints.json"
        points = json.loads(cp_path.read_text())["checkpoints"] if cp_path.exists() else []
        cells.append(CellResult(
            method, config, domain, kind, level, scale, int(seed), data["metrics"], warning,
            tuple(points),
        ))  # fmt: skip
    return cells
