"""``bulk --enqueue``: one message per row on the requests queue, then the ledger says what became of each.

The queue function does the work (with its retries, deferrals and tracking); this side only writes messages
and reads the ledger's request records (never the results queue, which belongs to whoever consumes it). A
row's message carries its key as ``requestId``, so the queue function's MS-RequestId is the one a direct run
of the same campaign sends: switching modes between runs never upgrades anyone twice.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from shared.errors import MissingSettingError, ProductUpgradeError
from shared.models import Campaign
from shared.settings import STORAGE_SETTING
from shared.store.ledger import NoLedger
from shared.store.scheduler import NoScheduler

from . import ledger_outcome
from .campaign import Result, Row
from .context import Context
from .pool import Done, Fatal, RowPool, stops_the_run
from .progress import CampaignProgress

#: Seconds between two reads of the ledger for the rows still waiting.
LEDGER_POLL_SECONDS = 1.0


class QueueChannel:
    poll_seconds = LEDGER_POLL_SECONDS

    def __init__(
        self,
        context: Context,
        campaign_name: str,
        campaign: Campaign | None,
        pool: RowPool,
        *,
        check_eligibility: bool,
    ) -> None:
        self.context = context
        self.campaign = campaign
        self.correlation_id = campaign_name
        self.pool = pool
        self.check_eligibility = check_eligibility

    def prepare(self, sending: bool) -> None:
        """``--enqueue`` needs the host's storage: the queue to write and the ledger to read."""
        runtime = self.context.runtime
        if isinstance(runtime.scheduler, NoScheduler) or isinstance(runtime.ledger, NoLedger):
            raise MissingSettingError(STORAGE_SETTING)

    def send(self, rows: list[Row], done: Done) -> None:
        ledger = self.context.runtime.ledger
        # A request recorded before this run: accepted is a result already; a refusal is old news until replaced.
        baseline: dict[int, datetime | None] = {}
        pending: dict[int, Row] = {}
        for row in rows:
            record = ledger_outcome.read(functools.partial(ledger.get_request, row.request_id))
            if record is not None and record.status == "accepted" and record.upgrade_id:
                done(row, Result("accepted", upgrade_id=record.upgrade_id))
                continue
            baseline[row.number] = record.updated_at if record is not None and record.status != "reserved" else None
            pending[row.number] = row

        def not_sent(row: Row, result: Result) -> None:
            pending.pop(row.number, None)
            done(row, result)

        self.pool.run(list(pending.values()), self._enqueue, not_sent, abandoned=not_sent)

        def follow(row: Row) -> Result | None:
            record = ledger_outcome.read(lambda: ledger.get_request(row.request_id))
            if record is None or record.status == "reserved":
                return None
            since = baseline.get(row.number)
            if since is not None and (record.updated_at is None or record.updated_at <= since):
                return None  # the previous run's refusal, not this message's result yet
            return ledger_outcome.request_result(record)

        self.pool.poll(pending, follow, done, LEDGER_POLL_SECONDS)

    def _enqueue(self, row: Row) -> Result | None:
        """The row's message on the requests queue: None once sent (the ledger will say), else why not."""
        if self.pool.stop.is_set():
            return None
        assert row.request is not None
        message: dict[str, Any] = {
            **row.request.to_json(),
            "requestId": row.key,
            "correlationId": self.correlation_id,
            "checkEligibility": self.check_eligibility,
            "campaign": self.campaign.name if self.campaign else None,
        }
        try:
            self.context.runtime.scheduler.send_request(message)
        except ProductUpgradeError as exc:
            if stops_the_run(exc):
                raise Fatal(exc) from None
            return Result("failed", error_code=exc.code, message=f"not enqueued: {exc.message}")
        return None

    def outcome(self, row: Row, previous: Result) -> Result | None:
        """The row's upgrade as the ledger has it (the functions track it): its result once it has ended."""
        record = ledger_outcome.record(self.context.runtime.ledger, row.request_id, previous.upgrade_id)
        if record is None or not record.ended:
            return None
        return ledger_outcome.result(previous, record)

    @contextlib.contextmanager
    def watching(self, progress: CampaignProgress) -> Iterator[None]:
        yield  # the queue function meets Partner Center's throttling, not this process
