"""Records shared by every instance, and a lease on each, in the ledger's table.

One entity per name, in a partition of its own (``shared-state``), beside the ledger's request and upgrade
records (whose queries all select their own row keys). A lease is two properties, its holder and when it lapses;
taking it is a conditional write (the entity's ETag), so of two instances that try at once one gets it. The
Partner Center side uses this through its own interface (``shared.partner_center.state.SharedState``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import StorageUnavailableError
from shared.store.records import iso, parse_iso
from shared.store.storage import call_limits, ensure_exists, table_service
from shared.store.table_ledger import TABLE_DEADLINE_SECONDS

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

    from shared.settings import StorageConnection

log = logging.getLogger(__name__)

PARTITION = "shared-state"
LEASE_HOLDER = "LeaseHolder"
LEASE_UNTIL = "LeaseUntil"
_KEYS = frozenset({"PartitionKey", "RowKey", LEASE_HOLDER, LEASE_UNTIL})


@contextlib.contextmanager
def _storage(what: str) -> Iterator[None]:
    from azure.core.exceptions import AzureError

    try:
        yield
    except (AzureError, ValueError) as exc:
        raise StorageUnavailableError(f"shared state could not be {what} ({type(exc).__name__})") from None


class TableSharedState:
    """Shared records and leases in the table ``table_name`` (the ledger's), created on first use."""

    def __init__(self, storage: StorageConnection, table_name: str, credential: TokenCredential | None = None) -> None:
        self._storage = storage
        self._table_name = table_name
        self._credential = credential
        self._lock = threading.Lock()
        self._table: TableClient | None = None

    def read(self, name: str) -> dict[str, Any] | None:
        entity = self._get(name)
        return None if entity is None else {key: value for key, value in entity.items() if key not in _KEYS}

    def write(self, name: str, fields: Mapping[str, Any]) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": PARTITION, "RowKey": name, **fields}
        with _storage("written"):
            self._client().upsert_entity(entity, mode=UpdateMode.MERGE, **_limits())

    def acquire(self, name: str, holder: str, *, now: datetime, seconds: float) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.data.tables import UpdateMode

        lease = {
            "PartitionKey": PARTITION,
            "RowKey": name,
            LEASE_HOLDER: holder,
            LEASE_UNTIL: iso(now + timedelta(seconds=seconds)),
        }
        entity = self._get(name)
        with _storage("leased"):
            if entity is None:
                try:
                    self._client().create_entity(lease, **_limits())
                    return True
                except ResourceExistsError:
                    return False  # another instance created it (and holds it) in between
            until = parse_iso(entity.get(LEASE_UNTIL))
            if entity.get(LEASE_HOLDER) not in (None, "", holder) and until is not None and until > now:
                return False
            try:
                self._client().update_entity(
                    lease,
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                    **_limits(),
                )
            except ResourceModifiedError:
                return False  # another instance took it first
        return True

    def release(self, name: str, holder: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import UpdateMode

        try:
            entity = self._get(name)
            if entity is None or entity.get(LEASE_HOLDER) != holder:
                return
            freed = {"PartitionKey": PARTITION, "RowKey": name, LEASE_HOLDER: "", LEASE_UNTIL: ""}
            with _storage("released"):
                self._client().update_entity(
                    freed,
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                    **_limits(),
                )
        except (StorageUnavailableError, ResourceModifiedError) as exc:
            log.info("The lease on %s was not released (%s); it lapses by itself", name, type(exc).__name__)

    def _get(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        with _storage("read"):
            try:
                return self._client().get_entity(PARTITION, name, **_limits())
            except ResourceNotFoundError:
                return None

    def _client(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = table_service(self._storage, self._credential)
                ensure_exists(lambda: service.create_table(self._table_name, **_limits()), f"table {self._table_name}")
                self._table = service.get_table_client(self._table_name)
            return self._table


def _limits() -> dict[str, Any]:
    return call_limits(TABLE_DEADLINE_SECONDS)
