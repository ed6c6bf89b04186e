"""``bulk --enqueue``: one message per row on the requests queue, then the ledger says what became of each.

The queue function does the work (with its retries, deferrals and tracking); this side only writes messages
and reads the ledger's request records (never the results queue, which belongs to whoever consumes it). A
row's message carries its key as ``requestId``, so the queue function's MS-RequestId is the one a direct run
of the same campaign sends: switching modes between runs never upgrades anyone twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import MissingSettingError, ProductUpgradeError, StorageUnavailableError
from shared.settings import STORAGE_SETTING
from shared.store.ledger import Ledger, NoLedger, RequestRecord, UpgradeRecord
from shared.store.scheduler import NoScheduler

from .campaign import Result, Row

if TYPE_CHECKING:
    from .bulk import CampaignRun

T = TypeVar("T")

#: Seconds between two reads of the ledger for the rows still waiting.
LEDGER_POLL_SECONDS = 1.0


def check_storage(run: CampaignRun) -> None:
    """``--enqueue`` needs the host's storage: the queue to write and the ledger to read."""
    runtime = run.context.runtime
    if isinstance(runtime.scheduler, NoScheduler) or isinstance(runtime.ledger, NoLedger):
        raise MissingSettingError(STORAGE_SETTING)


def send_through_queue(run: CampaignRun) -> None:
    runtime = run.context.runtime
    ledger = runtime.ledger
    # A request recorded before this run: accepted is a result already; a refusal is old news until replaced.
    baseline: dict[int, datetime | None] = {}
    pending: dict[int, Row] = {}
    for row in run.to_send:
        record = _read(functools.partial(ledger.get_request, row.request_id))
        if record is not None and record.status == "accepted" and record.upgrade_id:
            run.finish_row(row, Result("accepted", upgrade_id=record.upgrade_id))
            continue
        baseline[row.number] = record.updated_at if record is not None and record.status != "reserved" else None
        pending[row.number] = row

    def send(row: Row) -> Result | None:
        if run.stop.is_set():
            return None
        assert row.request is not None
        message: dict[str, Any] = {
            **row.request.to_json(),
            "requestId": row.key,
            "correlationId": run.campaign.name,
            "checkEligibility": run.args.check_eligibility,
        }
        try:
            runtime.scheduler.send_request(message)
        except ProductUpgradeError as exc:
            return Result("failed", error_code=exc.code, message=f"not enqueued: {exc.message}")
        return None

    def not_sent(row: Row, result: Result) -> None:
        pending.pop(row.number, None)
        run.finish_row(row, result)

    run.run_in_pool(list(pending.values()), send, not_sent)

    def follow(row: Row) -> Result | None:
        record = _read(lambda: ledger.get_request(row.request_id))
        if record is None or record.status == "reserved":
            return None
        since = baseline.get(row.number)
        if since is not None and (record.updated_at is None or record.updated_at <= since):
            return None  # the previous run's refusal, not this message's result yet
        return _result_of(record)

    def settled(row: Row, result: Result) -> None:
        pending.pop(row.number, None)
        run.finish_row(row, result)

    while pending and not run.stop.is_set():
        started = time.monotonic()
        run.run_in_pool(list(pending.values()), follow, settled)
        if pending:
            run.stop.wait(max(0.0, LEDGER_POLL_SECONDS - (time.monotonic() - started)))


def wait_through_ledger(run: CampaignRun, waiting: dict[int, Row]) -> None:
    """Until every accepted upgrade has ended in the ledger (the functions track them)."""
    ledger = run.context.runtime.ledger

    def check(row: Row) -> Result | None:
        previous = run.report.results[row.number]
        record = upgrade_record(ledger, row, previous.upgrade_id)
        if record is None or not record.ended:
            return None
        return with_outcome(previous, record)

    def ended(row: Row, result: Result) -> None:
        waiting.pop(row.number, None)
        run.report.write(row, result)
        run.progress.finished(result.outcome or "failed")

    while waiting and not run.stop.is_set():
        started = time.monotonic()
        run.run_in_pool(list(waiting.values()), check, ended)
        if waiting:
            run.stop.wait(max(0.0, LEDGER_POLL_SECONDS - (time.monotonic() - started)))


def upgrade_record(ledger: Ledger, row: Row, upgrade_id: str | None) -> UpgradeRecord | None:
    """The row's upgrade in the ledger: in its own partition, else (an upgrade found running) by its id."""
    record = _read(lambda: ledger.get_upgrade(row.request_id))
    if upgrade_id and (record is None or record.upgrade_id != upgrade_id):
        record = _read(lambda: ledger.find_upgrade(upgrade_id))
    return record


def with_outcome(previous: Result, record: UpgradeRecord) -> Result:
    message = previous.message
    if record.state != "completed" and isinstance(record.error_details, dict):
        details = record.error_details
        message = f"Partner Center: {details.get('code') or ''} {details.get('description') or ''}".strip()
    return Result(
        previous.status,
        upgrade_id=previous.upgrade_id,
        error_code=previous.error_code,
        partner_center_error_code=previous.partner_center_error_code,
        message=message,
        outcome=record.state,
        partner_center_status=record.partner_center_status,
    )


def _result_of(record: RequestRecord) -> Result:
    if record.status == "accepted":
        return Result("accepted", upgrade_id=record.upgrade_id)
    return Result(
        record.status,
        error_code=record.error_code,
        partner_center_error_code=record.partner_center_error_code,
        message=record.error_message,
    )


def _read(call: Callable[[], T]) -> T | None:
    """A ledger read; storage failing now is read again on the next round."""
    try:
        return call()
    except StorageUnavailableError:
        return None
