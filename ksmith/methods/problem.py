"""Request rows (docs/contracts.md section 2) -> one UpdateProblem per group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ksmith.errors import KsmithError
from ksmith.methods.base import Kind, Mode, Request, TargetKind, TextPair, UpdateProblem

REQUEST_COLUMNS = (
    "group",
    "request_id",
    "kind",
    "level",
    "subject",
    "relation",
    "object",
    "new_object",
    "prompt",
    "plus_prompts",
    "plus_answers",
    "minus_prompts",
    "minus_answers",
)


def config_kind(rows: Iterable[Mapping[str, Any]], *, where: str = "requests") -> Kind:
    """The single kind (edit/unlearn) of a config's request rows."""
    kinds = {str(r["kind"]) for r in rows}
    if len(kinds) != 1 or not kinds <= {"edit", "unlearn"}:
        raise KsmithError(f"{where}: expected one kind (edit or unlearn), found {sorted(kinds)}")
    return kinds.pop()  # type: ignore[return-value]


def _pairs(row: Mapping[str, Any], which: str, where: str) -> list[TextPair]:
    prompts = list(row[f"{which}_prompts"])
    answers = list(row[f"{which}_answers"])
    if len(prompts) != len(answers):
        raise KsmithError(
            f"{where}: request {row['request_id']}: {len(prompts)} {which}_prompts but "
            f"{len(answers)} {which}_answers"
        )
    rid = str(row["request_id"])
    return [TextPair(str(p), str(a), rid) for p, a in zip(prompts, answers, strict=True)]


def build_problems(
    rows: Iterable[Mapping[str, Any]],
    *,
    target: TargetKind,
    mode: Mode = "batch",
    seed: int = 0,
    groups: Iterable[int] | None = None,
    where: str = "requests",
) -> dict[int, UpdateProblem]:
    """group -> UpdateProblem from a config's request rows, groups in ascending order.

    Q+ pairs keep their request id (sequential mode splits on it). The Q- view is the union of
    the group's per-request retain pairs, duplicates dropped, first occurrence kept.
    `groups` selects some groups; asking for one that is absent is an error.
    """
    rows = list(rows)
    if not rows:
        raise KsmithError(f"{where}: no request rows")
    missing = [c for c in REQUEST_COLUMNS if c not in rows[0]]
    if missing:
        raise KsmithError(f"{where}: request rows lack column(s) {missing}")
    kind = config_kind(rows, where=where)
    by_group: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_group.setdefault(int(row["group"]), []).append(row)
    wanted = sorted(by_group) if groups is None else sorted(set(groups))
    absent = [g for g in wanted if g not in by_group]
    if absent:
        raise KsmithError(f"{where}: no group(s) {absent}; the config has {sorted(by_group)}")
    problems = {}
    for g in wanted:
        requests, plus, minus, seen = [], [], [], set()
        for row in by_group[g]:
            new = str(row["new_object"] or "")
            if kind == "edit" and not new:
                raise KsmithError(f"{where}: edit request {row['request_id']} has no new_object")
            requests.append(
                Request(
                    request_id=str(row["request_id"]),
                    subject=str(row["subject"]),
                    relation=str(row["relation"]),
                    prompt=str(row["prompt"]),
                    old_object=str(row["object"]),
                    new_object=new if kind == "edit" else None,
                )
            )
            plus += _pairs(row, "plus", where)
            for pair in _pairs(row, "minus", where):
                if (pair.prompt, pair.answer) not in seen:
                    seen.add((pair.prompt, pair.answer))
                    minus.append(pair)
        problems[g] = UpdateProblem(
            kind=kind,
            requests=tuple(requests),
            plus=tuple(plus),
            minus=tuple(minus),
            target=target,
            mode=mode,
            seed=seed,
        )
    return problems
