"""``bulk`` straight to Partner Center: each row created by this process, outcomes learnt by polling.

Worker threads share the runtime (one session, one token cache: one token request for the whole run). With
storage configured, each status check is the tracker's own (recorded in the ledger, one outcome message per
upgrade); an upgrade the ledger does not hold is asked about directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import requests

from shared.errors import PartnerCenterError, ProductUpgradeError
from shared.models import Campaign
from shared.upgrades.workflow import OperationIds, UpgradeOrder

from . import ledger_outcome
from .campaign import Result, Row
from .context import Context
from .follow import check_through_tracker, outcome_of, tracked
from .html_report import not_upgraded
from .pool import Done, Fatal, RowPool, stops_the_run
from .progress import CampaignProgress, pace_waits


class DirectChannel:
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

    @property
    def poll_seconds(self) -> float:
        return self.context.settings.poll_seconds

    def prepare(self, sending: bool) -> None:
        if not sending:
            return
        # One token for the whole run, and refused credentials stop the run before anything is sent.
        self.context.runtime.tokens.get_token()

    def send(self, rows: list[Row], done: Done) -> None:
        self.pool.run(rows, self._create, done, abandoned=done)

    def _create(self, row: Row) -> Result | None:
        if self.pool.stop.is_set():
            return None
        assert row.request is not None
        try:
            # The row's key: a request already accepted is answered from the ledger.
            ids = OperationIds.of_caller(row.request_id, self.correlation_id)
            order = UpgradeOrder(
                row.request,
                ids,
                caller_request_id=row.key,
                campaign=self.campaign,
                check_eligibility=self.check_eligibility,
            )
            created = self.context.runtime.workflow.create(order)
        except ProductUpgradeError as exc:
            if stops_the_run(exc):
                raise Fatal(exc) from None
            return Result.refused(exc)
        return Result("accepted", upgrade_id=created.upgrade_id)

    def outcome(self, row: Row, previous: Result) -> Result | None:
        """One status check of an accepted row: its result once the upgrade has ended, else None."""
        if self.pool.stop.is_set():
            return None
        assert row.request is not None and previous.upgrade_id is not None
        in_ledger, through_tracker = self._tracked(row, previous)
        if in_ledger:
            return through_tracker
        try:
            status = self.context.runtime.workflow.get_status(
                previous.upgrade_id, row.request, OperationIds.new(self.correlation_id)
            )
        except ProductUpgradeError as exc:
            if stops_the_run(exc):
                raise Fatal(exc) from None
            if exc.transient or (isinstance(exc, PartnerCenterError) and exc.caller_refused):
                return None  # asked again next round: a refusal of our own account is not the upgrade's end
            return previous.ended("failed", None, exc.message)
        outcome = outcome_of(status)
        if outcome == "partial":
            items = [item.to_json() for item in status.line_items]
            return previous.ended(outcome, status.status, f"not upgraded: {not_upgraded(items)}")
        return None if outcome == "running" else previous.ended(outcome, status.status)

    def _tracked(self, row: Row, previous: Result) -> tuple[bool, Result | None]:
        """(whether the ledger holds the upgrade, its outcome through the tracker when it has ended)."""
        runtime = self.context.runtime
        assert previous.upgrade_id is not None
        record = tracked(runtime, row.request_id, previous.upgrade_id)
        if record is None:
            return False, None
        if not record.ended:
            try:
                record = check_through_tracker(runtime, record)
            except ProductUpgradeError as exc:
                if stops_the_run(exc):
                    raise Fatal(exc) from None
                return True, None  # storage or Partner Center failed this round: next round
        return True, (ledger_outcome.result(previous, record) if record.ended else None)

    @contextlib.contextmanager
    def watching(self, progress: CampaignProgress) -> Iterator[None]:
        """Count Partner Center's 429 answers on the shared session (the retry policy honours them), and say when
        and why calls wait for Partner Center."""
        session = self.context.runtime.session
        progress.show_waiting(pace_waits(self.context.runtime.pace))

        def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            if response.status_code == 429:
                progress.count("throttled")

        hooks = session.hooks.setdefault("response", [])
        hooks.append(hook)
        try:
            yield
        finally:
            hooks.remove(hook)
