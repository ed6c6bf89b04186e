"""The Entra fake's clock and claims: refresh tokens that lapse after 90 days unused, access tokens whose ``amr``
says whether the sign-in used MFA. Driven over the wire with requests, as the other fakes' tests are."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from sandbox import APP_ID, APP_SECRET, PARTNER_CENTER_SCOPE, REFRESH_TOKEN, FakeEntra, TLSMaterial

DAY = 24 * 3600.0


class Clock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redeem(entra: FakeEntra, refresh_token: str) -> requests.Response:
    return requests.post(
        entra.token_endpoint,
        data={
            "grant_type": "refresh_token",
            "client_id": APP_ID,
            "client_secret": APP_SECRET,
            "refresh_token": refresh_token,
            "scope": PARTNER_CENTER_SCOPE,
        },
        timeout=10,
    )


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


@pytest.mark.parametrize(("auth_methods", "amr"), [(("pwd", "mfa"), ["pwd", "mfa"]), (("pwd",), ["pwd"]), (None, None)])
def test_access_tokens_are_jwts_whose_amr_tells_how_the_user_signed_in(ca_env: TLSMaterial, auth_methods, amr):
    clock = Clock()
    with FakeEntra(tls=ca_env, clock=clock, auth_methods=auth_methods) as entra:
        answer = redeem(entra, REFRESH_TOKEN).json()
        token = answer["access_token"]
        assert entra.is_valid_access_token(token)
        issued = claims(token)
        assert issued.get("amr") == amr
        assert issued["aud"] == "https://api.partnercenter.microsoft.com" and issued["scp"] == "user_impersonation"
        assert issued["exp"] == int(clock.now) + entra.expires_in
        # the rotated refresh token's chain keeps the sign-in's methods
        assert claims(redeem(entra, answer["refresh_token"]).json()["access_token"]).get("amr") == amr
        # access tokens expire on the fake's clock
        clock.now += entra.expires_in
        assert not entra.is_valid_access_token(token)


def test_a_refresh_token_unused_for_90_days_lapses_and_each_use_starts_a_new_90_days(ca_env: TLSMaterial):
    clock = Clock()
    with FakeEntra(tls=ca_env, clock=clock) as entra:
        clock.now += 89 * DAY
        first = redeem(entra, REFRESH_TOKEN)
        assert first.status_code == 200
        rotated = first.json()["refresh_token"]

        clock.now += 1 * DAY  # the initial token is 90 days old; the rotated one a day
        lapsed = redeem(entra, REFRESH_TOKEN)
        assert lapsed.status_code == 400
        error = lapsed.json()
        assert error["error"] == "invalid_grant" and error["error_codes"] == [700082]
        assert "expired due to inactivity" in error["error_description"]
        assert redeem(entra, rotated).status_code == 200

        clock.now += 100 * DAY  # nothing used for 100 days: every token of the chain has lapsed
        assert all(redeem(entra, token).status_code == 400 for token in entra.issued_refresh_tokens)


def test_a_consent_sign_in_starts_a_chain_with_the_methods_the_user_signed_in_with(entra: FakeEntra):
    entra.sign_in_methods = ("pwd",)  # a sign-in without MFA
    entra.add_refresh_token("fake-rt-added-by-a-test", auth_methods=("pwd", "mfa"))
    assert claims(redeem(entra, "fake-rt-added-by-a-test").json()["access_token"])["amr"] == ["pwd", "mfa"]
    base = f"{entra.authority}/oauth2/v2.0"
    consent = requests.get(
        f"{base}/authorize",
        params={
            "client_id": APP_ID,
            "response_type": "code",
            "scope": "https://api.partnercenter.microsoft.com/user_impersonation offline_access",
            "redirect_uri": "http://localhost:1234",
        },
        allow_redirects=False,
        timeout=10,
    )
    code = consent.headers["Location"].split("code=")[1].split("&")[0]
    answer = requests.post(
        f"{base}/token",
        data={
            "grant_type": "authorization_code",
            "client_id": APP_ID,
            "client_secret": APP_SECRET,
            "code": code,
            "redirect_uri": "http://localhost:1234",
            "scope": "https://api.partnercenter.microsoft.com/user_impersonation offline_access",
        },
        timeout=10,
    ).json()
    assert claims(answer["access_token"])["amr"] == ["pwd"]
    assert claims(redeem(entra, answer["refresh_token"]).json()["access_token"])["amr"] == ["pwd"]
