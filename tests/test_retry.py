"""The retry policy on canned outcomes; the same policy against real servers is covered in the fault tests."""

from datetime import UTC, datetime

import pytest
import requests

from shared.errors import UpstreamTimeoutError, UpstreamUnavailableError
from shared.retry import RetryPolicy, azure_call_limits, parse_retry_after, remaining_budget, time_budget

FAST = RetryPolicy(backoff_base=0.001, backoff_max=0.002, min_attempt_time=0.0)


def response(status, headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    resp._content = b""
    return resp


class Script:
    """Plays outcomes in order and records the timeouts each attempt got."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.timeouts = []

    def __call__(self, timeout):
        self.timeouts.append(timeout)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    now = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 26 Nov 2026 08:00:30 GMT", now=now) == 30
    assert parse_retry_after("Thu, 26 Nov 2026 07:00:00 GMT", now=now) == 0
    assert parse_retry_after("-4") == 0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


def test_final_response_returns_at_once():
    script = Script(response(400))
    assert FAST.send(script, service="x").status_code == 400
    assert len(script.timeouts) == 1
    assert script.timeouts[0] == (5.0, 20.0)


def test_retries_5xx_and_429_then_succeeds():
    script = Script(response(503), response(429, {"Retry-After": "0"}), response(500), response(202))
    assert FAST.send(script, service="x").status_code == 202
    assert len(script.timeouts) == 4


def test_gives_back_the_last_retryable_response_after_max_attempts():
    script = Script(*[response(500) for _ in range(5)], response(202))
    assert FAST.send(script, service="x").status_code == 500
    assert len(script.timeouts) == 5


def test_retry_after_beyond_the_budget_is_not_slept_through():
    policy = RetryPolicy(total_budget=2.0, backoff_base=0.001)
    script = Script(response(429, {"Retry-After": "60"}), response(202))
    assert policy.send(script, service="x").status_code == 429
    assert len(script.timeouts) == 1


def test_connection_errors_then_raise_typed_error_without_details():
    script = Script(*[requests.ConnectionError("secret-bearing text?") for _ in range(5)])
    with pytest.raises(UpstreamUnavailableError) as info:
        FAST.send(script, service="Partner Center")
    assert str(info.value) == "Partner Center could not be reached (ConnectionError) after 5 attempts"
    assert info.value.http_status == 502


def test_read_timeouts_raise_timeout_error():
    script = Script(requests.ReadTimeout(), requests.ReadTimeout(), response(502), requests.ReadTimeout())
    policy = RetryPolicy(max_attempts=4, backoff_base=0.001, min_attempt_time=0.0)
    with pytest.raises(UpstreamTimeoutError) as info:
        policy.send(script, service="Partner Center")
    assert info.value.http_status == 504
    assert "timed out after 4 attempts" in str(info.value)


def test_custom_retry_predicate():
    script = Script(response(404), response(200))
    result = FAST.send(script, service="x", retry_on=lambda r: r.status_code == 404)
    assert result.status_code == 200


def test_time_budget_caps_timeouts_and_nests():
    assert remaining_budget() is None
    with time_budget(10):
        outer = remaining_budget()
        assert outer is not None and 9 < outer <= 10
        with time_budget(100):
            inner = remaining_budget()
            assert inner is not None and inner <= 10
        script = Script(response(200))
        FAST.send(script, service="x")
        connect, read = script.timeouts[0]
        assert connect == 5.0 and 9 < read <= 10
    assert remaining_budget() is None


def test_spent_budget_sends_nothing():
    script = Script(response(200))
    with time_budget(0), pytest.raises(UpstreamTimeoutError, match="time budget"):
        RetryPolicy().send(script, service="Key Vault")
    assert script.timeouts == []


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (10, 8.0)):
        for _ in range(20):
            assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


def test_azure_call_limits_follow_the_budget():
    assert azure_call_limits() == {"timeout": 45.0, "read_timeout": 20.0, "connection_timeout": 5.0}
    with time_budget(3):
        limits = azure_call_limits(total=10, read=5, connect=3)
        assert 2.5 < limits["timeout"] <= 3 and limits["read_timeout"] == limits["timeout"]
        assert limits["connection_timeout"] <= 3
    with time_budget(0):
        assert azure_call_limits()["timeout"] == 0.5
