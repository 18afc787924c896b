"""The study analysis plots as inline SVG (no plotting library): preference with its CIs, per-item bars with
Wilson intervals, and Likert distributions. Every label is escaped; every number comes from ``StudyAnalysis``."""
from __future__ import annotations

import html
import math

from annotations.study_stats import Analysis

WIDTH = 640
ROW = 26
LEFT = 200
COLOURS = {"A": "#2563eb", "B": "#f59e0b"}


def _x(share: float) -> float:
    return LEFT + share * (WIDTH - LEFT - 20)


def _finite(*values: float) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


def _bar_row(y: float, label: str, share: float, low: float, high: float, colour: str, caption: str) -> str:
    parts = [f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end" font-size="12">{html.escape(label)}</text>']
    if _finite(share):
        parts.append(f'<rect x="{LEFT}" y="{y + 4}" width="{_x(share) - LEFT:.1f}" height="{ROW - 10}" '
                     f'fill="{colour}" opacity="0.75"><title>{html.escape(caption)}</title></rect>')
    if _finite(low, high):
        middle = y + ROW / 2 - 1
        parts.append(f'<line x1="{_x(low):.1f}" x2="{_x(high):.1f}" y1="{middle}" y2="{middle}" stroke="#111" '
                     'stroke-width="2"/>')
        parts += [f'<line x1="{_x(v):.1f}" x2="{_x(v):.1f}" y1="{middle - 5}" y2="{middle + 5}" stroke="#111" '
                  'stroke-width="2"/>' for v in (low, high)]
    return "".join(parts)


def _axis(height: float) -> str:
    ticks = "".join(f'<line x1="{_x(t):.1f}" x2="{_x(t):.1f}" y1="20" y2="{height - 18}" stroke="#ddd"/>'
                    f'<text x="{_x(t):.1f}" y="{height - 4}" text-anchor="middle" font-size="11">{int(t * 100)}%</text>'
                    for t in (0, 0.25, 0.5, 0.75, 1.0))
    return ticks + (f'<line x1="{_x(0.5):.1f}" x2="{_x(0.5):.1f}" y1="20" y2="{height - 18}" stroke="#b91c1c" '
                    'stroke-dasharray="4 3"/>')


def _svg(element_id: str, title: str, height: float, body: str) -> str:
    return (f'<svg id="{element_id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" role="img" aria-label="{html.escape(title)}" '
            f'style="font-family: system-ui, sans-serif; background: #fff">'
            f'<text x="8" y="14" font-size="13" font-weight="600">{html.escape(title)}</text>{body}</svg>')


def preference_plot(analysis: Analysis, method_a: str) -> str:
    """The share preferring A with the Wilson CI, and with the participant-bootstrap CI."""
    pref, boot = analysis.preference, analysis.preference_bootstrap
    rows = [("all answers (Wilson 95%)", pref.share, pref.ci_low, pref.ci_high),
            ("by participant (bootstrap 95%)", boot.value, boot.ci_low, boot.ci_high)]
    height = 40 + ROW * len(rows) + 20
    body = _axis(height) + "".join(
        _bar_row(24 + i * ROW, label, share, low, high, COLOURS["A"], f"{label}: {_percent(share)}")
        for i, (label, share, low, high) in enumerate(rows))
    return _svg("plot-preference", f"Preference for {method_a} (dashed: 50%)", height, body)


def items_plot(analysis: Analysis, method_a: str) -> str:
    """One bar per item: the share of its answers preferring A, with the Wilson CI."""
    height = 40 + ROW * max(1, len(analysis.items)) + 20
    body = _axis(height) + "".join(
        _bar_row(24 + i * ROW, item.item, item.preference.share, item.preference.ci_low, item.preference.ci_high,
                 COLOURS["A"], f"{item.item}: {item.preference.successes}/{item.preference.trials}")
        for i, item in enumerate(analysis.items))
    return _svg("plot-items", f"Per item: preference for {method_a}", height, body)


def likert_plot(analysis: Analysis, method_a: str, method_b: str) -> str:
    """Grouped bars: how often each rating 1-5 was given to A's and to B's side."""
    names = {"A": method_a, "B": method_b}
    top = max([max(summary.counts) for summary in analysis.likert if summary.count] or [1])
    height, base, group = 200, 170, (WIDTH - 60) / 5
    parts = []
    for rating in range(5):
        x0 = 40 + rating * group
        parts.append(f'<text x="{x0 + group / 2:.1f}" y="{base + 16}" text-anchor="middle" font-size="12">'
                     f'{rating + 1}</text>')
        for offset, summary in enumerate(analysis.likert):
            value = summary.counts[rating]
            bar = 120 * value / top
            parts.append(f'<rect x="{x0 + 10 + offset * (group - 20) / 2:.1f}" y="{base - bar:.1f}" '
                         f'width="{(group - 24) / 2:.1f}" height="{bar:.1f}" fill="{COLOURS[summary.method]}">'
                         f'<title>{html.escape(names[summary.method])}: {value} x {rating + 1}</title></rect>')
    legend = "".join(f'<rect x="{300 + i * 160}" y="24" width="10" height="10" fill="{COLOURS[key]}"/>'
                     f'<text x="{314 + i * 160}" y="33" font-size="12">{html.escape(names[key][:20])}</text>'
                     for i, key in enumerate(("A", "B")))
    return _svg("plot-likert", "Likert ratings (count of each rating per method)", height, legend + "".join(parts))


def _percent(value: float) -> str:
    return "n/a" if not _finite(value) else f"{100 * value:.1f}%"
