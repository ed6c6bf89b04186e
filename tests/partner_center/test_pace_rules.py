"""The pace's arithmetic, on numbers: slow start, additive increase, multiplicative decrease once per round,
Retry-After as a pause, the token bucket's spacing, and telling one customer's 429s from the partner's."""

import math

import pytest

from shared.partner_center.pace_rules import Pace, PaceRules, ThrottleEvidence, ThrottleKind, TokenBucket

RULES = PaceRules()


def probing(rate=20.0, at=100.0):
    """A pace past slow start, just cut (at ``at``) to ``rate``."""
    return Pace(rate=rate, base=rate, slow_start=False, changed_at=at, cut_at=at, cuts=3)


def test_slow_start_doubles_the_rate_each_second_calls_wait_for_it():
    pace = RULES.start(0.0)
    assert pace.rate == RULES.initial and pace.slow_start
    assert RULES.grow(pace, 0.5) is pace  # not a second yet
    rates = []
    for second in range(1, 5):
        pace = RULES.grow(pace, float(second))
        rates.append(pace.rate)
    assert rates == [20.0, 40.0, 80.0, 160.0]


def test_slow_start_ends_at_the_ceiling():
    rules = PaceRules.with_ceiling(600)  # 10 calls per second
    pace = rules.start(0.0)
    assert pace.rate == 10.0
    assert rules.grow(pace, 1.0).rate == 10.0 and not rules.grow(pace, 1.0).slow_start


def test_additive_increase_is_a_step_per_second_of_the_probe():
    pace = probing(rate=40.0)
    step = RULES.step(pace)
    assert step == pytest.approx(40.0 * 0.05)  # 5 % of the rate the last cut left
    grown = RULES.grow(pace, 101.0)
    again = RULES.grow(grown, 102.0)
    assert grown.rate == pytest.approx(40.0 + step) and again.rate == pytest.approx(grown.rate + RULES.step(grown))
    assert again.base == 40.0 and RULES.step(grown) < 1.1 * step  # additive, not compounding


def test_the_step_doubles_for_every_quiet_spell_of_probing():
    pace = probing(rate=40.0)
    first = RULES.step(pace)
    for second in range(int(RULES.quiet_doubling)):
        pace = RULES.grow(pace, 101.0 + second)
    assert RULES.step(pace) == pytest.approx(2 * first)
    # A rate cut far below the limit (a burst of 429s from elsewhere) is made up within a minute.
    low = probing(rate=5.0, at=0.0)
    while low.changed_at < 60.0:
        low = RULES.grow(low, low.changed_at + 1.0)
    assert low.rate > 15.0
    assert RULES.cut(low, 61.0, retry_after=1.0, pause=False, known_cuts=low.cuts).probed == 0.0  # a 429 ends it


def test_at_low_rates_the_probe_is_slower_so_a_probe_spans_a_few_hundred_calls():
    pace = probing(rate=5.0)
    assert RULES.step(pace) == pytest.approx(5.0 * 5.0 / RULES.calls_per_probe)
    assert RULES.step(pace) < 5.0 * RULES.increase


def test_an_idle_spell_earns_at_most_two_steps_and_no_widening():
    pace = probing(rate=40.0)
    grown = RULES.grow(pace, 100.0 + 3600)
    assert grown.rate == pytest.approx(40.0 + 2 * RULES.step(pace)) and grown.probed == 2.0


def test_no_increase_while_paused_and_never_above_the_maximum():
    paused = Pace(rate=20.0, base=20.0, slow_start=False, changed_at=0.0, paused_until=50.0)
    assert RULES.grow(paused, 10.0) is paused
    high = probing(rate=999.9)
    assert RULES.grow(high, 101.0).rate == RULES.maximum


def test_a_429_cuts_the_rate_once_per_round():
    pace = probing(rate=20.0)
    cut = RULES.cut(pace, 200.0, retry_after=1.0, pause=False, known_cuts=pace.cuts)
    assert cut.rate == pytest.approx(17.0) and cut.cuts == pace.cuts + 1 and cut.cut_at == 200.0
    # A call sent before that cut, throttled too: same round, no second cut.
    same_round = RULES.cut(cut, 200.1, retry_after=1.0, pause=False, known_cuts=pace.cuts)
    assert same_round.rate == cut.rate and same_round.cuts == cut.cuts


def test_a_429_for_a_call_sent_within_a_second_of_the_cut_is_of_its_round():
    # The other instances hear of a cut at their next exchange, and the limit has not refilled yet.
    pace = probing(rate=20.0)
    cut = RULES.cut(pace, 200.0, retry_after=1.0, pause=False, known_cuts=pace.cuts)
    late = RULES.cut(cut, 200.9, retry_after=1.0, pause=False, known_cuts=cut.cuts, sent_at=200.8)
    assert late.rate == cut.rate and late.cuts == cut.cuts
    later = RULES.cut(cut, 201.6, retry_after=1.0, pause=False, known_cuts=cut.cuts, sent_at=201.5)
    assert later.cuts == cut.cuts + 1


def test_a_cut_that_was_not_enough_is_followed_by_a_harder_one():
    pace = probing(rate=20.0)
    first = RULES.cut(pace, 200.0, retry_after=1.0, pause=False, known_cuts=pace.cuts)
    second = RULES.cut(first, 202.0, retry_after=1.0, pause=False, known_cuts=first.cuts)
    assert second.rate == pytest.approx(first.rate * RULES.repeated_decrease)
    later = RULES.cut(first, 200.0 + RULES.repeat_within + 1, retry_after=1.0, pause=False, known_cuts=first.cuts)
    assert later.rate == pytest.approx(first.rate * RULES.decrease)


def test_the_partner_s_limit_ends_slow_start_with_a_halving():
    pace = RULES.start(0.0)
    cut = RULES.cut(pace, 3.0, retry_after=1.0, pause=True, known_cuts=0)
    assert cut.rate == RULES.initial / 2 and not cut.slow_start and cut.paused_until == 4.0


def test_one_customer_s_429_in_slow_start_neither_cuts_nor_ends_it():
    pace = RULES.start(0.0)
    assert RULES.cut(pace, 3.0, retry_after=30.0, pause=False, known_cuts=0) == pace


def test_a_429_for_the_first_call_after_a_pause_waits_again_without_a_cut():
    pace = probing(rate=10.0)
    paused = RULES.cut(pace, 200.0, retry_after=1.0, pause=True, known_cuts=pace.cuts)
    again = RULES.cut(paused, 201.05, retry_after=1.0, pause=True, known_cuts=paused.cuts, sent_at=201.0)
    assert again.rate == paused.rate and again.cuts == paused.cuts and again.paused_until == 202.05
    # Calls well after the pause, at the rate, refused: that is the rate's doing, and it is cut.
    later = RULES.cut(paused, 205.0, retry_after=1.0, pause=True, known_cuts=paused.cuts, sent_at=204.9)
    assert later.rate < paused.rate


def test_a_partner_wide_429_pauses_until_retry_after_and_the_probe_restarts_after_it():
    pace = probing(rate=20.0)
    cut = RULES.cut(pace, 200.0, retry_after=30.0, pause=True, known_cuts=pace.cuts)
    assert cut.paused_until == 230.0 and cut.changed_at == 230.0
    assert RULES.grow(cut, 229.0) is cut
    # A 429 of the same round still lengthens the pause, when its Retry-After says so.
    longer = RULES.cut(cut, 201.0, retry_after=57.0, pause=True, known_cuts=pace.cuts)
    assert longer.paused_until == 258.0 and longer.rate == cut.rate


def test_the_rate_never_falls_below_the_minimum():
    pace = probing(rate=0.25)
    for n in range(10):
        pace = RULES.cut(pace, 1000.0 + 10 * n, retry_after=1.0, pause=False, known_cuts=pace.cuts)
    assert pace.rate == RULES.minimum


def test_a_ceiling_below_the_defaults_bounds_everything():
    rules = PaceRules.with_ceiling(6)  # one call every ten seconds
    assert rules.maximum == pytest.approx(0.1) and rules.initial == pytest.approx(0.1)
    assert rules.minimum <= rules.maximum


@pytest.mark.parametrize(
    "bad", [{"minimum": 0}, {"initial": 2000}, {"decrease": 1.0}, {"repeated_decrease": 0.9}, {"increase": 0}]
)
def test_rules_are_checked(bad):
    with pytest.raises(ValueError):
        PaceRules(**bad)


def test_the_shared_record_round_trips_and_nonsense_is_refused():
    pace = Pace(
        rate=12.5, base=10.0, slow_start=False, changed_at=5.0, cut_at=4.0, cuts=7, paused_until=6.0, probed=3.0
    )
    assert Pace.from_record(pace.to_record()) == pace
    assert Pace.from_record({"Rate": 1.0}) is None
    assert Pace.from_record({**pace.to_record(), "Rate": 0.0}) is None
    assert Pace.from_record({**pace.to_record(), "PausedUntil": math.nan}) is None


def test_shifting_a_pace_to_another_clock_keeps_never_as_never():
    pace = Pace(rate=1.0, base=1.0, slow_start=True, changed_at=10.0, cut_at=0.0, paused_until=12.0)
    moved = pace.shifted(1000.0)
    assert (moved.changed_at, moved.cut_at, moved.paused_until) == (1010.0, 0.0, 1012.0)


# -- the token bucket --------------------------------------------------------------------------------------------


def test_the_bucket_spaces_calls_at_its_rate_without_a_burst():
    bucket = TokenBucket(4.0, now=0.0)
    assert [bucket.reserve(10.0) for _ in range(4)] == [10.0, 10.25, 10.5, 10.75]
    assert bucket.next_slot(10.1) == 11.0
    assert bucket.reserve(20.0) == 20.0  # idle since: no tokens saved up


def test_the_bucket_restarts_after_a_cut_or_a_pause():
    bucket = TokenBucket(1.0, now=0.0)
    for _ in range(5):
        bucket.reserve(0.0)
    bucket.rate = 2.0
    bucket.restart(3.0)
    assert bucket.reserve(0.0) == 3.0 and bucket.reserve(0.0) == 3.5


# -- one customer's 429s or the partner's ------------------------------------------------------------------------

A, B, C = "customer-a", "customer-b", "customer-c"


def test_a_lone_429_holds_its_customer_until_retry_after():
    evidence = ThrottleEvidence()
    assert evidence.throttled(A, 100.0, 30.0)[0] is ThrottleKind.ALONE
    assert evidence.held_until(A, 101.0) == 130.0 and evidence.held_until(A.upper(), 101.0) == 130.0
    assert evidence.held_until(B, 101.0) == 101.0
    assert evidence.held(101.0) == (1, 29.0)


def test_a_held_customer_throttled_again_is_that_customer_s_limit_only():
    evidence = ThrottleEvidence()
    evidence.throttled(A, 100.0, 30.0)
    assert evidence.throttled(A, 130.5, 30.0)[0] is ThrottleKind.CUSTOMER
    # ...and it is no evidence of the partner's limit: another customer's first 429 just after stays alone.
    assert evidence.throttled(B, 131.0, 1.0)[0] is ThrottleKind.ALONE


def test_429s_for_different_customers_close_together_are_the_partner_s_limit():
    evidence = ThrottleEvidence(window=2.0)
    assert evidence.throttled(A, 100.0, 1.0)[0] is ThrottleKind.ALONE
    assert evidence.throttled(B, 101.0, 2.0) == (ThrottleKind.PARTNER, 1.0)
    assert evidence.throttled(C, 104.0, 1.0)[0] is ThrottleKind.ALONE  # outside the window: alone again


def test_a_customer_s_long_retry_after_met_by_chance_does_not_pause_the_partner_for_it():
    # The sandbox's ...0005 (Retry-After 30) throttled just after an ordinary 429 of the partner's limit (1 s):
    # every call waits the partner's second, and only that customer its 30.
    evidence = ThrottleEvidence(window=2.0)
    evidence.throttled(A, 100.0, 1.0)
    assert evidence.throttled(B, 100.5, 30.0) == (ThrottleKind.PARTNER, 1.0)
    assert evidence.held_until(B, 100.5) == 130.5


def test_a_429_about_no_customer_is_the_partner_s_limit():
    assert ThrottleEvidence().throttled(None, 1.0, 5.0) == (ThrottleKind.PARTNER, 5.0)


def test_customers_are_forgotten_long_after_their_hold():
    evidence = ThrottleEvidence(memory=120.0)
    evidence.throttled(A, 0.0, 30.0)
    evidence.throttled(B, 500.0, 1.0)
    assert evidence.throttled(A, 501.0, 30.0)[0] is ThrottleKind.PARTNER  # A's 429 is new again, B's was just now
    assert evidence.held(502.0)[0] == 1  # only A is still held; B's hold is over


def test_the_memory_of_customers_is_bounded():
    evidence = ThrottleEvidence()
    evidence.MAX_REMEMBERED = 100
    for n in range(250):
        evidence.throttled(f"customer-{n}", 10.0 + n * 10, 1000.0)
    assert len(evidence._customers) == 100
