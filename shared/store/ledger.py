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

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from shared.errors import ProductUpgradeError, StorageUnavailableError
from shared.models import Campaign, ProductUpgradeCreated, ProductUpgradeRequest
from shared.store.campaign_counts import CampaignCounts
from shared.store.records import RequestRecord, UpgradePage, UpgradeRecord

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: Largest page of the listing.
MAX_PAGE_SIZE = 1000


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
