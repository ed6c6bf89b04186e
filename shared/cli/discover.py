"""``discover``: the customers still on legacy Azure, as a CSV that ``bulk`` takes as it is.

Reads Partner Center's customer list to its last page, then each customer's subscriptions, ``--concurrency`` at a
time, through the client's retry policy and pace like every other call; keeps the customers holding an active
legacy Azure subscription (the rule: :mod:`shared.upgrades.discovery`); asks eligibility for each one written with
``--check-eligibility``; and writes each customer as it is found (:mod:`shared.cli.candidates`). SIGINT or SIGTERM
stops asking: calls in flight finish and are written, the exit code is 130, and the same command goes on where
it stopped, asking again about no customer already looked at. A second signal stops at once: the customers in
flight are not written, and the next run asks about them again.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from rich.table import Table

from shared.errors import ProductUpgradeError, ValidationError
from shared.ids import OperationIds, correlation_guid
from shared.models import Customer, ProductUpgradeRequest, parse_guid
from shared.upgrades.campaigns import parse_campaign
from shared.upgrades.discovery import KEPT, NOT_LEGACY, SUSPENDED_ONLY, candidacy

from .candidates import UNREADABLE, CandidatesFile, CandidatesFileError, Finding, Previous
from .context import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, PROG, Context, UsageError
from .pool import WORKER_PREFIX, Fatal, stops_the_run
from .progress import CampaignProgress, pace_waits, print_tables

#: Counters shown beside the bar.
SHOWN = ("kept", "suspendedOnly", "unreadable", "throttled")

#: Seconds the main thread waits for a worker before it looks at the stop flag again.
_TICK = 0.2


def run_discover(context: Context, args: argparse.Namespace) -> int:
    output = Path(args.output)
    campaign = campaign_name(args.campaign, output)
    candidates = CandidatesFile(
        output, check_eligibility=args.check_eligibility, include_suspended=args.include_suspended
    )
    try:
        previous = candidates.read_previous()
    except CandidatesFileError as exc:
        raise UsageError(str(exc)) from None
    return Discovery(context, candidates, previous, campaign, args).execute()


def campaign_name(value: str | None, output: Path) -> str | None:
    """``--campaign`` checked against the naming rules (:mod:`shared.upgrades.campaigns`); without it, the output's
    name when it is one."""
    if value is None:
        try:
            return parse_campaign(output.stem).name
        except ValidationError:
            return None
    try:
        return parse_campaign(value.strip(), "--campaign").name
    except ValidationError as exc:
        raise UsageError(exc.message) from None


class Discovery:
    def __init__(
        self,
        context: Context,
        candidates: CandidatesFile,
        previous: Previous,
        campaign: str | None,
        args: argparse.Namespace,
    ) -> None:
        self.context = context
        self.candidates = candidates
        self.previous = previous
        self.campaign = campaign
        self.check_eligibility = bool(args.check_eligibility)
        self.concurrency = int(args.concurrency)
        # Every call of one discovery shares a correlation id: the campaign's (or the output's) name as a GUID.
        self.correlation = campaign or f"discover {candidates.path.name}"
        self.stop = threading.Event()
        #: A second Ctrl-C: stop waiting for the calls in flight too.
        self.abandon = threading.Event()
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self.verdicts: Counter[str] = Counter(previous.verdicts)
        self.eligible = previous.eligible
        self.eligibility_failed = previous.eligibility_failed

    def execute(self) -> int:
        runtime = self.context.runtime
        runtime.tokens.get_token()  # refused credentials stop the run before anything is asked (exit 3)
        try:
            self.candidates.start(self.previous)
        except OSError as exc:
            raise UsageError(
                f"{self.candidates.path} cannot be written ({exc.strerror or type(exc).__name__})"
            ) from None
        try:
            with self._signals():
                customers = self._list_customers()
                to_ask = [c for c in customers if c.id.lower() not in self.previous.done]
                progress = CampaignProgress(len(customers), "discover", stream=self.context.output.stderr)
                progress.shown = SHOWN
                progress.show_waiting(pace_waits(runtime.pace))
                with _counting_throttled(runtime.session, progress), progress:
                    notes = {note["customerId"].lower(): note["verdict"] for note in self.previous.journal}
                    progress.carry([notes[c.id.lower()] for c in customers if c.id.lower() in notes])
                    if not self.stop.is_set():
                        self._examine_all(to_ask, progress)
        finally:
            self.candidates.close()
        return self._summarize(len(customers), progress.counts.get("throttled", 0))

    # -- the customer list -----------------------------------------------------------------------------
    def _list_customers(self) -> list[Customer]:
        """Every page of the customer list (a customer listed twice counted once); a stop ends it early."""
        client = self.context.runtime.client
        customers: dict[str, Customer] = {}
        pages = client.list_customers(correlation_id=correlation_guid(self.correlation))
        for number, page in enumerate(pages, start=1):
            for customer in page:
                customers.setdefault(customer.id.lower(), customer)
            self.context.output.warn(f"customer list: {len(customers)} customers ({number} page(s))")
            if self.stop.is_set():
                break
        return list(customers.values())

    # -- each customer ---------------------------------------------------------------------------------
    def _examine_all(self, customers: list[Customer], progress: CampaignProgress) -> None:
        """``concurrency`` customers at a time; each finding written here, in this thread, as it comes.

        A stop drops the customers not started and waits for the ones in flight; ``abandon`` stops waiting too
        (their threads end on their own, their customers unwritten). A customer's error that no other customer
        would escape (:class:`Fatal`) stops the run and is raised once the calls in flight are written.
        """
        fatal: Fatal | None = None
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=WORKER_PREFIX)
        pending: dict[Future[Finding | None], Customer] = {pool.submit(self._guarded, c): c for c in customers}
        try:
            while pending and not self.abandon.is_set():
                finished, _ = wait(pending, timeout=_TICK, return_when=FIRST_COMPLETED)
                for future in finished:
                    del pending[future]
                    try:
                        finding = future.result()
                    except Fatal as exc:
                        fatal = fatal or exc
                        continue
                    if finding is not None:
                        self._record(finding, progress)
                if self.stop.is_set():
                    for future in [f for f in pending if f.cancel()]:
                        del pending[future]
        finally:
            pool.shutdown(wait=not self.abandon.is_set(), cancel_futures=True)
        for future in pending:  # left behind by abandon: those that ended meanwhile are written all the same
            if future.done() and not future.cancelled() and future.exception() is None:
                finding = future.result()
                if finding is not None:
                    self._record(finding, progress)
        if fatal is not None:
            self.context.output.warn(f"stopped; what was found is in {self.candidates.path}: run again to go on")
            raise fatal.error

    def _guarded(self, customer: Customer) -> Finding | None:
        with self._lock:
            self._in_flight.add(customer.id)
        try:
            return self._examine(customer)
        except Fatal:
            self.stop.set()  # at once, in this worker: it must not start another customer
            raise
        finally:
            with self._lock:
                self._in_flight.discard(customer.id)

    def _examine(self, customer: Customer) -> Finding | None:
        """One customer: its subscriptions, the rule, and eligibility when asked for. None when stopped first."""
        if self.stop.is_set():
            return None
        client = self.context.runtime.client
        try:
            subscriptions = client.get_subscriptions(customer.id, correlation_id=correlation_guid(self.correlation))
        except ProductUpgradeError as exc:
            _escalate(exc)
            return Finding(customer, UNREADABLE, reason=f"subscriptions could not be read: {exc.message}")
        found = candidacy(subscriptions)
        finding = Finding(customer, found.verdict, found)
        if self.check_eligibility and finding.written(self.candidates.include_suspended):
            self._ask_eligibility(finding)
        return finding

    def _ask_eligibility(self, finding: Finding) -> None:
        try:
            request = ProductUpgradeRequest(parse_guid(finding.customer.id, "customerId"))
            answer = self.context.runtime.workflow.check_eligibility(request, OperationIds.new(self.correlation))
        except ValidationError as exc:
            finding.eligibility_failed, finding.reason = True, f"eligibility was not asked: {exc.message}"
        except ProductUpgradeError as exc:
            _escalate(exc)
            finding.eligibility_failed, finding.reason = True, f"eligibility could not be asked: {exc.message}"
        else:
            finding.is_eligible = answer.is_eligible
            running = f"upgrade {answer.upgrade_id} is in progress" if answer.upgrade_id else None
            finding.reason = answer.reason or running

    def _record(self, finding: Finding, progress: CampaignProgress) -> None:
        self.candidates.record(finding)
        self.verdicts[finding.verdict] += 1
        self.eligible += finding.is_eligible is True
        self.eligibility_failed += finding.eligibility_failed
        progress.finished(finding.verdict)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT (Ctrl-C) and SIGTERM stop asking and let the calls in flight finish, saying so at once; a second
        one stops waiting for them (their customers are asked again by the next run)."""
        output = self.context.output

        def handler(signum: int, frame: FrameType | None) -> None:
            with self._lock:
                in_flight = len(self._in_flight)
            if not self.stop.is_set():
                self.stop.set()
                output.warn(
                    f"stopping: no new customers; finishing the {in_flight} calls in flight "
                    "(Ctrl-C again to stop at once: those customers are asked again by the next run)"
                )
            elif not self.abandon.is_set():
                self.abandon.set()
                output.warn(f"stopping now: the {in_flight} customers in flight are asked again by the next run")

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    # -- the end ---------------------------------------------------------------------------------------
    def _summarize(self, seen: int, throttled: int) -> int:
        output = self.context.output
        interrupted = self.stop.is_set()
        counts = discovery_counts(seen, self.verdicts, self.eligible if self.check_eligibility else None)
        body: dict[str, Any] = {
            "counts": counts,
            "rows": self.candidates.rows_written,
            "output": str(self.candidates.path),
            "campaign": self.campaign,
            "throttled": throttled,
        }
        if interrupted:
            body["interrupted"] = True
        if not output.as_json:
            shown = {name: n for name, n in counts.items() if n is not None}
            print_tables(_counts_table(shown), output.stdout)
            output.say(f"candidates: {self.candidates.path} ({self.candidates.rows_written} rows)")
            if not interrupted and self.candidates.rows_written:
                output.say(_next_step(self.candidates.path, self.campaign))
        output.document(body)
        if interrupted:
            output.warn("interrupted: calls in flight finished and are written; run again to go on where it stopped")
            return EXIT_INTERRUPTED
        return EXIT_REFUSED if counts["unreadable"] or self.eligibility_failed else EXIT_OK


def discovery_counts(seen: int, verdicts: Counter[str], eligible: int | None) -> dict[str, int | None]:
    """The end counts: customers listed, kept, suspended only, without legacy Azure, eligible, unreadable."""
    return {
        "seen": seen,
        "kept": verdicts[KEPT],
        "suspendedOnly": verdicts[SUSPENDED_ONLY],
        "notLegacy": verdicts[NOT_LEGACY],
        "eligible": eligible,
        "unreadable": verdicts[UNREADABLE],
    }


def _counts_table(counts: dict[str, int]) -> list[Table]:
    table = Table(title="Customers", title_justify="left")
    table.add_column("count")
    table.add_column("customers", justify="right")
    for name, n in counts.items():
        table.add_row(name, str(n))
    return [table]


def _next_step(path: Path, campaign: str | None) -> str:
    report = path.with_name(f"{path.stem}-report.csv")
    command = f"{PROG} bulk {shlex.quote(str(path))} --report {shlex.quote(str(report))}"
    if campaign:
        command += f" --campaign {shlex.quote(campaign)}"
    return f"review the CSV, then: {command}"


def _escalate(exc: ProductUpgradeError) -> None:
    """Errors no other customer would escape: our settings or credentials (exit 3), a service not reached (4)."""
    if stops_the_run(exc):
        raise Fatal(exc) from None


@contextlib.contextmanager
def _counting_throttled(session: requests.Session, progress: CampaignProgress) -> Iterator[None]:
    """Count Partner Center's 429 answers on the shared session (the retry policy honours them)."""

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code == 429:
            progress.count("throttled")

    hooks = session.hooks.setdefault("response", [])
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)
