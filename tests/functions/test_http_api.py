"""The HTTP functions, called as the host calls them, against the loopback Entra ID and Partner Center."""

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import CUSTOMER_ID
from shared.upgrades.workflow import request_id_for
from tests.harness import follow_async_pattern

PROBLEM = "application/problem+json"


def problem_of(response):
    assert response.mimetype == PROBLEM, response.get_body()
    body = json.loads(response.get_body())
    assert body["status"] == response.status_code
    assert body["type"].startswith("urn:partner-center-product-upgrades:problem:")
    assert body["title"] and body["detail"] and body["correlationId"]
    return body


def test_create_answers_202_with_upgrade_id_and_absolute_location(app_env):
    response = app_env.create({"customerId": CUSTOMER_ID}, params={"code": "fn-key-1"})
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    [created] = app_env.partner_center.created_upgrades
    assert body == {
        "upgradeId": created["upgrade_id"],
        "customerId": CUSTOMER_ID,
        "productFamily": "Azure",
        "status": "accepted",
    }
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc) == ("https", "upgrades.example.net")
    assert location.path == f"/api/productupgrades/{created['upgrade_id']}"
    assert parse_qs(location.query) == {"customerId": [CUSTOMER_ID], "code": ["fn-key-1"]}
    # every documented header reached Partner Center
    [post] = app_env.partner_center.requests_to("/v1/productupgrades", "POST")
    assert post.header("Authorization").startswith("Bearer ")
    assert post.header("Accept") == "application/json"
    assert post.header("Content-Type") == "application/json"
    assert uuid.UUID(post.header("MS-RequestId")) and uuid.UUID(post.header("MS-CorrelationId"))
    assert post.header("X-Locale") == "en-US"
    assert post.header("MS-PartnerCenter-Application")
    assert post.json() == {"customerId": CUSTOMER_ID, "productFamily": "Azure"}
    assert response.headers["MS-CorrelationId"] == post.header("MS-CorrelationId")


def test_function_key_header_never_lands_in_location(app_env):
    response = app_env.create({"customerId": CUSTOMER_ID, "productFamily": "Azure"}, headers={"x-functions-key": "k"})
    assert response.status_code == 202
    assert "k" not in parse_qs(urlsplit(response.headers["Location"]).query).get("code", [])
    assert "code=" not in response.headers["Location"]


def test_idempotency_key_maps_to_the_same_request_id(app_env):
    first = app_env.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "crm-order-17"})
    second = app_env.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "crm-order-17"})
    assert first.status_code == second.status_code == 202
    assert json.loads(first.get_body())["upgradeId"] == json.loads(second.get_body())["upgradeId"]
    sent = {r.header("MS-RequestId") for r in app_env.partner_center.requests_to("/v1/productupgrades", "POST")}
    assert sent == {request_id_for("idempotency-key", "crm-order-17")}
    assert len(app_env.partner_center.created_upgrades) == 1


def test_non_guid_correlation_id_is_mapped_for_partner_center_and_echoed(app_env):
    response = app_env.create({"customerId": CUSTOMER_ID}, headers={"MS-CorrelationId": "crm-case-42"})
    assert response.headers["MS-CorrelationId"] == "crm-case-42"
    [post] = app_env.partner_center.requests_to("/v1/productupgrades", "POST")
    assert str(uuid.UUID(post.header("MS-CorrelationId"))) == post.header("MS-CorrelationId")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "the body is empty"),
        (b"{not json", "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'"text"', "the body must be a JSON object"),
        (b"{}", "customerId is required"),
        (b'{"customerId": null}', "customerId is required"),
        (b'{"customerId": 5}', "customerId is required"),
        (b'{"customerId": "contoso"}', "customerId must be a GUID"),
        (json.dumps({"customerId": CUSTOMER_ID, "productFamily": 1}).encode(), "productFamily must be"),
        (json.dumps({"customerId": CUSTOMER_ID, "pad": "x" * 70000}).encode(), "the body is larger than 64 KiB"),
        (b"\xff\xfe\x00", "the body is not valid JSON"),
        (b"[" * 100000, "the body is larger than 64 KiB"),
        (b"[" * 60000, "the body is not valid JSON"),
    ],
)
def test_bad_input_is_400_and_never_reaches_partner_center(app_env, body, detail):
    response = app_env.create(body)
    assert response.status_code == 400
    problem = problem_of(response)
    assert problem["detail"].startswith(detail)
    assert app_env.partner_center.requests == []
    assert app_env.entra.requests == []


def test_bad_input_needs_no_settings(monkeypatch, app_env):
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    from shared.upgrades import runtime

    runtime.install(None)
    assert app_env.create(b"{}").status_code == 400
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 500
    assert "PARTNER_CENTER_TENANT_ID" in problem_of(response)["detail"]


@pytest.mark.parametrize(
    ("status", "code", "expected", "expected_code"),
    [
        (400, 900118, 400, "partner_center_rejected"),
        (404, 900106, 404, "not_found"),
        (409, 900112, 409, "conflict"),
        (400, 900110, 409, "already_upgraded"),
        (403, 900108, 422, "not_eligible"),
        (403, 900105, 422, "not_eligible"),
        (403, 900130, 422, "try_again_later"),
        (403, 900123, 422, "not_eligible"),
        (403, 900124, 422, "not_eligible"),
        (403, 13605, 422, "not_eligible"),
    ],
)
def test_partner_center_refusals_map_to_the_contract(app_env, status, code, expected, expected_code):
    app_env.partner_center.set_customer_error(CUSTOMER_ID, status, code, "Refused for a reason.")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == expected
    problem = problem_of(response)
    assert problem["partnerCenterErrorCode"] == str(code)
    assert problem["type"].endswith(expected_code)
    assert "Refused for a reason." in problem["detail"]
    # only "try again later" is worth sending again, later
    assert problem["retryable"] is (code == 900130)
    # a refusal about the customer is not retried
    assert len(app_env.partner_center.requests_to("/v1/productupgrades", "POST")) == 1


def test_throttled_past_the_retries_is_503_with_retry_after(app_env):
    app_env.partner_center.throttle_next(10, retry_after="0")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert problem_of(response)["type"].endswith("throttled")
    assert len(app_env.partner_center.requests_to("/v1/productupgrades", "POST")) == 5


def test_throttled_with_long_retry_after_is_passed_on_at_once(app_env):
    app_env.partner_center.throttle_next(1, retry_after="120")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "120"
    assert len(app_env.partner_center.requests_to("/v1/productupgrades", "POST")) == 1


def test_throttled_then_accepted_within_the_retries(app_env):
    app_env.partner_center.throttle_next(2, retry_after="0")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 202
    posts = app_env.partner_center.requests_to("/v1/productupgrades", "POST")
    assert len(posts) == 3
    assert len({p.header("MS-RequestId") for p in posts}) == 1


def test_server_errors_after_retries_are_502(app_env):
    app_env.partner_center.fail_next(5, 500, {"code": 500, "description": "Internal"}, match="/v1/productupgrades")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert problem_of(response)["type"].endswith("partner_center_unavailable")


def test_connection_failures_are_502(app_env):
    app_env.partner_center.reset_next(5, match="/v1/productupgrades")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert "could not be reached" in problem_of(response)["detail"]


def test_rejected_token_is_retried_once_with_a_fresh_one_then_502(app_env):
    assert app_env.create({"customerId": CUSTOMER_ID}).status_code == 202
    app_env.entra.revoke_access_tokens()
    second = "00000000-0000-0000-0000-0000000000d2"
    assert app_env.create({"customerId": second}).status_code == 202  # fresh token after one 401
    app_env.partner_center.set_customer_error(second, 403, "", "Forbidden")
    response = app_env.create({"customerId": second})
    assert response.status_code == 502
    assert problem_of(response)["type"].endswith("partner_center_token_rejected")


def test_invalid_grant_is_502_and_names_the_remedy(app_env):
    app_env.entra.expire_refresh_tokens()
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    problem = problem_of(response)
    assert "invalid_grant" in problem["detail"] and "re-consent" in problem["detail"]
    assert app_env.partner_center.requests == []


def test_invalid_client_is_502(monkeypatch, app_env):
    monkeypatch.setenv("PARTNER_CENTER_APP_SECRET", "wrong-secret-value")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert "invalid_client" in problem_of(response)["detail"]
    assert "wrong-secret-value" not in response.get_body().decode()


def test_missing_environment_secret_is_500_naming_it(monkeypatch, app_env):
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 500
    assert problem_of(response)["detail"] == "setting PARTNER_CENTER_REFRESH_TOKEN is required but not set"


def test_one_token_request_for_many_upgrades(app_env):
    for index in range(5):
        assert app_env.create({"customerId": f"00000000-0000-0000-0000-00000000010{index}"}).status_code == 202
    assert len(app_env.entra.requests_to("/oauth2/v2.0/token", "POST")) == 1


def test_eligibility(app_env):
    response = app_env.eligibility({"customerId": CUSTOMER_ID})
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {
        "customerId": CUSTOMER_ID,
        "productFamily": "Azure",
        "isEligible": True,
        "upgradeId": None,
        "reason": None,
    }
    app_env.partner_center.set_ineligible(CUSTOMER_ID, "Customer has no legacy Azure subscription.")
    body = json.loads(app_env.eligibility({"customerId": CUSTOMER_ID}).get_body())
    assert body["isEligible"] is False and body["reason"] == "Customer has no legacy Azure subscription."
    assert app_env.eligibility({"customerId": "x"}).status_code == 400


def test_status_while_running_then_completed(app_env):
    created = json.loads(app_env.create({"customerId": CUSTOMER_ID}).get_body())
    upgrade_id = created["upgradeId"]
    running = app_env.status(upgrade_id, {"customerId": CUSTOMER_ID})
    assert running.status_code == 202
    assert running.headers["Retry-After"] == "1"
    assert urlsplit(running.headers["Location"]).path == f"/api/productupgrades/{upgrade_id}"
    app_env.partner_center.set_upgrade_status(upgrade_id, "Completed")
    done = app_env.status(upgrade_id, {"customerId": CUSTOMER_ID})
    assert done.status_code == 200
    body = json.loads(done.get_body())
    assert body["upgradeId"] == upgrade_id and body["customerId"] == CUSTOMER_ID
    assert body["status"] == "Completed" and body["id"] == upgrade_id
    assert body["lineItems"] and body["lineItems"][0]["targetProduct"]
    [call] = app_env.partner_center.requests_to(f"/v1/productUpgrades/{upgrade_id}/status")[-1:]
    assert call.method == "POST" and call.json() == {"customerId": CUSTOMER_ID, "productFamily": "Azure"}


def test_status_of_unknown_upgrade_is_404(app_env):
    response = app_env.status(str(uuid.uuid4()), {"customerId": CUSTOMER_ID})
    assert response.status_code == 404
    assert problem_of(response)["partnerCenterErrorCode"] == "900106"


@pytest.mark.parametrize("params", [{}, {"customerId": "nope"}, {"customerId": CUSTOMER_ID, "productFamily": ""}])
def test_status_needs_a_guid_customer_id(app_env, params):
    response = app_env.status(str(uuid.uuid4()), params)
    assert response.status_code == 400
    assert app_env.partner_center.requests == []


def test_status_rejects_a_malformed_upgrade_id(app_env):
    response = app_env.status("../../etc", {"customerId": CUSTOMER_ID})
    assert response.status_code == 400
    assert app_env.partner_center.requests == []


@given(body=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_body_gets_a_4xx_or_an_upgrade_never_a_500(app_env, body):
    response = app_env.create(body)
    assert response.status_code in (202, 400), response.get_body()
    if response.status_code == 400:
        problem_of(response)


def test_logic_apps_poller_follows_location_until_completed(app_env):
    """What a Logic App's HTTP action does by default: POST, then GET Location while 202, after Retry-After."""
    app_env.partner_center.complete_after_polls(2)
    response = app_env.create({"customerId": CUSTOMER_ID}, params={"code": "key-1"})

    def get(url):
        location = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(location.query).items()}
        assert query["code"] == "key-1"
        return app_env.status(location.path.rsplit("/", 1)[1], query)

    response, polls, waited = follow_async_pattern(response, get)
    upgrade_id = json.loads(response.get_body())["upgradeId"]
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert body["status"] == "Completed" and body["upgradeId"] == upgrade_id
    assert polls == 3 and waited >= 2  # the create's 202 has no Retry-After; two running polls asked for 1 s each


# -- Location, product family, upgrade ids, status documents, redirects, error bodies ----------------------


def _reinstall_runtime():
    from shared.settings import Settings
    from shared.upgrades import runtime
    from tests.harness import FAST_POLICY

    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))


def test_location_is_the_website_hostname_not_a_forged_host_header(monkeypatch, app_env):
    monkeypatch.setenv("WEBSITE_HOSTNAME", "upgrades-prod.azurewebsites.net")
    app_env.base_url = "http://attacker.example:8080"
    response = app_env.create({"customerId": CUSTOMER_ID}, params={"code": "K"}, headers={"Host": "evil.example"})
    assert response.status_code == 202
    upgrade_id = json.loads(response.get_body())["upgradeId"]
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc) == ("https", "upgrades-prod.azurewebsites.net")
    assert location.path == f"/api/productupgrades/{upgrade_id}"
    assert parse_qs(location.query) == {"customerId": [CUSTOMER_ID], "code": ["K"]}
    # the status route's own Location follows the same rule
    running = app_env.status(upgrade_id, {"customerId": CUSTOMER_ID, "code": "K"})
    assert running.status_code == 202
    assert running.headers["Location"] == response.headers["Location"]
    assert "attacker.example" not in running.headers["Location"]


def test_location_uses_the_public_url_before_the_website_hostname(monkeypatch, app_env):
    monkeypatch.setenv("WEBSITE_HOSTNAME", "upgrades-prod.azurewebsites.net")
    monkeypatch.setenv("PRODUCT_UPGRADE_PUBLIC_URL", "https://apim.contoso.com/upgrades/")
    _reinstall_runtime()
    app_env.base_url = "http://attacker.example:8080"
    response = app_env.create({"customerId": CUSTOMER_ID}, headers={"x-functions-key": "K"})
    upgrade_id = json.loads(response.get_body())["upgradeId"]
    assert response.headers["Location"] == (
        f"https://apim.contoso.com/upgrades/productupgrades/{upgrade_id}?customerId={CUSTOMER_ID}"
    )


@pytest.mark.parametrize("website_hostname", [None, "localhost:7071"])
def test_location_in_local_runs_uses_the_requests_own_host(monkeypatch, app_env, website_hostname):
    if website_hostname is None:
        monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_HOSTNAME", website_hostname)  # what Core Tools sets
    app_env.base_url = "http://localhost:7071"
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.headers["Location"].startswith("http://localhost:7071/api/productupgrades/")


def test_route_prefix_is_the_one_host_json_sets():
    from pathlib import Path

    from shared.functions.http_api import ROUTE_PREFIX

    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ROUTE_PREFIX


@pytest.mark.parametrize("family", ["azure", "AZURE", " Azure "])
def test_product_family_is_sent_in_partner_centers_spelling(app_env, family):
    response = app_env.create({"customerId": CUSTOMER_ID, "productFamily": family}, params={"code": "K"})
    assert response.status_code == 202
    assert json.loads(response.get_body())["productFamily"] == "Azure"
    assert "productFamily" not in response.headers["Location"]
    [post] = app_env.partner_center.requests_to("/v1/productupgrades", "POST")
    assert post.json() == {"customerId": CUSTOMER_ID, "productFamily": "Azure"}


def test_same_idempotency_key_with_another_product_family_spelling_is_the_same_upgrade(stored_app):
    first = stored_app.create({"customerId": CUSTOMER_ID, "productFamily": "azure"}, headers={"Idempotency-Key": "k"})
    second = stored_app.create({"customerId": CUSTOMER_ID, "productFamily": "Azure"}, headers={"Idempotency-Key": "k"})
    assert first.status_code == second.status_code == 202
    assert json.loads(first.get_body())["upgradeId"] == json.loads(second.get_body())["upgradeId"]
    assert len(stored_app.partner_center.created_upgrades) == 1


@pytest.mark.parametrize("family", ["Ａzure", "Azüre", "Azure\u200b"])
def test_non_ascii_product_family_is_400(app_env, family):
    response = app_env.create({"customerId": CUSTOMER_ID, "productFamily": family})
    assert response.status_code == 400
    assert "ASCII" in problem_of(response)["detail"]
    assert app_env.partner_center.requests == []


@pytest.mark.parametrize(
    "upgrade_id", ["upgrade-1", "42d075a4-bfe7-43e7-af6d", "42d075a4bfe743e7af6d7c68a57edcb4x", "..%2F..", "%00"]
)
def test_status_accepts_only_guid_upgrade_ids(app_env, upgrade_id):
    response = app_env.status(upgrade_id, {"customerId": CUSTOMER_ID})
    assert response.status_code == 400
    assert "upgradeId must be a GUID" in problem_of(response)["detail"]
    assert app_env.partner_center.requests == [] and app_env.entra.requests == []


def test_status_accepts_partner_centers_guid_upgrade_ids_in_upper_case(app_env):
    created = json.loads(app_env.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    assert str(uuid.UUID(created)) == created  # the fake issues GUIDs, as Partner Center does
    assert app_env.status(created.upper(), {"customerId": CUSTOMER_ID}).status_code == 202


def test_status_document_without_a_status_is_502(app_env):
    created = json.loads(app_env.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    app_env.partner_center.fail_next(1, 200, {"id": created, "productFamily": "Azure", "lineItems": []}, match="status")
    response = app_env.status(created, {"customerId": CUSTOMER_ID})
    assert response.status_code == 502
    assert "has no status" in problem_of(response)["detail"]


def test_status_passes_error_message_and_description_cut_to_1024_characters(app_env):
    created = json.loads(app_env.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    app_env.partner_center.set_upgrade_status(
        created,
        "Failed",
        error_details={"code": "900114", "message": "m" * 1100},
        line_item_error_details={"code": "900114", "description": "per line item"},
    )
    body = json.loads(app_env.status(created, {"customerId": CUSTOMER_ID}).get_body())
    assert body["errorDetails"] == {"code": "900114", "description": "m" * 1024, "message": "m" * 1024}
    assert body["lineItems"][0]["errorDetails"] == {"code": "900114", "description": "per line item"}


@pytest.mark.parametrize("status", [302, 307, 308])
def test_partner_center_redirect_is_not_followed_and_the_token_stays_home(app_env, status):
    from sandbox import FakeHTTPServer

    with FakeHTTPServer(use_tls=False) as elsewhere:
        redirect = {"Location": f"{elsewhere.url}/v1/productupgrades"}
        app_env.partner_center.fail_next(1, status, b"", redirect, match="/v1/productupgrades")
        response = app_env.create({"customerId": CUSTOMER_ID})
        assert response.status_code == 502
        assert "redirect, which is not followed" in problem_of(response)["detail"]
        assert elsewhere.requests == []  # the bearer token stayed home
    assert app_env.partner_center.created_upgrades == []


def test_a_token_endpoint_redirect_is_a_502_token_error_for_the_caller(app_env):
    from sandbox import FakeHTTPServer

    with FakeHTTPServer(use_tls=False) as elsewhere:
        app_env.entra.fail_next(1, 307, b"", {"Location": f"{elsewhere.url}/t"}, match="/oauth2/v2.0/token")
        response = app_env.create({"customerId": CUSTOMER_ID})
        assert response.status_code == 502
        assert problem_of(response)["type"].endswith("token_error")
        assert elsewhere.requests == []
    assert app_env.partner_center.requests == []


HTML_PAGE = "<html><body><h1>502 Bad Gateway</h1>pc-int-07.corp.local 10.20.30.40 refresh_token=abcdefgh</body></html>"


def test_a_non_json_error_body_never_reaches_the_caller(app_env, caplog):
    headers = {"Content-Type": "text/html"}
    app_env.partner_center.fail_next(1, 400, HTML_PAGE, headers, match="/v1/productupgrades")
    response = app_env.create({"customerId": CUSTOMER_ID})
    assert response.status_code == 400
    assert "10.20.30.40" not in response.get_body().decode() and "<html>" not in response.get_body().decode()
    app_env.partner_center.fail_next(1, 400, HTML_PAGE, headers, match="/v1/productupgrades")
    result = app_env.queue({"customerId": CUSTOMER_ID})
    assert json.loads(result)["status"] == "rejected" and "10.20.30.40" not in result
    # the operator still sees it, at debug, redacted
    [*_, logged] = [r.getMessage() for r in caplog.records if "not its JSON error" in r.getMessage()]
    assert "10.20.30.40" in logged and "abcdefgh" not in logged


def test_partner_centers_error_description_is_passed_up_to_1024_characters(app_env):
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 400, 900118, "d" * 1500)
    detail = problem_of(app_env.create({"customerId": CUSTOMER_ID}))["detail"]
    assert "d" * 1024 in detail and "d" * 1025 not in detail


@pytest.mark.parametrize("top", ["²", "١٠", "１０", "+5", " 5x"])
def test_listing_top_takes_ascii_digits_only(app_env, top):
    # "²" passes str.isdigit() but not int(); Arabic-Indic and full-width digits pass both: all are 400.
    response = app_env.http("list_product_upgrades", "GET", "/api/productupgrades", params={"top": top})
    assert response.status_code == 400
    assert "top" in problem_of(response)["detail"]


@pytest.mark.parametrize("environment", [None, "Production"])
def test_location_from_the_requests_own_host_never_carries_the_key_outside_local_runs(
    monkeypatch, app_env, environment
):
    # Container hosting: neither PRODUCT_UPGRADE_PUBLIC_URL nor WEBSITE_HOSTNAME, and not Core Tools.
    monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    if environment is None:
        monkeypatch.delenv("AZURE_FUNCTIONS_ENVIRONMENT", raising=False)
    else:
        monkeypatch.setenv("AZURE_FUNCTIONS_ENVIRONMENT", environment)
    app_env.base_url = "https://forged.example"  # a Host (or proxy header) the app did not choose

    response = app_env.create({"customerId": CUSTOMER_ID}, params={"code": "K"})

    assert response.status_code == 202
    location = urlsplit(response.headers["Location"])
    assert parse_qs(location.query) == {"customerId": [CUSTOMER_ID]}, "the key went to a host the app did not choose"


@pytest.mark.parametrize("website_hostname", [None, "localhost:7071"])
def test_local_runs_keep_the_key_in_location_so_a_poller_can_follow_it(monkeypatch, app_env, website_hostname):
    monkeypatch.setenv("AZURE_FUNCTIONS_ENVIRONMENT", "Development")  # what Core Tools sets
    if website_hostname is None:
        monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_HOSTNAME", website_hostname)
    app_env.base_url = "http://localhost:7071"

    response = app_env.create({"customerId": CUSTOMER_ID}, params={"code": "K"})

    assert parse_qs(urlsplit(response.headers["Location"]).query)["code"] == ["K"]


def test_start_up_says_when_location_can_only_come_from_the_request(monkeypatch, caplog):
    from shared.functions import http_api

    monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    monkeypatch.delenv("PRODUCT_UPGRADE_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AZURE_FUNCTIONS_ENVIRONMENT", raising=False)
    http_api.check_location_base()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "shared.functions.http_api"]
    assert "PRODUCT_UPGRADE_PUBLIC_URL" in warning and "code" in warning

    caplog.clear()
    monkeypatch.setenv("PRODUCT_UPGRADE_PUBLIC_URL", "https://apim.contoso.com/upgrades")
    http_api.check_location_base()
    monkeypatch.setenv("PRODUCT_UPGRADE_PUBLIC_URL", "not a url")  # malformed: said at the first call, not here
    http_api.check_location_base()
    assert [r for r in caplog.records if r.name == "shared.functions.http_api"] == []


# -- fidelity to Partner Center ---------------------------------------------------------------------------------
def test_status_route_answers_202_for_a_state_it_does_not_know(app_env):
    upgrade_id = json.loads(app_env.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    app_env.partner_center.set_upgrade_status(upgrade_id, "Validating")
    response = app_env.status(upgrade_id, {"customerId": CUSTOMER_ID})
    assert response.status_code == 202 and response.headers["Retry-After"] == "1"
    assert json.loads(response.get_body())["status"] == "Validating"
    for ended in ("Succeeded", "canceled", "CANCELLED"):
        app_env.partner_center.set_upgrade_status(upgrade_id, ended)
        assert app_env.status(upgrade_id, {"customerId": CUSTOMER_ID}).status_code == 200


def test_problem_details_carry_partner_centers_error_data_and_source(app_env):
    data = [{"subscriptionId": "6c4e4e54-0a6c-4a53-9c51-6b8f2a2b7f10", "status": "suspended"}]
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 403, 900105, "A subscription is suspended.", data=data)
    problem = problem_of(app_env.create({"customerId": CUSTOMER_ID}))
    assert problem["partnerCenterErrorCode"] == "900105"
    assert problem["partnerCenterErrorData"] == data and problem["partnerCenterErrorSource"] == "PartnerCenter"
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 409, 900101, "Conflict.")  # data: [] is left out
    assert "partnerCenterErrorData" not in problem_of(app_env.create({"customerId": CUSTOMER_ID}))


def test_every_partner_center_call_sends_the_contract_version_and_the_callers_correlation_id(app_env):
    correlation = str(uuid.uuid4())
    headers = {"MS-CorrelationId": correlation}
    upgrade_id = json.loads(app_env.create({"customerId": CUSTOMER_ID}, headers=headers).get_body())["upgradeId"]
    app_env.eligibility({"customerId": CUSTOMER_ID}, headers=headers)
    app_env.status(upgrade_id, {"customerId": CUSTOMER_ID}, headers=headers)
    calls = [r for r in app_env.partner_center.requests if r.path.lower().startswith("/v1/productupgrades")]
    assert len(calls) == 3
    assert {(r.header("MS-Contract-Version"), r.header("MS-CorrelationId")) for r in calls} == {("v1", correlation)}
