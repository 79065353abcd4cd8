"""The leaderboard page's inline CSS and JavaScript (`ksmith.leaderboard.html`).

The script sorts a table by a clicked header (again: reversed), filters the boards, tables and
rows by the select boxes (kind, level, scale, model), opens a submission's example predictions
when its name is clicked, and marks the body `data-ready` for the browser tests.
"""

from __future__ import annotations

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;margin-right:4px;vertical-align:middle}
code{background:#f3f3f3;padding:0 3px}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
.filters label{margin-right:1em}
.ci{color:#666;font-size:12px}
tr[data-ref]{font-style:italic;background:#fafafa}
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
  function applyFilters() {
    var f = {};
    Array.prototype.forEach.call(document.querySelectorAll("select[data-filter]"), function (s) {
      f[s.getAttribute("data-filter")] = s.value;
    });
    Array.prototype.forEach.call(document.querySelectorAll("section.board"), function (b) {
      b.hidden = f.kind !== "" && b.getAttribute("data-kind") !== f.kind;
    });
    Array.prototype.forEach.call(document.querySelectorAll("div.slice"), function (d) {
      var sl = d.getAttribute("data-slice"), show;
      if (f.level === "" && f.scale === "") show = true;
      else show = sl === "level=" + f.level || sl === "scale=" + f.scale;
      d.hidden = !show;
    });
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-model]"), function (r) {
      r.hidden = f.model !== "" && r.getAttribute("data-model") !== f.model;
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("select[data-filter]"), function (s) {
    s.addEventListener("change", applyFilters);
  });
  function openExample(id) {
    var d = document.getElementById(id);
    if (d && d.tagName === "DETAILS") d.open = true;
  }
  Array.prototype.forEach.call(document.querySelectorAll('a[href^="#ex-"]'), function (a) {
    a.addEventListener("click", function () { openExample(a.getAttribute("href").slice(1)); });
  });
  window.addEventListener("hashchange", function () { openExample(location.hash.slice(1)); });
  if (location.hash) openExample(location.hash.slice(1));
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
