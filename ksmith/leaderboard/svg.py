"""Inline SVG plots of the leaderboard page: scale curves and the efficacy-locality trade-off.

Colours belong to methods, not to submissions or their order on the page: each built-in method
has its own fixed colour (`METHOD_COLORS`, all distinct), any other method a colour derived
from its name, so a method keeps its colour on every page and build. Submissions of one method
on different models differ by dash. Error bars are 95% bootstrap intervals over cells.
Coordinates are printed with fixed precision, so the same data give the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape as _html_escape

from ksmith.leaderboard.checks import clean_text

# One colour per built-in method (and the no-update baseline), never shared: Okabe-Ito first,
# then Tableau's darker tones for the rest.
METHOD_COLORS: dict[str, str] = {
    "ft_l": "#0072B2",
    "ft_m": "#E69F00",
    "lora": "#009E73",
    "rome": "#D55E00",
    "memit": "#CC79A7",
    "alphaedit": "#56B4E9",
    "ice": "#8C6D31",
    "adalora": "#7F7F7F",
    "grace": "#17BECF",
    "wise": "#BCBD22",
    "ga": "#1F77B4",
    "graddiff": "#9467BD",
    "npo": "#8C564B",
    "simnpo": "#E377C2",
    "rmu": "#2CA02C",
    "idk": "#D62728",
    "relearn": "#FF7F0E",
    "none": "#000000",
}
DASHES = ("", "6 3", "2 2", "8 3 2 3")


def method_color(name: str) -> str:
    """The method's colour: its fixed one, else a hue derived from its name (stable)."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return f"hsl({h % 360},{55 + h // 360 % 30}%,{35 + h // 10800 % 20}%)"


def escape(text: str) -> str:
    return _html_escape(clean_text(text))


def _f(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    lo: float | None = None  # interval of y
    hi: float | None = None
    x_lo: float | None = None  # interval of x (trade-off plot)
    x_hi: float | None = None


@dataclass(frozen=True)
class Series:
    """One submission's points, drawn in its method's colour (dash: its model's index)."""

    label: str
    method: str
    dash: str = ""
    points: list[Point] = field(default_factory=list)


class _Frame:
    """Plot area and axis mappings of a `w` x `h` figure."""

    def __init__(self, w: int, h: int, xs: Sequence[float], ys: Sequence[float], log_x: bool):
        self.w, self.h, self.left, self.right, self.top, self.bottom = w, h, 44, 12, 26, 34
        self.log_x = log_x
        tx = [math.log10(x) if log_x else x for x in xs] or [0.0]
        self.x0, self.x1 = min(tx), max(tx)
        self.lo, self.hi = min([0.0, *ys]), max([1.0, *ys])

    def px(self, x: float) -> float:
        t = math.log10(x) if self.log_x else x
        if self.x1 == self.x0:
            return self.left + (self.w - self.left - self.right) / 2
        return self.left + (t - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        return self.top + (self.hi - y) / (self.hi - self.lo) * (self.h - self.top - self.bottom)

    def axes(self, title: str, cls: str, data: str, x_label: str) -> list[str]:
        w, h = self.w, self.h
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" class="{cls}" data-metric="{escape(data)}">',
            f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
            f'<rect x="{self.left}" y="{self.top}" width="{w - self.left - self.right}" '
            f'height="{h - self.top - self.bottom}" fill="none" stroke="#999"/>',
        ]
        for t in (self.lo, (self.lo + self.hi) / 2, self.hi):
            y = _f(self.py(t))
            parts.append(
                f'<line x1="{self.left}" x2="{w - self.right}" y1="{y}" y2="{y}" stroke="#eee"/>'
                f'<text x="{self.left - 4}" y="{y}" text-anchor="end" dominant-baseline="middle" '
                f'font-size="11">{t:.2f}</text>'
            )
        parts.append(
            f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle" font-size="11">'
            f"{escape(x_label)}</text>"
        )
        return parts

    def error_bar(self, x: float, lo: float, hi: float, color: str) -> str:
        return (
            f'<line class="err" x1="{_f(self.px(x))}" x2="{_f(self.px(x))}" y1="{_f(self.py(lo))}" '
            f'y2="{_f(self.py(hi))}" stroke="{color}" stroke-width="1"/>'
        )


def svg_curve(metric: str, series: Sequence[Series], direction: str = "higher") -> str:
    """`metric` against log10(k): per submission a line, markers and 95% error bars."""
    xs = sorted({p.x for s in series for p in s.points})
    ys = [v for s in series for p in s.points for v in (p.y, p.lo, p.hi) if v is not None]
    fr = _Frame(300, 210, xs, ys, log_x=True)
    arrow = "↑" if direction == "higher" else "↓"
    parts = fr.axes(f"{metric} {arrow} vs scale k", "curve", metric, "k (log scale)")
    for k in xs:
        parts.append(
            f'<text x="{_f(fr.px(k))}" y="{fr.h - fr.bottom + 14}" text-anchor="middle" '
            f'font-size="11">{k:g}</text>'
        )
    for s in sorted(series, key=lambda s: s.label):
        color = method_color(s.method)
        coords = " ".join(f"{_f(fr.px(p.x))},{_f(fr.py(p.y))}" for p in s.points)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if len(s.points) > 1:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"'
                f'{dash} data-series="{escape(s.label)}"/>'
            )
        for p in s.points:
            if p.lo is not None and p.hi is not None:
                parts.append(fr.error_bar(p.x, p.lo, p.hi, color))
            ci = f" [{p.lo:.3f}, {p.hi:.3f}]" if p.lo is not None and p.hi is not None else ""
            parts.append(
                f'<circle cx="{_f(fr.px(p.x))}" cy="{_f(fr.py(p.y))}" r="3" fill="{color}">'
                f"<title>{escape(s.label)}: k={p.x:g}, {escape(metric)}={p.y:.3f}{ci}</title>"
                "</circle>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def svg_tradeoff(title: str, series: Sequence[Series]) -> str:
    """Efficacy (y) against locality (x), one marker per submission with both intervals."""
    fr = _Frame(380, 300, [0.0, 1.0], [0.0, 1.0], log_x=False)
    parts = fr.axes(title, "tradeoff", "efficacy-locality", "locality ↑ (preserved)")
    for t in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{_f(fr.px(t))}" y="{fr.h - fr.bottom + 14}" text-anchor="middle" '
            f'font-size="11">{t:.1f}</text>'
        )
    parts.append(
        f'<text x="12" y="{_f(fr.py(0.5))}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {_f(fr.py(0.5))})">efficacy ↑</text>'
    )
    placed: list[tuple[float, float]] = []  # labels so far: a crowded point keeps its tooltip
    for s in sorted(series, key=lambda s: s.label):
        color = method_color(s.method)
        for p in s.points:
            cx, cy = _f(fr.px(p.x)), _f(fr.py(p.y))
            lx, ly = fr.px(p.x), fr.py(p.y)
            crowded = any(abs(ly - y) < 11 and abs(lx - x) < 90 for x, y in placed)
            if not crowded:
                placed.append((lx, ly))
            if p.lo is not None and p.hi is not None:
                parts.append(fr.error_bar(p.x, p.lo, p.hi, color))
            if p.x_lo is not None and p.x_hi is not None:
                parts.append(
                    f'<line class="err" x1="{_f(fr.px(p.x_lo))}" x2="{_f(fr.px(p.x_hi))}" '
                    f'y1="{cy}" y2="{cy}" stroke="{color}" stroke-width="1"/>'
                )
            parts.append(
                f'<circle cx="{cx}" cy="{cy}" r="5" fill="{color}" data-series="'
                f'{escape(s.label)}"><title>{escape(s.label)}: locality {p.x:.3f}, efficacy '
                f"{p.y:.3f}</title></circle>"
                # labels right of the marker, left of it near the right edge
                + (
                    ""
                    if crowded
                    else f'<text x="{_f(lx + (-7 if p.x > 0.7 else 7))}" y="{_f(ly)}" '
                    f'font-size="10" text-anchor="{"end" if p.x > 0.7 else "start"}" '
                    f'dominant-baseline="middle">{escape(s.label)}</text>'
                )
            )
    parts.append("</svg>")
    return "\n".join(parts)


def legend(series: Sequence[Series]) -> str:
    """One swatch per submission in its method's colour (and dash)."""
    out = []
    for s in sorted(series, key=lambda s: s.label):
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(
            f'<span data-method="{escape(s.method)}"><svg width="22" height="10" class="swatch">'
            f'<line x1="0" x2="22" y1="5" y2="5" stroke="{method_color(s.method)}" '
            f'stroke-width="3"{dash}/></svg>{escape(s.label)}</span>'
        )
    return "".join(out)


def color_map(methods: Mapping[str, str]) -> dict[str, str]:
    """Submission id -> colour, from each submission's method (`methods`: id -> method)."""
    return {sid: method_color(m) for sid, m in methods.items()}
