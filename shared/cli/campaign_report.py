"""One campaign's HTML report (``list --campaign NAME --html``): what a partner sends a manager after a wave.

On the page of :mod:`shared.cli.html_report` (self-contained, nothing fetched): the campaign's summary as the
summary route answers it (the counts kept per campaign) and a check of those counts against the records listed;
its pace (upgrades accepted and ended per hour, chart and table); time-to-end percentiles; every failed, partial
or expired upgrade with Partner Center's reason; the requests that never became upgrades (not eligible, already
upgraded, try later, invalid...), counted by reason with the customers listed; and what to do about each code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

from shared.store.records import RequestRecord, UpgradeRecord, iso

from .html_report import NEEDS_ATTENTION, count_cards, failure_section, page, percentile_section, timeline_section

ENDED = ("completed", "partial", "failed", "expired")
#: How the report groups the codes of requests that never became upgrades.
REASONS = {
    "not_eligible": "not eligible",
    "already_upgraded": "already upgraded",
    "try_again_later": "try later",
    "invalid_request": "invalid",
    "partner_center_rejected": "invalid",
    "not_found": "invalid",
    "idempotency_key_reused": "invalid",
    "conflict": "in progress or conflicting",
}
#: What an operator does about each code (requests refused, upgrades that did not complete).
ADVICE = {
    "not_eligible": "Partner Center's reason says what blocks the customer (no legacy Azure subscription, a suspended "
    "subscription, an agreement to accept); fix that in Partner Center, then run the same bulk command again: "
    "refused rows are sent again, accepted ones are not.",
    "already_upgraded": "Nothing to do: the customer is on the Azure plan already. Leave it out of the next wave.",
    "try_again_later": "Subscriptions were bought recently and Partner Center asks to wait: run the same bulk "
    "command again in a day or two (the queue has tried again by itself first: PRODUCT_UPGRADE_MAX_DEFERRALS "
    "times, PRODUCT_UPGRADE_DEFER_SECONDS apart).",
    "invalid_request": "The row or message itself was malformed: correct it in the CSV and run again.",
    "partner_center_rejected": "Partner Center refused the request as it was (400): its message says what to change.",
    "not_found": "Partner Center does not know this customer for your partner tenant: check the customer id.",
    "idempotency_key_reused": "The row's requestId was already used for another customer: give it a new one.",
    "conflict": "An upgrade is already in progress for the customer: list the campaign again later.",
    "throttled": "Partner Center was still throttling after the retries: run the same bulk command again.",
    "partner_center_unavailable": "Partner Center was failing (5xx): run the same bulk command again later.",
    "upstream_unavailable": "Partner Center could not be reached: run the same bulk command again later.",
    "upstream_timeout": "Partner Center was too slow to answer: run the same bulk command again later.",
    "failed": "Partner Center could not move the subscriptions: read its reason; once the cause is fixed the "
    "customer can be upgraded again. Quote the upgrade id in a support case when the reason is unclear.",
    "partial": "Some subscriptions did not move: the line items say which. Check them in Partner Center and quote "
    "the upgrade id to support.",
    "expired": "Tracking gave up after PRODUCT_UPGRADE_TRACKING_HOURS: ask its status "
    "(product-upgrades status UPGRADE_ID --customer CUSTOMER_ID); it may still complete.",
}
_OTHER_ADVICE = "Run the same bulk command again; if it keeps failing, look the code up in docs/errors-and-results.md."


def never_upgraded(requests: Iterable[RequestRecord], records: Iterable[UpgradeRecord]) -> list[RequestRecord]:
    """The campaign's requests whose last answer was a refusal or a failure, for customers with no upgrade in it
    (one refused under one request id and accepted under another did become an upgrade)."""
    upgraded = {(record.customer_id, record.product_family.lower()) for record in records}
    return sorted(
        (
            request
            for request in requests
            if request.status in ("rejected", "failed")
            and (request.customer_id, request.product_family.lower()) not in upgraded
        ),
        key=lambda request: (reason_of(request), request.customer_id),
    )


def reason_of(request: RequestRecord) -> str:
    code = request.error_code or "unknown"
    return REASONS.get(code, "failed, worth a retry" if request.status == "failed" else code.replace("_", " "))


def render(
    name: str,
    records: list[UpgradeRecord],
    requests: list[RequestRecord],
    summary: dict[str, Any] | None,
    *,
    now: datetime,
    scanned: dict[str, int] | None,
) -> str:
    """The report. ``summary``: the summary route's document (None when no upgrade was counted); ``scanned``: the
    counts by state of ``records`` themselves, which the summary's must equal."""
    refused = never_upgraded(requests, records)
    title = f"Campaign {name}"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">{len(records)} upgrades and {len(refused)} requests that never became upgrades in the '
        f"ledger; generated {escape(iso(now) or '')}.</p>",
    ]
    parts += _summary(summary, scanned)
    parts += timeline_section(records, "Pace: upgrades accepted and ended per hour (UTC)")
    parts += percentile_section(records, ENDED, "Time to end", "ended")
    parts += failure_section(records, NEEDS_ATTENTION, "Failed, partial and expired upgrades")
    parts += _never_upgraded(refused)
    parts += _advice(records, refused)
    return page(title, parts)


def _summary(summary: dict[str, Any] | None, scanned: dict[str, int] | None) -> list[str]:
    parts = ["<h2>Summary</h2>"]
    counts: dict[str, int] = dict(summary["counts"]) if summary else dict.fromkeys(("running", *ENDED), 0)
    parts += count_cards([("upgrades", summary["upgrades"] if summary else 0), *counts.items()], "summary", "summary")
    rows = [
        ("First accepted", "firstAcceptedAt"),
        ("Last accepted", "lastAcceptedAt"),
        ("Last ended", "lastEndedAt"),
        ("Median minutes to end", "medianMinutesToEnd"),
        ("Estimated end", "estimatedEndAt"),
    ]
    parts.append('<table id="summary-times"><tbody>')
    for label, key in rows:
        value = summary.get(key) if summary else None
        shown = "" if value is None else str(value)
        parts.append(f'<tr><th>{label}</th><td id="summary-{key}">{escape(shown) or "-"}</td></tr>')
    parts.append("</tbody></table>")
    parts.append(f'<p class="muted" id="summary-check">{escape(_check(counts, scanned))}</p>')
    return parts


def _check(counts: dict[str, int], scanned: dict[str, int] | None) -> str:
    """The kept counts against the records listed below: the summary's own self-check."""
    if scanned is None:
        return "The counts are those kept per campaign (what GET /api/campaigns/{name} answers)."
    differences = {state: (n, scanned.get(state, 0)) for state, n in counts.items() if n != scanned.get(state, 0)}
    if not differences:
        return (
            "The counts are those kept per campaign (what GET /api/campaigns/{name} answers); checked against the "
            f"{sum(scanned.values())} records listed below: equal."
        )
    shown = ", ".join(f"{state} {kept} kept, {seen} listed" for state, (kept, seen) in differences.items())
    return (
        f"The counts kept per campaign differ from the records listed below ({shown}): a count left pending is "
        "settled within 30 minutes by the resumer; a difference that stays is a bug to report."
    )


def _never_upgraded(refused: list[RequestRecord]) -> list[str]:
    parts = [f"<h2>Requests that never became upgrades ({len(refused)})</h2>"]
    if not refused:
        return [*parts, '<p class="muted">None.</p>']
    by_reason: dict[str, list[RequestRecord]] = defaultdict(list)
    for request in refused:
        by_reason[reason_of(request)].append(request)
    parts.append(
        '<table id="never-upgraded-reasons"><thead><tr><th>reason</th><th>codes</th>'
        '<th class="num">customers</th></tr></thead><tbody>'
    )
    for label, requests in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        codes = ", ".join(sorted(Counter(r.error_code or "unknown" for r in requests)))
        parts.append(f'<tr><td>{escape(label)}</td><td>{escape(codes)}</td><td class="num">{len(requests)}</td></tr>')
    parts.append("</tbody></table>")
    parts.append(
        '<table id="never-upgraded"><thead><tr><th>customer</th><th>reason</th><th>code</th>'
        "<th>Partner Center code</th><th>message</th><th>when</th></tr></thead><tbody>"
    )
    for request in refused:
        cells = (
            request.customer_id,
            reason_of(request),
            request.error_code or "",
            request.partner_center_error_code or "",
            request.error_message or "",
            iso(request.updated_at) or "",
        )
        parts.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>")
    parts.append("</tbody></table>")
    return parts


def _advice(records: list[UpgradeRecord], refused: list[RequestRecord]) -> list[str]:
    codes = Counter(request.error_code or "unknown" for request in refused)
    codes.update(record.state for record in records if record.state in NEEDS_ATTENTION)
    parts = ["<h2>What to do</h2>"]
    if not codes:
        return [*parts, '<p class="muted">Nothing: no request was refused and no upgrade failed.</p>']
    parts.append('<ul id="advice">')
    for code, n in sorted(codes.items(), key=lambda item: (-item[1], item[0])):
        advice = ADVICE.get(code, _OTHER_ADVICE)
        parts.append(f'<li data-code="{escape(code)}"><b>{escape(code)}</b> ({n}): {escape(advice)}</li>')
    parts.append("</ul>")
    return parts
