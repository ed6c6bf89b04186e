"""GET /api/health (anonymous: healthy or unhealthy) and GET /api/health/details (function key: setting names
only, token acquisition), from one short cache."""

import json
import threading
import time

from sandbox import APP_SECRET, REFRESH_TOKEN
from shared.functions import health
from shared.upgrades import runtime


def body_of(response):
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def test_healthy_with_settings_and_a_token(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    response = app_env.health_details()
    body = body_of(response)
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["token"] == {"acquired": True, "error": None}
    assert "PARTNER_CENTER_TENANT_ID" in body["settings"]["present"]
    assert "PARTNER_CENTER_REFRESH_TOKEN" in body["settings"]["present"]
    assert "PRODUCT_UPGRADE_TABLE" in body["settings"]["defaulted"]
    assert body["settings"]["missing"] == []
    text = response.get_body().decode()
    assert REFRESH_TOKEN not in text and APP_SECRET not in text
    assert app_env.entra.url not in text  # names only, never values


def test_missing_settings_are_named(monkeypatch, app_env):
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")
    runtime.install(None)
    response = app_env.health_details()
    body = body_of(response)
    assert response.status_code == 503
    assert set(body["settings"]["missing"]) >= {"PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_REFRESH_TOKEN"}
    assert "PARTNER_CENTER_TENANT_ID" in body["settings"]["error"]
    assert body["token"] == {"acquired": False, "error": "not_attempted"}
    assert app_env.entra.requests == []


def test_token_failure_is_reported_by_kind(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.expire_refresh_tokens()
    body = body_of(app_env.health_details())
    assert body["status"] == "unhealthy" and body["token"] == {"acquired": False, "error": "token_error"}


def test_answer_is_cached_so_it_cannot_hammer_entra(monkeypatch, app_env, caplog):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.expire_refresh_tokens()
    for _ in range(20):
        assert app_env.health().status_code == 503
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 1
    assert caplog.text.count("Health check could not acquire a token") == 1
    health.clear_cache()  # what CACHE_SECONDS passing does
    assert app_env.health().status_code == 503
    assert caplog.text.count("Health check could not acquire a token") == 2
    # msal itself also holds back an identical refused grant, so Entra still saw one request
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 1


# -- anonymous callers, and callers at once ----------------------------------------------------------------


def test_anonymous_health_says_healthy_or_unhealthy_only(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    response = app_env.health()
    assert response.status_code == 200 and body_of(response) == {"status": "healthy"}
    assert response.headers["Cache-Control"] == "no-store"
    health.clear_cache()
    runtime.install(None)  # a new worker process: no token cached
    app_env.entra.expire_refresh_tokens()
    response = app_env.health()
    assert response.status_code == 503 and body_of(response) == {"status": "unhealthy"}
    # the detailed view names what is wrong; it is a second route, behind the function key
    assert body_of(app_env.health_details())["token"]["error"] == "token_error"


def test_concurrent_callers_do_not_wait_for_a_slow_token_call(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.delay_next(1, 2.0, match="/oauth2/v2.0/token")
    barrier = threading.Barrier(8)
    answers = []

    def probe():
        barrier.wait()
        started = time.monotonic()
        response = app_env.health()
        answers.append((time.monotonic() - started, response.status_code, body_of(response)))

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    answers.sort(key=lambda answer: answer[0])
    *quick, slow = answers
    assert len(quick) == 7 and all(seconds < 1.0 for seconds, _, _ in quick), answers
    assert all((status, body) == (503, {"status": "unhealthy"}) for _, status, body in quick)  # no answer yet
    assert slow[0] >= 2.0 and slow[1:] == (200, {"status": "healthy"})
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 1
    # from now on, every caller gets the cached answer at once
    started = time.monotonic()
    assert all(app_env.health().status_code == 200 for _ in range(8))
    assert time.monotonic() - started < 1.0


def test_a_stale_answer_is_served_while_one_caller_refreshes(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.expires_in = 301  # the provider renews 300 s early: the token needs renewing after a second
    assert app_env.health().status_code == 200
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)  # every answer is stale from now on
    time.sleep(1.1)
    app_env.entra.delay_next(1, 2.0, match="/oauth2/v2.0/token")
    refresher_status = []
    refresher = threading.Thread(target=lambda: refresher_status.append(app_env.health().status_code))
    refresher.start()
    time.sleep(0.3)  # the refresher is waiting for the slow token endpoint now
    started = time.monotonic()
    assert app_env.health().status_code == 200  # the last answer, at once
    assert time.monotonic() - started < 1.0
    refresher.join(timeout=30)
    assert refresher_status == [200]
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 2


# -- the consent's state ---------------------------------------------------------------------------------------


def test_details_report_the_consent_by_dates_and_flags_only(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    body = body_of(app_env.health_details())
    consent = body["consent"]
    # No storage in this app: this process's own refresh (in Azure every instance's, from the ledger's table).
    assert consent["mfa"] is True and consent["consentNeeded"] is False and consent["lastError"] is None
    assert consent["lastRefreshedAt"].endswith("Z") and consent["refreshTokenLapsesAt"].endswith("Z")
    assert consent["accessTokenExpiresAt"].endswith("Z")
    assert body_of(app_env.health()) == {"status": "healthy"}  # the anonymous route tells none of it


def test_details_say_consent_is_needed_when_the_refresh_token_is_refused(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.expire_refresh_tokens()
    consent = body_of(app_env.health_details())["consent"]
    assert (consent["consentNeeded"], consent["lastError"], consent["lastRefreshedAt"]) == (True, "invalid_grant", None)
