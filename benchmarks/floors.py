"""The floors our code is measured against: the same wire work done directly, with nothing of ours around it.

The storage calls are the ledger's and the scheduler's per operation (see docs/tracking.md, "Storage round trips per
create"), made with the Azure SDK clients as anyone would: default clients on the same connection string.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import requests


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Floor:
    """A bare ``requests.Session().post`` to Partner Center, and with storage on, the same storage calls."""

    def __init__(self, base_url: str, token: str, storage: str | None) -> None:
        self.session = requests.Session()
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.table: Any = None
        self.tracking: Any = None
        if storage:
            from azure.core.exceptions import ResourceExistsError
            from azure.data.tables import TableServiceClient
            from azure.storage.queue import QueueClient

            service = TableServiceClient.from_connection_string(storage)
            name = os.environ.get("PRODUCT_UPGRADE_TABLE", "productupgrades")
            with contextlib.suppress(ResourceExistsError):
                service.create_table(name)
            self.table = service.get_table_client(name)
            queue = os.environ.get("PRODUCT_UPGRADE_TRACKING_QUEUE", "product-upgrade-tracking") + "-floor"
            self.tracking = QueueClient.from_connection_string(storage, queue)
            with contextlib.suppress(ResourceExistsError):
                self.tracking.create_queue()

    def _post(self, path: str, customer_id: str, request_id: str) -> requests.Response:
        response = self.session.post(
            self.base_url + path,
            data=json.dumps({"customerId": customer_id, "productFamily": "Azure"}).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "MS-RequestId": request_id,
                "MS-CorrelationId": str(uuid.uuid4()),
            },
            timeout=(5, 20),
        )
        if response.status_code >= 300:
            raise RuntimeError(f"bare POST {path} answered {response.status_code}")
        return response

    def post(self, customer_id: str, request_id: str | None = None) -> str:
        """The create: ``POST /v1/productupgrades``; the upgrade id from ``Location``."""
        response = self._post("/v1/productupgrades", customer_id, request_id or str(uuid.uuid4()))
        return response.headers["Location"].rsplit("/", 1)[-1]

    def with_storage(self, customer_id: str, *, keyed: bool) -> tuple[str, str]:
        """A create with the ledger's calls: with a key an insert-only reservation first; then the POST, one
        entity-group transaction (request and upgrade records) and one tracking message. ``(ledger key,
        upgrade id)``."""
        request_id = str(uuid.uuid4())
        request = {
            "PartitionKey": request_id,
            "RowKey": "request",
            "Status": "reserved",
            "CustomerId": customer_id,
            "ProductFamily": "Azure",
            "CorrelationId": str(uuid.uuid4()),
            "UpdatedAt": _now(),
        }
        if keyed:
            self.table.create_entity(request)
        upgrade_id = self.post(customer_id, request_id)
        accepted = {**request, "Status": "accepted", "UpgradeId": upgrade_id, "UpdatedAt": _now()}
        upgrade = {
            "PartitionKey": request_id,
            "RowKey": "upgrade",
            "UpgradeId": upgrade_id,
            "CustomerId": customer_id,
            "ProductFamily": "Azure",
            "State": "running",
            "CorrelationId": request["CorrelationId"],
            "AcceptedAt": _now(),
            "UpdatedAt": _now(),
            "Checks": 0,
        }
        self.table.submit_transaction([("upsert", accepted, {"mode": "replace"}), ("create", upgrade)])
        self.tracking.send_message(
            json.dumps({"upgradeId": upgrade_id, "customerId": customer_id, "ledgerKey": request_id, "check": 1}),
            visibility_timeout=300,
        )
        return request_id, upgrade_id

    def tracking_check(self, ledger_key: str, customer_id: str) -> None:
        """A status check of a running upgrade: read its record, ``POST .../status``, schedule the next
        check, replace the record if its ETag still matches."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        record = self.table.get_entity(ledger_key, "upgrade")
        status = self._post(f"/v1/productUpgrades/{record['UpgradeId']}/status", customer_id, str(uuid.uuid4()))
        body = status.json()
        self.tracking.send_message(
            json.dumps({"upgradeId": record["UpgradeId"], "ledgerKey": ledger_key, "check": record["Checks"] + 2}),
            visibility_timeout=300,
        )
        updated = {**record, "Checks": record["Checks"] + 1, "PartnerCenterStatus": body["status"], "UpdatedAt": _now()}
        self.table.update_entity(
            updated,
            mode=UpdateMode.REPLACE,
            etag=record.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )
