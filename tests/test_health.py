"""GET /api/health: setting names only, token acquisition, and a short cache."""

import json

from shared import health, runtime
from tests.fakes import APP_SECRET, REFRESH_TOKEN


def body_of(response):
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def test_healthy_with_settings_and_a_token(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    response = app_env.health()
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
    response = app_env.health()
    body = body_of(response)
    assert response.status_code == 503
    assert set(body["settings"]["missing"]) >= {"PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_REFRESH_TOKEN"}
    assert "PARTNER_CENTER_TENANT_ID" in body["settings"]["error"]
    assert body["token"] == {"acquired": False, "error": "not_attempted"}
    assert app_env.entra.requests == []


def test_token_failure_is_reported_by_kind(monkeypatch, app_env):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    app_env.entra.expire_refresh_tokens()
    body = body_of(app_env.health())
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
