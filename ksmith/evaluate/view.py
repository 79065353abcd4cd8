"""Probes joined with their before and after prediction rows: what metrics iterate over."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ksmith.errors import KsmithError
from ksmith.evaluate.scoring import MODES, MODES_BY_FORMAT, correct_after


@dataclass(frozen=True)
class Item:
    """One (probe, mode): the probe row and its before and after prediction rows."""

    probe: Mapping[str, Any]
    mode: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    @property
    def worlds(self) -> frozenset[str]:
        """Worlds the after-stage answer belongs to: ``before`` (it gives answer_before) and/or
        ``after`` (it gives answer_after, or for ``avoid`` withholds it)."""
        w = set()
        if self.after["match_before"]:
            w.add("before")
        if correct_after(bool(self.after["match_after"]), self.probe["expect_after"]):
            w.add("after")
        return frozenset(w)


class PredictionView:
    """Probes joined with their prediction rows, validated (every probe has both stages in
    every mode of its format; `correct` and `changed` agree with the match flags)."""

    def __init__(self, probes: Sequence[Mapping[str, Any]], predictions: Iterable[Mapping]):
        by_id = {p["id"]: p for p in probes}
        rows: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        for r in predictions:
            if r["probe_id"] not in by_id:
                raise KsmithError(f"prediction for unknown probe {r['probe_id']!r}")
            rows[(r["probe_id"], r["mode"], r["stage"])] = r
        self.items: list[Item] = []
        for p in probes:
            for mode in MODES_BY_FORMAT[p["format"]]:
                b, a = rows.get((p["id"], mode, "before")), rows.get((p["id"], mode, "after"))
                if b is None or a is None:
                    raise KsmithError(f"probe {p['id']!r} has no {mode} prediction in a stage")
                _check_row(p, b, a)
                self.items.append(Item(p, mode, b, a))
        self.modes = [m for m in MODES if any(it.mode == m for it in self.items)]

    def select(self, mode: str | None = None, **where: Any) -> list[Item]:
        return [
            it
            for it in self.items
            if (mode is None or it.mode == mode)
            and all(
                it.probe[k] in v if isinstance(v, tuple) else it.probe[k] == v
                for k, v in where.items()
            )
        ]


def _check_row(probe: Mapping[str, Any], b: Mapping[str, Any], a: Mapping[str, Any]) -> None:
    ok = bool(b["correct"]) == bool(b["match_before"]) and bool(a["correct"]) == correct_after(
        bool(a["match_after"]), probe["expect_after"]
    )
    ok = ok and bool(a["changed"]) == (a["prediction"] != b["prediction"])
    if not ok:
        raise KsmithError(
            f"probe {probe['id']!r}: 'correct'/'changed' disagree with the predictions and "
            "match flags"
        )
