"""Accepted upgrades recorded by request id in an Azure Table, so a replay never POSTs a second time.

A crash between Partner Center's 202 and the result write leaves the message on the queue; its retry
carries the same request id, finds the record here and reports the recorded upgrade. Storage being
unreachable never blocks an upgrade: Partner Center's ``MS-RequestId`` remains the guard, and a warning
is logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient

from shared.models import ProductUpgradeCreated
from shared.retry import azure_call_limits
from shared.settings import StorageConnection

log = logging.getLogger(__name__)

#: Row key of the one record a request id has.
_ROW_KEY = "create"


# The table is a guard beside the upgrade, not on its critical path: a few seconds at most per call.
def _table_call_limits() -> dict[str, Any]:
    return azure_call_limits(total=10.0, read=5.0, connect=3.0)


#: After storage fails, leave it alone this long, so an outage does not add its timeouts to every upgrade.
PAUSE_AFTER_FAILURE_SECONDS = 60.0


class IdempotencyStore(Protocol):
    def get(self, request_id: str) -> ProductUpgradeCreated | None:
        """The upgrade already accepted for ``request_id``, or None (also when storage cannot be read)."""
        ...

    def put(self, request_id: str, created: ProductUpgradeCreated, correlation_id: str) -> None:
        """Record an accepted upgrade; failures are logged, never raised."""
        ...


class NoIdempotencyStore:
    """Used when no storage connection is configured: every request goes to Partner Center."""

    def get(self, request_id: str) -> ProductUpgradeCreated | None:
        return None

    def put(self, request_id: str, created: ProductUpgradeCreated, correlation_id: str) -> None:
        return None


class TableIdempotencyStore:
    """The table ``PRODUCT_UPGRADE_TABLE`` in the host's storage account; created on first use."""

    def __init__(
        self,
        storage: StorageConnection,
        table_name: str,
        credential: TokenCredential | None = None,
    ) -> None:
        self._storage = storage
        self._table_name = table_name
        self._credential = credential
        self._lock = threading.Lock()
        self._table: TableClient | None = None
        self._paused_until = 0.0

    def get(self, request_id: str) -> ProductUpgradeCreated | None:
        if self._paused():
            return None
        try:
            entity = self._client().get_entity(partition_key=request_id, row_key=_ROW_KEY, **_table_call_limits())
        except ResourceNotFoundError:
            return None
        except (AzureError, ValueError) as exc:
            self._pause()
            log.warning("Idempotency table could not be read (%s); relying on MS-RequestId", type(exc).__name__)
            return None
        try:
            return ProductUpgradeCreated(
                upgrade_id=str(entity["UpgradeId"]),
                customer_id=str(entity["CustomerId"]),
                product_family=str(entity["ProductFamily"]),
            )
        except KeyError:
            log.warning("Idempotency record for request %s is incomplete; ignoring it", request_id)
            return None

    def put(self, request_id: str, created: ProductUpgradeCreated, correlation_id: str) -> None:
        entity = {
            "PartitionKey": request_id,
            "RowKey": _ROW_KEY,
            "UpgradeId": created.upgrade_id,
            "CustomerId": created.customer_id,
            "ProductFamily": created.product_family,
            "CorrelationId": correlation_id,
            "AcceptedAt": datetime.now(UTC),
        }
        if self._paused():
            log.warning("Upgrade %s accepted; idempotency table paused after a failure", created.upgrade_id)
            return
        try:
            self._client().upsert_entity(entity, **_table_call_limits())
        except (AzureError, ValueError) as exc:
            self._pause()
            log.warning(
                "Upgrade %s accepted but not recorded in the idempotency table (%s)",
                created.upgrade_id,
                type(exc).__name__,
            )

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _pause(self) -> None:
        self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS

    def _client(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = self._service()
                with contextlib.suppress(ResourceExistsError):
                    service.create_table(self._table_name, **_table_call_limits())
                self._table = service.get_table_client(self._table_name)
            return self._table

    def _service(self) -> TableServiceClient:
        # Short timeouts and few retries: this is a guard beside the upgrade, not on its critical path.
        options: dict[str, Any] = {
            "connection_timeout": 5,
            "read_timeout": 10,
            "retry_total": 2,
            "retry_backoff_factor": 0.2,
        }
        if self._storage.connection_string:
            return TableServiceClient.from_connection_string(self._storage.connection_string, **options)
        # The runtime builds this store only with a connection string or a table URI and a credential.
        assert self._storage.table_service_uri and self._credential is not None
        return TableServiceClient(endpoint=self._storage.table_service_uri, credential=self._credential, **options)
