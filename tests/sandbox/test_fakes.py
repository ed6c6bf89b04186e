"""The fakes, driven by the real clients: requests, msal, azure-identity + azure-keyvault-secrets, Azure Storage."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any

import msal
import pytest
import requests

from sandbox import (
    APP_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET,
    CUSTOMER_ID,
    PARTNER_CENTER_RESOURCE,
    PARTNER_CENTER_SCOPE,
    REFRESH_TOKEN,
    REFRESH_TOKEN_SECRET_NAME,
    TENANT_ID,
    Azurite,
    FakeEntra,
    FakeHTTPServer,
    FakeKeyVault,
    FakeManagedIdentity,
    FakePartnerCenter,
    RecordedRequest,
    Response,
    TLSMaterial,
)
from sandbox.tls import CA_ENV_VARS

# -- helpers --------------------------------------------------------------------------------------------


class EchoServer(FakeHTTPServer):
    def handle(self, req: RecordedRequest) -> Response:
        return Response.json(200, {"method": req.method, "path": req.path, "len": len(req.body)})


def _token(entra: FakeEntra, refresh_token: str = REFRESH_TOKEN) -> dict[str, Any]:
    resp = requests.post(
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
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _pc_post(
    pc: FakePartnerCenter,
    path: str,
    body: Any,
    token: str | None,
    request_id: str | None = None,
    correlation_id: str | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "MS-RequestId": request_id or str(uuid.uuid4()),
        "MS-CorrelationId": correlation_id or str(uuid.uuid4()),
        "X-Locale": "en-US",
        "MS-PartnerCenter-Application": "product-upgrade-tests",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return (session or requests).post(f"{pc.url}{path}", data=json.dumps(body), headers=headers, timeout=10)


@pytest.fixture
def pc_token(entra: FakeEntra) -> str:
    return str(_token(entra)["access_token"])


STORAGE_SETTING = "AzureWebJobsStorage"
BODY = {"customerId": CUSTOMER_ID, "productFamily": "Azure"}


# -- TLS and the base server ----------------------------------------------------------------------------


def test_ca_env_points_at_the_test_ca(ca_env: TLSMaterial) -> None:
    for name in CA_ENV_VARS:
        assert os.environ[name] == ca_env.ca_bundle
    with open(ca_env.ca_bundle) as f:
        assert f.read().count("BEGIN CERTIFICATE") == 1


def test_https_verified_against_test_ca_and_keepalive(ca_env: TLSMaterial) -> None:
    with EchoServer(tls=ca_env) as server, requests.Session() as session:
        assert server.url == f"https://127.0.0.1:{server.port}"
        r1 = session.get(f"{server.url}/a?x=1&y=", timeout=5)
        r2 = session.post(f"{server.url}/b", data=b"12345", headers={"X-Test": "yes"}, timeout=5)
        r3 = session.get(f"https://localhost:{server.port}/c", timeout=5)
        assert r1.json() == {"method": "GET", "path": "/a", "len": 0}
        assert r2.json()["len"] == 5
        assert r3.status_code == 200
        assert r1.headers["Content-Length"] == str(len(r1.content))
        first, second = server.requests[0], server.requests[1]
        assert first.query == {"x": "1", "y": ""}
        assert second.headers["x-test"] == "yes" and second.header("X-TEST") == "yes"
        assert second.body == b"12345"
        # One TCP connection reused (HTTP/1.1 keep-alive).
        assert first.client_address == second.client_address
        assert server.errors == []


def test_system_ca_bundle_does_not_trust_the_fake(tls_ca: TLSMaterial, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with EchoServer(tls=tls_ca) as server, pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url, timeout=5, verify=True)


def test_plain_http_and_chunked_request_body() -> None:
    with EchoServer(use_tls=False) as server:
        assert server.url.startswith("http://127.0.0.1:")
        r = requests.post(f"{server.url}/chunked", data=iter([b"abc", b"defg"]), timeout=5)
        assert r.json()["len"] == 7
        assert server.requests[0].body == b"abcdefg"


def test_fail_next_then_recovers(ca_env: TLSMaterial) -> None:
    with EchoServer(tls=ca_env) as server, requests.Session() as session:
        server.fail_next(2, status=503, headers={"Retry-After": "1"})
        server.fail_next(1, status=502, body="bad gateway", match="/only-here")
        assert session.get(f"{server.url}/x", timeout=5).status_code == 503
        r = session.get(f"{server.url}/x", timeout=5)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["code"] == 503
        assert session.get(f"{server.url}/x", timeout=5).status_code == 200
        r = session.get(f"{server.url}/only-here", timeout=5)
        assert (r.status_code, r.text) == (502, "bad gateway")
        assert session.get(f"{server.url}/only-here", timeout=5).status_code == 200
        assert len(server.requests) == 5


def test_delay_next_causes_read_timeout_without_blocking_others(ca_env: TLSMaterial) -> None:
    with EchoServer(tls=ca_env) as server:
        server.delay_next(1, seconds=3)
        results: dict[str, Any] = {}

        def slow() -> None:
            try:
                requests.get(f"{server.url}/slow", timeout=(5, 0.5))
            except requests.exceptions.ReadTimeout as exc:
                results["slow"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 5
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        assert requests.get(f"{server.url}/fast", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
        thread.join(10)
        assert isinstance(results.get("slow"), requests.exceptions.ReadTimeout)
        # The delay was consumed: the next request is answered at once.
        assert requests.get(f"{server.url}/again", timeout=2).status_code == 200


def test_reset_next_causes_connection_error(ca_env: TLSMaterial) -> None:
    with EchoServer(tls=ca_env) as server, requests.Session() as session:
        assert session.get(f"{server.url}/warm", timeout=5).status_code == 200
        server.reset_next(1)
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"{server.url}/reset", timeout=5)
        assert session.get(f"{server.url}/after", timeout=5).status_code == 200
        assert [r.path for r in server.requests] == ["/warm", "/reset", "/after"]


def test_stop_is_bounded_with_open_and_delayed_connections(ca_env: TLSMaterial) -> None:
    server = EchoServer(tls=ca_env).start()
    port = server.port
    session = requests.Session()
    assert session.get(f"{server.url}/keepalive", timeout=5).status_code == 200  # idle keep-alive connection
    server.delay_next(1, seconds=60)
    thread = threading.Thread(target=lambda: _swallow(lambda: requests.get(f"{server.url}/hang", timeout=30)))
    thread.start()
    deadline = time.monotonic() + 5
    while len(server.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    thread.join(10)
    assert not thread.is_alive()
    assert not server.running
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"https://127.0.0.1:{port}/", timeout=1)
    session.close()


def _swallow(fn: Any) -> None:
    with contextlib.suppress(requests.RequestException):
        fn()


def test_reset_clears_recordings_and_faults(ca_env: TLSMaterial) -> None:
    with EchoServer(tls=ca_env) as server:
        requests.get(server.url, timeout=5)
        server.fail_next(5)
        server.reset()
        assert server.requests == []
        assert requests.get(server.url, timeout=5).status_code == 200


# -- Entra ----------------------------------------------------------------------------------------------


def _msal_app(entra: FakeEntra, secret: str = APP_SECRET, session: requests.Session | None = None) -> Any:
    return msal.ConfidentialClientApplication(
        APP_ID,
        client_credential=secret,
        authority=f"{entra.url}/{TENANT_ID}",
        instance_discovery=False,
        http_client=session or requests.Session(),
    )


def test_msal_refresh_token_flow_against_fake_entra(entra: FakeEntra) -> None:
    app = _msal_app(entra)
    result = app.acquire_token_by_refresh_token(REFRESH_TOKEN, scopes=[PARTNER_CENTER_SCOPE])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3599
    assert entra.is_valid_access_token(result["access_token"], PARTNER_CENTER_RESOURCE)
    assert result["access_token"] in entra.issued_access_tokens
    # Rotation: a new refresh token, and it is now the current one.
    assert result["refresh_token"] != REFRESH_TOKEN
    assert result["refresh_token"] == entra.current_refresh_token
    # msal fetched OIDC discovery, then posted the grant.
    discovery = entra.requests_to("/.well-known/openid-configuration")
    assert discovery and discovery[0].path == f"/{TENANT_ID}/v2.0/.well-known/openid-configuration"
    (grant,) = entra.requests_to("/oauth2/v2.0/token", "POST")
    form = grant.form()
    assert form["grant_type"] == "refresh_token"
    assert form["client_id"] == APP_ID and form["client_secret"] == APP_SECRET
    assert form["refresh_token"] == REFRESH_TOKEN
    assert PARTNER_CENTER_SCOPE in form["scope"].split()
    assert entra.token_requests == 1
    # The answered scope includes ".default", so msal's cache serves the same request silently.
    (account,) = app.get_accounts()
    silent = app.acquire_token_silent([PARTNER_CENTER_SCOPE], account=account)
    assert silent is not None and silent["access_token"] == result["access_token"]
    assert entra.token_requests == 1


def test_entra_rotation_keeps_old_refresh_tokens_valid_until_expired(entra: FakeEntra) -> None:
    first = _token(entra)
    second = _token(entra, first["refresh_token"])
    assert len({REFRESH_TOKEN, first["refresh_token"], second["refresh_token"]}) == 3
    assert entra.current_refresh_token == second["refresh_token"]
    assert _token(entra, REFRESH_TOKEN)["access_token"]  # the original one still works
    assert entra.token_requests == 3
    assert len(entra.issued_access_tokens) == 3

    entra.expire_refresh_tokens()
    app = _msal_app(entra)
    result = app.acquire_token_by_refresh_token(entra.current_refresh_token, scopes=[PARTNER_CENTER_SCOPE])
    assert result["error"] == "invalid_grant"
    assert result["error_description"].startswith("AADSTS70043:")
    assert result["error_codes"] == [70043]


def test_entra_errors(entra: FakeEntra) -> None:
    url = entra.token_endpoint
    base = {
        "grant_type": "refresh_token",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "scope": PARTNER_CENTER_SCOPE,
    }
    r = requests.post(url, data={**base, "client_secret": "wrong"}, timeout=5)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert r.json()["error_codes"] == [7000215]
    assert r.json()["error_description"].startswith("AADSTS7000215: Invalid client secret provided")

    r = requests.post(url, data={**base, "client_id": str(uuid.uuid4())}, timeout=5)
    assert (r.status_code, r.json()["error"], r.json()["error_codes"]) == (400, "unauthorized_client", [700016])

    r = requests.post(url, data={**base, "refresh_token": "never-issued"}, timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")

    r = requests.post(url, data={k: v for k, v in base.items() if k != "scope"}, timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")

    r = requests.post(url, data={**base, "scope": "https://graph.microsoft.com/.default"}, timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_resource")

    r = requests.post(f"{entra.url}/other-tenant/oauth2/v2.0/token", data=base, timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_tenant")

    r = requests.get(f"{entra.url}/other-tenant/v2.0/.well-known/openid-configuration", timeout=5)
    assert r.status_code == 400
    assert entra.issued_access_tokens == set()


def test_msal_reports_invalid_client(entra: FakeEntra) -> None:
    result = _msal_app(entra, secret="wrong").acquire_token_by_refresh_token(
        REFRESH_TOKEN, scopes=[PARTNER_CENTER_SCOPE]
    )
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"]


def test_entra_v1_endpoint_and_basic_auth(entra: FakeEntra) -> None:
    r = requests.post(
        f"{entra.url}/{TENANT_ID}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN, "resource": PARTNER_CENTER_RESOURCE},
        headers={"Authorization": "Basic " + base64.b64encode(f"{APP_ID}:{APP_SECRET}".encode()).decode()},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resource"] == PARTNER_CENTER_RESOURCE
    assert body["expires_in"] == "3599"  # v1 answers numbers as strings
    assert entra.is_valid_access_token(body["access_token"])
    assert body["refresh_token"] == entra.current_refresh_token


def test_entra_access_token_expiry_and_revocation(ca_env: TLSMaterial) -> None:
    with FakeEntra(tls=ca_env, expires_in=1) as entra:
        token = _token(entra)
        assert token["expires_in"] == 1
        assert entra.is_valid_access_token(token["access_token"])
        time.sleep(1.1)
        assert not entra.is_valid_access_token(token["access_token"])
        fresh = _token(entra, token["refresh_token"])["access_token"]
        entra.revoke_access_tokens()
        assert not entra.is_valid_access_token(fresh)


# -- Partner Center -------------------------------------------------------------------------------------


def test_pc_create_accepted_with_location(partner_center: FakePartnerCenter, pc_token: str) -> None:
    request_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    r = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token, request_id, correlation_id)
    assert r.status_code == 202
    assert r.headers["Content-Length"] == "0" and r.content == b""
    location = r.headers["Location"]
    assert location.startswith("productUpgrades/") and not location.startswith("/")
    upgrade_id = location.split("/", 1)[1]
    uuid.UUID(upgrade_id)
    assert r.headers["MS-RequestId"] == request_id
    assert r.headers["MS-CorrelationId"] == correlation_id
    assert r.headers["MS-CV"] and r.headers["MS-ServerId"]
    assert partner_center.created_upgrades == [
        {
            "upgrade_id": upgrade_id,
            "customer_id": CUSTOMER_ID,
            "product_family": "Azure",
            "request_id": request_id,
            "correlation_id": correlation_id,
        }
    ]
    recorded = partner_center.requests[-1]
    assert recorded.headers["X-Locale"] == "en-US"
    assert recorded.headers["ms-partnercenter-application"] == "product-upgrade-tests"
    assert recorded.json() == BODY


def test_pc_create_is_idempotent_per_request_id_and_409_otherwise(
    partner_center: FakePartnerCenter, pc_token: str
) -> None:
    request_id = str(uuid.uuid4())
    first = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token, request_id)
    again = _pc_post(partner_center, "/v1/productUpgrades", BODY, pc_token, request_id)
    assert first.status_code == again.status_code == 202
    assert first.headers["Location"] == again.headers["Location"]
    assert len(partner_center.created_upgrades) == 1
    assert partner_center.create_posts == 2

    other = _pc_post(partner_center, "/V1/PRODUCTUPGRADES", BODY, pc_token)
    assert other.status_code == 409
    assert other.json()["code"] == 900109
    assert set(other.json()) == {"code", "description", "data", "source"}

    # Once the running upgrade has failed, a new one may start; once one has completed, never again (900110).
    partner_center.set_upgrade_status(first.headers["Location"].split("/")[1], "Failed")
    second = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    assert second.status_code == 202
    assert len(partner_center.created_upgrades) == 2
    partner_center.set_upgrade_status(second.headers["Location"].split("/")[1], "Completed")
    third = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    assert third.status_code == 400 and str(third.json()["code"]) == "900110"
    assert len(partner_center.created_upgrades) == 2


def test_pc_validation_and_auth(partner_center: FakePartnerCenter, entra: FakeEntra, pc_token: str) -> None:
    r = _pc_post(
        partner_center, "/v1/productupgrades", {"customerId": "not-a-guid", "productFamily": "Azure"}, pc_token
    )
    assert r.status_code == 400 and r.json()["code"] == 900118
    r = _pc_post(partner_center, "/v1/productupgrades", BODY, None)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("OAuth realm=")
    assert r.json()["code"] == "800001"  # no token at all: PartnerTokenMissing
    r = _pc_post(partner_center, "/v1/productupgrades", BODY, "made-up-token")
    assert (r.status_code, r.json()["code"]) == (401, "400")  # a token it does not accept
    entra.revoke_access_tokens()
    assert _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token).status_code == 401
    assert partner_center.created_upgrades == []
    r = requests.get(f"{partner_center.url}/v1/productUpgrades/abc/status", timeout=5)
    assert r.status_code == 405


def test_pc_customer_errors(partner_center: FakePartnerCenter, pc_token: str) -> None:
    cases = [(403, 900108), (404, 900106), (403, 13605), (400, 900119), (409, 900113)]
    for status, code in cases:
        customer = str(uuid.uuid4())
        partner_center.set_customer_error(customer, status, code, f"error {code}")
        r = _pc_post(
            partner_center, "/v1/productupgrades", {"customerId": customer, "productFamily": "Azure"}, pc_token
        )
        assert (r.status_code, r.json()["code"], r.json()["description"]) == (status, code, f"error {code}")
        assert r.headers["MS-RequestId"]
    assert partner_center.created_upgrades == []


def test_pc_error_without_code_and_requests_to(partner_center: FakePartnerCenter, pc_token: str) -> None:
    partner_center.set_customer_error(CUSTOMER_ID, 403, None, "Forbidden", operations=("create",))
    r = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    assert r.status_code == 403 and "code" not in r.json()
    assert _pc_post(partner_center, "/v1/productupgrades/eligibility", BODY, pc_token).status_code == 200
    # "/..." selects by path suffix (the create call only), anything else by substring.
    assert len(partner_center.requests_to("/v1/productUpgrades", "POST")) == 1
    assert len(partner_center.requests_to("productupgrades")) == 2
    assert len(partner_center.requests_to("eligibility")) == 1


def test_pc_throttling(partner_center: FakePartnerCenter, pc_token: str) -> None:
    partner_center.throttle_next(2, retry_after="3")
    for _ in range(2):
        r = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "3"
        assert r.json() == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 3 seconds."}
    assert _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token).status_code == 202
    assert partner_center.create_posts == 3
    assert len(partner_center.created_upgrades) == 1


def test_pc_partner_wide_rate_limit_answers_429_with_retry_after_beyond_the_rate(
    partner_center: FakePartnerCenter, pc_token: str
) -> None:
    partner_center.admit_per_second(3)  # a token bucket holding one second's worth
    answers = [
        _pc_post(partner_center, "/v1/productupgrades", {**BODY, "customerId": str(uuid.uuid4())}, pc_token)
        for _ in range(6)
    ]
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) >= 2 and partner_center.rate_limited == len(refused) == len(partner_center.rate_limited_at)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert refused[0].json()["statusCode"] == 429 and refused[0].headers["MS-CorrelationId"]
    assert partner_center.customer_throttled == 0  # the partner's limit, not a customer's


def test_pc_rate_change_keeps_the_tokens_in_hand(partner_center: FakePartnerCenter, pc_token: str) -> None:
    partner_center.admit_per_second(3)
    for _ in range(3):  # the second's worth, spent
        _pc_post(partner_center, "/v1/productupgrades", {**BODY, "customerId": str(uuid.uuid4())}, pc_token)
    partner_center.admit_per_second(1)  # Partner Center tightening must not hand out a fresh second
    assert _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token).status_code == 429
    partner_center.admit_per_second(None)
    assert _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token).status_code == 202


def test_pc_customer_throttle_is_counted_apart(partner_center: FakePartnerCenter, pc_token: str) -> None:
    partner_center.throttle_customer(CUSTOMER_ID, "30")
    assert _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token).status_code == 429
    other = {**BODY, "customerId": str(uuid.uuid4())}
    assert _pc_post(partner_center, "/v1/productupgrades", other, pc_token).status_code == 202
    assert (partner_center.customer_throttled, partner_center.rate_limited) == (1, 0)


def test_pc_eligibility(partner_center: FakePartnerCenter, pc_token: str) -> None:
    r = _pc_post(partner_center, "/v1/productUpgrades/eligibility", BODY, pc_token)
    assert r.status_code == 200
    body = r.json()
    assert body["customerId"] == CUSTOMER_ID and body["productFamily"] == "Azure"
    assert body["isEligible"] is True and body["upgradeId"] is None

    created = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    upgrade_id = created.headers["Location"].split("/")[1]
    body = _pc_post(partner_center, "/v1/productupgrades/eligibility", BODY, pc_token).json()
    assert body["isEligible"] is False and body["upgradeId"] == upgrade_id

    other = str(uuid.uuid4())
    partner_center.set_ineligible(other, "The customer has no Azure subscriptions to upgrade.")
    body = _pc_post(
        partner_center, "/v1/productupgrades/eligibility", {"customerId": other, "productFamily": "Azure"}, pc_token
    ).json()
    assert body["isEligible"] is False
    assert body["reason"] == "The customer has no Azure subscriptions to upgrade."
    r = _pc_post(partner_center, "/v1/productupgrades", {"customerId": other, "productFamily": "Azure"}, pc_token)
    assert (r.status_code, r.json()["code"]) == (403, 900108)


def test_pc_status_document_is_shaped_like_the_docs_example(partner_center: FakePartnerCenter, pc_token: str) -> None:
    # The docs' example: source AzureSubscription with the subscription's GUID, target "Microsoft Azure plan",
    # and no errorDetails key at all where there is no error (neither at the top nor on the line item).
    partner_center.complete_after_polls(0)
    created = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    upgrade_id = created.headers["Location"].split("/")[1]
    doc = _pc_post(partner_center, f"/v1/productUpgrades/{upgrade_id}/status", BODY, pc_token).json()
    assert doc["status"] == "Completed" and "errorDetails" not in doc
    (line,) = doc["lineItems"]
    assert set(line) == {"sourceProduct", "targetProduct", "upgradedDate", "status"}
    assert line["sourceProduct"]["name"] == "AzureSubscription" and uuid.UUID(line["sourceProduct"]["id"])
    assert line["targetProduct"]["name"] == "Microsoft Azure plan" and uuid.UUID(line["targetProduct"]["id"])


def test_pc_status_polling(partner_center: FakePartnerCenter, pc_token: str) -> None:
    partner_center.complete_after_polls(2)
    created = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token)
    upgrade_id = created.headers["Location"].split("/")[1]
    statuses = []
    for _ in range(3):
        r = _pc_post(partner_center, f"/v1/productUpgrades/{upgrade_id}/status", BODY, pc_token)
        assert r.status_code == 200
        statuses.append(r.json()["status"])
    assert statuses == ["InProgress", "InProgress", "Completed"]
    doc = r.json()
    assert doc["id"] == upgrade_id and doc["productFamily"] == "Azure"
    (line,) = doc["lineItems"]
    assert line["status"] == "Completed" and line["upgradedDate"]

    partner_center.set_upgrade_status(upgrade_id, "Failed", error_details={"code": "1", "description": "boom"})
    doc = _pc_post(partner_center, f"/v1/productupgrades/{upgrade_id}/status", BODY, pc_token).json()
    assert doc["status"] == "Failed" and doc["errorDetails"] == {"code": "1", "description": "boom"}

    r = _pc_post(partner_center, f"/v1/productupgrades/{uuid.uuid4()}/status", BODY, pc_token)
    assert (r.status_code, r.json()["code"]) == (404, 900106)


def test_pc_concurrent_creates_make_one_upgrade(partner_center: FakePartnerCenter, pc_token: str) -> None:
    request_id = str(uuid.uuid4())
    codes: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        r = _pc_post(partner_center, "/v1/productupgrades", BODY, pc_token, request_id)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert codes == [202] * 8
    assert len(partner_center.created_upgrades) == 1


# -- Key Vault + managed identity -------------------------------------------------------------------------


def test_secret_client_with_default_credential(managed_identity: FakeManagedIdentity, key_vault: FakeKeyVault) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    credential = DefaultAzureCredential()
    client = SecretClient(vault_url=key_vault.url, credential=credential)
    secret = client.get_secret(APP_ID_SECRET_NAME)
    assert secret.value == APP_ID
    assert secret.properties.version in key_vault.versions(APP_ID_SECRET_NAME)

    updated = client.set_secret(REFRESH_TOKEN_SECRET_NAME, "rotated-refresh-token")
    assert updated.value == "rotated-refresh-token"
    assert key_vault.puts == [(REFRESH_TOKEN_SECRET_NAME, "rotated-refresh-token")]
    assert key_vault.get_value(REFRESH_TOKEN_SECRET_NAME) == "rotated-refresh-token"
    assert client.get_secret(REFRESH_TOKEN_SECRET_NAME).value == "rotated-refresh-token"
    assert len(key_vault.versions(REFRESH_TOKEN_SECRET_NAME)) == 2
    assert key_vault.gets[APP_ID_SECRET_NAME] == 1

    # One challenge (the first request, sent without a token), then one managed-identity token reused.
    assert key_vault.unauthorized == 1
    assert managed_identity.token_requests == 1
    (mi_request,) = managed_identity.requests
    assert mi_request.method == "GET" and mi_request.path == "/msi/token"
    assert mi_request.query["api-version"] == "2019-08-01"
    assert mi_request.query["resource"] == key_vault.challenge_resource
    assert mi_request.headers["X-IDENTITY-HEADER"] == managed_identity.identity_header
    # Version-specific read.
    assert client.get_secret(APP_ID_SECRET_NAME, secret.properties.version).value == APP_ID
    credential.close()
    client.close()


def test_key_vault_errors(managed_identity: FakeManagedIdentity, key_vault: FakeKeyVault) -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(vault_url=key_vault.url, credential=ManagedIdentityCredential())
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("no-such-secret")
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"

    key_vault.read_only = True
    with pytest.raises(HttpResponseError) as forbidden:
        client.set_secret(REFRESH_TOKEN_SECRET_NAME, "x")
    assert forbidden.value.status_code == 403
    assert key_vault.puts == []

    key_vault.fail_next(1, 500, {"error": {"code": "InternalServerError", "message": "oops"}})
    assert client.get_secret(APP_ID_SECRET_NAME).value == APP_ID  # azure-core retried the 500
    client.close()


def test_key_vault_challenge_and_foreign_tokens(key_vault: FakeKeyVault) -> None:
    r = requests.get(f"{key_vault.url}/secrets/{APP_ID_SECRET_NAME}/?api-version=2025-07-01", timeout=5)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge == (
        f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", '
        f'resource="https://0.0.1:{key_vault.port}"'
    )
    assert r.json()["error"]["code"] == "Unauthorized"
    r = requests.get(
        f"{key_vault.url}/secrets/{APP_ID_SECRET_NAME}/?api-version=2025-07-01",
        headers={"Authorization": "Bearer not-from-the-managed-identity"},
        timeout=5,
    )
    assert r.status_code == 401
    assert key_vault.gets[APP_ID_SECRET_NAME] == 0


def test_managed_identity_rejects_wrong_header(managed_identity: FakeManagedIdentity) -> None:
    r = requests.get(
        managed_identity.endpoint,
        params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": "wrong"},
        timeout=5,
    )
    assert r.status_code == 401
    r = requests.get(
        managed_identity.endpoint,
        params={"api-version": "2019-08-01", "resource": "https://vault.azure.net", "client_id": "user-assigned"},
        headers={"X-IDENTITY-HEADER": managed_identity.identity_header},
        timeout=5,
    )
    body = r.json()
    assert body["client_id"] == "user-assigned" and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) > time.time()
    assert managed_identity.is_valid(body["access_token"], "https://vault.azure.net")
    assert not managed_identity.is_valid(body["access_token"], "https://storage.azure.com")


# -- Azurite --------------------------------------------------------------------------------------------


def test_azurite_queue_and_table(azurite: Azurite) -> None:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

    queue_name = f"q{uuid.uuid4().hex[:12]}"
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        queue.create_queue()
        queue.send_message(json.dumps({"customerId": CUSTOMER_ID}))
        messages = list(queue.receive_messages(max_messages=5, visibility_timeout=5))
        assert len(messages) == 1
        assert json.loads(messages[0].content) == {"customerId": CUSTOMER_ID}
        assert messages[0].dequeue_count == 1
        queue.delete_message(messages[0])

    table_name = f"t{uuid.uuid4().hex[:12]}"
    with TableClient.from_connection_string(azurite.connection_string, table_name) as table:
        table.create_table()
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "upgradeId": "u-1"})
        assert table.get_entity("p", "r")["upgradeId"] == "u-1"
        table.delete_table()


def test_azurite_env(azurite_env: Azurite) -> None:
    assert os.environ[STORAGE_SETTING] == azurite_env.connection_string
    assert f"QueueEndpoint=http://127.0.0.1:{azurite_env.queue_port}/devstoreaccount1" in azurite_env.connection_string
    assert f"TableEndpoint=http://127.0.0.1:{azurite_env.table_port}/devstoreaccount1" in azurite_env.connection_string
