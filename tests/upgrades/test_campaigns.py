"""The campaign rules: names, and what a summary derives from the counts (median time to end, estimated end)."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import ValidationError
from shared.store.campaign_counts import CampaignCounts, CountedUpgrade
from shared.store.records import iso
from shared.upgrades import campaigns

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["wave-1", "Spring 2027", "a" * 64, "7", "eu.west_2-b"])
def test_campaign_names_the_rules_allow(name):
    assert campaigns.parse_campaign(name).name == name


@pytest.mark.parametrize("name", ["", "a" * 65, "-wave", " wave", ".x", "wave/1", "wave#1", "wave\n", "été", 7, None])
def test_campaign_names_the_rules_refuse(name):
    with pytest.raises(ValidationError, match="campaign"):
        campaigns.parse_campaign(name)


def test_campaign_names_compare_case_insensitively():
    assert campaigns.parse_campaign("Wave-1").key == campaigns.parse_campaign("WAVE-1").key == "wave-1"
    assert campaigns.parse_campaign("Wave-1").name == "Wave-1"  # kept as spelled
    assert campaigns.optional_campaign({}) is None and campaigns.optional_campaign({"campaign": None}) is None


def counts_of(durations: list[float], running: int = 0, *, accepted_every: float = 1.0) -> CampaignCounts:
    """A campaign whose upgrade n was accepted ``n * accepted_every`` minutes after START and took ``durations[n]``."""
    upgrades = []
    for n in range(len(durations) + running):
        accepted = START + timedelta(minutes=n * accepted_every)
        if n < len(durations):
            ended = accepted + timedelta(minutes=durations[n])
            upgrades.append(CountedUpgrade(f"k{n}", "w", "w", "completed", iso(accepted), iso(ended), durations[n]))
        else:
            upgrades.append(CountedUpgrade(f"k{n}", "w", "w", "running", iso(accepted), None, None))
    return CampaignCounts.scanned("w", upgrades)


def test_median_from_the_histogram_is_within_its_bucket_width_of_the_exact_one():
    rng = random.Random(11)
    for _ in range(20):
        durations = [rng.lognormvariate(3.5, 1.2) for _ in range(rng.randint(1, 400))]
        exact = statistics.median_low(durations)  # the nearest-rank median
        estimated = campaigns.percentile_minutes(counts_of(durations).minutes_to_end, 50)
        assert estimated is not None and abs(estimated - exact) <= 0.05 * exact + 0.5


def test_no_median_and_no_estimate_before_anything_has_ended():
    counts = counts_of([], running=5)
    summary = campaigns.summary(counts, START + timedelta(hours=1))
    assert (
        summary["medianMinutesToEnd"] is None and summary["estimatedEndAt"] is None and summary["lastEndedAt"] is None
    )
    assert summary["counts"]["running"] == 5 and summary["upgrades"] == 5


def test_estimated_end_follows_the_pace_so_far():
    # 60 accepted a minute apart, each ending 30 minutes later: 40 ended by START + 69 min, 20 running.
    counts = counts_of([30.0] * 40, running=20)
    last_end = START + timedelta(minutes=39 + 30)
    pace = 40 / (69 * 60)  # ended per second, first acceptance to last end
    estimate = campaigns.estimated_end(counts, last_end)
    assert estimate == last_end + timedelta(seconds=20 / pace)
    # a stall moves the estimate on with the clock
    later = last_end + timedelta(hours=3)
    assert campaigns.estimated_end(counts, later) == later + timedelta(seconds=20 / pace)


def test_estimated_end_is_never_before_the_last_accepted_upgrades_typical_end():
    # 100 upgrades of 10 minutes each, all ended by START + 20 min; one more accepted an hour in. The pace says it
    # ends a few seconds from now; the median says it is typically 10 minutes away from its acceptance.
    counts = counts_of([10.0] * 100, accepted_every=0.1)
    counts.add(CountedUpgrade("late", "w", "w", "running", iso(START + timedelta(minutes=60)), None, None))
    median = campaigns.percentile_minutes(counts.minutes_to_end, 50)
    assert median == pytest.approx(10.0, rel=0.05)
    estimate = campaigns.estimated_end(counts, START + timedelta(minutes=61))
    assert estimate == START + timedelta(minutes=60 + median)  # type: ignore[operator]


def test_a_campaign_with_nothing_running_ended_at_its_last_end():
    counts = counts_of([5.0, 7.0, 9.0])
    summary = campaigns.summary(counts, START + timedelta(days=2))
    assert summary["estimatedEndAt"] == summary["lastEndedAt"] == iso(START + timedelta(minutes=2 + 9))
    assert summary["counts"] == {"running": 0, "completed": 3, "partial": 0, "failed": 0, "expired": 0}
    assert summary["firstAcceptedAt"] == iso(START) and summary["lastAcceptedAt"] == iso(START + timedelta(minutes=2))
    assert summary["medianMinutesToEnd"] == pytest.approx(7.0, rel=0.05)
