"""App+User tokens from the loopback Entra ID through msal: caching, single flight, rotation, errors."""

import logging
import threading
import time

import pytest
import requests

from sandbox import (
    APP_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET,
    APP_SECRET_SECRET_NAME,
    REFRESH_TOKEN,
    REFRESH_TOKEN_SECRET_NAME,
    TENANT_ID,
    FakeHTTPServer,
)
from shared.errors import TokenError
from shared.partner_center.secrets import REFRESH_TOKEN_LIFETIME, EnvironmentSecretStore
from shared.partner_center.tokens import TokenProvider
from shared.retry import RetryPolicy
from tests.harness import vault_store

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.02)
ENV = {
    "PARTNER_CENTER_APP_ID": APP_ID,
    "PARTNER_CENTER_APP_SECRET": APP_SECRET,
    "PARTNER_CENTER_REFRESH_TOKEN": REFRESH_TOKEN,
}


def provider(entra, secrets=None):
    return TokenProvider(
        authority_host=entra.url,
        tenant_id=TENANT_ID,
        secrets=secrets or EnvironmentSecretStore(dict(ENV)),
        session=requests.Session(),
        policy=FAST,
    )


def token_posts(entra):
    return entra.requests_to("/oauth2/v2.0/token", "POST")


def test_token_is_acquired_once_and_reused(entra):
    tokens = provider(entra)
    first = tokens.get_token()
    assert entra.is_valid_access_token(first)
    assert all(tokens.get_token() == first for _ in range(10))
    [post] = token_posts(entra)
    form = post.form()
    assert form["grant_type"] == "refresh_token"
    assert form["client_id"] == APP_ID
    assert "https://api.partnercenter.microsoft.com/.default" in form["scope"].split()
    # OIDC discovery, no instance discovery against a Microsoft host
    assert entra.requests_to("openid-configuration")
    assert all(r.path.startswith(f"/{TENANT_ID}") for r in entra.requests)


def test_token_is_renewed_shortly_before_expiry(entra):
    entra.expires_in = 301  # the provider renews 300 s early: valid for about a second
    tokens = provider(entra)
    first = tokens.get_token()
    assert tokens.get_token() == first
    time.sleep(1.2)
    assert tokens.get_token() != first
    assert len(token_posts(entra)) == 2


def test_cold_start_of_a_batch_makes_one_token_request(entra, key_vault):
    tokens = provider(entra, vault_store(key_vault))
    results, barrier = [], threading.Barrier(16)

    def worker():
        barrier.wait()
        results.append(tokens.get_token())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 16 and len(set(results)) == 1
    assert len(token_posts(entra)) == 1
    assert key_vault.gets == {APP_ID_SECRET_NAME: 1, APP_SECRET_SECRET_NAME: 1, REFRESH_TOKEN_SECRET_NAME: 1}


def test_forced_refresh_by_many_callers_renews_once(entra):
    tokens = provider(entra)
    stale = tokens.get_token()
    threads = [
        threading.Thread(target=tokens.get_token, kwargs={"force_refresh": True, "stale_token": stale})
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(token_posts(entra)) == 2
    assert tokens.get_token() != stale


def test_rotated_refresh_token_is_written_back_once(entra, key_vault, caplog):
    tokens = provider(entra, vault_store(key_vault))
    with caplog.at_level(logging.DEBUG):
        tokens.get_token()
        tokens.get_token()
    rotated = entra.current_refresh_token
    assert rotated != REFRESH_TOKEN
    assert key_vault.puts == [(REFRESH_TOKEN_SECRET_NAME, rotated)]
    assert rotated not in caplog.text and REFRESH_TOKEN not in caplog.text
    # the next refresh uses the rotated token and writes the next one
    tokens.get_token(force_refresh=True)
    assert token_posts(entra)[-1].form()["refresh_token"] == rotated
    assert [name for name, _ in key_vault.puts] == [REFRESH_TOKEN_SECRET_NAME] * 2


def test_failing_write_back_keeps_the_token_and_warns_without_the_value(entra, key_vault, caplog):
    key_vault.read_only = True
    tokens = provider(entra, vault_store(key_vault))
    with caplog.at_level(logging.WARNING):
        assert entra.is_valid_access_token(tokens.get_token())
    assert "rotated refresh token could not be stored" in caplog.text
    assert entra.current_refresh_token not in caplog.text
    assert key_vault.puts == []


def test_environment_mode_keeps_the_rotated_token_in_memory(entra):
    env = dict(ENV)
    tokens = provider(entra, EnvironmentSecretStore(env))
    tokens.get_token()
    tokens.get_token(force_refresh=True)
    assert token_posts(entra)[-1].form()["refresh_token"] == entra.issued_refresh_tokens[1]
    assert env["PARTNER_CENTER_REFRESH_TOKEN"] == REFRESH_TOKEN


def test_invalid_grant(entra):
    entra.expire_refresh_tokens()
    with pytest.raises(TokenError) as info:
        provider(entra).get_token()
    assert info.value.error == "invalid_grant"
    assert "AADSTS70043" in str(info.value) and "re-consent" in str(info.value)
    assert REFRESH_TOKEN not in str(info.value)


def test_invalid_client(entra):
    env = {**ENV, "PARTNER_CENTER_APP_SECRET": "not-the-secret"}
    with pytest.raises(TokenError) as info:
        provider(entra, EnvironmentSecretStore(env)).get_token()
    assert info.value.error == "invalid_client"
    assert "not-the-secret" not in str(info.value)


def test_token_endpoint_failing_once_is_retried(entra):
    entra.fail_next(1, 503, {"error": "temporarily_unavailable"}, match="/oauth2/v2.0/token")
    assert entra.is_valid_access_token(provider(entra).get_token())
    assert len(token_posts(entra)) == 2


# -- redirects from the token endpoint ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_token_endpoint_redirect_is_not_followed(entra, status):
    with FakeHTTPServer(use_tls=False) as elsewhere:
        entra.fail_next(1, status, b"", {"Location": f"{elsewhere.url}/collect"}, match="/oauth2/v2.0/token")
        with pytest.raises(TokenError, match="redirect, which is not followed") as info:
            provider(entra).get_token()
        assert info.value.http_status == 502
        assert elsewhere.requests == []  # neither the app secret nor the refresh token went there
    assert len(token_posts(entra)) == 1


# -- MFA and the shared record -----------------------------------------------------------------------------------


def test_mfa_is_read_from_the_access_tokens_amr_claim(entra):
    from shared.partner_center.tokens import carries_mfa, token_claims

    tokens = provider(entra)
    assert carries_mfa(tokens.get_token()) is True
    assert tokens.last_refresh is not None and tokens.last_refresh.mfa is True
    entra.add_refresh_token("fake-rt-no-mfa-0123456789", auth_methods=("pwd",))
    env = {**ENV, "PARTNER_CENTER_REFRESH_TOKEN": "fake-rt-no-mfa-0123456789"}
    assert carries_mfa(provider(entra, EnvironmentSecretStore(env)).get_token()) is False
    assert carries_mfa("opaque-token") is None and token_claims("a.!!!.c") is None


def test_a_refresh_is_recorded_for_every_instance_without_the_token(entra):
    from shared.partner_center.state import NoSharedState

    class Recorded(NoSharedState):
        def __init__(self):
            self.fields = {}

        def write(self, name, fields):
            self.fields.setdefault(name, {}).update(fields)

        def read(self, name):
            return self.fields.get(name)

    state = Recorded()
    tokens = TokenProvider(
        authority_host=entra.url,
        tenant_id=TENANT_ID,
        secrets=EnvironmentSecretStore(dict(ENV)),
        session=requests.Session(),
        policy=FAST,
        state=state,
    )
    tokens.get_token()
    record = state.fields["partner-center-token"]
    assert set(record) == {
        "AccessTokenExpiresAt",
        "ConsentNeeded",
        "LastError",
        "Mfa",
        "RefreshedAt",
        "RefreshTokenLapsesAt",
    }
    assert not any(token in str(record) for token in entra.issued_access_tokens | set(entra.issued_refresh_tokens))
    status = tokens.status()
    assert status.mfa is True and status.consent_needed is False
    assert status.refresh_token_lapses_at - status.last_refreshed_at == REFRESH_TOKEN_LIFETIME

    entra.expire_refresh_tokens()
    with pytest.raises(TokenError):
        tokens.get_token(force_refresh=True)
    assert tokens.status().consent_needed is True and tokens.status().last_error == "invalid_grant"
