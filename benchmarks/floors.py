"""The floors our code is measured against: the same wire work done directly, with nothing of ours around it."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import requests


class Floor:
    """A bare ``requests.Session().post`` of a create, and the same storage calls the app makes per create,
    made directly with the Azure SDK clients on the same connection string."""

    def __init__(self, base_url: str, token: str, storage: str | None) -> None:
        self.session = requests.Session()
        self.url = base_url.rstrip("/") + "/v1/productupgrades"
        self.token = token
        self.table: Any = None
        if storage:
            from azure.core.exceptions import ResourceExistsError
            from azure.data.tables import TableServiceClient

            service = TableServiceClient.from_connection_string(storage)
            name = os.environ.get("PRODUCT_UPGRADE_TABLE", "productupgrades")
            with contextlib.suppress(ResourceExistsError):
                service.create_table(name)
            self.table = service.get_table_client(name)

    def post(self, customer_id: str, request_id: str | None = None) -> str:
        response = self.session.post(
            self.url,
            data=json.dumps({"customerId": customer_id, "productFamily": "Azure"}).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "MS-RequestId": request_id or str(uuid.uuid4()),
                "MS-CorrelationId": str(uuid.uuid4()),
            },
            timeout=(5, 20),
        )
        if response.status_code != 202:
            raise RuntimeError(f"bare POST answered {response.status_code}")
        return response.headers["Location"].rsplit("/", 1)[-1]

    def with_storage(self, customer_id: str, *, keyed: bool) -> None:
        """The idempotency table's calls per create: a read that finds nothing, the POST, an upsert."""
        from azure.core.exceptions import ResourceNotFoundError

        request_id = str(uuid.uuid4())
        with contextlib.suppress(ResourceNotFoundError):
            self.table.get_entity(partition_key=request_id, row_key="create")
        upgrade_id = self.post(customer_id, request_id)
        self.table.upsert_entity(
            {
                "PartitionKey": request_id,
                "RowKey": "create",
                "UpgradeId": upgrade_id,
                "CustomerId": customer_id,
                "ProductFamily": "Azure",
                "CorrelationId": str(uuid.uuid4()),
                "AcceptedAt": datetime.now(UTC),
            }
        )
