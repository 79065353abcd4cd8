"""Markdown (leaderboard/README.md) and CSV (leaderboard/leaderboard.csv) renderings.

Pure functions from verified submissions and the metric registry to text: same input, same bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from ksmith.leaderboard.aggregate import (
    COMPONENTS,
    KIND_TITLES,
    RETAIN_COLUMNS,
    MetricInfo,
    Row,
    Table,
    build_tables,
    cell_records,
)
from ksmith.leaderboard.checks import clean_text
from ksmith.leaderboard.links import display_model, method_links
from ksmith.leaderboard.prose import INTRO, MODELS_NOTE, composite_doc
from ksmith.leaderboard.schema import Submission

ARROW = {"higher": "↑", "lower": "↓"}


def fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _md_escape(text: str) -> str:
    """A table cell's text, safe in Markdown: no control or bidi characters, no raw HTML, no
    column breaks, no code spans or links opened by submitted names."""
    text = clean_text(text)
    for ch, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(ch, entity)
    for ch in "\\`*[]|":
        text = text.replace(ch, "\\" + ch)
    return text


def component_label(table: Table, base: str) -> str:
    """`efficacy@cloze` when every row used the same full metric, else the base name."""
    names = {n for row in table.rows for n in row.modes[base]}
    return names.pop() if len(names) == 1 else base


def table_headers(
    table: Table, registry: Mapping[str, MetricInfo], checks: Mapping[str, Any] | None = None
) -> list[str]:
    comps = [
        f"{component_label(table, n)} {ARROW[registry[n].direction]}"
        for n in COMPONENTS[table.kind]
    ]
    checked = ["checked"] if checks is not None else []
    return ["rank", "submission", "method", "model", "cells", "composite ↑", *comps,
            *retain_headers(table), "update s", *checked]  # fmt: skip


def _retain_names(table: Table) -> list[str]:
    """The `RETAIN_COLUMNS` an unlearning table shows (none for editing)."""
    return list(RETAIN_COLUMNS) if table.kind == "unlearn" else []


def retain_headers(table: Table) -> list[str]:
    """`forget_quality@teacher_forced ↑`, `retain_agreement@cloze ↑` (the base name when rows
    used different modes) for an unlearning table; nothing for editing."""
    out = []
    for base in _retain_names(table):
        names = {n for row in [*table.rows, *table.partial] for n in row.retain_modes.get(base, ())}
        label = names.pop() if len(names) == 1 else base
        out.append(f"{label} {ARROW[RETAIN_COLUMNS[base]]}")
    return out


def retain_cells(table: Table, row: Row) -> list[str]:
    """A row's values of `retain_headers` ("–" for a submission evaluated without them); a
    p-value below 0.001 (forget quality far from the retain model) in scientific notation."""
    values = [row.retain.get(base) for base in _retain_names(table)]
    return [fmt(v) if v is None or v == 0 or v >= 1e-3 else f"{v:.1e}" for v in values]


BASELINE = "none"  # the no-update baseline: a reference row, never ranked


NOT_REEXECUTED = "†"
REEXEC_NOTE = (
    f"{NOT_REEXECUTED} predictions checked, not re-executed: the board recomputed every number "
    "from this submission's predictions but did not run its update on the model "
    "(`ksmith leaderboard audit` re-executes submissions on a world model it can regenerate; "
    "the others stay marked)."
)


def checked_label(record: Any) -> str:
    """How the board checked a submission: its audit (`ksmith.leaderboard.records.AuditRecord`)
    or, without one, predictions only."""
    if record is None:
        return f"predictions checked, not re-executed {NOT_REEXECUTED}"
    return (
        f"re-executed ({record.source}): {record.audited:,} of {record.rows:,} rows agree, "
        f"seed {record.seed}"
    )


def _checked_cell(sid: str, checks: Mapping[str, Any] | None) -> list[str]:
    """The ranked tables' last column: how the board checked this row's submission."""
    if checks is None:
        return []
    return ["re-executed" if checks.get(sid) is not None else f"predictions {NOT_REEXECUTED}"]


def table_cells(table: Table, checks: Mapping[str, Any] | None = None) -> list[list[str]]:
    """One line per row; the no-update baseline (method `BASELINE`) is ranked `ref`, in its
    place by composite, so that what did worse than doing nothing shows. With `checks`
    (submission id -> audit record or None), a submission not re-executed is marked."""
    out = []
    rank = 0
    for row in table.rows:
        rank += row.method != BASELINE
        out.append(
            [
                "ref" if row.method == BASELINE else str(rank),
                row.submission,
                row.method,
                display_model(row.model),
                str(row.cells),
                fmt(row.composite),
                *[fmt(row.components[n]) for n in COMPONENTS[table.kind]],
                *retain_cells(table, row),
                fmt_seconds(row.wall_seconds),
                *_checked_cell(row.submission, checks),
            ]
        )
    return out


PARTIAL_NOTE = (
    "Partial submissions (not ranked): they miss cells of the suite, so their averages are not "
    "comparable with the ranked rows."
)


def partial_headers(table: Table, registry: Mapping[str, MetricInfo]) -> list[str]:
    return ["submission", "method", "model", "coverage", *table_headers(table, registry)[5:]]


def partial_cells(table: Table) -> list[list[str]]:
    return [
        [
            row.submission,
            row.method,
            display_model(row.model),
            f"{row.cells}/{row.required} cells",
            fmt(row.composite),
            *[fmt(row.components[n]) for n in COMPONENTS[table.kind]],
            *retain_cells(table, row),
            fmt_seconds(row.wall_seconds),
        ]
        for row in table.partial
    ]


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def board_key(table: Table) -> tuple[str, str, str]:
    return (table.suite, table.fingerprint, table.kind)


def group_boards(tables: list[Table]) -> list[tuple[tuple[str, str, str], list[Table]]]:
    """Tables grouped by (suite, fingerprint, kind), in build order."""
    out: list[tuple[tuple[str, str, str], list[Table]]] = []
    for t in tables:
        if not out or out[-1][0] != board_key(t):
            out.append((board_key(t), []))
        out[-1][1].append(t)
    return out


METRIC_HEADERS = ["metric", "direction", "group", "kinds", "source", "verified", "definition"]


def metric_rows(registry: Mapping[str, MetricInfo]) -> list[list[str]]:
    return [
        [
            m.name,
            f"{ARROW.get(m.direction, '')} {m.direction}",
            m.group,
            ", ".join(m.kinds),
            m.source,
            "recomputed" if m.verified else "self-reported",
            m.description,
        ]
        for m in (registry[n] for n in sorted(registry))
    ]


def submission_headers(checks: Mapping[str, Any] | None = None) -> list[str]:
    return SUBMISSION_HEADERS + (["checked"] if checks is not None else [])


def submission_rows(
    subs: list[Submission], checks: Mapping[str, Any] | None = None
) -> list[list[str]]:
    rows = []
    for s in sorted(subs, key=lambda s: s.id):
        model = display_model(s.model.id) + (f"@{s.model.revision}" if s.model.revision else "")
        links = method_links(s.method.name, s.method.url)
        rows.append(
            [
                s.id,
                s.method.name + (f" {s.method.version}" if s.method.version else ""),
                " · ".join(f"{label} {href}" for label, href in links),
                model,
                s.model.dtype,
                f"{s.dataset.suite} ({s.dataset.fingerprint[:12]})",
                s.ksmith_version,
                f"{s.hardware.count}× {s.hardware.device} {s.hardware.name}".strip(),
                ", ".join(str(x) for x in s.seeds),
                str(len(s.cells)),
                *([checked_label(checks.get(s.id))] if checks is not None else []),
            ]
        )
    return rows


def _abilities(subs: list[Submission]) -> list[str]:
    names: dict[str, None] = {}
    for s in subs:
        names.update(dict.fromkeys(s.model.abilities or {}))
    return list(names)


def model_headers(subs: list[Submission]) -> list[str]:
    return ["model", "fingerprint", *_abilities(subs), "below threshold"]


def model_rows(subs: list[Submission]) -> list[list[str]]:
    """One row per distinct (model id, fingerprint) with a recorded profile."""
    names = _abilities(subs)
    seen: dict[tuple[str, str], list[str]] = {}
    for s in sorted(subs, key=lambda s: s.id):
        if not s.model.abilities:
            continue
        key = (s.model.id, s.model.fingerprint or s.model.revision or "")
        seen.setdefault(key, [
            display_model(s.model.id), key[1][:12], *(fmt(s.model.abilities.get(n)) for n in names),
            "; ".join(s.model.below_threshold) or "none",
        ])  # fmt: skip
    return list(seen.values())


SUBMISSION_HEADERS = [
    "id",
    "method",
    "paper/code",
    "model",
    "dtype",
    "dataset",
    "ksmith",
    "hardware",
    "seeds",
    "cells",
]


def render_markdown(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo],
    tables: list[Table] | None = None,
    suites: Mapping[str, Iterable[str]] | None = None,
    checks: Mapping[str, Any] | None = None,
) -> str:
    """The whole leaderboard/README.md text; `checks` (submission id -> audit record or None)
    marks the submissions that were not re-executed."""
    if tables is None:
        tables, _ = build_tables(subs, registry, suites)
    out = [
        "# ksmith leaderboard",
        "",
        "<!-- Generated by `ksmith leaderboard build` from leaderboard/submissions/. "
        "Do not edit by hand. -->",
        "",
        INTRO,
        "",
        *([REEXEC_NOTE, ""] if checks is not None else []),
        "## How the ranking works",
        "",
        composite_doc(),
        "",
    ]
    if not subs:
        out += ["_No verified submissions yet._", ""]
    for (suite, fp, kind), group in group_boards(tables):
        out += [f"## {KIND_TITLES[kind]} — suite `{suite}` (`{fp[:12]}`)", ""]
        for t in group:
            level = "###" if t.slice == "all" else "####"
            cells = table_cells(t, checks)
            headers = table_headers(t, registry, checks)
            out += [f"{level} {t.title}", "", _md_table(headers, cells)]
            out.append("")
            if t.partial:
                out += [PARTIAL_NOTE, "", _md_table(partial_headers(t, registry), partial_cells(t))]
                out.append("")
    models = model_rows(subs)
    if models:
        out += ["## Models: what each instrument could measure", "", MODELS_NOTE, ""]
        out += [_md_table(model_headers(subs), models), ""]
    out += ["## Submissions", ""]
    out += [_md_table(submission_headers(checks), submission_rows(subs, checks)), ""]
    out += ["## Metrics", "", "From the metric registry (`ksmith.evaluate.metrics.METRICS`).", ""]
    out += [_md_table(METRIC_HEADERS, metric_rows(registry))]
    return "\n".join(out) + "\n"


def render_csv(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo],
    checks: Mapping[str, Any] | None = None,
) -> str:
    """One row per (submission, cell), every metric value as a column (full precision); with
    `checks`, a `reexecuted` column (true when the board's audit re-executed the submission)."""
    columns, records = cell_records(subs, registry)
    for rec in records:
        rec["model"] = display_model(rec["model"])
    if checks is not None:
        columns = [*columns, "reexecuted"]
        for rec in records:
            rec["reexecuted"] = "true" if checks.get(rec["submission"]) is not None else "false"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow(
            [
                ""
                if rec[c] is None
                else repr(rec[c])
                if isinstance(rec[c], float)
                else clean_text(rec[c])
                if isinstance(rec[c], str)
                else rec[c]
                for c in columns
            ]
        )
    return buf.getvalue()
