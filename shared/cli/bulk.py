"""``bulk``: a campaign from a CSV, straight to Partner Center with bounded concurrency (or through the queue).

Every row is validated before anything is sent. Worker threads share the runtime (one session, one token
cache: one token request for the whole run). SIGINT or SIGTERM stops sending; calls in flight finish, the
report is written, the exit code is 130. Running the same command again resumes from the report.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from shared.errors import CredentialError, PartnerCenterError, ProductUpgradeError, SettingError
from shared.upgrades.tracking import TrackingCheck
from shared.upgrades.workflow import OperationIds

from .campaign import Campaign, CampaignFileError, ReportWriter, Result, Row, read_campaign, read_previous_report
from .context import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    ConfigurationError,
    Context,
    UsageError,
    describe,
)
from .enqueue import check_storage, send_through_queue, upgrade_record, wait_through_ledger, with_outcome
from .follow import outcome_of
from .progress import CampaignProgress, print_tables, summary_tables

#: Seconds the main thread waits for a worker before it looks at the stop flag again.
_TICK = 0.2


class Fatal(Exception):
    """Settings or credentials failed mid-run: stop the campaign, the operator must act (exit 3)."""

    def __init__(self, error: ProductUpgradeError) -> None:
        super().__init__(describe(error))
        self.error = error


def run_bulk(context: Context, args: argparse.Namespace) -> int:
    try:
        campaign = read_campaign(Path(args.file), args.campaign)
        report_path = Path(args.report)
        previous = read_previous_report(report_path)
    except CampaignFileError as exc:
        raise UsageError(str(exc)) from None
    run = CampaignRun(context, campaign, report_path, previous, args)
    return run.execute()


class CampaignRun:
    def __init__(
        self,
        context: Context,
        campaign: Campaign,
        report_path: Path,
        previous: dict[tuple[str, str], Result],
        args: argparse.Namespace,
    ) -> None:
        self.context = context
        self.campaign = campaign
        self.args = args
        self.stop = threading.Event()
        self.kept: dict[int, Result] = {}
        self.to_send: list[Row] = []
        self.settled: list[tuple[Row, Result]] = []
        for row in campaign.rows:
            if row.error is not None:
                self.settled.append((row, Result("rejected", error_code="invalid_request", message=row.error)))
            elif row.duplicate_of is not None:
                message = f"customer already listed in row {row.duplicate_of}; sent once"
                self.settled.append((row, Result("skipped", message=message)))
            elif row.identity in previous:
                self.kept[row.number] = previous[row.identity]
            else:
                self.to_send.append(row)
        # Rows kept from a report written with --wait keep their outcome columns, with or without --wait now.
        with_outcomes = args.wait or any(result.outcome for result in self.kept.values())
        self.report = ReportWriter(report_path, campaign, wait=with_outcomes)
        self.progress = CampaignProgress(len(campaign.rows), f"bulk {campaign.name}", stream=context.output.stderr)

    # -- the run ---------------------------------------------------------------------------------------
    def execute(self) -> int:
        fatal: Fatal | None = None
        if self.args.enqueue:
            check_storage(self)
        elif self.to_send:
            # One token for the whole run, and refused credentials stop the run before anything is sent.
            self.context.runtime.tokens.get_token()
        with self._signals(), self._count_throttling(), self.progress:
            self.report.start(self.kept)
            for row, result in self.settled:
                self.report.write(row, result)
            # Rows kept from the last run and rows refused before sending: counted, but not in the rate.
            self.progress.carry([r.status for r in self.kept.values()] + [r.status for _, r in self.settled])
            try:
                if self.args.enqueue:
                    send_through_queue(self)
                else:
                    self._send_direct()
                if self.args.wait and not self.stop.is_set():
                    self._wait_for_outcomes()
            except Fatal as exc:
                fatal = exc
                self.stop.set()
        self.report.finish()
        if fatal is not None:
            raise ConfigurationError(str(fatal)) from None
        return self._summarize()

    def _send_direct(self) -> None:
        correlation_id = self.campaign.name
        workflow = self.context.runtime.workflow

        def send(row: Row) -> Result | None:
            if self.stop.is_set():
                return None
            assert row.request is not None
            ids = OperationIds(row.request_id, correlation_id)
            try:
                created = workflow.create(
                    row.request,
                    ids,
                    check_eligibility=self.args.check_eligibility,
                    keyed=True,  # the row's key: a request already accepted is answered from the ledger
                    caller_request_id=row.key,
                )
            except ProductUpgradeError as exc:
                if _needs_operator(exc):
                    raise Fatal(exc) from None
                return _refused(exc)
            return Result("accepted", upgrade_id=created.upgrade_id)

        self.run_in_pool(self.to_send, send, self.finish_row)

    def finish_row(self, row: Row, result: Result) -> None:
        self.report.write(row, result)
        self.progress.finished(result.status)

    def run_in_pool(
        self,
        rows: list[Row],
        task: Callable[[Row], Result | None],
        done: Callable[[Row, Result], None],
    ) -> None:
        """``task`` for each row, ``--concurrency`` at a time; ``done`` in this thread as each finishes.

        When ``stop`` is set, rows not started are dropped and the ones in flight finish.
        """
        fatal: Fatal | None = None

        def guarded(row: Row) -> Result | None:
            try:
                return task(row)
            except Fatal:
                self.stop.set()  # at once: no worker starts another row
                raise

        with ThreadPoolExecutor(max_workers=self.args.concurrency, thread_name_prefix="bulk") as pool:
            pending: dict[Future[Result | None], Row] = {pool.submit(guarded, row): row for row in rows}
            while pending:
                finished, _ = wait(pending, timeout=_TICK, return_when=FIRST_COMPLETED)
                for future in finished:
                    row = pending.pop(future)
                    try:
                        result = future.result()
                    except Fatal as exc:
                        fatal = fatal or exc
                        continue
                    if result is not None:
                        done(row, result)
                if self.stop.is_set():
                    for future in list(pending):
                        if future.cancel():
                            del pending[future]
        if fatal is not None:
            raise fatal

    # -- --wait ----------------------------------------------------------------------------------------
    def _wait_for_outcomes(self) -> None:
        rows = {row.number: row for row in self.campaign.rows}
        waiting = {
            number: result
            for number, result in self.report.results.items()
            if result.status == "accepted" and result.upgrade_id and not result.outcome
        }
        self.progress.restart(
            len(waiting) + self._ended_count(), f"wait {self.campaign.name}", ("completed", "failed", "throttled")
        )
        self.progress.carry([result.outcome for result in self.report.results.values() if result.outcome])
        if self.args.enqueue:
            wait_through_ledger(self, {number: rows[number] for number in waiting})
        else:
            self._poll_partner_center({number: rows[number] for number in waiting})

    def _ended_count(self) -> int:
        return sum(1 for result in self.report.results.values() if result.status == "accepted" and result.outcome)

    def _poll_partner_center(self, waiting: dict[int, Row]) -> None:
        """Every ``PRODUCT_UPGRADE_POLL_SECONDS``, one status call per running upgrade, ``--concurrency`` at a time.

        With storage, each check is the tracker's own (recorded in the ledger, one outcome message per upgrade);
        an upgrade the ledger does not hold is asked about directly.
        """
        runtime = self.context.runtime
        workflow = runtime.workflow
        poll_seconds = self.context.settings.poll_seconds
        correlation_id = self.campaign.name

        def tracked(row: Row, previous: Result) -> tuple[bool, Result | None]:
            """(whether the ledger holds the upgrade, its outcome through the tracker when it has ended)."""
            if runtime.tracker is None:
                return False, None
            record = upgrade_record(runtime.ledger, row, previous.upgrade_id)
            if record is None:
                return False, None
            if not record.ended:
                try:
                    runtime.tracker.check(TrackingCheck.first(record))
                except ProductUpgradeError as exc:
                    if _needs_operator(exc):
                        raise Fatal(exc) from None
                    return True, None  # storage or Partner Center failed this round: next round
                record = upgrade_record(runtime.ledger, row, previous.upgrade_id)
            return True, (with_outcome(previous, record) if record is not None and record.ended else None)

        def check(row: Row) -> Result | None:
            if self.stop.is_set():
                return None
            previous = self.report.results[row.number]
            assert row.request is not None and previous.upgrade_id is not None
            in_ledger, through_tracker = tracked(row, previous)
            if in_ledger:
                return through_tracker
            try:
                status = workflow.get_status(previous.upgrade_id, row.request, OperationIds.new(correlation_id))
            except ProductUpgradeError as exc:
                if _needs_operator(exc):
                    raise Fatal(exc) from None
                if exc.transient:
                    return None  # asked again next round
                return _with_outcome(previous, "failed", None, exc.message)
            outcome = outcome_of(status)
            if outcome == "running":
                return None
            return _with_outcome(previous, outcome, status.status, None)

        while waiting and not self.stop.is_set():
            started = time.monotonic()

            def ended(row: Row, result: Result) -> None:
                waiting.pop(row.number, None)
                self.report.write(row, result)
                self.progress.finished(result.outcome or "failed")

            self.run_in_pool(list(waiting.values()), check, ended)
            if waiting:
                self.stop.wait(max(0.0, poll_seconds - (time.monotonic() - started)))

    # -- the end ---------------------------------------------------------------------------------------
    def _summarize(self) -> int:
        results = self.report.results
        counts = Counter(result.status for result in results.values())
        errors = Counter(result.error_code for result in results.values() if result.error_code)
        outcomes = Counter(result.outcome for result in results.values() if result.outcome)
        output = self.context.output
        interrupted = self.stop.is_set()
        body: dict[str, Any] = {
            "counts": dict(counts),
            "rows": len(self.campaign.rows),
            "report": str(self.report.path),
            "campaign": self.campaign.name,
            "throttled": self.progress.counts.get("throttled", 0),
        }
        if self.args.wait:
            body["outcomes"] = dict(outcomes)
        if interrupted:
            body["interrupted"] = True
        if not output.as_json:
            print_tables(summary_tables(counts, errors, outcomes), output.stdout)
            output.say(f"report: {self.report.path} ({len(results)} of {len(self.campaign.rows)} rows)")
        output.document(body)
        if interrupted:
            output.warn("interrupted: calls in flight finished and the report is written; run again to resume")
            return EXIT_INTERRUPTED
        unsettled = len(self.campaign.rows) - len(results)
        refused = any(result.status not in ("accepted", "skipped") for result in results.values())
        not_completed = self.args.wait and any(
            result.status == "accepted" and result.outcome != "completed" for result in results.values()
        )
        return EXIT_REFUSED if refused or not_completed or unsettled else EXIT_OK

    # -- plumbing --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT (Ctrl-C) and SIGTERM stop sending instead of killing threads mid-call."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop.set()

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    @contextlib.contextmanager
    def _count_throttling(self) -> Iterator[None]:
        """Count Partner Center's 429 answers on the shared session (the retry policy honours them)."""
        if self.args.enqueue:
            yield
            return
        session = self.context.runtime.session

        def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            if response.status_code == 429:
                self.progress.count("throttled")

        hooks = session.hooks.setdefault("response", [])
        hooks.append(hook)
        try:
            yield
        finally:
            hooks.remove(hook)


def _needs_operator(exc: ProductUpgradeError) -> bool:
    """Settings or our own credentials: every other row would fail the same way."""
    return isinstance(exc, SettingError | CredentialError) or (
        isinstance(exc, PartnerCenterError) and exc.token_rejected
    )


def _refused(exc: ProductUpgradeError) -> Result:
    return Result(
        "failed" if exc.transient else "rejected",
        error_code=exc.code,
        partner_center_error_code=exc.partner_center_error_code,
        message=exc.message,
    )


def _with_outcome(previous: Result, outcome: str, status: str | None, message: str | None) -> Result:
    return Result(
        previous.status,
        upgrade_id=previous.upgrade_id,
        error_code=previous.error_code,
        partner_center_error_code=previous.partner_center_error_code,
        message=message or previous.message,
        outcome=outcome,
        partner_center_status=status,
    )
