"""The shared pace of Partner Center calls, kept in the ledger's table (the partner_center room's
``SharedPaceState``, wired by ``shared/upgrades/runtime.py``).

One partition, ``pace``, beside the ledger's request partitions (whose keys are GUIDs, so no clash; the ledger's
queries all ask for ``RowKey eq 'upgrade'`` or ``'request'`` and never see these rows):

- RowKey ``partner``: the partner's learned pace, numbers only, changed only under its ETag;
- RowKey ``instance-{id}``: one per process calling Partner Center lately: its ``Demand`` and when it was
  ``SeenAt`` (wall-clock seconds). A process stops writing its record when it goes idle; records not seen for
  :data:`FORGET_AFTER_SECONDS` are deleted by whichever instance reads them.

An exchange is two requests (an upsert of the instance's record, a query of the partition); a change of the
partner's record one more. Short timeouts and no retries: a slow answer is worth less than the next exchange a
second later, and the limiter paces alone meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import StorageUnavailableError
from shared.store.storage import ensure_exists

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

    from shared.settings import StorageConnection

PARTITION = "pace"
PARTNER_ROW = "partner"
INSTANCE_PREFIX = "instance-"
#: Instance records not seen for this long are deleted (a few per exchange).
FORGET_AFTER_SECONDS = 600.0
MAX_DELETES_PER_EXCHANGE = 5
#: Storage's deadline for one pace request, and the client's connect and read timeouts around it.
SERVER_TIMEOUT_SECONDS = 2
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 3.0
_SYSTEM_PROPERTIES = frozenset({"PartitionKey", "RowKey", "Timestamp"})


@dataclass(frozen=True)
class StoredPace:
    """What an exchange read (the partner_center room's ``PaceSnapshot``)."""

    record: Mapping[str, float] | None
    etag: str | None
    demands: Mapping[str, float] = field(default_factory=dict)


class TablePaceState:
    """The pace's shared state in the table ``PRODUCT_UPGRADE_TABLE``; created on first use, as the ledger does."""

    def __init__(
        self,
        storage: StorageConnection,
        table_name: str,
        credential: TokenCredential | None = None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._table_name = table_name
        self._credential = credential
        self._wall = wall
        self._lock = threading.Lock()
        self._table: TableClient | None = None

    def exchange(self, instance_id: str, demand: float, *, active_within: float) -> StoredPace:
        from azure.data.tables import UpdateMode

        now = self._wall()
        row = INSTANCE_PREFIX + instance_id
        with _storage_errors("record this instance's demand"):
            table = self._client()
            table.upsert_entity(
                {"PartitionKey": PARTITION, "RowKey": row, "Demand": float(demand), "SeenAt": now},
                mode=UpdateMode.REPLACE,
                timeout=SERVER_TIMEOUT_SECONDS,
            )
        with _storage_errors("read the shared pace"):
            entities = list(
                table.query_entities(
                    "PartitionKey eq @pace", parameters={"pace": PARTITION}, timeout=SERVER_TIMEOUT_SECONDS
                )
            )
        record: Mapping[str, float] | None = None
        etag: str | None = None
        demands: dict[str, float] = {}
        forgotten: list[str] = []
        for entity in entities:
            key = str(entity.get("RowKey", ""))
            if key == PARTNER_ROW:
                record = _numbers(entity)
                etag = entity.metadata.get("etag")
            elif key.startswith(INSTANCE_PREFIX):
                seen = _number(entity.get("SeenAt"))
                if seen is not None and now - seen <= active_within:
                    demands[key[len(INSTANCE_PREFIX) :]] = _number(entity.get("Demand")) or 0.0
                elif seen is None or now - seen > FORGET_AFTER_SECONDS:
                    forgotten.append(key)
        demands.setdefault(instance_id, float(demand))
        self._forget(table, forgotten[:MAX_DELETES_PER_EXCHANGE])
        return StoredPace(record, etag, demands)

    def replace(self, record: Mapping[str, float], etag: str | None) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": PARTNER_ROW}
        entity.update({name: float(value) for name, value in record.items()})
        with _storage_errors("write the shared pace"):
            table = self._client()
            try:
                if etag is None:
                    answer = table.create_entity(entity, timeout=SERVER_TIMEOUT_SECONDS)
                else:
                    answer = table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                        timeout=SERVER_TIMEOUT_SECONDS,
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                return None  # another instance wrote first: the caller reads again
        new_etag = answer.get("etag")
        return str(new_etag) if new_etag else None

    def _forget(self, table: TableClient, rows: list[str]) -> None:
        from azure.core.exceptions import AzureError

        for row in rows:
            try:
                table.delete_entity(PARTITION, row, timeout=SERVER_TIMEOUT_SECONDS)
            except AzureError:
                return  # housekeeping only: the next exchange tries again

    def _client(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = self._service()
                ensure_exists(
                    lambda: service.create_table(self._table_name, timeout=SERVER_TIMEOUT_SECONDS),
                    f"table {self._table_name}",
                )
                self._table = service.get_table_client(self._table_name)
            return self._table

    def _service(self) -> Any:
        from azure.data.tables import TableServiceClient

        from shared.http_session import azure_transport

        options: dict[str, Any] = {
            "transport": azure_transport(connection_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS),
            "retry_total": 0,
        }
        if self._storage.connection_string:
            return TableServiceClient.from_connection_string(self._storage.connection_string, **options)
        assert self._storage.table_service_uri and self._credential is not None
        return TableServiceClient(endpoint=self._storage.table_service_uri, credential=self._credential, **options)


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Storage failing inside the block raises :class:`StorageUnavailableError` naming what was tried."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except (AzureError, ValueError, KeyError) as exc:
        raise StorageUnavailableError(f"could not {what} ({type(exc).__name__})") from None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(entity: Mapping[str, Any]) -> dict[str, float]:
    return {
        name: number
        for name, value in entity.items()
        if name not in _SYSTEM_PROPERTIES and (number := _number(value)) is not None
    }
