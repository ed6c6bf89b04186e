"""The sandbox's customer list: a seeded population that knows its own truth, paged on the wire as Partner Center
pages it, with each customer's subscriptions."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox import customers
from sandbox.cli import Sandbox, customers_table, running_sandbox
from sandbox.directory import AZURE_PLAN_OFFER_ID, CONTINUATION_HEADER, MAX_PAGE_SIZE
from sandbox.population import (
    FAIL_ONCE_SHARE,
    FORMULA_NAMES,
    SHARES,
    SUSPENDED_REASON,
    UNREADABLE_SHARE,
    Population,
)
from sandbox.tls import CA_ENV_VARS
from tests.sandbox.test_sandbox import Caller

ROOT = Path(__file__).resolve().parents[2]


def test_population_holds_the_stated_shares_and_the_scripted_customers_first() -> None:
    population = Population.build(1000)
    scripted = [c.customer_id for c in customers.SCRIPTED_CUSTOMERS]
    assert [c.customer_id for c in population.customers[: len(scripted)]] == scripted
    built = population.customers[len(scripted) :]
    size = 1000 - len(scripted)
    kinds = Counter(c.kind for c in built)
    for kind, share in SHARES[:-1]:
        assert kinds[kind] == round(size * share), kind
    assert sum(kinds.values()) == size
    faults = Counter(c.fault for c in built)
    assert faults["fail_once_503"] + faults["fail_once_429"] == round(size * FAIL_ONCE_SHARE)
    assert faults["unreadable"] == round(size * UNREADABLE_SHARE)
    assert len({c.customer_id for c in population.customers}) == 1000


def test_population_knows_who_discovery_keeps() -> None:
    population = Population.build(1000)
    by_id = population.by_id()
    for customer in population.customers:
        legacy = [s for s in customer.subscriptions if s["offerId"].upper() == "MS-AZR-0145P"]
        active = [s for s in legacy if s["status"].lower() == "active"]
        if customer.fault == "unreadable":
            assert customer.verdict == "unreadable"
        elif active:
            assert customer.verdict == "kept" and customer.legacy_active == len(active)
        elif legacy and all(s["status"].lower() == "suspended" for s in legacy):
            assert customer.verdict == "suspendedOnly"
        else:
            assert customer.verdict == "notLegacy"
    assert by_id[customers.ELIGIBLE].verdict == "kept"
    assert by_id[customers.NOT_ELIGIBLE].verdict == "notLegacy"
    assert by_id[customers.ALREADY_UPGRADED].verdict == "suspendedOnly"
    assert population.needs_action <= population.kept
    assert population.eligible == population.kept - population.needs_action - {customers.TRY_LATER, customers.THROTTLED}
    assert {c.company_name for c in population.customers if c.verdict == "kept"} >= set(FORMULA_NAMES)


def test_the_same_seed_builds_the_same_customers() -> None:
    assert Population.build(50, seed=3) == Population.build(50, seed=3)
    assert Population.build(50, seed=3).customers[7:] != Population.build(50, seed=4).customers[7:]
    assert len(Population.build(3).customers) == 3 and len(Population.build(40, scripted=False).customers) == 40


# -- on the wire -----------------------------------------------------------------------------------------------


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path, entra_port=0, partner_center_port=0, customers=1203) as running:
        for name in CA_ENV_VARS:
            monkeypatch.setenv(name, running.ca_bundle)
        yield running
    assert running.partner_center.errors == []


def get(caller: Caller, target: str, **headers: str) -> requests.Response:
    return requests.get(f"{caller.base}{target}", headers={**caller.headers, **headers}, timeout=10)


def test_customer_list_pages_to_the_last_page_with_the_continuation_header(listed: Sandbox) -> None:
    caller = Caller(listed)
    seen: list[str] = []
    response = get(caller, "/v1/customers?size=1000")  # cut to 500 a page
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["totalCount"] == len(body["items"]) <= MAX_PAGE_SIZE
        seen += [item["id"] for item in body["items"]]
        link = body["links"].get("next")
        if link is None:
            break
        assert link["uri"] == "/v1/customers?size=500&seekOperation=Next" and link["method"] == "GET"
        [header] = link["headers"]
        assert header["key"] == CONTINUATION_HEADER
        response = get(caller, link["uri"], **{header["key"]: header["value"]})
    assert seen == [c.customer_id for c in listed.population.customers]
    item = body["items"][0]
    assert set(item) == {"id", "companyProfile", "relationshipToPartner", "attributes"}
    assert set(item["companyProfile"]) == {"tenantId", "domain", "companyName", "attributes"}


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/v1/customers", {}),  # size is required
        ("/v1/customers?size=0", {}),
        ("/v1/customers?size=ten", {}),
        ("/v1/customers?size=10&seekOperation=Next", {}),  # no continuation
        ("/v1/customers?size=10&seekOperation=Next", {CONTINUATION_HEADER: "made-up"}),
        ("/v1/customers?size=10&seekOperation=Previous", {CONTINUATION_HEADER: "made-up"}),
    ],
)
def test_a_bad_page_request_is_a_400_with_partner_centers_error(listed: Sandbox, target: str, headers: dict) -> None:
    response = get(Caller(listed), target, **headers)
    assert response.status_code == 400 and response.json()["code"] == "400056"


def test_customer_reads_need_a_token_and_a_get(listed: Sandbox) -> None:
    caller = Caller(listed)
    assert requests.get(f"{caller.base}/v1/customers?size=5", timeout=10).status_code == 401
    assert requests.post(f"{caller.base}/v1/customers?size=5", headers=caller.headers, timeout=10).status_code == 405


def test_subscriptions_agree_with_the_population_and_fail_as_scripted(listed: Sandbox) -> None:
    caller = Caller(listed)
    population = listed.population
    for customer in population.customers[:40]:
        response = get(caller, f"/v1/customers/{customer.customer_id}/subscriptions")
        if customer.fault == "unreadable":
            assert response.status_code == 403 and response.json()["code"] == "20002"
            continue
        if customer.fault is not None:  # fails once, then answers
            assert response.status_code in (429, 503)
            response = get(caller, f"/v1/customers/{customer.customer_id}/subscriptions")
        assert response.status_code == 200
        items = response.json()["items"]
        assert [(s["id"], s["offerId"], s["status"]) for s in items] == [
            (s["id"], s["offerId"], s["status"]) for s in customer.subscriptions
        ]
    unknown = get(caller, f"/v1/customers/{uuid.uuid4()}/subscriptions")
    assert unknown.status_code == 403 and unknown.json()["code"] == "20002"
    plan_only = population.by_id()[customers.NOT_ELIGIBLE]
    assert {s["offerId"] for s in plan_only.subscriptions} <= {AZURE_PLAN_OFFER_ID, "CFQ7TTC0LH18:0001:CFQ7TTC0LH18"}


def test_a_fail_once_customer_is_throttled_with_retry_after_or_unavailable(listed: Sandbox) -> None:
    caller = Caller(listed)
    answers = {}
    for customer in listed.population.customers:
        if customer.fault in ("fail_once_429", "fail_once_503"):
            answers[customer.fault] = get(caller, f"/v1/customers/{customer.customer_id}/subscriptions")
    assert answers["fail_once_429"].status_code == 429 and answers["fail_once_429"].headers["Retry-After"] == "1"
    assert answers["fail_once_429"].json()["statusCode"] == 429
    assert answers["fail_once_503"].status_code == 503 and answers["fail_once_503"].json()["code"] == "503"


def test_upgrade_answers_agree_with_the_subscriptions(listed: Sandbox) -> None:
    caller = Caller(listed)
    by_kind = {c.kind: c.customer_id for c in listed.population.customers[7:]}
    assert caller.eligibility(by_kind["legacy"]).json()["isEligible"] is True
    for kind in ("azure_plan", "no_azure", "deleted_legacy"):
        assert caller.create(by_kind[kind]).json()["code"] == 900108
    assert caller.create(by_kind["suspended_only"]).json()["code"] == 900110
    refused = caller.create(by_kind["legacy_suspended"])
    assert refused.status_code == 403 and refused.json()["code"] == 900105
    assert caller.eligibility(by_kind["legacy_suspended"]).json()["reason"] == SUSPENDED_REASON
    # The scripted customers keep their own behaviour on top.
    assert caller.eligibility(customers.TRY_LATER).json()["code"] == 900130


def test_fake_counts_requests_per_path(listed: Sandbox) -> None:
    caller = Caller(listed)
    customer_id = listed.population.customers[0].customer_id
    for _ in range(2):
        get(caller, f"/v1/customers/{customer_id.upper()}/subscriptions/")
    assert listed.partner_center.requests_per_path[f"/v1/customers/{customer_id}/subscriptions"] == 2


def test_sandbox_prints_its_population_and_takes_a_customer_count(tmp_path: Path) -> None:
    assert "Customer list: 1203 customers (seed 2027)" in customers_table(Population.build(1203))
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "--customers", "-1", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "must be 0 or more" in proc.stderr
