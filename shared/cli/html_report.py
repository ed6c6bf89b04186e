"""A one-page campaign report an operator can send to a manager: self-contained HTML, charts as inline SVG.

No script, no font, no stylesheet from elsewhere: it opens offline, from a mail attachment too. It shows the
counts by state, upgrades accepted and ended per hour (a chart and its table), time-to-complete percentiles,
and every partial, failed or expired upgrade with Partner Center's reason (for a partial one: the subscriptions
that did not move).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from shared.models import UpgradesLineItem
from shared.store.records import UPGRADE_STATES, UpgradeRecord, iso

#: Percentiles of time-to-complete shown, nearest-rank.
PERCENTILES = (50, 90, 95, 99)

_COLORS = {"accepted": "#2b6cb0", "ended": "#2f855a"}
STATE_COLORS = {
    "running": "#2b6cb0",
    "completed": "#2f855a",
    "partial": "#dd6b20",
    "failed": "#c53030",
    "expired": "#b7791f",
}
#: The states listed under "Failures": every upgrade someone should look at.
NEEDS_ATTENTION = ("partial", "failed", "expired")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1a202c}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e2e8f0}
.muted{color:#718096} .cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #e2e8f0;border-radius:8px;padding:.8rem 1.2rem;min-width:8rem}
.card .n{font-size:2rem;font-weight:600} table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #edf2f7} td.num,th.num{text-align:right}
svg text{font-size:11px;fill:#4a5568}
"""


def nearest_rank(values: Sequence[float], percentile: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def per_hour(records: Iterable[UpgradeRecord]) -> list[tuple[datetime, int, int]]:
    """(hour, accepted in it, ended in it) for every hour from the first to the last, empty hours included."""
    accepted: Counter[datetime] = Counter()
    ended: Counter[datetime] = Counter()
    for record in records:
        accepted[hour_of(record.accepted_at)] += 1
        if record.ended_at is not None:
            ended[hour_of(record.ended_at)] += 1
    hours = set(accepted) | set(ended)
    if not hours:
        return []
    first, last = min(hours), max(hours)
    timeline = []
    hour = first
    while hour <= last:
        timeline.append((hour, accepted.get(hour, 0), ended.get(hour, 0)))
        hour += timedelta(hours=1)
    return timeline


def reason(record: UpgradeRecord) -> str:
    """Partner Center's reason for a failure: the status's error details, else a line item's; for a partial
    upgrade, the subscriptions that did not move."""
    if record.state == "partial":
        return not_upgraded(record.line_items) or "a line item did not complete (no details given)"
    candidates: list[Any] = [record.error_details]
    candidates += [item.get("errorDetails") for item in record.line_items if isinstance(item, dict)]
    for details in candidates:
        if isinstance(details, dict) and (details.get("description") or details.get("code")):
            code = f"[{details['code']}] " if details.get("code") else ""
            return f"{code}{details.get('description') or ''}".strip()
    if record.state == "expired":
        return "not ended within the tracking window"
    return "no reason given by Partner Center"


def not_upgraded(line_items: list[Any]) -> str:
    """The line items (subscriptions) of an upgrade that did not move, with Partner Center's reason for each."""
    parts = []
    for item in (UpgradesLineItem.from_json(raw) for raw in line_items):
        if not item.not_upgraded:
            continue
        subscription = item.source_product.id if item.source_product and item.source_product.id else "?"
        text = f"subscription {subscription} {item.status or 'no status'}"
        details = item.error_details
        if details is not None and details.present:
            code = f"[{details.code}] " if details.code else ""
            text += f": {code}{details.description or ''}".rstrip()
        parts.append(text)
    return "; ".join(parts)


def write_html_report(path: Path, records: list[UpgradeRecord], *, title: str, now: datetime | None = None) -> None:
    path.write_text(render(records, title=title, now=now), encoding="utf-8")


def render(records: list[UpgradeRecord], *, title: str, now: datetime | None = None) -> str:
    generated = iso(now or datetime.now(UTC))
    counts = Counter(record.state for record in records)
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">{len(records)} upgrades in the ledger; generated {escape(generated or "")}.</p>',
        "<h2>Counts by state</h2>",
    ]
    cards = [(state, counts.get(state, 0)) for state in UPGRADE_STATES]
    parts += count_cards([*cards, ("total", len(records))], "counts", "count")
    parts += timeline_section(records)
    parts += percentile_section(records, ("completed",), "Time to complete", "completed")
    parts += failure_section(records, NEEDS_ATTENTION)
    return page(title, parts)


def page(title: str, body: list[str]) -> str:
    """The whole document around ``body``: inline CSS, nothing fetched."""
    head = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    return "\n".join([*head, *body, "</body></html>"])


def count_cards(cards: list[tuple[str, int]], block_id: str, prefix: str) -> list[str]:
    """A row of cards, one number each (``id`` ``{prefix}-{name}``), coloured by state."""
    parts = [f'<div class="cards" id="{block_id}">']
    for name, n in cards:
        color = STATE_COLORS.get(name, "#4a5568")
        parts.append(
            f'<div class="card" style="border-top:4px solid {color}">'
            f'<div class="muted">{escape(name)}</div><div class="n" id="{prefix}-{escape(name)}">{n}</div></div>'
        )
    parts.append("</div>")
    return parts


def timeline_section(records: list[UpgradeRecord], heading: str = "Accepted and ended per hour (UTC)") -> list[str]:
    return _timeline(per_hour(records), heading)


def _timeline(timeline: list[tuple[datetime, int, int]], heading: str) -> list[str]:
    parts = [f"<h2>{escape(heading)}</h2>"]
    if not timeline:
        return [*parts, '<p class="muted">No upgrades.</p>']
    parts.append(_bar_chart(timeline))
    parts.append(
        '<table id="timeline"><thead><tr><th>hour</th><th class="num">accepted</th>'
        '<th class="num">ended</th></tr></thead><tbody>'
    )
    for hour, accepted, ended in timeline:
        parts.append(
            f'<tr><td>{hour.strftime("%Y-%m-%d %H:00")}</td><td class="num">{accepted}</td>'
            f'<td class="num">{ended}</td></tr>'
        )
    parts.append("</tbody></table>")
    return parts


def _bar_chart(timeline: list[tuple[datetime, int, int]]) -> str:
    """Grouped bars, one pair per hour, as inline SVG (no library, no script)."""
    height, top, bottom, left = 180, 10, 30, 40
    slot = max(18, min(60, 900 // len(timeline)))
    width = max(left + slot * len(timeline) + 10, left + 200)  # room for the legend too
    peak = max(max(accepted, ended) for _, accepted, ended in timeline) or 1
    scale = (height - top - bottom) / peak
    bar = (slot - 6) / 2
    shapes = [
        f'<svg id="timeline-chart" role="img" aria-label="Upgrades accepted and ended per hour" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#a0aec0"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>',
    ]
    for index, (hour, accepted, ended) in enumerate(timeline):
        x = left + index * slot + 3
        for offset, (series, value) in enumerate((("accepted", accepted), ("ended", ended))):
            bar_height = value * scale
            shapes.append(
                f'<rect x="{x + offset * bar:.1f}" y="{height - bottom - bar_height:.1f}" width="{bar:.1f}" '
                f'height="{bar_height:.1f}" fill="{_COLORS[series]}"><title>{hour.strftime("%H:00")} {series}: '
                f"{value}</title></rect>"
            )
        if len(timeline) <= 24 or index % max(1, len(timeline) // 24) == 0:
            shapes.append(f'<text x="{x}" y="{height - bottom + 14}">{hour.strftime("%H:00")}</text>')
    legend_y = height - 4
    for offset, series in enumerate(("accepted", "ended")):
        x = left + offset * 90
        shapes.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{_COLORS[series]}"/>')
        shapes.append(f'<text x="{x + 14}" y="{legend_y}">{series}</text>')
    shapes.append("</svg>")
    return "".join(shapes)


def percentile_section(records: list[UpgradeRecord], states: tuple[str, ...], heading: str, what: str) -> list[str]:
    """Percentiles of accepted-to-ended time over the upgrades in ``states`` (``what`` names them)."""
    durations = [
        (record.ended_at - record.accepted_at).total_seconds()
        for record in records
        if record.state in states and record.ended_at is not None
    ]
    parts = [f"<h2>{escape(heading)}</h2>"]
    if not durations:
        return [*parts, f'<p class="muted">No {escape(what)} upgrades yet.</p>']
    over = f"over {len(durations)} {escape(what)} upgrades (nearest rank)"
    parts.append(f'<p class="muted">Accepted to {escape(what)}, {over}.</p>')
    parts.append('<table id="percentiles"><thead><tr>')
    parts += [f'<th class="num">p{p}</th>' for p in PERCENTILES]
    parts.append('<th class="num">max</th></tr></thead><tbody><tr>')
    for name, value in [*((f"p{p}", nearest_rank(durations, p)) for p in PERCENTILES), ("max", max(durations))]:
        parts.append(f'<td class="num" id="{name}" data-seconds="{value:.3f}">{format_duration(value)}</td>')
    parts.append("</tr></tbody></table>")
    return parts


def failure_section(records: list[UpgradeRecord], states: tuple[str, ...], heading: str = "Failures") -> list[str]:
    """Every upgrade in ``states``, with Partner Center's reason."""
    failed = [record for record in records if record.state in states]
    parts = [f"<h2>{escape(heading)} ({len(failed)})</h2>"]
    if not failed:
        return [*parts, '<p class="muted">None.</p>']
    parts.append(
        '<table id="failures"><thead><tr><th>upgrade</th><th>customer</th><th>state</th>'
        "<th>Partner Center status</th><th>ended</th><th>reason</th></tr></thead><tbody>"
    )
    for record in sorted(failed, key=lambda r: (r.ended_at or r.updated_at, r.upgrade_id)):
        cells = (
            record.upgrade_id,
            record.customer_id,
            record.state,
            record.partner_center_status or "",
            iso(record.ended_at) or "",
            reason(record),
        )
        parts.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>")
    parts.append("</tbody></table>")
    return parts
