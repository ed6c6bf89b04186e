import logging

import pytest

from shared.errors import UpstreamUnavailableError, ValidationError
from shared.models import (
    ErrorDetails,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
    parse_guid,
)

CUSTOMER = "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a"


def test_request_defaults_to_azure_and_canonicalises_the_guid():
    request = ProductUpgradeRequest.from_json({"customerId": "{" + CUSTOMER.upper() + "}"})
    assert request == ProductUpgradeRequest(CUSTOMER, "Azure")
    assert request.to_json() == {"customerId": CUSTOMER, "productFamily": "Azure"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be a JSON object"),
        ("x", "the body must be a JSON object"),
        ({}, "customerId is required and must be a GUID string"),
        ({"customerId": 12}, "customerId is required and must be a GUID string"),
        ({"customerId": "not-a-guid"}, "customerId must be a GUID"),
        ({"customerId": CUSTOMER, "productFamily": 3}, "productFamily must be a non-empty string"),
        ({"customerId": CUSTOMER, "productFamily": ""}, "productFamily must be a non-empty string"),
        ({"customerId": CUSTOMER, "productFamily": "Az ure/../"}, "productFamily must be a short name"),
    ],
)
def test_bad_requests_say_what_is_wrong(body, message):
    with pytest.raises(ValidationError) as info:
        ProductUpgradeRequest.from_json(body)
    assert str(info.value).startswith(message)


def test_parse_guid_names_the_field():
    with pytest.raises(ValidationError, match="tenant must be a GUID"):
        parse_guid("abc", "tenant")


def test_eligibility_from_partner_center_document():
    request = ProductUpgradeRequest(CUSTOMER)
    doc = {"customerId": CUSTOMER, "productFamily": "Azure", "isEligible": False, "upgradeId": "u1", "reason": "busy"}
    eligibility = ProductUpgradesEligibility.from_json(doc, request)
    assert eligibility.to_json() == doc
    empty = ProductUpgradesEligibility.from_json({}, request)
    assert empty.to_json() == {
        "customerId": CUSTOMER,
        "productFamily": "Azure",
        "isEligible": False,
        "upgradeId": None,
        "reason": None,
    }


def test_status_document_round_trip_and_running_states():
    doc = {
        "id": "u1",
        "productFamily": "Azure",
        "status": "Completed",
        "lineItems": [
            {
                "sourceProduct": {"id": "MS-AZR-0145P", "name": "Azure"},
                "targetProduct": {"id": "DZH318Z0BCZC", "name": "Azure plan"},
                "upgradedDate": "2026-11-01T10:00:00Z",
                "status": "Completed",
                "errorDetails": None,
            }
        ],
        "errorDetails": {"code": 900120, "description": "x"},
    }
    status = ProductUpgradesStatus.from_json(doc, "u1")
    assert not status.is_running
    assert status.to_json() == {**doc, "errorDetails": {"code": "900120", "description": "x"}}
    for running in ("InProgress", "inprogress", "NotStarted", "Pending", "QUEUED", "Running"):
        assert ProductUpgradesStatus.from_json({"status": running}, "u1").is_running
    for ended in ("Completed", "Failed", "Cancelled"):
        assert not ProductUpgradesStatus.from_json({"status": ended}, "u1").is_running
    assert ProductUpgradesStatus.from_json({"status": "Failed", "lineItems": "junk"}, "u9").to_json()["id"] == "u9"


# -- error details, status documents and the product family's spelling -------------------------------------


def test_error_details_keep_message_or_description():
    docs = ErrorDetails.from_json({"code": 900120, "message": "from the REST docs"})
    assert docs.to_json() == {"code": "900120", "description": "from the REST docs", "message": "from the REST docs"}
    sdk = ErrorDetails.from_json({"code": "900120", "description": "from the SDKs"})
    assert sdk.to_json() == {"code": "900120", "description": "from the SDKs"}
    both = ErrorDetails.from_json({"code": "1", "description": "d", "message": "m"})
    assert (both.description, both.message) == ("d", "m")
    long = ErrorDetails.from_json({"code": "1", "message": "x" * 1500})
    assert len(long.description) == len(long.message) == 1024


def test_line_items_keep_message_too():
    doc = {
        "status": "Failed",
        "lineItems": [{"status": "Failed", "errorDetails": {"code": "7", "message": "m" * 1024}}],
    }
    [item] = ProductUpgradesStatus.from_json(doc, "u1").to_json()["lineItems"]
    assert item["errorDetails"] == {"code": "7", "description": "m" * 1024, "message": "m" * 1024}


@pytest.mark.parametrize("doc", [{}, {"status": None}, {"status": ""}, {"status": "  "}, {"status": 3}, {"id": "u1"}])
def test_status_document_without_status_is_malformed(doc):
    with pytest.raises(UpstreamUnavailableError, match="has no status") as info:
        ProductUpgradesStatus.from_json(doc, "u1")
    assert info.value.http_status == 502


@pytest.mark.parametrize(
    ("given", "sent"), [("azure", "Azure"), ("AZURE", "Azure"), ("aZuRe", "Azure"), ("Other", "Other")]
)
def test_product_family_is_normalised(given, sent):
    request = ProductUpgradeRequest.from_json({"customerId": CUSTOMER, "productFamily": given})
    assert request.product_family == sent


@pytest.mark.parametrize("family", ["Ａzure", "Azüre", "Azure\u0130", "Az\u200bure", "-Azure", "A" * 65])
def test_product_family_is_ascii_only(family):
    with pytest.raises(ValidationError, match="ASCII"):
        ProductUpgradeRequest.from_json({"customerId": CUSTOMER, "productFamily": family})


# -- which states end an upgrade, and partial upgrades ------------------------------------------------------


@pytest.mark.parametrize("ended", ["Completed", "completed", "SUCCEEDED", "Failed", "Cancelled", "canceled"])
def test_only_known_final_statuses_end_an_upgrade(ended):
    assert not ProductUpgradesStatus.from_json({"status": ended}, "u1").is_running


@pytest.mark.parametrize("unknown", ["Validating", "Suspended", "PartiallyCompleted", "Done", "Error"])
def test_a_status_this_app_does_not_know_is_followed_as_running(unknown):
    assert ProductUpgradesStatus.from_json({"status": unknown}, "u1").is_running


def test_an_unknown_status_is_warned_about_once_per_value(caplog):
    caplog.set_level(logging.WARNING, logger="shared.models")
    for _ in range(3):
        ProductUpgradesStatus.from_json({"status": "Reconciling"}, "u1")
        ProductUpgradesStatus.from_json({"status": "InProgress"}, "u1")
    ProductUpgradesStatus.from_json({"status": "Migrating"}, "u1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "shared.models"]
    assert len(warnings) == 2
    assert "'Reconciling'" in warnings[0] and "following it as running" in warnings[0]
    assert "'Migrating'" in warnings[1]


def _completed_with(*lines):
    return ProductUpgradesStatus.from_json({"status": "Completed", "lineItems": list(lines)}, "u1")


def test_completed_with_a_failed_or_erroring_line_item_is_partial():
    moved = {"status": "Completed", "sourceProduct": {"id": "s1", "name": "AzureSubscription"}}
    failed = {"status": "Failed", "errorDetails": {"code": "900114", "description": "not moved"}}
    completed_with_error = {"status": "Completed", "errorDetails": {"code": "1", "message": "half done"}}
    cancelled = {"status": "Cancelled"}
    assert _completed_with(moved, failed).is_partial
    assert _completed_with(moved, completed_with_error).is_partial
    assert _completed_with(cancelled).is_partial
    assert not _completed_with(moved, dict(moved)).is_partial
    assert not _completed_with().is_partial
    # no error at all: null or empty error details, a line item with no status
    assert not _completed_with({"status": "Succeeded", "errorDetails": None}, {"errorDetails": {}}).is_partial
    assert not _completed_with({"status": "Completed", "errorDetails": {"code": None}}).is_partial
    # a failed upgrade is failed, not partial
    assert not ProductUpgradesStatus.from_json({"status": "Failed", "lineItems": [failed]}, "u1").is_partial
