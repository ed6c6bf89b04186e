"""Fault injection against the loopback fakes: what each fault costs in attempts, and how it ends.

Every test here also runs under the suite-wide log check (``secrets_never_logged`` in conftest): no secret,
token or refresh token in any record, at DEBUG, across every fault.
"""

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from sandbox import APP_ID_SECRET_NAME, CUSTOMER_ID
from shared.retry import RetryPolicy
from shared.settings import Settings
from shared.upgrades import runtime
from tests.harness import FAST_POLICY, use_key_vault

CREATE = "/v1/productupgrades"


def posts(app):
    return app.partner_center.requests_to(CREATE, "POST")


def one_request_id(app):
    ids = {p.header("MS-RequestId") for p in posts(app)}
    assert len(ids) == 1, ids
    return ids.pop()


def with_policy(policy):
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=policy, poll_interval_seconds=1))


def test_429_sequence_honours_retry_after_seconds(app_env):
    app_env.partner_center.throttle_next(2, retry_after="1", match=CREATE)
    started = time.monotonic()
    response = app_env.create({"customerId": CUSTOMER_ID})
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert len(posts(app_env)) == 3 and one_request_id(app_env)
    assert elapsed >= 1.9  # two Retry-After: 1 waits, not the fast backoff


def test_429_with_an_http_date_retry_after(app_env):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    app_env.partner_center.fail_next(
        1, 429, {"statusCode": 429, "message": "Rate limit is exceeded."}, {"Retry-After": when}, match=CREATE
    )
    started = time.monotonic()
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert time.monotonic() - started >= 0.9
    assert len(posts(app_env)) == 2 and one_request_id(app_env)


def test_5xx_burst_then_accepted(app_env):
    app_env.partner_center.fail_next(3, 503, {"code": 503, "description": "Service Unavailable"}, match=CREATE)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert len(posts(app_env)) == 4 and one_request_id(app_env)
    assert len(app_env.partner_center.created_upgrades) == 1


def test_connection_resets_then_accepted(app_env):
    app_env.partner_center.reset_next(2, match=CREATE)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert len(posts(app_env)) == 3 and one_request_id(app_env)


def test_slow_response_past_the_read_timeout_is_retried(app_env):
    with_policy(RetryPolicy(read_timeout=0.5, backoff_base=0.01, backoff_max=0.02))
    app_env.partner_center.delay_next(1, 1.5, match=CREATE)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert len(posts(app_env)) == 2 and one_request_id(app_env)
    # Partner Center is idempotent on MS-RequestId: the slow first attempt and the retry are one upgrade
    assert len(app_env.partner_center.created_upgrades) == 1


def test_always_slow_is_504_after_the_attempts(app_env):
    with_policy(RetryPolicy(read_timeout=0.3, backoff_base=0.01, backoff_max=0.02))
    app_env.partner_center.delay_next(10, 1.0, match=CREATE)
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 504
    assert json.loads(response.get_body())["type"].endswith("upstream_timeout")
    assert len(posts(app_env)) == 5 and one_request_id(app_env)


def test_time_budget_ends_the_invocation_early(app_env):
    with_policy(RetryPolicy(read_timeout=20, total_budget=1.5, backoff_base=0.01, backoff_max=0.02))
    app_env.partner_center.delay_next(10, 5.0, match=CREATE)
    started = time.monotonic()
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 504
    assert time.monotonic() - started < 3.0


def test_token_endpoint_failing_once(app_env):
    app_env.entra.fail_next(1, 500, {"error": "server_error"}, match="/oauth2/v2.0/token")
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 2
    assert len(posts(app_env)) == 1


def test_token_endpoint_down(app_env):
    app_env.entra.fail_next(10, 503, {"error": "temporarily_unavailable"}, match="/oauth2/v2.0/token")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 5
    assert posts(app_env) == []


def test_key_vault_500s_are_retried(monkeypatch, app_env, key_vault):
    use_key_vault(monkeypatch, key_vault.url)
    with_policy(FAST_POLICY)
    key_vault.fail_next(2, 500, {"error": {"code": "InternalError", "message": "x"}}, match=APP_ID_SECRET_NAME)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    assert len(key_vault.requests_to(APP_ID_SECRET_NAME, "GET")) >= 3


def test_key_vault_down_is_502_and_then_recovers(monkeypatch, app_env, key_vault):
    use_key_vault(monkeypatch, key_vault.url)
    with_policy(FAST_POLICY)
    key_vault.fail_next(100, 500, {"error": {"code": "InternalError", "message": "x"}}, match="secrets")
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 502
    key_vault.clear_faults()
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202


@pytest.mark.parametrize(("status", "answer", "attempts"), [(400, 400, 1), (403, 422, 1), (404, 404, 1), (409, 409, 1)])
def test_never_retried_statuses(app_env, status, answer, attempts):
    app_env.partner_center.fail_next(1, status, {"code": 900000 + status, "description": "no"}, match=CREATE)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == answer
    assert len(posts(app_env)) == attempts


def test_401_is_retried_once_with_a_fresh_token(app_env):
    app_env.partner_center.fail_next(1, 401, {"code": "900420", "description": "Unauthorized"}, match=CREATE)
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    first, second = posts(app_env)
    assert first.header("Authorization") != second.header("Authorization")
    assert first.header("MS-RequestId") == second.header("MS-RequestId")
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 2


def test_queue_message_replayed_after_a_crash_does_not_post_again(stored_app):
    message = {"customerId": CUSTOMER_ID, "requestId": "batch-3/row-9"}
    first = json.loads(stored_app.queue(message, message_id="m-9", dequeue_count=1))
    replay = json.loads(stored_app.queue(message, message_id="m-9", dequeue_count=2))
    assert first == replay
    assert stored_app.partner_center.create_posts == 1
