"""Every outbound call ends inside the invocation's time budget.

For each of the four services a fake accepts the connection, reads the request and never answers in time
(``delay_next``); the objects are the ones ``Runtime.build`` wires, with the contract's real limits
(5 attempts, 5 s connect, 20 s read), so only the budget can end the call early.
"""

import time

import pytest

from sandbox import CUSTOMER_ID
from shared.errors import SecretStoreError, UpstreamUnavailableError
from shared.models import ProductUpgradeRequest
from shared.retry import RetryPolicy, time_budget
from shared.settings import Settings
from shared.upgrades import runtime
from tests.harness import use_key_vault

BUDGET = 2.0
#: What a call may take beyond the budget: the last attempt's teardown, thread scheduling on 2 cores.
SLACK = 1.5
#: Long enough that a call bounded only by the client's own limits is caught out; short enough that the
#: fakes' handler threads end soon after.
NEVER = 8.0


def built_runtime(monkeypatch, key_vault=None):
    if key_vault is not None:
        use_key_vault(monkeypatch, key_vault.url)
    return runtime.Runtime.build(Settings.from_env(), policy=RetryPolicy())


def ends_inside_the_budget(call, error):
    started = time.monotonic()
    with time_budget(BUDGET), pytest.raises(error):
        call()
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET + SLACK, elapsed
    return elapsed


def test_key_vault_get_secret_that_never_answers(monkeypatch, app_env, key_vault):
    built = built_runtime(monkeypatch, key_vault)
    key_vault.delay_next(20, NEVER, match="secrets")
    ends_inside_the_budget(built.secrets.load, SecretStoreError)


def test_key_vault_set_secret_that_never_answers(monkeypatch, app_env, key_vault):
    built = built_runtime(monkeypatch, key_vault)
    built.secrets.load()  # outside any budget: the client's own limits hold
    key_vault.delay_next(20, NEVER, match="secrets")
    ends_inside_the_budget(lambda: built.secrets.save_refresh_token("rotated-refresh-token-value"), SecretStoreError)
    assert key_vault.puts == []


def test_managed_identity_that_never_answers(monkeypatch, app_env, key_vault, managed_identity):
    built = built_runtime(monkeypatch, key_vault)
    managed_identity.delay_next(20, NEVER)
    ends_inside_the_budget(built.secrets.load, SecretStoreError)
    assert managed_identity.requests  # the credential did ask, and gave up in time
    assert key_vault.gets == {}


def test_token_endpoint_that_never_answers(monkeypatch, app_env):
    built = built_runtime(monkeypatch)
    app_env.entra.delay_next(20, NEVER, match="/oauth2/v2.0/token")
    ends_inside_the_budget(built.tokens.get_token, UpstreamUnavailableError)


def test_partner_center_that_never_answers(monkeypatch, app_env):
    built = built_runtime(monkeypatch)
    built.tokens.get_token()
    app_env.partner_center.delay_next(20, NEVER, match="/v1/productupgrades")
    request = ProductUpgradeRequest(CUSTOMER_ID)
    ends_inside_the_budget(
        lambda: built.client.create_upgrade(request, request_id="r-1", correlation_id="c-1"), UpstreamUnavailableError
    )


def test_a_retry_after_beyond_the_budget_is_not_slept_through(monkeypatch, app_env, key_vault):
    built = built_runtime(monkeypatch, key_vault)
    throttled = {"error": {"code": "Throttled", "message": "Too many requests"}}
    key_vault.fail_next(20, 429, throttled, {"Retry-After": "30"}, match="secrets")
    ends_inside_the_budget(built.secrets.load, SecretStoreError)
