"""Charts drawn on the server as SVG: axes with ticks and units, a legend, a tooltip per mark.

No JavaScript and no chart library: the page is complete as the server sends it, and the SVG
scales to the screen's width (viewBox).
"""

import math
from datetime import timedelta
from html import escape

from django.utils import timezone
from django.utils.safestring import mark_safe

WIDTH, HEIGHT = 480, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 36, 28
STATUS_COLORS = {2: ("2xx", "#2f855a"), 3: ("3xx", "#3182ce"), 4: ("4xx", "#d69e2e"), 5: ("5xx", "#c53030")}
LEFT_COLOR = ("client left", "#718096")
LINE_COLORS = {"p50": "#2b6cb0", "p95": "#d69e2e", "p99": "#c53030"}
# The spend chart's spenders, biggest first, then "others" in grey (colour-blind safe: Okabe-Ito).
SPEND_LEFT = 62  # amounts such as 0.0075 need a wider axis than counts
SPEND_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#a0aec0")


def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least `value` (the top of an axis)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _time_label(moment, step: timedelta, span: timedelta) -> str:
    local = timezone.localtime(moment)
    if step >= timedelta(days=1):
        return local.strftime("%b %d")
    if span > timedelta(days=1):
        return local.strftime("%a %H:%M")
    return local.strftime("%H:%M")


def _frame(title: str, unit: str, top: float, legend: list, labels: list, tick=None, left: int = LEFT) -> list:
    """Axes, grid, tick labels, the unit and the legend."""
    tick = tick or _number
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick(value)}</text>')
    parts.append(f'<text class="unit" x="2" y="{TOP - 16}">{escape(unit)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    for x, text in labels:
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(text)}</text>')
    x = WIDTH - RIGHT
    for name, color in reversed(legend):
        x -= 12 + 7.5 * len(name) + 14
        parts.append(f'<rect x="{x:.0f}" y="7" width="11" height="11" fill="{color}"/>')
        parts.append(f'<text class="legend" x="{x + 15:.0f}" y="17">{escape(name)}</text>')
    return parts


def _x_labels(points: list, step: timedelta, x_of) -> list:
    if not points:
        return []
    span = points[-1] - points[0] + step
    every = max(1, math.ceil(len(points) / 5))
    return [(x_of(i), _time_label(moment, step, span)) for i, moment in enumerate(points) if i % every == 0]


def calls_chart(series: list, step: timedelta, unit: str) -> str:
    """Stacked bars: calls per step, split by status class."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(classes.values()) for _, classes in series]
    top = nice_ceiling(max(totals, default=0))
    slot = plot_w / max(1, len(series))
    present = {c for _, classes in series for c, n in classes.items() if n}
    legend = [STATUS_COLORS.get(c, LEFT_COLOR) for c in (2, 3, 4, 5, 0) if c in present] or [STATUS_COLORS[2]]
    labels = _x_labels([moment for moment, _ in series], step, lambda i: LEFT + slot * (i + 0.5))
    parts = _frame("Calls over time by status class", unit, top, legend, labels)
    for i, (moment, classes) in enumerate(series):
        y = TOP + plot_h
        when = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
        for status_class in (2, 3, 4, 5, 0):
            count = classes.get(status_class, 0)
            if not count:
                continue
            height = plot_h * count / top
            y -= height
            name, color = STATUS_COLORS.get(status_class, LEFT_COLOR)
            parts.append(
                f'<rect x="{LEFT + slot * i + slot * 0.1:.2f}" y="{y:.2f}" width="{max(slot * 0.8, 0.5):.2f}" '
                f'height="{height:.2f}" fill="{color}"><title>{when}: {count} {name}</title></rect>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def latency_chart(points: list, series_starts: list, step: timedelta) -> str:
    """Lines: p50, p95 and p99 latency per step (ms); steps without calls leave a gap."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for _, p in points for v in p.values() if v is not None]
    top = nice_ceiling(max(values, default=0))
    slot = plot_w / max(1, len(series_starts))
    index = {moment: i for i, moment in enumerate(series_starts)}
    labels = _x_labels(series_starts, step, lambda i: LEFT + slot * (i + 0.5))
    parts = _frame("Latency percentiles over time", "ms", top, list(LINE_COLORS.items()), labels)
    known = dict(points)
    for name, color in LINE_COLORS.items():
        path, pen_down = [], False
        for moment in series_starts:
            value = known.get(moment, {}).get(name)
            if value is None:
                pen_down = False
                continue
            x = LEFT + slot * (index[moment] + 0.5)
            y = TOP + plot_h - plot_h * value / top
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2"/>')
        for moment, percentiles in points:
            value = percentiles.get(name)
            if value is not None and moment in index:
                x = LEFT + slot * (index[moment] + 0.5)
                y = TOP + plot_h - plot_h * value / top
                when = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
                    f"<title>{when}: {name} {value:.0f} ms</title></circle>"
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _amount(value: float) -> str:
    """An axis amount: three significant digits, never in exponent form."""
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def spend_chart(series: list, labels: list[str], step: timedelta, unit: str) -> str:
    """Stacked bars: spend per step, one colour per spender (`labels`, biggest first, then
    "others"), from picos. The legend is the page's (spend_legend), so long names fit."""
    left = SPEND_LEFT
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM
    units = [[picos / 1e12 for picos in parts] for _, parts in series]
    top = nice_ceiling(max((sum(parts) for parts in units), default=0))
    slot = plot_w / max(1, len(series))
    x_labels = _x_labels([moment for moment, _ in series], step, lambda i: left + slot * (i + 0.5))
    parts = _frame("Spend over time", unit, top, [], x_labels, tick=_amount, left=left)
    for i, ((moment, _), amounts) in enumerate(zip(series, units, strict=True)):
        y = TOP + plot_h
        when = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
        for index, amount in enumerate(amounts):
            if not amount:
                continue
            height = plot_h * amount / top
            y -= height
            color = SPEND_COLORS[min(index, len(SPEND_COLORS) - 1)]
            name = labels[index] if index < len(labels) else "others"
            parts.append(
                f'<rect x="{left + slot * i + slot * 0.1:.2f}" y="{y:.2f}" width="{max(slot * 0.8, 0.5):.2f}" '
                f'height="{height:.2f}" fill="{color}"><title>{when}: {escape(name)} {_amount(amount)}</title></rect>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def spend_legend(labels: list[str], others: bool) -> list[tuple[str, str]]:
    """(colour, name) of each spender the chart names."""
    found = [(SPEND_COLORS[i], label) for i, label in enumerate(labels)]
    if others:
        found.append((SPEND_COLORS[-1], "others"))
    return found
