"""The pace limiter on a fake clock (its waits move the clock, nothing sleeps): spacing, holds, pauses, budgets,
patience, and the shared pace with an in-memory double of the store's state, failing and slow included."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from shared.errors import PartnerCenterError, StorageUnavailableError
from shared.models import ProductUpgradeRequest
from shared.partner_center.pace import PaceLimiter, customer_hold_patience
from shared.partner_center.pace_rules import Pace, PaceRules
from shared.partner_center.pace_sharing import PaceSharing
from shared.retry import RetryPolicy, time_budget

A, B, C = "customer-a", "customer-b", "customer-c"


class Clock:
    """Both clocks of a limiter: monotonic from 1,000 s, wall-clock 1.7e9 s ahead of it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def wall(self):
        return self.now + 1.7e9

    def sleep(self, condition, seconds):
        self.now += seconds


class Answer:
    def __init__(self, status, retry_after=None):
        self.status_code = status
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}


def limiter(clock, rules=None, sharing=None):
    return PaceLimiter(rules, sharing=sharing, clock=clock, wall=clock.wall, sleep=clock.sleep, background=False)


class Sent:
    """Records when each call was sent (on the fake clock) and answers as told."""

    def __init__(self, clock):
        self.clock = clock
        self.times = []

    def __call__(self, status=202, retry_after=None):
        def send():
            self.times.append(self.clock.now)
            return Answer(status, retry_after)

        return send


def test_calls_are_spaced_at_the_rate():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=4.0, maximum=4.0))
    sent = Sent(clock)
    for _ in range(5):
        pace.call(A, sent())
    assert sent.times == pytest.approx([1000.0, 1000.25, 1000.5, 1000.75, 1001.0])


def test_the_rate_grows_while_calls_wait_for_it():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=2.0))
    sent = Sent(clock)
    while clock.now <= 1003.0:
        pace.call(A, sent())
    assert pace.rate == 16.0  # slow start: 2, 4, 8, 16, one doubling per second of waiting calls
    clock.now += 60.0
    pace.call(A, sent())
    assert pace.rate == 16.0  # calls that did not wait earn no increase


def test_a_customer_throttled_alone_is_held_while_others_go_on():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=10.0, maximum=10.0))  # at the maximum: past slow start
    sent = Sent(clock)
    pace.call(A, sent(429, retry_after=30))
    pace.call(B, sent())
    assert sent.times[1] - sent.times[0] < 1.0  # B went at once: no partner-wide pause
    assert pace.waiting().customers_held == 1 and pace.waiting().paused_for == 0.0
    assert pace.rate == pytest.approx(8.5)  # a gentle cut: it may have been the partner's limit
    pace.call(A, sent())
    assert sent.times[2] == pytest.approx(1030.0)  # A waited for its Retry-After
    assert pace.figures()["alone"] == 1 and pace.figures()["throttled"] == 1


def test_429s_for_several_customers_pause_every_call_until_retry_after():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=10.0, maximum=10.0))
    sent = Sent(clock)
    pace.call(A, sent(429, retry_after=20))
    pace.call(B, sent(429, retry_after=20))
    assert pace.waiting().paused_for == pytest.approx(20.0)
    pace.call(C, sent())
    assert sent.times[2] >= sent.times[1] + 20.0
    assert pace.figures()["partner"] == 1


def test_a_held_customer_throttled_again_does_not_cut_the_rate_again():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=10.0, maximum=10.0))
    sent = Sent(clock)
    pace.call(A, sent(429, retry_after=30))
    rate = pace.rate
    pace.call(A, sent(429, retry_after=30))
    assert pace.rate == rate and pace.figures()["customer"] == 1


def test_inside_patience_a_long_hold_fails_at_once_without_a_call():
    clock = Clock()
    pace = limiter(clock)
    sent = Sent(clock)
    pace.call(A, sent(429, retry_after=30))
    assert pace.surfaces(A) is False  # outside a patience block: waited for, within the budget
    with customer_hold_patience(5.0):
        assert pace.surfaces(A) and not pace.surfaces(B)
        with pytest.raises(PartnerCenterError) as info:
            pace.call(A, sent())
    assert len(sent.times) == 1
    error = info.value
    assert error.status == 429 and error.customer_throttled and error.retry_after == 30 and error.transient


def test_a_pause_beyond_the_time_budget_fails_at_once_as_throttled():
    clock = Clock()
    pace = limiter(clock)
    sent = Sent(clock)
    pace.call(None, sent(429, retry_after=30))  # a call about no customer: the partner's limit
    with time_budget(5.0), pytest.raises(PartnerCenterError) as info:
        pace.call(B, sent())
    assert len(sent.times) == 1
    assert info.value.status == 429 and info.value.retry_after == 30 and not info.value.customer_throttled
    assert info.value.http_status == 503


def test_an_exception_in_the_call_frees_its_place_and_teaches_nothing():
    clock = Clock()
    pace = limiter(clock)

    def fail():
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        pace.call(A, fail)
    assert pace._callers == 0 and pace.figures()["calls"] == 0 and pace.rate == PaceRules().initial


def test_a_waiting_call_asks_again_after_a_cut():
    clock = Clock()
    pace = limiter(clock, PaceRules(initial=1.0, maximum=1.0))
    sent = Sent(clock)
    pace.call(A, sent())
    order = []
    release = threading.Event()

    def waiting_sleep(condition, seconds):
        # As Condition.wait does: the lock is let go while waiting, so the cut below can be made meanwhile.
        order.append(seconds)
        condition.release()
        try:
            release.wait(5)
        finally:
            condition.acquire()
        clock.now += seconds

    pace._sleep = waiting_sleep
    worker = threading.Thread(target=lambda: pace.call(B, sent()))
    worker.start()
    while not order:
        release.wait(0.01)
    epoch = pace._epoch
    with pace._cond:
        cut = pace.rules.cut(pace._pace, clock.now, retry_after=3.0, pause=True, known_cuts=pace._pace.cuts)
        pace._set(cut, clock.now)
    assert pace._epoch == epoch + 1
    release.set()
    worker.join(5)
    assert sent.times[-1] >= 1003.0  # re-planned after the pause, not at its first slot (1001)


def test_callers_already_waiting_for_their_slots_go_faster_when_the_rate_grows():
    # A queue worker's invocations all wait at once and start no new call for a while: the rate's increases
    # (here slow start: 1, 2, 4, 8, 16 a second) must reach them where they wait, not only the next caller.
    pace = PaceLimiter(PaceRules(initial=1.0))  # the real clock and the limiter's own thread
    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda n: pace.call(f"customer-{n}", lambda: Answer(202)), range(24)))
    # At the first plan, 1 a second, the last would have left at 23 s; growing each second, about 5 s. The margin
    # is for a busy machine, where the limiter's thread runs late.
    assert time.monotonic() - started < 15.0
    assert pace.rate >= 4.0


# -- the shared pace --------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    record: dict | None
    etag: str | None
    demands: dict = field(default_factory=dict)


class MemoryPaceState:
    """An in-memory double of the store's shared pace state (the same contract: ETags, demands, failures)."""

    def __init__(self, clock):
        self.clock = clock
        self.record = None
        self.version = 0
        self.seen = {}
        self.failing = False
        self.exchanges = 0
        self.writes = 0
        self.block = None  # an Event: exchanges wait for it (a slow storage)

    def exchange(self, instance_id, demand, *, active_within):
        if self.block is not None:
            self.block.wait(10)
        if self.failing:
            raise StorageUnavailableError("could not read the shared pace (ServiceRequestError)")
        self.exchanges += 1
        now = self.clock.wall()
        self.seen[instance_id] = (demand, now)
        demands = {key: d for key, (d, at) in self.seen.items() if now - at <= active_within}
        return Snapshot(dict(self.record) if self.record else None, str(self.version) if self.record else None, demands)

    def replace(self, record, etag):
        if self.failing:
            raise StorageUnavailableError("could not write the shared pace (ServiceRequestError)")
        current = str(self.version) if self.record else None
        if etag != current:
            return None
        self.writes += 1
        self.record, self.version = dict(record), self.version + 1
        return str(self.version)


def shared_limiter(clock, state, rules=None, instance="one"):
    rules = rules or PaceRules(initial=10.0)
    return limiter(clock, rules, PaceSharing(state, rules, instance_id=instance, wall=clock.wall))


def busy(pace, clock, customer=A, calls=3):
    sent = Sent(clock)
    for _ in range(calls):
        pace.call(customer, sent())


def exchange(pace, clock):
    """A second later (exchanges come at most once a second), share with the others."""
    clock.now += 1.0
    pace.sync_now()


def test_two_instances_share_the_partner_s_one_rate():
    clock = Clock()
    state = MemoryPaceState(clock)
    first, second = shared_limiter(clock, state, instance="one"), shared_limiter(clock, state, instance="two")
    for pace in (first, second, first):  # the first learns of the second at its next exchange
        busy(pace, clock)
        exchange(pace, clock)
    partner = Pace.from_record(state.record)
    assert partner is not None
    assert first.rate + second.rate == pytest.approx(partner.rate)
    assert first.figures()["share"] == pytest.approx(0.5)


def test_a_cut_by_one_instance_reaches_the_other_at_its_next_exchange():
    clock = Clock()
    state = MemoryPaceState(clock)
    first, second = shared_limiter(clock, state, instance="one"), shared_limiter(clock, state, instance="two")
    for pace in (first, second, first):
        busy(pace, clock, calls=1)
        exchange(pace, clock)
    before = Pace.from_record(state.record)
    writes = state.writes
    first.call(A, Sent(clock)(429, retry_after=4))
    first.call(B, Sent(clock)(429, retry_after=4))  # two customers: the partner's limit
    first.sync_now()  # within the second: no exchange, the cut alone is written
    assert state.writes == writes + 1 and first.figures()["pushes"] == 1
    after = Pace.from_record(state.record)
    assert after.cuts == before.cuts + 1 and after.rate < before.rate
    assert after.paused_until == pytest.approx(clock.wall() + 4.0, abs=0.5)
    second._callers = 1  # busy (an idle instance does not ask)
    second._next_sync = clock.now  # its exchange is due
    second.sync_now()
    assert second.waiting().paused_for == pytest.approx(4.0, abs=0.5)
    assert second.rate == pytest.approx(after.rate / 2)


def test_one_round_of_429s_across_instances_cuts_the_partner_s_rate_once():
    clock = Clock()
    state = MemoryPaceState(clock)
    first, second = shared_limiter(clock, state, instance="one"), shared_limiter(clock, state, instance="two")
    for pace in (first, second, first):
        busy(pace, clock, calls=1)
        exchange(pace, clock)
    before = Pace.from_record(state.record)
    first.call(A, Sent(clock)(429, retry_after=1))
    first.call(B, Sent(clock)(429, retry_after=1))
    first.sync_now()  # the partner's cut, written at once
    # The second has not heard of it: its own 429s, before its next exchange, are of the same round...
    second.call(C, Sent(clock)(429, retry_after=1))
    second.call("customer-d", Sent(clock)(429, retry_after=1))
    clock.now += 2.0
    second.call("customer-e", Sent(clock)(429, retry_after=1))  # ...even this one: sent before it heard
    exchange(second, clock)
    assert Pace.from_record(state.record).cuts == before.cuts + 1


def test_a_write_lost_to_another_instance_waits_for_the_next_exchange():
    clock = Clock()
    state = MemoryPaceState(clock)
    first, second = shared_limiter(clock, state, instance="one"), shared_limiter(clock, state, instance="two")
    for pace in (second, first):
        busy(pace, clock, calls=1)
        exchange(pace, clock)
    second.call(None, Sent(clock)(429, retry_after=1))  # the partner's limit: the record changes
    second.sync_now()
    first.call(None, Sent(clock)(429, retry_after=1))
    writes, exchanges = state.writes, state.exchanges
    for _ in range(5):
        first.sync_now()  # its write meets the other's: lost, and not tried again and again
    assert (state.writes, state.exchanges) == (writes, exchanges) and first.figures()["storage_requests"] <= 5
    exchange(first, clock)  # the next exchange reads the record again and folds the cut in
    assert state.exchanges == exchanges + 1 and first._pending == []


def test_the_partner_s_rate_grows_at_most_once_a_second_in_all():
    clock = Clock()
    state = MemoryPaceState(clock)
    instances = [shared_limiter(clock, state, instance=str(n)) for n in range(4)]
    for pace in instances:
        pace._limited_at = clock.now
        pace._callers = 1
        pace.sync_now()
    assert Pace.from_record(state.record).rate == 10.0  # created, then no increase within the second
    clock.now += 1.0
    for pace in instances:
        pace._limited_at = clock.now
        pace._next_sync = clock.now
        pace.sync_now()
    assert Pace.from_record(state.record).rate == 20.0  # slow start: one doubling, not four


def test_storage_failing_paces_alone_from_the_last_share_then_returns_to_sharing():
    clock = Clock()
    state = MemoryPaceState(clock)
    first, second = shared_limiter(clock, state, instance="one"), shared_limiter(clock, state, instance="two")
    for pace in (first, second, first):
        busy(pace, clock, calls=1)
        exchange(pace, clock)
    share = first.rate
    state.failing = True
    busy(first, clock, calls=1)
    exchange(first, clock)
    figures = first.figures()
    assert figures["alone"] is True and figures["failures"] == 1
    assert first.rate == pytest.approx(share)  # what it last had, not the partner's whole rate
    sent = Sent(clock)
    first.call(B, sent())  # never stops upgrading
    assert sent.times
    state.failing = False
    clock.now += 6.0
    busy(first, clock, calls=1)
    first.sync_now()
    assert first.figures()["alone"] is False and first.figures()["syncs"] >= 3


def test_cuts_made_while_storage_failed_are_written_when_it_answers_again():
    clock = Clock()
    state = MemoryPaceState(clock)
    pace = shared_limiter(clock, state)
    busy(pace, clock, calls=1)
    exchange(pace, clock)
    cuts = Pace.from_record(state.record).cuts
    state.failing = True
    pace.call(None, Sent(clock)(429, retry_after=1))  # the partner's limit
    pace.sync_now()
    state.failing = False
    clock.now += 6.0
    busy(pace, clock, calls=1)
    pace.sync_now()
    assert Pace.from_record(state.record).cuts == cuts + 1


def test_slow_storage_never_holds_a_call_and_the_instance_paces_alone_after_a_while():
    clock = Clock()
    state = MemoryPaceState(clock)
    pace = shared_limiter(clock, state)
    busy(pace, clock, calls=1)
    exchange(pace, clock)
    busy(pace, clock, calls=1)
    clock.now += 1.0
    state.block = threading.Event()
    syncing = threading.Thread(target=pace.sync_now)
    syncing.start()
    for _ in range(500):
        if pace._syncing:
            break
        state.block.wait(0.01)
    assert pace._syncing
    sent = Sent(clock)
    pace.call(A, sent())  # the exchange hangs; the call goes
    assert sent.times and pace.figures()["alone"] is False
    clock.now += 6.0
    pace.call(A, sent())
    assert pace.figures()["alone"] is True
    state.block.set()
    syncing.join(5)
    assert pace.figures()["alone"] is False  # the answer came: shared again


def test_an_idle_instance_makes_no_storage_request():
    clock = Clock()
    state = MemoryPaceState(clock)
    pace = shared_limiter(clock, state)
    pace.sync_now()
    assert state.exchanges == 0 and pace.figures()["storage_requests"] == 0


# -- against the fake Partner Center, through the real client -----------------------------------------------------


def client_for(partner_center, pace, policy=None):
    from shared.partner_center.client import PartnerCenterClient
    from shared.upgrades import runtime
    from tests.harness import FAST_POLICY

    tokens = runtime.get_runtime().tokens
    return PartnerCenterClient(
        base_url=partner_center.url,
        session=requests.Session(),
        tokens=tokens,
        policy=policy or FAST_POLICY,
        pace=pace,
    )


def create(client, customer=None):
    request = ProductUpgradeRequest(customer or str(uuid.uuid4()), "Azure")
    return client.create_upgrade(request, request_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))


def test_under_partner_center_s_rate_limit_the_pace_learns_a_rate_below_it(app_env, partner_center):
    partner_center.admit_per_second(5)
    pace = PaceLimiter(PaceRules(initial=20.0, maximum=40.0))  # told too much: it must learn less
    client = client_for(partner_center, pace, RetryPolicy(backoff_base=0.01, backoff_max=0.05, total_budget=30.0))
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: create(client), range(40)))
    assert len({c.upgrade_id for c in created}) == 40 == len(partner_center.created_upgrades)
    assert partner_center.rate_limited > 0
    figures = pace.figures()
    assert figures["cuts"] >= 1 and figures["partner"] >= 1 and pace.rate < 20.0


def test_a_partner_wide_429_holds_every_call_until_its_retry_after(app_env, partner_center):
    pace = PaceLimiter(PaceRules(initial=50.0, maximum=50.0))
    client = client_for(partner_center, pace)
    partner_center.throttle_next(2, retry_after="2", match="/v1/productupgrades")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: create(client), range(2)))
    create(client)
    posts = partner_center.requests_to("/v1/productupgrades", "POST")
    throttled = [r.received_at for r in posts[:2]]
    assert all(r.received_at >= max(throttled) + 2.0 - 0.05 for r in posts[2:])


def test_a_customer_throttled_on_its_own_does_not_hold_the_others(app_env, partner_center):
    held = str(uuid.uuid4())
    partner_center.throttle_customer(held, "30")
    pace = PaceLimiter(PaceRules(initial=50.0, maximum=50.0))
    client = client_for(partner_center, pace)
    with pytest.raises(PartnerCenterError) as info:
        create(client, held)  # Retry-After 30 outlasts the policy's 15 s: passed on, not slept through
    assert info.value.status == 429 and info.value.retry_after == 30
    assert pace.hold_left(held) > 25
    started = time.monotonic()
    others = [create(client) for _ in range(20)]
    assert len(others) == 20 and time.monotonic() - started < 25  # none waited for the held customer's 30 s
    assert pace.waiting().paused_for == 0 and pace.waiting().customers_held == 1


def test_the_client_tells_which_customer_a_call_is_about():
    from shared.partner_center.client import _customer_of

    assert _customer_of("/v1/productupgrades", {"customerId": "c-1", "productFamily": "Azure"}) == "c-1"
    assert _customer_of("/v1/customers/c-2/subscriptions", None) == "c-2"
    assert _customer_of("/v1/customers?size=100", None) is None
    assert _customer_of("/v1/customers", {}) is None
