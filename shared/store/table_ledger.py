"""The ledger in an Azure Table: :class:`TableLedger`, the table I/O of the records (see :mod:`shared.store.ledger`
for the design: one partition per request id, ETag-conditional state changes, write ids)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import ProductUpgradeError, StorageUnavailableError, ValidationError
from shared.models import Campaign, ProductUpgradeCreated, ProductUpgradeRequest
from shared.store import campaign_counts
from shared.store.campaign_counts import CampaignCounts
from shared.store.continuation import decode_continuation_token, encode_continuation_token
from shared.store.entities import REQUEST_ROW, UPGRADE_ROW, request_entity, request_from, upgrade_entity, upgrade_from
from shared.store.ledger import MAX_PAGE_SIZE
from shared.store.records import RequestRecord, UpgradePage, UpgradeRecord, iso, utc_now
from shared.store.storage import ATTEMPTS, call_limits, ensure_exists

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

    from shared.settings import StorageConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Storage's deadline for a table call (its answer is awaited a few seconds longer, see storage.call_limits).
TABLE_DEADLINE_SECONDS = 5
#: After storage fails, leave it alone this long, so an outage does not add its timeouts to every upgrade.
PAUSE_AFTER_FAILURE_SECONDS = 60.0


def _table_call_limits() -> dict[str, Any]:
    return call_limits(TABLE_DEADLINE_SECONDS)


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """A read the caller needs the answer of: storage failing (or a record this app cannot read) inside the
    block raises :class:`StorageUnavailableError`."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except (AzureError, ValueError, KeyError) as exc:
        raise StorageUnavailableError(f"the ledger could not be read ({type(exc).__name__})") from None


@contextlib.contextmanager
def _refused_position(position: Mapping[str, str] | None) -> Iterator[None]:
    """Storage answering 400 to a query resuming from ``position``: the position (the caller's continuation
    token) is what it could not read, the caller's mistake rather than an outage."""
    from azure.core.exceptions import HttpResponseError

    try:
        yield
    except HttpResponseError as exc:
        if position is None or exc.status_code != 400:
            raise
        raise ValidationError("continuationToken is not one this app issued; start again without it") from None


def _upgrade_row(record: UpgradeRecord, write_id: str) -> dict[str, Any]:
    """The upgrade's row as this write stores it: marked with its write id, which a resend that meets the row
    reads back to tell its own first copy from another writer's (:func:`_row_written_by`)."""
    return {**upgrade_entity(record), "WriteId": write_id}


def _row_written_by(table: TableClient, ledger_key: str, write_id: str) -> tuple[bool, str | None]:
    """Whether the upgrade's row as stored now is the one the write ``write_id`` made, and its ETag."""
    current = table.get_entity(ledger_key, UPGRADE_ROW, **_table_call_limits())
    return current.get("WriteId") == write_id, current.metadata.get("etag")


def _submit_record(
    table: TableClient, operations: list[Any], ledger_key: str, write_id: str
) -> tuple[bool, str | None]:
    """Submit a transaction that records an upgrade (when it creates the upgrade's row, its last operation, the
    row is marked with ``write_id``): whether this write recorded it, and the row's ETag; False when the row was
    there already, written by another.

    The SDK never sends a POST again once it is sent, so an answer that does not come would leave the upgrade
    unrecorded, and so unfollowed. It is sent again here: sent again after it landed, it fails on its own
    first copy, which its write id tells from a twin's."""
    from azure.core.exceptions import ServiceResponseError
    from azure.data.tables import TableTransactionError

    # Every try under one x-ms-client-request-id, as the SDK's own retries are: one write in storage's logs.
    client_request_id = str(uuid.uuid4())
    for attempt in range(1, ATTEMPTS + 1):
        try:
            results = table.submit_transaction(operations, request_id=client_request_id, **_table_call_limits())
        except ServiceResponseError:
            if attempt == ATTEMPTS:
                raise
            log.warning("Storage's answer to the record of request %s did not come; writing it again", ledger_key)
            continue
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) != "EntityAlreadyExists":
                raise
            return _row_written_by(table, ledger_key, write_id)
        return True, results[-1].get("etag")
    raise AssertionError("unreachable")  # pragma: no cover


class TableLedger:
    """The ledger in the table ``PRODUCT_UPGRADE_TABLE`` of the host's storage account; created on first use."""

    def __init__(
        self,
        storage: StorageConnection,
        table_name: str,
        credential: TokenCredential | None = None,
        *,
        continuation_key: str | None = None,
    ) -> None:
        self._storage = storage
        self._table_name = table_name
        self._credential = credential
        #: PRODUCT_UPGRADE_CONTINUATION_KEY: signs the listing's continuation tokens when set.
        self._continuation_key = continuation_key
        self._lock = threading.Lock()
        self._table: TableClient | None = None
        self._paused_until = 0.0

    # -- requests ------------------------------------------------------------------------------------------
    def reserve(
        self,
        request_id: str,
        request: ProductUpgradeRequest,
        correlation_id: str,
        *,
        campaign: Campaign | None = None,
    ) -> RequestRecord | None:
        from azure.core.exceptions import ResourceExistsError

        record = RequestRecord(
            request_id, request.customer_id, request.product_family, "reserved", updated_at=utc_now(), campaign=campaign
        )
        entity = request_entity(record, correlation_id)

        def call(table: TableClient) -> RequestRecord | None:
            try:
                table.create_entity(entity, **_table_call_limits())
                return None
            except ResourceExistsError:
                return request_from(table.get_entity(request_id, REQUEST_ROW, **_table_call_limits()))

        return self._best_effort("reserve request", request_id, call)

    def record_accepted(
        self,
        request_id: str,
        created: ProductUpgradeCreated,
        *,
        caller_request_id: str | None,
        correlation_id: str,
        with_upgrade: bool = True,
        campaign: Campaign | None = None,
    ) -> UpgradeRecord | None:
        from azure.data.tables import UpdateMode

        now = utc_now()
        request = RequestRecord(
            request_id,
            created.customer_id,
            created.product_family,
            "accepted",
            upgrade_id=created.upgrade_id,
            caller_request_id=caller_request_id,
            correlation_id=correlation_id,
            updated_at=now,
            campaign=campaign,
        )
        upgrade = UpgradeRecord(
            upgrade_id=created.upgrade_id,
            customer_id=created.customer_id,
            product_family=created.product_family,
            state="running",
            ledger_key=request_id,
            accepted_at=now,
            updated_at=now,
            request_id=caller_request_id,
            correlation_id=correlation_id,
            campaign=campaign,
        )
        # The request record replaces a reservation when there is one; the upgrade record is an insert, so
        # of two racing twins of one request (one MS-RequestId, one upgrade) the first to record it wins.
        write_id = uuid.uuid4().hex
        operations: list[Any] = [("upsert", request_entity(request, correlation_id), {"mode": UpdateMode.REPLACE})]
        if with_upgrade:
            operations.append(("create", _upgrade_row(upgrade, write_id)))

        def call(table: TableClient) -> UpgradeRecord | None:
            mine, etag = _submit_record(table, operations, request_id, write_id)
            if not mine:
                log.info("Upgrade %s was already recorded for request %s", created.upgrade_id, request_id)
                return None
            return replace(upgrade, etag=etag, stored_state=upgrade.state) if with_upgrade else None

        # Tried even while the ledger is paused: without this record no status check follows the upgrade and its
        # outcome is never sent. A pause after one slow answer had left a minute of upgrades unfollowed.
        recorded = self._best_effort("record accepted upgrade", created.upgrade_id, call, essential=True)
        return self._count(recorded) if recorded is not None else None

    def record_refused(
        self,
        request_id: str,
        request: ProductUpgradeRequest,
        error: ProductUpgradeError,
        *,
        caller_request_id: str | None,
        correlation_id: str,
        business_answers: int = 1,
        campaign: Campaign | None = None,
    ) -> None:
        from azure.data.tables import UpdateMode

        record = RequestRecord(
            request_id,
            request.customer_id,
            request.product_family,
            error.ending,
            error_code=error.code,
            error_message=error.message[:1024],
            partner_center_error_code=error.partner_center_error_code,
            caller_request_id=caller_request_id,
            correlation_id=correlation_id,
            updated_at=utc_now(),
            business_answers=business_answers,
            campaign=campaign,
        )
        entity = request_entity(record, correlation_id)
        self._best_effort(
            "record refused request",
            request_id,
            lambda table: table.upsert_entity(entity, mode=UpdateMode.REPLACE, **_table_call_limits()),
        )

    def get_request(self, request_id: str) -> RequestRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        def call(table: TableClient) -> RequestRecord | None:
            try:
                return request_from(table.get_entity(request_id, REQUEST_ROW, **_table_call_limits()))
            except ResourceNotFoundError:
                return None

        return self._best_effort("read the request record", request_id, call)

    # -- upgrades ------------------------------------------------------------------------------------------
    def get_upgrade(self, ledger_key: str) -> UpgradeRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        with _reading():
            try:
                return upgrade_from(self._client().get_entity(ledger_key, UPGRADE_ROW, **_table_call_limits()))
            except ResourceNotFoundError:
                return None

    def find_upgrade(self, upgrade_id: str) -> UpgradeRecord | None:
        def call(table: TableClient) -> UpgradeRecord | None:
            entities = table.query_entities(
                "RowKey eq @row and UpgradeId eq @id",
                parameters={"row": UPGRADE_ROW, "id": upgrade_id},
                results_per_page=1,
                **_table_call_limits(),
            )
            return next((upgrade_from(entity) for entity in entities), None)

        return self._best_effort("find upgrade", upgrade_id, call)

    def update_upgrade(self, record: UpgradeRecord) -> UpgradeRecord | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if record.stored_state == record.state:
            # Its state is in the table already: count it first, and this very write says it is counted.
            record = self._count(record)
        write_id = uuid.uuid4().hex
        try:
            table = self._client()
            try:
                etag = table.update_entity(
                    _upgrade_row(record, write_id),
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                    **_table_call_limits(),
                ).get("etag")
            except ResourceModifiedError:
                # The SDK sends an update again when its answer was lost; if the first copy had landed, the
                # second finds the record changed by this very write. Its write id tells that from another's.
                mine, etag = _row_written_by(table, record.ledger_key, write_id)
                if not mine:
                    return None
        except ResourceNotFoundError:
            return None
        except (AzureError, ValueError) as exc:
            raise StorageUnavailableError(f"the ledger could not be updated ({type(exc).__name__})") from None
        # A new state: counted once it is written (a write that lost the race must count nothing).
        return self._count(replace(record, etag=etag, stored_state=record.state))

    def list_upgrades(
        self,
        *,
        state: str | None = None,
        customer_id: str | None = None,
        campaign_key: str | None = None,
        top: int = 100,
        continuation_token: str | None = None,
    ) -> UpgradePage:
        query = "RowKey eq @row"
        parameters: dict[str, Any] = {"row": UPGRADE_ROW}
        if state is not None:
            query += " and State eq @state"
            parameters["state"] = state
        if customer_id is not None:
            query += " and CustomerId eq @customer"
            parameters["customer"] = customer_id
        if campaign_key is not None:
            query += " and CampaignKey eq @campaign"
            parameters["campaign"] = campaign_key
        key = self._continuation_key
        position = decode_continuation_token(continuation_token, key) if continuation_token else None
        with _reading(), _refused_position(position):
            pages = (
                self._client()
                .query_entities(query, parameters=parameters, results_per_page=top, **_table_call_limits())
                .by_page(continuation_token=position)  # type: ignore[arg-type]
            )
            items = [upgrade_from(entity) for entity in next(pages, [])]
            next_position = getattr(pages, "continuation_token", None)
        token = encode_continuation_token(next_position, key) if next_position else None
        return UpgradePage(items, token)

    def unsent_upgrades(self, updated_before: datetime) -> Iterator[UpgradeRecord]:
        # UpdatedAt is ISO 8601 UTC text of one width: ordered as text as in time.
        query = "RowKey eq @row and OutcomeSent eq false and UpdatedAt lt @before"
        parameters = {"row": UPGRADE_ROW, "before": iso(updated_before)}
        with _reading():
            entities = self._client().query_entities(
                query, parameters=parameters, results_per_page=MAX_PAGE_SIZE, **_table_call_limits()
            )
            yield from (upgrade_from(entity) for entity in entities)

    # -- campaigns -----------------------------------------------------------------------------------------
    def campaign_counts(self, campaign_key: str) -> CampaignCounts | None:
        with _reading():
            return campaign_counts.read(self._client(), campaign_key, **_table_call_limits())

    def campaign_requests(self, campaign_key: str) -> list[RequestRecord]:
        query = "RowKey eq @row and CampaignKey eq @campaign"
        parameters = {"row": REQUEST_ROW, "campaign": campaign_key}
        with _reading():
            entities = self._client().query_entities(
                query, parameters=parameters, results_per_page=MAX_PAGE_SIZE, **_table_call_limits()
            )
            return [request_from(entity) for entity in entities]

    def settle_counts(self, updated_before: datetime) -> int:
        query = "RowKey eq @row and CountPending eq true and UpdatedAt lt @before"
        parameters = {"row": UPGRADE_ROW, "before": iso(updated_before)}
        with _reading():
            entities = self._client().query_entities(
                query, parameters=parameters, results_per_page=MAX_PAGE_SIZE, **_table_call_limits()
            )
            pending = [upgrade_from(entity) for entity in entities]
        settled = 0
        for record in pending:
            counted = self._count(record)
            if counted.count_pending:
                continue
            log.warning("Upgrade %s was not counted in its campaign's counts until now", record.upgrade_id)
            settled += 1
            # The record says so on its next write; this one may lose to a worker writing it now, who will.
            with contextlib.suppress(StorageUnavailableError):
                self.update_upgrade(counted)
        return settled

    def _count(self, record: UpgradeRecord) -> UpgradeRecord:
        """Count a campaign upgrade's new state in the campaign's counts (exactly once, however often asked): the
        record as counted, or as it was when storage failed (the record says the count is pending, and its next
        write, or :meth:`settle_counts`, counts it)."""
        from azure.core.exceptions import AzureError

        if not record.count_pending:
            return record
        try:
            counted = campaign_counts.count(self._client(), record.counted(), **_table_call_limits())
        except (AzureError, ValueError, KeyError) as exc:
            log.warning("Upgrade %s not counted in its campaign yet: %s", record.upgrade_id, type(exc).__name__)
            return record
        return replace(record, counted_state=record.state) if counted else record

    # -- plumbing ------------------------------------------------------------------------------------------
    def _best_effort(
        self, what: str, subject: str, call: Callable[[TableClient], T], *, essential: bool = False
    ) -> T | None:
        """Run a table call beside the upgrade: when storage fails, log a warning, pause the calls that are not
        ``essential``, and answer None."""
        from azure.core.exceptions import AzureError

        if not essential and time.monotonic() < self._paused_until:
            log.warning("Ledger paused after a storage failure: could not %s (%s)", what, subject)
            return None
        try:
            return call(self._client())
        except (AzureError, ValueError, KeyError) as exc:
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
            log.warning("Ledger could not %s (%s): %s; relying on MS-RequestId", what, subject, type(exc).__name__)
            return None

    def _client(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = self._service()
                ensure_exists(
                    lambda: service.create_table(self._table_name, **_table_call_limits()), f"table {self._table_name}"
                )
                self._table = service.get_table_client(self._table_name)
            return self._table

    def _service(self) -> Any:
        from azure.data.tables import TableServiceClient

        from shared.http_session import azure_transport

        # Short timeouts and few retries: this is a record beside the upgrade, not on its critical path.
        options: dict[str, Any] = {
            "transport": azure_transport(connection_timeout=5, read_timeout=10),
            "retry_total": ATTEMPTS - 1,
            "retry_backoff_factor": 0.2,
        }
        if self._storage.connection_string:
            return TableServiceClient.from_connection_string(self._storage.connection_string, **options)
        # The runtime builds this ledger only with a connection string or a table URI and a credential.
        assert self._storage.table_service_uri and self._credential is not None
        return TableServiceClient(endpoint=self._storage.table_service_uri, credential=self._credential, **options)
