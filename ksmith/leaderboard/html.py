"""The static page `leaderboard/index.html`: sortable tables and scale-curve plots.

One self-contained file: inline CSS, vanilla inline JS for sorting (click a header; click again
to reverse), and inline SVG plots generated here. No CDN, no network, works from `file://`.
Deterministic: the same submissions and registry give the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from html import escape as _html_escape

from ksmith.leaderboard.aggregate import (
    COMPONENTS,
    KIND_TITLES,
    Curve,
    MetricInfo,
    Table,
    build_tables,
)
from ksmith.leaderboard.checks import clean_text
from ksmith.leaderboard.render import (
    COMPOSITE_DOC,
    INTRO,
    METRIC_HEADERS,
    MODELS_NOTE,
    PARTIAL_NOTE,
    SUBMISSION_HEADERS,
    composite_components,
    group_boards,
    metric_rows,
    model_headers,
    model_rows,
    partial_cells,
    partial_headers,
    submission_rows,
    table_cells,
    table_headers,
)
from ksmith.leaderboard.schema import Submission


def escape(text: str) -> str:
    """HTML-escaped text without control or bidirectional characters."""
    return _html_escape(clean_text(text))


# Okabe-Ito palette: distinguishable for colour-blind readers.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
code{background:#f3f3f3;padding:0 3px}
""".strip()

SORT_JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent : v;
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var numeric = th.getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === "" || y === "") return (x === "") - (y === "");
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
  document.body.setAttribute("data-ready", "1");
})();
""".strip()

_NUMERIC = {"rank", "cells", "composite ↑", "update s"}


def _is_numeric(header: str) -> bool:
    return header in _NUMERIC or header.endswith(("↑", "↓"))


def _num_value(text: str) -> str:
    return "" if text == "–" else text


def inline_md(text: str) -> str:
    """Escaped HTML for the few inline Markdown marks the prose uses: `code`, **bold**, *em*."""
    out = escape(text).replace("\n", " ")
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def _html_table(headers: list[str], rows: list[list[str]], *, sortable: bool, tid: str) -> str:
    cls = ' class="sortable"' if sortable else ""
    numeric = [_is_numeric(h) for h in headers]
    ths = "".join(
        f'<th data-type="{"number" if n else "text"}">{escape(h)}</th>'
        for h, n in zip(headers, numeric, strict=True)
    )
    body = []
    for r in rows:
        tds = []
        for text, n in zip(r, numeric, strict=True):
            if n:
                tds.append(
                    f'<td class="num" data-v="{escape(_num_value(text))}">{escape(text)}</td>'
                )
            elif text.startswith(("http://", "https://")):
                tds.append(f'<td><a href="{escape(text)}">{escape(text)}</a></td>')
            else:
                tds.append(f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<table id="{tid}"{cls}><thead><tr>{ths}</tr></thead>'
        f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _f(x: float) -> str:
    """Coordinates with fixed precision so the SVG text is stable."""
    return f"{x:.1f}"


def svg_curve(curve: Curve, colors: Mapping[str, str], direction: str = "higher") -> str:
    """A line plot of `curve` against log10(k): one polyline + markers per submission."""
    w, h, left, right, top, bottom = 300, 210, 44, 12, 26, 34
    scales = sorted({k for pts in curve.series.values() for k, _ in pts})
    values = [v for pts in curve.series.values() for _, v in pts]
    lo = min([0.0, *values])
    hi = max([1.0, *values])
    xs = [math.log10(k) for k in scales] or [0.0]
    x0, x1 = min(xs), max(xs)

    def px(k: int) -> float:
        if x1 == x0:
            return left + (w - left - right) / 2
        return left + (math.log10(k) - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (h - top - bottom)

    arrow = "↑" if direction == "higher" else "↓"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" class="curve" data-metric="{escape(curve.metric)}">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">'
        f"{escape(curve.metric)} {arrow} vs scale k</text>",
        f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
        'fill="none" stroke="#999"/>',
    ]
    for t in (lo, (lo + hi) / 2, hi):
        y = _f(py(t))
        parts.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y}" y2="{y}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y}" text-anchor="end" dominant-baseline="middle" '
            f'font-size="11">{t:.2f}</text>'
        )
    for k in scales:
        x = _f(px(k))
        parts.append(
            f'<text x="{x}" y="{h - bottom + 14}" text-anchor="middle" font-size="11">{k}</text>'
        )
    parts.append(
        f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle" font-size="11">k (log scale)</text>'
    )
    for sub_id in sorted(curve.series):
        pts = curve.series[sub_id]
        color = colors[sub_id]
        coords = " ".join(f"{_f(px(k))},{_f(py(v))}" for k, v in pts)
        if len(pts) > 1:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        for k, v in pts:
            parts.append(
                f'<circle cx="{_f(px(k))}" cy="{_f(py(v))}" r="3" fill="{color}">'
                f"<title>{escape(sub_id)}: k={k}, {escape(curve.metric)}={v:.3f}</title></circle>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo],
    suites: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The whole index.html text."""
    tables, curves = build_tables(subs, registry, suites)
    ids = sorted(s.id for s in subs)
    colors = {sid: PALETTE[i % len(PALETTE)] for i, sid in enumerate(ids)}
    body = [
        "<h1>ksmith leaderboard</h1>",
        "<p>" + inline_md(INTRO.split("\n\n")[0]) + "</p>",
        "<p>" + inline_md(INTRO.split("\n\n")[1]) + "</p>",
        "<h2>How the ranking works</h2>",
        "<p>" + inline_md(COMPOSITE_DOC) + "</p>",
        "<ul>" + "".join(f"<li>{inline_md(x)}</li>" for x in composite_components()) + "</ul>",
    ]
    if not subs:
        body.append("<p><em>No verified submissions yet.</em></p>")
    n = 0
    for (suite, fp, kind), group in group_boards(tables):
        body.append(
            f"<h2>{escape(KIND_TITLES[kind])} — suite <code>{escape(suite)}</code> "
            f"(<code>{escape(fp[:12])}</code>)</h2>"
        )
        for t in group:
            n += 1
            tag = "h3" if t.slice == "all" else "h4"
            body.append(f"<{tag}>{escape(t.title)}</{tag}>")
            body.append(
                _html_table(table_headers(t, registry), table_cells(t), sortable=True, tid=f"t{n}")
            )
            if t.partial:
                body.append(f"<p>{escape(PARTIAL_NOTE)}</p>")
                body.append(
                    _html_table(
                        partial_headers(t, registry), partial_cells(t), sortable=True, tid=f"p{n}"
                    )
                )
            if t.slice == "all":
                body.append(_plots(curves, t, registry, colors))
    models = model_rows(subs)
    if models:
        body.append("<h2>Models: what each instrument could measure</h2>")
        body.append(f"<p>{inline_md(MODELS_NOTE)}</p>")
        body.append(_html_table(model_headers(subs), models, sortable=False, tid="models"))
    body.append("<h2>Submissions</h2>")
    body.append(
        _html_table(SUBMISSION_HEADERS, submission_rows(subs), sortable=True, tid="submissions")
    )
    body.append("<h2>Metrics</h2>")
    body.append(
        _html_table(
            METRIC_HEADERS,
            metric_rows(registry),
            sortable=False,
            tid="metrics",
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>ksmith leaderboard</title>\n"
        "<!-- Generated by `ksmith leaderboard build`. Do not edit by hand. -->\n"
        f"<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>\n{SORT_JS}\n</script>\n</body>\n</html>\n"
    )


def _plots(
    curves: list[Curve], table: Table, registry: Mapping[str, MetricInfo], colors: Mapping[str, str]
) -> str:
    mine = [
        c
        for c in curves
        if (c.suite, c.fingerprint, c.kind) == (table.suite, table.fingerprint, table.kind)
        and c.series
    ]
    if not mine:
        return ""
    in_plot = sorted({sid for c in mine for sid in c.series})
    legend = "".join(
        f'<span><i class="swatch" style="background:{colors[s]}"></i>{escape(s)}</span>'
        for s in in_plot
    )
    svgs = []
    for c in mine:
        direction = "higher" if c.metric == "composite" else registry[c.metric].direction
        svgs.append(svg_curve(c, colors, direction))
    names = ", ".join(("composite", *COMPONENTS[table.kind]))
    return (
        f"<h4>Scale curves ({escape(names)})</h4>"
        f'<div class="legend">{legend}</div><div class="plots">' + "\n".join(svgs) + "</div>"
    )
