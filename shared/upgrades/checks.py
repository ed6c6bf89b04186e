"""The tracking queue's message: one status check of one upgrade, as a typed value, and what a check came to."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from shared.errors import ValidationError
from shared.models import parse_guid
from shared.store.records import UpgradeRecord

#: Bounds of a tracking message's counts. The check number is stored in the ledger (a 32-bit integer in the
#: table); the failures only choose a backoff that stops growing after two, and 2 ** failures must stay cheap.
MAX_CHECKS = 2**31 - 1
MAX_FAILURES = 10_000
#: The ledger key of an upgrade: the request id (MS-RequestId) that started it, always a GUID.
_LEDGER_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

CheckResult = Literal["running", "ended", "retry", "stale", "done", "missing", "pending"]


@dataclass(frozen=True)
class TrackingCheck:
    """A status check of one upgrade: the message on the tracking queue."""

    upgrade_id: str
    customer_id: str
    product_family: str
    #: The ledger partition of the upgrade's record (the request id that started it).
    ledger_key: str
    #: Which check this is (1 for the first): the record counts the checks done, so a stale one is dropped.
    check: int = 1
    #: Transient failures in a row, for the backoff.
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "upgradeId": self.upgrade_id,
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "ledgerKey": self.ledger_key,
            "check": self.check,
            "failures": self.failures,
        }

    @classmethod
    def from_json(cls, data: object) -> TrackingCheck:
        if not isinstance(data, dict):
            raise ValidationError("a tracking message must be a JSON object")
        upgrade_id, ledger_key, family = data.get("upgradeId"), data.get("ledgerKey"), data.get("productFamily")
        check, failures = data.get("check", 1), data.get("failures", 0)
        if not all(isinstance(value, str) and 0 < len(value) <= 128 for value in (upgrade_id, ledger_key, family)):
            raise ValidationError("a tracking message needs upgradeId, ledgerKey and productFamily")
        if not (_count(check, 1, MAX_CHECKS) and _count(failures, 0, MAX_FAILURES)):
            raise ValidationError(
                f"a tracking message's check (1 to {MAX_CHECKS}) and failures (0 to {MAX_FAILURES}) must be counts"
            )
        assert isinstance(upgrade_id, str) and isinstance(ledger_key, str) and isinstance(family, str)
        if not _LEDGER_KEY.fullmatch(ledger_key):
            raise ValidationError("a tracking message's ledgerKey must be a ledger key (a request id, a GUID)")
        return cls(upgrade_id, parse_guid(data.get("customerId"), "customerId"), family, ledger_key, check, failures)

    def failed_again(self) -> TrackingCheck:
        """The same check after one more transient failure (the count stops at :data:`MAX_FAILURES`)."""
        return replace(self, failures=min(self.failures + 1, MAX_FAILURES))

    @classmethod
    def first(cls, record: UpgradeRecord) -> TrackingCheck:
        return cls(record.upgrade_id, record.customer_id, record.product_family, record.ledger_key, record.checks + 1)


def _count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
