"""The static page `leaderboard/index.html`: sortable, filterable tables and inline SVG plots.

One self-contained file: inline CSS, vanilla inline JS for sorting (click a header; click again
to reverse) and filtering (kind, level, scale, model), and inline SVG plots (`ksmith.leaderboard.
svg`): scale curves and the efficacy-locality trade-off, in each method's fixed colour, with 95%
bootstrap intervals over cells as error bars (also beside each composite). No CDN, no network,
works from `file://`. Deterministic: the same submissions and registry give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from html import escape as _html_escape
from typing import Any

from ksmith.leaderboard.aggregate import (
    COMPONENTS,
    KIND_TITLES,
    MetricInfo,
    Table,
    build_tables,
    cell_composite,
    component,
)
from ksmith.leaderboard.checks import clean_text
from ksmith.leaderboard.links import display_model
from ksmith.leaderboard.page_assets import CSS, SORT_JS
from ksmith.leaderboard.prose import COMPOSITE_DOC, INTRO, MODELS_NOTE, composite_components
from ksmith.leaderboard.render import (
    METRIC_HEADERS,
    PARTIAL_NOTE,
    REEXEC_NOTE,
    group_boards,
    metric_rows,
    model_headers,
    model_rows,
    partial_cells,
    partial_headers,
    submission_headers,
    submission_rows,
    table_cells,
    table_headers,
)
from ksmith.leaderboard.schema import Cell, Submission
from ksmith.leaderboard.svg import DASHES, Point, Series, legend, svg_curve, svg_tradeoff

CI_SEED = 0


def escape(text: str) -> str:
    """HTML-escaped text without control or bidirectional characters."""
    return _html_escape(clean_text(text))


_NUMERIC = {"rank", "cells", "composite ↑", "update s"}


def _is_numeric(header: str) -> bool:
    return header in _NUMERIC or header.endswith(("↑", "↓"))


def _num_value(text: str) -> str:
    """The number a cell sorts by: its first word (a composite is followed by its interval)."""
    return "" if text in ("–", "ref") else text.split()[0]


_LINK = re.compile(r"(url|paper|code) (https://\S+)")


def _cell_html(text: str) -> str:
    if text.startswith(("http://", "https://")):
        return f'<a href="{escape(text)}">{escape(text)}</a>'
    if _LINK.search(text):  # "paper https://... · code https://..."
        return " · ".join(
            f'<a href="{escape(m.group(2))}">{escape(m.group(1))}</a>' for m in _LINK.finditer(text)
        )
    return escape(text)


def inline_md(text: str) -> str:
    """Escaped HTML for the few inline Markdown marks the prose uses: `code`, **bold**, *em*."""
    out = escape(text).replace("\n", " ")
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def _html_table(
    headers: list[str],
    rows: list[list[str]],
    *,
    sortable: bool,
    tid: str,
    row_attrs: list[dict[str, str]] | None = None,
    links: Mapping[str, str] | None = None,
) -> str:
    """A table; `links` maps a text column's cell text to the address it links to."""
    cls = ' class="sortable"' if sortable else ""
    numeric = [_is_numeric(h) for h in headers]
    ths = "".join(
        f'<th data-type="{"number" if n else "text"}">{escape(h)}</th>'
        for h, n in zip(headers, numeric, strict=True)
    )
    body = []
    for i, r in enumerate(rows):
        tds = []
        for text, n in zip(r, numeric, strict=True):
            if n:
                value, _, ci = text.partition(" ")
                extra = f' <span class="ci">{escape(ci)}</span>' if ci else ""
                tds.append(
                    f'<td class="num" data-v="{escape(_num_value(text))}">{escape(value)}{extra}'
                    "</td>"
                )
            elif links and text in links:
                tds.append(f'<td><a href="{escape(links[text])}">{escape(text)}</a></td>')
            else:
                tds.append(f"<td>{_cell_html(text)}</td>")
        attrs = "".join(
            f' {k}="{escape(v)}"' for k, v in sorted((row_attrs[i] if row_attrs else {}).items())
        )
        body.append(f"<tr{attrs}>" + "".join(tds) + "</tr>")
    return (
        f'<table id="{tid}"{cls}><thead><tr>{ths}</tr></thead>'
        f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _in_slice(cell: Cell, slice_: str) -> bool:
    if slice_.startswith("level="):
        return cell.level == slice_[6:]
    if slice_.startswith("scale="):
        return cell.scale == int(slice_[6:])
    return True


def _interval(values: list[float], name: str) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean of `values` (seeded by `name`), or None below 2."""
    if len(values) < 2:
        return None
    from ksmith.evaluate.stats import mean_ci

    return mean_ci(values, seed=CI_SEED, name=name)


def _cell_values(cells: list[Cell], metric: str, registry: Mapping[str, MetricInfo]) -> list[float]:
    if metric == "composite":
        vals = [cell_composite(c, registry) for c in cells]
    else:
        vals = [component(c, metric)[1] for c in cells]
    return [v for v in vals if v is not None]


def _ci_text(ci: tuple[float, float] | None) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _table_html(
    t: Table,
    registry: Mapping[str, MetricInfo],
    subs: Mapping[str, Submission],
    tid: str,
    links: Mapping[str, str] | None = None,
    checks: Mapping[str, Any] | None = None,
) -> str:
    """A ranked table whose composites carry their 95% interval over the row's cells."""
    rows = table_cells(t, checks)
    for text, row in zip(rows, t.rows, strict=True):
        cells = [
            c for c in subs[row.submission].cells if c.kind == t.kind and _in_slice(c, t.slice)
        ]
        vals = _cell_values(cells, "composite", registry)
        text[5] += _ci_text(_interval(vals, f"{row.submission}/{t.kind}/{t.slice}"))
    attrs = [
        {"data-model": display_model(r.model), "data-method": r.method}
        | ({"data-ref": "baseline"} if r.method == "none" else {})
        for r in t.rows
    ]
    headers = table_headers(t, registry, checks)
    return _html_table(headers, rows, sortable=True, tid=tid, row_attrs=attrs, links=links)


def _filters(subs: list[Submission], tables: list[Table]) -> str:
    """Select boxes for kind, level, scale and model (`applyFilters` in SORT_JS)."""

    def select(name: str, label: str, values: list[str]) -> str:
        opts = '<option value="">all</option>' + "".join(
            f'<option value="{escape(v)}">{escape(v)}</option>' for v in values
        )
        return f'<label>{escape(label)} <select data-filter="{name}">{opts}</select></label>'

    kinds = [k for k in KIND_TITLES if any(t.kind == k for t in tables)]
    levels = list(dict.fromkeys(t.slice[6:] for t in tables if t.slice.startswith("level=")))
    scales = sorted({int(t.slice[6:]) for t in tables if t.slice.startswith("scale=")})
    models = sorted({display_model(s.model.id) for s in subs})
    return (
        '<form class="filters" id="filters">'
        + select("kind", "kind", kinds)
        + select("level", "level", levels)
        + select("scale", "scale k", [str(k) for k in scales])
        + select("model", "model", models)
        + "</form>"
    )


def render_html(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo],
    suites: Mapping[str, Iterable[str]] | None = None,
    examples: Mapping[str, list[dict[str, Any]]] | None = None,
    checks: Mapping[str, Any] | None = None,
) -> str:
    """The whole index.html text; `examples` (submission id -> `examples.example_rows`) fills
    the drill-down that each submission's name links to; `checks` (submission id -> audit
    record or None) marks the submissions that were not re-executed."""
    tables, _ = build_tables(subs, registry, suites)
    by_id = {s.id: s for s in subs}
    examples = {k: v for k, v in (examples or {}).items() if v and k in by_id}
    links = {sid: f"#ex-{sid}" for sid in examples}
    body = [
        "<h1>ksmith leaderboard</h1>",
        "<p>" + inline_md(INTRO.split("\n\n")[0]) + "</p>",
        "<p>" + inline_md(INTRO.split("\n\n")[1]) + "</p>",
        *(["<p>" + inline_md(REEXEC_NOTE) + "</p>"] if checks is not None else []),
        _filters(subs, tables),
        "<h2>How the ranking works</h2>",
        *("<p>" + inline_md(par) + "</p>" for par in COMPOSITE_DOC.split("\n\n")),
        "<ul>" + "".join(f"<li>{inline_md(x)}</li>" for x in composite_components()) + "</ul>",
    ]
    if not subs:
        body.append("<p><em>No verified submissions yet.</em></p>")
    n = 0
    for (suite, fp, kind), group in group_boards(tables):
        body.append(f'<section class="board" data-kind="{escape(kind)}">')
        body.append(
            f"<h2>{escape(KIND_TITLES[kind])} — suite <code>{escape(suite)}</code> "
            f"(<code>{escape(fp[:12])}</code>)</h2>"
        )
        for t in group:
            n += 1
            tag = "h3" if t.slice == "all" else "h4"
            body.append(f'<div class="slice" data-slice="{escape(t.slice)}">')
            body.append(f"<{tag}>{escape(t.title)}</{tag}>")
            body.append(_table_html(t, registry, by_id, f"t{n}", links, checks))
            if t.partial:
                body.append(f"<p>{escape(PARTIAL_NOTE)}</p>")
                body.append(
                    _html_table(
                        partial_headers(t, registry), partial_cells(t), sortable=True, tid=f"p{n}"
                    )
                )
            body.append("</div>")
            if t.slice == "all":
                body.append(_plots(t, registry, by_id))
        body.append("</section>")
    models = model_rows(subs)
    if models:
        body.append("<h2>Models: what each instrument could measure</h2>")
        body.append(f"<p>{inline_md(MODELS_NOTE)}</p>")
        body.append(_html_table(model_headers(subs), models, sortable=False, tid="models"))
    body.append("<h2>Submissions</h2>")
    body.append(
        _html_table(
            submission_headers(checks),
            submission_rows(subs, checks),
            sortable=True,
            tid="submissions",
            links=links,
        )
    )
    if examples:
        body.append(_examples_html(by_id, examples))
    body.append("<h2>Metrics</h2>")
    body.append(_html_table(METRIC_HEADERS, metric_rows(registry), sortable=False, tid="metrics"))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>ksmith leaderboard</title>\n"
        "<!-- Generated by `ksmith leaderboard build`. Do not edit by hand. -->\n"
        f"<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>\n{SORT_JS}\n</script>\n</body>\n</html>\n"
    )


def _series(
    table: Table, subs: Mapping[str, Submission]
) -> list[tuple[Submission, list[Cell], str]]:
    """(submission, its cells of the table's kind, dash) for each ranked row; submissions of
    one method on different models get different dashes."""
    out, seen = [], {}
    for row in sorted(table.rows, key=lambda r: r.submission):
        sub = subs[row.submission]
        models = seen.setdefault(sub.method.name, [])
        if sub.model.id not in models:
            models.append(sub.model.id)
        dash = DASHES[models.index(sub.model.id) % len(DASHES)]
        out.append((sub, [c for c in sub.cells if c.kind == table.kind], dash))
    return out


def _plots(table: Table, registry: Mapping[str, MetricInfo], subs: Mapping[str, Submission]) -> str:
    """Scale curves (composite and components against k) and the trade-off plot of a board."""
    entries = _series(table, subs)
    if not entries:
        return ""
    svgs = []
    for metric in ("composite", *COMPONENTS[table.kind]):
        series = []
        for sub, cells, dash in entries:
            points = []
            for k in sorted({c.scale for c in cells}):
                vals = _cell_values([c for c in cells if c.scale == k], metric, registry)
                if vals:
                    ci = _interval(vals, f"{sub.id}/{table.kind}/{metric}/k{k}")
                    lo, hi = ci if ci else (None, None)
                    points.append(Point(k, sum(vals) / len(vals), lo, hi))
            if points:
                series.append(Series(sub.id, sub.method.name, dash, points))
        direction = "higher" if metric == "composite" else registry[metric].direction
        if series:
            svgs.append(svg_curve(metric, series, direction))
    trade = []
    for sub, cells, dash in entries:
        eff = _cell_values(cells, "efficacy", registry)
        loc = _cell_values(cells, "locality", registry)
        if eff and loc:
            e_ci = _interval(eff, f"{sub.id}/{table.kind}/efficacy")
            l_ci = _interval(loc, f"{sub.id}/{table.kind}/locality")
            trade.append(Series(sub.id, sub.method.name, dash, [Point(
                sum(loc) / len(loc), sum(eff) / len(eff),
                *(e_ci or (None, None)), *(l_ci or (None, None)),
            )]))  # fmt: skip
    if trade:
        title = f"{KIND_TITLES[table.kind]}: efficacy against locality"
        svgs.append(svg_tradeoff(title, trade))
    names = ", ".join(("composite", *COMPONENTS[table.kind]))
    shown = [Series(sub.id, sub.method.name, dash) for sub, _, dash in entries]
    return (
        f"<h4>Scale curves ({escape(names)}) and the trade-off; bars: 95% intervals over cells"
        f'</h4><div class="legend">{legend(shown)}</div><div class="plots">'
        + "\n".join(svgs)
        + "</div>"
    )


EXAMPLE_HEADERS = ["cell", "probe", "mode", "prompt", "expected", "before", "after", "correct"]


def _examples_html(subs: Mapping[str, Submission], examples: Mapping[str, list[dict]]) -> str:
    """One collapsed block per submission: a few of its predictions per cell, with the prompt
    and the expected answers from the released dataset."""
    out = [
        "<h2>Example predictions</h2>",
        "<p>Per cell, the first group's first probe of each type, from the submission's "
        "predictions and the released dataset (expected: before → after the update; after an "
        "unlearning, anything but the old answer). Click a submission's name to open it.</p>",
    ]
    for sid in sorted(examples):
        sub = subs[sid]
        rows = [
            [
                r["config"], f"{r['type']} ({r['qset']})", r["mode"], r["prompt"],
                f"{r['expected_before']} → {r['expected_after']}", r["before"], r["after"],
                "✓" if r["correct"] else "✗",
            ]
            for r in examples[sid]
        ]  # fmt: skip
        out.append(
            f'<details id="ex-{escape(sid)}" class="examples"><summary>{escape(sid)}: '
            f"{escape(sub.method.name)} on {escape(display_model(sub.model.id))} "
            f"({len(rows)} examples)</summary>"
            + _html_table(EXAMPLE_HEADERS, rows, sortable=False, tid=f"ex-table-{escape(sid)}")
            + "</details>"
        )
    return "\n".join(out)
