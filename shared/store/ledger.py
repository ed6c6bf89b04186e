"""The ledger: what the app did with every request and where every upgrade it started stands.

One Azure Table (``PRODUCT_UPGRADE_TABLE``), one partition per request id (the ``MS-RequestId`` of a
create), holding up to two records:

- RowKey ``request``: the request's result (``reserved`` while in flight, then ``accepted``, ``rejected`` or
  ``failed``). An ``accepted`` record makes a replay return the recorded upgrade without calling Partner
  Center; ``rejected`` and ``failed`` never block a later attempt of the same request.
- RowKey ``upgrade``: the upgrade it started and its tracking state (``running`` until Partner Center says it
  has ended, then ``completed``, ``partial``, ``failed`` or ``expired``).

Both live in one partition so that accepting an upgrade is one entity-group transaction: a create costs one
storage round trip (two with an Idempotency-Key, whose insert-only reservation comes first). State changes
are conditional on the record's ETag, so of two workers that see an upgrade end, one records it; each change
carries a write id of its own, so a change the SDK sent again after losing its answer is still known as its own.

An upgrade with a campaign is also counted in its campaign's counts, in a partition of the campaign's own
(:mod:`shared.store.campaign_counts`), once its new state is written; the record says whether its present state
is counted (``CountedState``, ``CountPending``), so a count storage refused is finished by the record's next
write, or by :meth:`TableLedger.settle_counts`.

Storage being down never blocks an upgrade: reads answer "nothing recorded", writes log a warning, and the
table is left alone for a minute so an outage does not add its timeouts to every call.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from shared.errors import ProductUpgradeError, StorageUnavailableError, ValidationError
from shared.models import Campaign, ProductUpgradeCreated, ProductUpgradeRequest
from shared.store import campaign_counts
from shared.store.campaign_counts import CampaignCounts, CountedUpgrade
from shared.store.storage import ATTEMPTS, call_limits, ensure_exists

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

    from shared.settings import StorageConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

RequestStatus = Literal["reserved", "accepted", "rejected", "failed"]
UpgradeState = Literal["running", "completed", "partial", "failed", "expired"]
UPGRADE_STATES: tuple[UpgradeState, ...] = ("running", "completed", "partial", "failed", "expired")

REQUEST_ROW = "request"
UPGRADE_ROW = "upgrade"

#: Storage's deadline for a table call (its answer is awaited a few seconds longer, see storage.call_limits).
TABLE_DEADLINE_SECONDS = 5
#: After storage fails, leave it alone this long, so an outage does not add its timeouts to every upgrade.
PAUSE_AFTER_FAILURE_SECONDS = 60.0
#: Largest page of the listing.
MAX_PAGE_SIZE = 1000

#: Table properties hold at most 64 KiB of text; Partner Center's line items are far smaller, but never fail on it.
_MAX_JSON_PROPERTY = 30_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, to the millisecond: sorts as text, reads everywhere."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RequestRecord:
    """The result of one request id (a create's ``MS-RequestId``)."""

    request_id: str
    customer_id: str
    product_family: str
    status: RequestStatus
    upgrade_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    partner_center_error_code: str | None = None
    #: The caller's own id (Idempotency-Key, the message's requestId), None when it gave none.
    caller_request_id: str | None = None
    correlation_id: str | None = None
    updated_at: datetime | None = None
    #: Business answers (refusals, recorded failures) so far: the next attempt sends the next MS-RequestId.
    business_answers: int = 0
    campaign: Campaign | None = None

    def same_request(self, request: ProductUpgradeRequest) -> bool:
        return (self.customer_id, self.product_family) == (request.customer_id, request.product_family)


@dataclass(frozen=True)
class UpgradeRecord:
    """An upgrade the app started, and where its tracking stands."""

    upgrade_id: str
    customer_id: str
    product_family: str
    state: UpgradeState
    #: The partition it lives in: the request id of the create that started it.
    ledger_key: str
    accepted_at: datetime
    updated_at: datetime
    partner_center_status: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    ended_at: datetime | None = None
    line_items: list[Any] = field(default_factory=list)
    error_details: Any = None
    #: Status checks done so far (a tracking message for check n is stale once n <= checks).
    checks: int = 0
    #: When an outcome message was claimed for sending, and whether it went out.
    outcome_claimed_at: datetime | None = None
    outcome_sent: bool = False
    #: The outcome message's ``outcomeId``, recorded when it is marked sent.
    outcome_id: str | None = None
    #: The outcome was sent again after storage lost an answer (or by the lease path): it may be on the queue twice.
    outcome_resent: bool = False
    campaign: Campaign | None = None
    #: The state the campaign's counts hold for this upgrade, as far as this record knows (None: not yet counted).
    counted_state: str | None = None
    etag: str | None = field(default=None, compare=False)
    #: The state the table holds for this record (as read or last written), whatever this copy was changed to.
    stored_state: str | None = field(default=None, compare=False, repr=False)

    @property
    def ended(self) -> bool:
        return self.state != "running"

    @property
    def count_pending(self) -> bool:
        """A campaign's upgrade whose present state may not be in the campaign's counts yet."""
        return self.campaign is not None and self.counted_state != self.state

    def counted(self) -> CountedUpgrade:
        """What the campaign's counts need of this record."""
        assert self.campaign is not None
        minutes = (self.ended_at - self.accepted_at).total_seconds() / 60 if self.ended_at else None
        return CountedUpgrade(
            ledger_key=self.ledger_key,
            campaign=self.campaign.name,
            campaign_key=self.campaign.key,
            state=self.state,
            accepted_at=iso(self.accepted_at) or "",
            ended_at=iso(self.ended_at),
            minutes_to_end=max(0.0, minutes) if minutes is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The listing's item: every key present, ``null`` where unknown."""
        return {
            "upgradeId": self.upgrade_id,
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "campaign": self.campaign.name if self.campaign else None,
            "state": self.state,
            "partnerCenterStatus": self.partner_center_status,
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
            "acceptedAt": iso(self.accepted_at),
            "updatedAt": iso(self.updated_at),
            "endedAt": iso(self.ended_at),
        }


@dataclass(frozen=True)
class UpgradePage:
    items: list[UpgradeRecord]
    continuation_token: str | None


class Ledger(Protocol):
    def reserve(
        self,
        request_id: str,
        request: ProductUpgradeRequest,
        correlation_id: str,
        *,
        campaign: Campaign | None = None,
    ) -> RequestRecord | None:
        """Insert-only reservation of ``request_id`` before the create is sent.

        None when this call reserved it (or storage is unavailable); the record already there otherwise, for
        the caller to compare (another customer: the key is reused; ``accepted``: a replay).
        """
        ...

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
        """Record the request ``accepted`` and its upgrade ``running`` in one transaction.

        The new upgrade record, to be tracked; None when it was recorded already (a racing twin), could not
        be recorded (storage unavailable: logged), or ``with_upgrade`` is False (the upgrade is recorded
        elsewhere: only the request record is written).
        """
        ...

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
        """Record the request's final ``rejected`` (permanent) or ``failed`` (transient) result, and how many
        business answers the request has had with it (the next attempt sends the next MS-RequestId)."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def get_upgrade(self, ledger_key: str) -> UpgradeRecord | None:
        """The upgrade record of the partition ``ledger_key``, None when absent; raises
        :class:`StorageUnavailableError` when storage cannot be read (tracking must not lose its place)."""
        ...

    def find_upgrade(self, upgrade_id: str) -> UpgradeRecord | None:
        """The record of ``upgrade_id`` wherever it lives (a scan: for rare paths only)."""
        ...

    def update_upgrade(self, record: UpgradeRecord) -> UpgradeRecord | None:
        """Replace the upgrade record if its ETag still matches; the stored record, or None if another worker
        changed it first. Raises :class:`StorageUnavailableError` when storage fails."""
        ...

    def list_upgrades(
        self,
        *,
        state: str | None = None,
        customer_id: str | None = None,
        campaign_key: str | None = None,
        top: int = 100,
        continuation_token: str | None = None,
    ) -> UpgradePage:
        """A page of upgrade records. Raises :class:`ValidationError` for a token this app cannot read and
        :class:`StorageUnavailableError` when storage is not configured or unreachable."""
        ...

    def unsent_upgrades(self, updated_before: datetime) -> Iterator[UpgradeRecord]:
        """Every upgrade whose outcome has not gone out and whose record has not changed since ``updated_before``
        (running ones, and ended ones whose outcome was never marked sent). Raises
        :class:`StorageUnavailableError` when storage is not configured or unreachable."""
        ...

    def campaign_counts(self, campaign_key: str) -> CampaignCounts | None:
        """The campaign's counts (one query, never a scan); None when no upgrade of it was counted. Raises
        :class:`StorageUnavailableError` when storage is not configured or unreachable."""
        ...

    def campaign_requests(self, campaign_key: str) -> list[RequestRecord]:
        """Every request record of the campaign (a scan: for reports). Raises :class:`StorageUnavailableError`."""
        ...

    def settle_counts(self, updated_before: datetime) -> int:
        """Count every campaign upgrade whose count was left pending (storage failed between the record's write and
        its count, and no later write came) and unchanged since ``updated_before``; how many were settled. Raises
        :class:`StorageUnavailableError`."""
        ...


class NoLedger:
    """Used when no storage connection is configured: nothing is recorded, nothing tracked."""

    def reserve(
        self,
        request_id: str,
        request: ProductUpgradeRequest,
        correlation_id: str,
        *,
        campaign: Campaign | None = None,
    ) -> RequestRecord | None:
        return None

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
        return None

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
        return None

    def get_request(self, request_id: str) -> RequestRecord | None:
        return None

    def get_upgrade(self, ledger_key: str) -> UpgradeRecord | None:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def find_upgrade(self, upgrade_id: str) -> UpgradeRecord | None:
        return None

    def update_upgrade(self, record: UpgradeRecord) -> UpgradeRecord | None:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def list_upgrades(
        self,
        *,
        state: str | None = None,
        customer_id: str | None = None,
        campaign_key: str | None = None,
        top: int = 100,
        continuation_token: str | None = None,
    ) -> UpgradePage:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def unsent_upgrades(self, updated_before: datetime) -> Iterator[UpgradeRecord]:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def campaign_counts(self, campaign_key: str) -> CampaignCounts | None:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def campaign_requests(self, campaign_key: str) -> list[RequestRecord]:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def settle_counts(self, updated_before: datetime) -> int:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")


# The table is a record beside the upgrade, not on its critical path: a few seconds at most per call.
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
        entity = _request_entity(record, correlation_id)

        def call(table: TableClient) -> RequestRecord | None:
            try:
                table.create_entity(entity, **_table_call_limits())
                return None
            except ResourceExistsError:
                return _request_from(table.get_entity(request_id, REQUEST_ROW, **_table_call_limits()))

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
        from azure.data.tables import TableTransactionError, UpdateMode

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
        operations: list[Any] = [("upsert", _request_entity(request, correlation_id), {"mode": UpdateMode.REPLACE})]
        if with_upgrade:
            operations.append(("create", _upgrade_entity(upgrade)))

        def call(table: TableClient) -> UpgradeRecord | None:
            try:
                results = table.submit_transaction(operations, **_table_call_limits())
            except TableTransactionError as exc:
                if getattr(exc, "error_code", None) == "EntityAlreadyExists":
                    log.info("Upgrade %s was already recorded for request %s", created.upgrade_id, request_id)
                    return None
                raise
            return replace(upgrade, etag=results[-1].get("etag"), stored_state=upgrade.state) if with_upgrade else None

        recorded = self._best_effort("record accepted upgrade", created.upgrade_id, call)
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
        entity = _request_entity(record, correlation_id)
        self._best_effort(
            "record refused request",
            request_id,
            lambda table: table.upsert_entity(entity, mode=UpdateMode.REPLACE, **_table_call_limits()),
        )

    def get_request(self, request_id: str) -> RequestRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        def call(table: TableClient) -> RequestRecord | None:
            try:
                return _request_from(table.get_entity(request_id, REQUEST_ROW, **_table_call_limits()))
            except ResourceNotFoundError:
                return None

        return self._best_effort("read the request record", request_id, call)

    # -- upgrades ------------------------------------------------------------------------------------------
    def get_upgrade(self, ledger_key: str) -> UpgradeRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        with _reading():
            try:
                return _upgrade_from(self._client().get_entity(ledger_key, UPGRADE_ROW, **_table_call_limits()))
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
            return next((_upgrade_from(entity) for entity in entities), None)

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
                    {**_upgrade_entity(record), "WriteId": write_id},
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                    **_table_call_limits(),
                ).get("etag")
            except ResourceModifiedError:
                # The SDK sends an update again when its answer was lost; if the first copy had landed, the
                # second finds the record changed by this very write. Its write id tells that from another's.
                current = table.get_entity(record.ledger_key, UPGRADE_ROW, **_table_call_limits())
                if current.get("WriteId") != write_id:
                    return None
                etag = current.metadata.get("etag")
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
            items = [_upgrade_from(entity) for entity in next(pages, [])]
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
            yield from (_upgrade_from(entity) for entity in entities)

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
            return [_request_from(entity) for entity in entities]

    def settle_counts(self, updated_before: datetime) -> int:
        query = "RowKey eq @row and CountPending eq true and UpdatedAt lt @before"
        parameters = {"row": UPGRADE_ROW, "before": iso(updated_before)}
        with _reading():
            entities = self._client().query_entities(
                query, parameters=parameters, results_per_page=MAX_PAGE_SIZE, **_table_call_limits()
            )
            pending = [_upgrade_from(entity) for entity in entities]
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
    def _best_effort(self, what: str, subject: str, call: Callable[[TableClient], T]) -> T | None:
        """Run a table call beside the upgrade: when storage fails, log a warning, pause, and answer None."""
        from azure.core.exceptions import AzureError

        if time.monotonic() < self._paused_until:
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


# -- entities ----------------------------------------------------------------------------------------------
def _request_entity(record: RequestRecord, correlation_id: str) -> dict[str, Any]:
    return _without_none(
        {
            "PartitionKey": record.request_id,
            "RowKey": REQUEST_ROW,
            "Status": record.status,
            "CustomerId": record.customer_id,
            "ProductFamily": record.product_family,
            "UpgradeId": record.upgrade_id,
            "ErrorCode": record.error_code,
            "ErrorMessage": record.error_message,
            "PartnerCenterErrorCode": record.partner_center_error_code,
            "CallerRequestId": record.caller_request_id,
            "CorrelationId": record.correlation_id or correlation_id,
            "UpdatedAt": iso(record.updated_at),
            "BusinessAnswers": record.business_answers or None,
            **_campaign_properties(record.campaign),
        }
    )


def _campaign_properties(campaign: Campaign | None) -> dict[str, Any]:
    return {"Campaign": campaign.name, "CampaignKey": campaign.key} if campaign else {}


def _campaign_from(entity: Mapping[str, Any]) -> Campaign | None:
    name, key = _opt(entity.get("Campaign")), _opt(entity.get("CampaignKey"))
    return Campaign(name, key) if name and key else None


def _request_from(entity: Mapping[str, Any]) -> RequestRecord:
    status = str(entity.get("Status") or "accepted")
    if status not in ("reserved", "accepted", "rejected", "failed"):
        raise KeyError(f"unknown request status {status!r}")
    return RequestRecord(
        request_id=str(entity["PartitionKey"]),
        customer_id=str(entity["CustomerId"]),
        product_family=str(entity["ProductFamily"]),
        status=status,  # type: ignore[arg-type]
        upgrade_id=_opt(entity.get("UpgradeId")),
        error_code=_opt(entity.get("ErrorCode")),
        error_message=_opt(entity.get("ErrorMessage")),
        partner_center_error_code=_opt(entity.get("PartnerCenterErrorCode")),
        caller_request_id=_opt(entity.get("CallerRequestId")),
        correlation_id=_opt(entity.get("CorrelationId")),
        updated_at=parse_iso(entity.get("UpdatedAt")),
        business_answers=int(entity.get("BusinessAnswers") or 0),
        campaign=_campaign_from(entity),
    )


def _upgrade_entity(record: UpgradeRecord) -> dict[str, Any]:
    return _without_none(
        {
            "PartitionKey": record.ledger_key,
            "RowKey": UPGRADE_ROW,
            "UpgradeId": record.upgrade_id,
            "CustomerId": record.customer_id,
            "ProductFamily": record.product_family,
            "State": record.state,
            "PartnerCenterStatus": record.partner_center_status,
            "RequestId": record.request_id,
            "CorrelationId": record.correlation_id,
            "AcceptedAt": iso(record.accepted_at),
            "UpdatedAt": iso(record.updated_at),
            "EndedAt": iso(record.ended_at),
            "LineItems": _json_property(record.line_items) if record.line_items else None,
            "ErrorDetails": _json_property(record.error_details) if record.error_details is not None else None,
            "Checks": record.checks,
            "OutcomeClaimedAt": iso(record.outcome_claimed_at),
            "OutcomeSent": record.outcome_sent,
            "OutcomeId": record.outcome_id,
            "OutcomeResent": record.outcome_resent or None,
            **_campaign_properties(record.campaign),
            "CountedState": record.counted_state,
            # Only for the sweep's query (a filter cannot compare two properties).
            "CountPending": record.count_pending if record.campaign else None,
        }
    )


def _upgrade_from(entity: Mapping[str, Any]) -> UpgradeRecord:
    state = str(entity.get("State") or "running")
    if state not in UPGRADE_STATES:
        raise KeyError(f"unknown upgrade state {state!r}")
    accepted_at = parse_iso(entity.get("AcceptedAt")) or utc_now()
    metadata = getattr(entity, "metadata", None) or {}
    return UpgradeRecord(
        upgrade_id=str(entity["UpgradeId"]),
        customer_id=str(entity["CustomerId"]),
        product_family=str(entity["ProductFamily"]),
        state=state,
        ledger_key=str(entity["PartitionKey"]),
        accepted_at=accepted_at,
        updated_at=parse_iso(entity.get("UpdatedAt")) or accepted_at,
        partner_center_status=_opt(entity.get("PartnerCenterStatus")),
        request_id=_opt(entity.get("RequestId")),
        correlation_id=_opt(entity.get("CorrelationId")),
        ended_at=parse_iso(entity.get("EndedAt")),
        line_items=_from_json_property(entity.get("LineItems"), []),
        error_details=_from_json_property(entity.get("ErrorDetails"), None),
        checks=int(entity.get("Checks") or 0),
        outcome_claimed_at=parse_iso(entity.get("OutcomeClaimedAt")),
        outcome_sent=bool(entity.get("OutcomeSent")),
        outcome_id=_opt(entity.get("OutcomeId")),
        outcome_resent=bool(entity.get("OutcomeResent")),
        campaign=_campaign_from(entity),
        counted_state=_opt(entity.get("CountedState")),
        etag=metadata.get("etag"),
        stored_state=state,
    )


def _json_property(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _MAX_JSON_PROPERTY else json.dumps({"truncated": True})


def _from_json_property(value: object, default: Any) -> Any:
    if not isinstance(value, str):
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _without_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entity.items() if value is not None}


# -- continuation tokens -----------------------------------------------------------------------------------
_TOKEN_VERSION = "v1"
#: Tokens signed with PRODUCT_UPGRADE_CONTINUATION_KEY: ``<payload>.<HMAC-SHA256 of it>``, both base64url.
_SIGNED_TOKEN_VERSION = "v2"
_MAX_TOKEN_LENGTH = 2048
#: Storage's own continuation values are printable ASCII (base64 and ``!``-separated counts): nothing else
#: can be one, and a request could not even carry some of it.
_MAX_POSITION_LENGTH = 1024


def encode_continuation_token(position: Mapping[str, Any], key: str | None = None) -> str:
    """An opaque, URL-safe token for the table's next page (partition and row key to resume from); signed with
    ``key`` (HMAC-SHA256) when one is given."""
    version = _SIGNED_TOKEN_VERSION if key else _TOKEN_VERSION
    payload = {"v": version, "pk": position.get("PartitionKey"), "rk": position.get("RowKey")}
    encoded = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{encoded}.{_b64encode(_signature(key, encoded))}" if key else encoded


def decode_continuation_token(token: str, key: str | None = None) -> dict[str, str]:
    """The table position of a token this app issued (signed with ``key`` when one is given);
    :class:`ValidationError` for anything else."""
    invalid = ValidationError("continuationToken is not one this app issued; start again without it")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    encoded, dot, signature = token.partition(".")
    if key:
        try:
            signed = hmac.compare_digest(_b64decode(signature), _signature(key, encoded))
        except (binascii.Error, ValueError):
            signed = False
        if not (dot and signed):
            raise invalid
    elif dot:
        raise invalid
    try:
        payload = json.loads(_b64decode(encoded))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(payload, dict) or payload.get("v") != (_SIGNED_TOKEN_VERSION if key else _TOKEN_VERSION):
        raise invalid
    partition, row = payload.get("pk"), payload.get("rk")
    if not (_storage_position(partition) and _storage_position(row)):
        raise invalid
    assert isinstance(partition, str) and isinstance(row, str)
    return {"PartitionKey": partition, "RowKey": row}


def _storage_position(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_POSITION_LENGTH and value.isascii() and value.isprintable()


def _signature(key: str, encoded: str) -> bytes:
    return hmac.new(key.encode(), b"continuationToken:" + encoded.encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
