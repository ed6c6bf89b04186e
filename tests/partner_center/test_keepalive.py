"""The token keep-alive: the daily timer function against the Entra fake (whose refresh tokens lapse after 90 days
unused), the Key Vault fake and Azurite, with a clock that simulates the days."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from sandbox import APP_SECRET, APP_SECRET_SECRET_NAME, CUSTOMER_ID, REFRESH_TOKEN_SECRET_NAME
from shared import signals
from shared.partner_center.keepalive import LEASE_SECONDS
from shared.settings import Settings
from shared.upgrades import runtime
from tests.harness import FAST_POLICY, App, use_key_vault, user_functions

DAY = timedelta(days=1)


class SimulatedClock:
    """One time for the app (datetime) and the Entra fake (seconds since the epoch), moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock(stored_app: App, key_vault, monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    """The stored app with its secrets in Key Vault (rotated refresh tokens are written back there, as in Azure)
    and the simulated clock shared by the app and the Entra fake."""
    sim = SimulatedClock()
    stored_app.entra.clock = sim.epoch
    use_key_vault(monkeypatch, key_vault.url)
    new_process(sim)
    return sim


def new_process(clock: SimulatedClock) -> None:
    """A worker process started afresh: no token cached, the secrets read from the vault again."""
    runtime.install(
        runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1, clock=clock)
    )


def run_keepalive(*, past_due: bool = False) -> None:
    from azure.functions.timer import TimerRequest

    user_functions()["keep_partner_center_token_alive"](TimerRequest(past_due=past_due))


def token_posts(app: App) -> int:
    return len(app.entra.requests_to("/oauth2/v2.0/token", "POST"))


def keepalive_signals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "signal", None) == signals.TOKEN_KEEPALIVE]


def details(app: App) -> dict:
    from shared.functions import health

    health.clear_cache()
    return json.loads(app.health_details().get_body())


def test_a_token_idle_for_100_days_still_works_with_the_daily_keepalive(stored_app, clock, key_vault, caplog):
    for _ in range(100):
        clock.now += DAY
        run_keepalive()
    outcomes = [record.outcome for record in keepalive_signals(caplog)]
    # renewed on day 1 (nothing recorded yet), then whenever the stored token had gone 7 days unused: 15 times
    assert outcomes.count("refreshed") == 15 and set(outcomes) == {"refreshed", "notDue"}
    assert token_posts(stored_app) == 15
    assert [name for name, _ in key_vault.puts] == [REFRESH_TOKEN_SECRET_NAME] * 15

    new_process(clock)  # the partner comes back on day 100: a cold worker, the token read from the vault
    assert stored_app.create({"customerId": CUSTOMER_ID}).status_code == 202


def test_without_the_keepalive_the_token_lapses_after_90_days_unused(stored_app, clock):
    # The control for the test above: the same 100 idle days, no keep-alive, and the fake really refuses.
    clock.now += 100 * DAY
    new_process(clock)
    response = stored_app.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert "invalid_grant" in json.loads(response.get_body())["detail"]


def test_the_outcome_is_logged_with_the_new_expiry_and_health_details_shows_the_dates(stored_app, clock, caplog):
    run_keepalive()
    [signal] = keepalive_signals(caplog)
    assert (signal.outcome, signal.mfa, signal.levelno) == ("refreshed", "true", logging.INFO)
    expires = datetime.fromisoformat(signal.tokenExpiresOn.replace("Z", "+00:00"))
    assert timedelta(minutes=50) < expires - clock.now <= timedelta(hours=1)
    assert signal.refreshTokenLapsesOn == (clock.now + timedelta(days=90)).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )

    body = details(stored_app)
    consent = body["consent"]
    assert consent["lastRefreshedAt"] == signal.lastRefreshedOn
    assert consent["refreshTokenLapsesAt"] == signal.refreshTokenLapsesOn
    assert (consent["mfa"], consent["consentNeeded"], consent["lastError"]) == (True, False, None)
    text = json.dumps(body)
    assert not any(token in text for token in stored_app.entra.issued_refresh_tokens)
    assert not any(token in text for token in stored_app.entra.issued_access_tokens)


def test_a_token_renewed_within_the_keepalive_days_is_left_alone(stored_app, clock, caplog):
    run_keepalive()
    clock.now += 6 * DAY
    run_keepalive()
    assert [r.outcome for r in keepalive_signals(caplog)] == ["refreshed", "notDue"]
    assert token_posts(stored_app) == 1


def test_traffic_renews_the_token_too_so_the_keepalive_has_nothing_to_do(stored_app, clock, caplog):
    assert stored_app.create({"customerId": CUSTOMER_ID}).status_code == 202  # the token is redeemed for the call
    clock.now += DAY
    run_keepalive()
    assert [r.outcome for r in keepalive_signals(caplog)] == ["notDue"]


def test_a_refused_refresh_says_consent_is_needed_and_signals_the_alert(stored_app, clock, caplog):
    stored_app.entra.expire_refresh_tokens()
    run_keepalive()
    [signal] = keepalive_signals(caplog)
    assert (signal.outcome, signal.errorCode, signal.levelno) == ("refused", "invalid_grant", logging.ERROR)
    refusals = [r for r in caplog.records if getattr(r, "signal", None) == signals.TOKEN_REFRESH]
    assert [(r.outcome, r.errorCode) for r in refusals] == [("refused", "invalid_grant")]

    consent = details(stored_app)["consent"]
    assert (consent["consentNeeded"], consent["lastError"]) == (True, "invalid_grant")
    # the next day's run tries again (an operator may have consented meanwhile)
    clock.now += DAY
    run_keepalive()
    assert [r.outcome for r in keepalive_signals(caplog)] == ["refused", "refused"]


def test_a_refreshed_token_without_mfa_is_an_alert_grade_record(stored_app, clock, caplog):
    from sandbox import REFRESH_TOKEN

    stored_app.entra.add_refresh_token(REFRESH_TOKEN, auth_methods=("pwd",))  # a consent given without MFA
    run_keepalive()
    [signal] = keepalive_signals(caplog)
    assert (signal.outcome, signal.mfa, signal.levelno) == ("refreshed", "false", logging.ERROR)
    assert "MFA" in signal.reason and "consent" in signal.reason
    assert details(stored_app)["consent"]["mfa"] is False


def test_two_instances_never_refresh_at_once(stored_app, clock, caplog):
    first = runtime.get_runtime()
    new_process(clock)
    second = runtime.get_runtime()
    stored_app.entra.delay_next(1, 1.0, match="/oauth2/v2.0/token")  # the first redemption takes a while
    from shared.partner_center.keepalive import keep_alive

    results, barrier = [], threading.Barrier(2)

    def instance(rt, name):
        barrier.wait()
        results.append(keep_alive(rt.tokens, rt.shared_state, keepalive_days=7, now=clock.now, holder=name))

    threads = [threading.Thread(target=instance, args=(rt, name)) for rt, name in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(result.outcome for result in results) == ["busy", "refreshed"]
    assert token_posts(stored_app) == 1


def test_a_lease_whose_holder_died_lapses(stored_app, clock):
    from shared.partner_center.tokens import TOKEN_RECORD

    state = runtime.get_runtime().shared_state
    assert state.acquire(TOKEN_RECORD, "died", now=clock.now, seconds=LEASE_SECONDS)
    assert not state.acquire(TOKEN_RECORD, "other", now=clock.now + timedelta(seconds=1), seconds=LEASE_SECONDS)
    later = clock.now + timedelta(seconds=LEASE_SECONDS + 1)
    assert state.acquire(TOKEN_RECORD, "other", now=later, seconds=LEASE_SECONDS)
    state.release(TOKEN_RECORD, "died")  # too late: not its lease any more
    assert not state.acquire(TOKEN_RECORD, "third", now=later, seconds=LEASE_SECONDS)
    state.release(TOKEN_RECORD, "other")
    assert state.acquire(TOKEN_RECORD, "third", now=later, seconds=LEASE_SECONDS)


def test_the_secrets_expiry_dates_are_signalled(stored_app, clock, key_vault, caplog):
    # nine days and 23 hours from the app's clock: whole seconds (as the vault keeps them), never a boundary case
    expires = int(clock.now.timestamp()) + 10 * 86400 - 3600
    key_vault.set_secret(APP_SECRET_SECRET_NAME, APP_SECRET, expires=expires)
    run_keepalive()
    found = {r.secretName: r for r in caplog.records if getattr(r, "signal", None) == signals.SECRET_EXPIRY}
    # the app id carries no expiry date in this vault; the refresh token got one when the keep-alive rotated it
    assert set(found) == {APP_SECRET_SECRET_NAME, REFRESH_TOKEN_SECRET_NAME}
    assert found[REFRESH_TOKEN_SECRET_NAME].daysLeft in (89, 90)
    assert found[APP_SECRET_SECRET_NAME].daysLeft == 9
    assert found[APP_SECRET_SECRET_NAME].secretExpiresOn == datetime.fromtimestamp(expires, UTC).isoformat().replace(
        "+00:00", "Z"
    )
