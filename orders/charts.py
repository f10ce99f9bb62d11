"""Small server-side SVG charts: the hub runs on networks without internet, so no JS library or CDN."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 360, 130
LEFT, RIGHT, TOP, BOTTOM = 30, 6, 22, 18  # room for the max label, the title and the hour labels
LABEL_EVERY = 6  # hours between x-axis labels


def _hour(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M") if timezone.is_aware(moment) else moment.strftime("%H:%M")


def bar_chart_svg(values: list[tuple[datetime, int]], *, title: str, color: str) -> SafeString:
    """One bar per (hour, count), oldest first, with the max value on the y axis and a few hour labels.

    Text and the colour are escaped before the markup is marked safe. Text and axes use the admin's
    CSS variables through `style`, so the chart follows the light and dark themes.
    """
    top = max((count for _, count in values), default=0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base_y = TOP + plot_h
    parts = [
        f'<svg class="hub-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" data-max="{top}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="13" style="fill:var(--body-fg);font-size:12px;font-weight:600">{escape(title)}</text>',
        f'<text class="hub-chart-max" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" '
        f'style="fill:var(--body-quiet-color);font-size:10px">{top}</text>',
        f'<text x="{LEFT - 4}" y="{base_y}" text-anchor="end" '
        f'style="fill:var(--body-quiet-color);font-size:10px">0</text>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base_y}" style="stroke:var(--border-color)"/>',
        f'<line x1="{LEFT}" y1="{base_y}" x2="{WIDTH - RIGHT}" y2="{base_y}" style="stroke:var(--border-color)"/>',
    ]
    if not values:
        parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
                     f'style="fill:var(--body-quiet-color);font-size:11px">no data</text>')
    step = plot_w / max(1, len(values))
    fill = escape(color)
    for index, (moment, count) in enumerate(values):
        x = LEFT + index * step
        height = plot_h * count / top if top else 0
        label = f"{_hour(moment)}: {count}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{base_y - height:.1f}" width="{max(1.0, step - 2):.1f}" height="{height:.1f}" '
            f'style="fill:{fill}" data-value="{count}"><title>{escape(label)}</title></rect>'
        )
        if index % LABEL_EVERY == 0:
            parts.append(f'<text x="{x + 1:.1f}" y="{HEIGHT - 4}" style="fill:var(--body-quiet-color);font-size:10px">'
                         f"{escape(_hour(moment))}</text>")
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every piece of text above went through escape()
