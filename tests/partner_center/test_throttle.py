"""The adaptive limit on concurrent Partner Center calls: arithmetic on a fake clock, behaviour against the fake."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shared.errors import PartnerCenterError
from shared.models import ProductUpgradeRequest
from shared.partner_center.client import PartnerCenterClient
from shared.partner_center.throttle import DEFAULT_PAUSE_SECONDS, AdaptiveConcurrencyLimit
from shared.retry import RetryPolicy, time_budget
from shared.upgrades import runtime
from tests.harness import FAST_POLICY


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Answer:
    def __init__(self, status, retry_after=None):
        self.status_code = status
        self.headers = {"Retry-After": retry_after} if retry_after is not None else {}


def test_multiplicative_decrease_once_per_round_then_additive_increase():
    clock = Clock()
    limit = AdaptiveConcurrencyLimit(initial=8, maximum=8, clock=clock)
    round_before_cut = limit._acquire()
    assert limit.in_flight == 1
    limit.call(lambda: Answer(429, "2"))
    assert limit.limit == 4 and limit.paused_for == 2.0
    # A call that was in flight before the cut is throttled too: the limit was already cut for it.
    limit._release(round_before_cut, throttled=True, retry_after=None)
    assert limit.limit == 4 and limit.in_flight == 0
    clock.now += 2.0
    for _ in range(8):
        limit.call(lambda: Answer(202))
    assert limit.limit == 4  # half a call more per round of `limit` calls: 4 + 0.5/4 + 0.5/4.125 + ... < 5
    limit.call(lambda: Answer(202))
    assert limit.limit == 5
    for _ in range(100):
        limit.call(lambda: Answer(202))
    assert limit.limit == 8  # never beyond the maximum


def test_never_below_the_minimum_and_a_429_without_retry_after_pauses_a_second():
    clock = Clock()
    limit = AdaptiveConcurrencyLimit(initial=2, minimum=1, clock=clock)
    for _ in range(5):
        clock.now += 10
        limit.call(lambda: Answer(429, "soon"))
    assert limit.limit == 1 and limit.paused_for == DEFAULT_PAUSE_SECONDS


def test_a_pause_beyond_the_budget_fails_at_once_as_throttled():
    clock = Clock()
    limit = AdaptiveConcurrencyLimit(clock=clock)
    limit.call(lambda: Answer(429, "30"))
    sent = []
    with time_budget(5.0), pytest.raises(PartnerCenterError) as info:
        limit.call(lambda: sent.append(1))
    assert sent == [] and info.value.status == 429 and info.value.retry_after == 30
    assert info.value.http_status == 503 and info.value.transient


def test_an_exception_in_the_call_frees_its_slot():
    limit = AdaptiveConcurrencyLimit(initial=1, maximum=1)

    def fail():
        raise requests.ConnectionError("reset")

    with pytest.raises(requests.ConnectionError):
        limit.call(fail)
    assert limit.in_flight == 0 and limit.limit == 1


@pytest.mark.parametrize("bad", [{"initial": 0.5}, {"initial": 40}, {"decrease": 1.0}, {"increase": 0}])
def test_settings_are_checked(bad):
    with pytest.raises(ValueError):
        AdaptiveConcurrencyLimit(**bad)


# -- against the fake, through the real client -------------------------------------------------------------


def client_for(partner_center, limit, policy=FAST_POLICY):
    tokens = runtime.get_runtime().tokens
    return PartnerCenterClient(
        base_url=partner_center.url, session=requests.Session(), tokens=tokens, policy=policy, limit=limit
    )


def create(client):
    request = ProductUpgradeRequest(str(uuid.uuid4()), "Azure")
    return client.create_upgrade(request, request_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))


def test_never_more_calls_in_flight_than_the_limit(app_env, partner_center):
    partner_center.service_time(0.05)
    limit = AdaptiveConcurrencyLimit(initial=3, maximum=3)
    client = client_for(partner_center, limit)
    with ThreadPoolExecutor(12) as pool:
        created = list(pool.map(lambda _: create(client), range(36)))
    assert len({c.upgrade_id for c in created}) == 36
    assert partner_center.max_in_flight == 3  # reached, never passed


def test_shrinks_on_429_holds_calls_for_retry_after_and_grows_back(app_env, partner_center):
    limit = AdaptiveConcurrencyLimit(initial=4, maximum=4)
    no_retries = RetryPolicy(max_attempts=1)
    client = client_for(partner_center, limit, policy=no_retries)
    partner_center.throttle_next(1, retry_after="1", match="/v1/productupgrades")
    with pytest.raises(PartnerCenterError) as info:
        create(client)
    assert info.value.status == 429 and limit.limit == 2
    create(client)  # held back by this process's limit, not by a retry (there is none)
    throttled, admitted = partner_center.requests_to("/v1/productupgrades", "POST")
    assert admitted.received_at - throttled.received_at >= 1.0
    for _ in range(12):
        create(client)
    assert limit.limit == 4


def test_under_a_rate_limit_in_flight_calls_shrink_to_the_floor(app_env, partner_center):
    partner_center.admit_per_second(5)
    partner_center.service_time(0.02)
    limit = AdaptiveConcurrencyLimit(initial=8, maximum=8)
    client = client_for(partner_center, limit, policy=RetryPolicy(backoff_base=0.01, total_budget=30.0))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: create(client), range(24)))
    assert len(results) == 24 and partner_center.rate_limited > 0
    assert limit.limit < 8
