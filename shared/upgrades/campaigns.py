"""Campaigns: a named wave of upgrades, the unit a partner plans, watches and reports on. The rules: what a
campaign may be called, and what its summary says (counts, pace, median time to end, the estimated end).

The counts come from the store (:mod:`shared.store.campaign_counts`: kept per campaign with every state change,
so a summary reads a handful of rows, never the campaign's records); everything derived from them is here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.errors import ValidationError
from shared.models import Campaign
from shared.store.campaign_counts import COUNTED_STATES, CampaignCounts, bucket_bounds
from shared.store.records import UpgradeRecord, iso, parse_iso

MAX_NAME = 64
#: 1 to 64 characters: letters, digits, space, ".", "_", "-"; a letter or digit first. ASCII letters and digits:
#: the connector's schema says the same in a pattern every client reads alike (ECMA and Python regexes agree).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def parse_campaign(value: object, name: str = "campaign") -> Campaign:
    """A campaign name as the rules allow it, or :class:`ValidationError` naming the field. Names compare
    case-insensitively: ``Wave-1`` and ``wave-1`` are one campaign."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    if not _NAME.fullmatch(value):  # fullmatch: "$" alone would let a final newline through
        raise ValidationError(
            f"{name} must be 1 to {MAX_NAME} characters: letters (A-Z, a-z), digits, space, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return Campaign(value, value.lower())


def optional_campaign(data: dict[str, Any], key: str = "campaign") -> Campaign | None:
    """A body's or a message's optional ``campaign``: absent or null gives None."""
    value = data.get(key)
    return None if value is None else parse_campaign(value, key)


def scanned_counts(records: Iterable[UpgradeRecord]) -> CampaignCounts | None:
    """A campaign's counts from its records themselves (a full scan's answer): what the kept counts must equal.
    None when there is no record of a campaign."""
    counted = [record.counted() for record in records if record.campaign is not None]
    return CampaignCounts.scanned(counted[0].campaign, counted) if counted else None


def percentile_minutes(histogram: dict[int, int], percentile: float) -> float | None:
    """The nearest-rank percentile of a minutes-to-end histogram, placed linearly inside its bucket."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(percentile * total / 100))
    seen = 0
    for bucket in sorted(histogram):
        n = histogram[bucket]
        if seen + n >= rank:
            low, high = bucket_bounds(bucket)
            return low + (high - low) * (rank - seen - 0.5) / n
        seen += n
    return None  # unreachable: the ranks add up to total


def estimated_end(counts: CampaignCounts, now: datetime) -> datetime | None:
    """When the campaign's running upgrades should have ended, at the pace its upgrades have ended so far.

    Pace: upgrades ended per second from the first acceptance to the last end. The running ones need
    ``running / pace`` more, from the last end (or now, when that is later: a stall moves the estimate on).
    Never earlier than the last accepted upgrade's typical end (last acceptance + median time to end). Nothing
    running: the campaign ended at its last end. Nothing ended yet: no pace, no estimate (None).
    """
    running = counts.counts.get("running", 0)
    first, last_accepted = parse_iso(counts.first_accepted_at), parse_iso(counts.last_accepted_at)
    last_ended = parse_iso(counts.last_ended_at)
    if running == 0:
        return last_ended
    if counts.ended == 0 or first is None or last_ended is None:
        return None
    elapsed = max(1.0, (last_ended - first).total_seconds())
    by_pace = max(now, last_ended) + timedelta(seconds=running * elapsed / counts.ended)
    median = percentile_minutes(counts.minutes_to_end, 50)
    if last_accepted is not None and median is not None:
        by_pace = max(by_pace, last_accepted + timedelta(minutes=median))
    return by_pace


def summary(counts: CampaignCounts, now: datetime) -> dict[str, Any]:
    """The summary route's document: every key present, ``null`` where unknown."""
    median = percentile_minutes(counts.minutes_to_end, 50)
    return {
        "campaign": counts.campaign,
        "upgrades": counts.upgrades,
        "counts": {state: counts.counts.get(state, 0) for state in COUNTED_STATES},
        "firstAcceptedAt": counts.first_accepted_at,
        "lastAcceptedAt": counts.last_accepted_at,
        "lastEndedAt": counts.last_ended_at,
        "medianMinutesToEnd": round(median, 1) if median is not None else None,
        "estimatedEndAt": iso(estimated_end(counts, now)),
    }
