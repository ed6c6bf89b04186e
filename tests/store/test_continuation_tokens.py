"""The list route's continuation tokens: only tokens this app issued move a listing on; anything else is a 400.

Signed with ``PRODUCT_UPGRADE_CONTINUATION_KEY`` (HMAC-SHA256) when it is set; storage's own refusal of a token
it cannot read is the caller's mistake (400), never "storage unavailable, retry later" (503).
"""

import base64
import json
import uuid

import pytest

from sandbox import CUSTOMER_ID
from shared.models import ProductUpgradeCreated
from shared.settings import Settings, StorageConnection
from shared.store.continuation import encode_continuation_token
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime
from tests.harness import FAST_POLICY

KEY = "k" * 40


def _listing(app, **params):
    response = app.http("list_product_upgrades", "GET", "/api/productupgrades", params=params)
    return response.status_code, json.loads(response.get_body())


def _reinstall_runtime() -> None:
    runtime.install(None)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))


def _record_upgrades(connection_string: str, table: str, n: int) -> None:
    ledger = TableLedger(StorageConnection(connection_string=connection_string), table)
    for i in range(n):
        ledger.record_accepted(
            str(uuid.uuid4()),
            ProductUpgradeCreated(f"up-{i}", CUSTOMER_ID, "Azure"),
            caller_request_id=None,
            correlation_id="c",
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _with_partition(token: str, partition: str) -> str:
    """The same token with another partition key in its payload, the signature (if any) kept."""
    payload, dot, signature = token.partition(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document["pk"] = partition
    return _b64(json.dumps(document, separators=(",", ":")).encode()) + dot + signature


def test_signed_tokens_page_through_everything_and_a_changed_one_is_400(monkeypatch, stored_app, azurite):
    monkeypatch.setenv("PRODUCT_UPGRADE_CONTINUATION_KEY", KEY)
    _reinstall_runtime()
    table = runtime.get_runtime().settings.table_name
    _record_upgrades(azurite.connection_string, table, 5)
    seen, token = [], None
    while True:
        status, body = _listing(stored_app, top="2", **({"continuationToken": token} if token else {}))
        assert status == 200
        seen += [item["upgradeId"] for item in body["items"]]
        token = body["continuationToken"] or None
        if token is None:
            break
        issued = token
    assert sorted(seen) == sorted(f"up-{i}" for i in range(5))

    for forged in (
        _with_partition(issued, _b64(b"another partition")),  # the payload changed, the signature kept
        issued.partition(".")[0],  # the signature dropped: an unsigned token
        issued.partition(".")[0] + "." + _b64(b"\0" * 32),  # a signature of the right length, not ours
        encode_continuation_token({"PartitionKey": "p", "RowKey": "r"}),  # the unsigned format of old
    ):
        status, body = _listing(stored_app, continuationToken=forged)
        assert status == 400, forged
        assert body["type"].endswith(":invalid_request") and "continuationToken" in body["detail"]


def test_a_token_signed_with_another_key_is_400(monkeypatch, stored_app, azurite):
    monkeypatch.setenv("PRODUCT_UPGRADE_CONTINUATION_KEY", "another key of enough length, 32+")
    _reinstall_runtime()
    _record_upgrades(azurite.connection_string, runtime.get_runtime().settings.table_name, 3)
    token = _listing(stored_app, top="1")[1]["continuationToken"]
    assert token
    monkeypatch.setenv("PRODUCT_UPGRADE_CONTINUATION_KEY", KEY)
    _reinstall_runtime()
    status, _ = _listing(stored_app, continuationToken=token)
    assert status == 400


def test_storage_refusing_a_continuation_token_is_400_not_503(stored_app, azurite, storage_proxy):
    _record_upgrades(azurite.connection_string, runtime.get_runtime().settings.table_name, 3)
    token = _listing(stored_app, top="1")[1]["continuationToken"]
    # Azure Table storage answers a continuation it cannot read with 400 InvalidInput.
    storage_proxy.refuse_input("table", "GET", "NextPartitionKey=")

    status, body = _listing(stored_app, continuationToken=token)

    assert status == 400, body
    assert body["type"].endswith(":invalid_request") and "continuationToken" in body["detail"]


def test_a_token_storage_could_not_even_be_sent_is_400(stored_app):
    # A lone surrogate in the payload: valid JSON, but no request to storage can carry it.
    payload = b'{"v":"v1","pk":"\\ud800","rk":"upgrade"}'
    status, body = _listing(stored_app, continuationToken=_b64(payload))
    assert status == 400, body


@pytest.mark.parametrize("value", ["short", " " * 40])
def test_a_continuation_key_too_short_to_sign_with_is_a_malformed_setting(monkeypatch, value):
    from shared.errors import SettingError

    monkeypatch.setenv("PARTNER_CENTER_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("PRODUCT_UPGRADE_CONTINUATION_KEY", value)
    if not value.strip():
        assert Settings.from_env().continuation_key is None  # blank counts as unset
        return
    with pytest.raises(SettingError, match="PRODUCT_UPGRADE_CONTINUATION_KEY"):
        Settings.from_env()
