"""Counts per campaign, kept beside the ledger, so that a campaign's summary is one read and never a scan.

Each campaign has a partition of its own in the ledger's table, ``campaign|{key}``, holding:

- ``counts|0`` .. ``counts|15``: the campaign's counts in sixteen shards: upgrades by state, the first and last
  ``acceptedAt``, the last ``endedAt``, and a histogram of minutes from accepted to ended. Only their sums mean
  anything: a change is counted in any shard (the worker thread's own, another drawn at random after a
  conflict), so that workers counting at the same moment seldom meet on one ETag; a summary reads the sixteen
  in one query.
- ``counted|{ledger key}``: one row per upgrade of the campaign, saying which of its states is counted (and in
  which histogram bucket).

A state change is counted in one entity-group transaction that changes the upgrade's ``counted|`` row and its
shard, both conditional on their ETags: counted entirely or not at all. Counting a state already counted finds
the row saying so and writes nothing. So a count whose answer was lost (the SDK sends it again, it fails on its
own first copy, the row then says "counted"), a worker that died between the record's write and its count (the
next write of the record counts it), and two workers counting the same change all end with it counted once.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger(__name__)

#: Every state a campaign's upgrades are counted in (the summary's ``counts`` keys), ended ones after running.
COUNTED_STATES = ("running", "completed", "partial", "failed", "expired")
ENDED_STATES = COUNTED_STATES[1:]

PARTITION_PREFIX = "campaign|"
SHARD_PREFIX = "counts|"
COUNTED_PREFIX = "counted|"
#: Shards of one campaign's counts.
SHARDS = 16
#: Conditional transactions tried before a count is left for the next write of the record (or the sweep), with
#: a jittered pause after each conflict, doubling up to MAX_PAUSE_SECONDS (a few seconds in all at worst).
MAX_ATTEMPTS = 12
FIRST_PAUSE_SECONDS = 0.01
MAX_PAUSE_SECONDS = 0.5

#: The histogram of minutes to end: bucket 0 holds [0, 1) minute, bucket b >= 1 holds [RATIO**(b-1), RATIO**b):
#: each bucket 5 % wider than the one before, so a median read from it is within 2.5 % of the exact one, and a
#: week (10,080 minutes) needs 191 buckets. Beyond MAX_BUCKET everything shares the last one: bounded in size.
RATIO = 1.05
MAX_BUCKET = 240

_STATE_COLUMNS = {state: state.capitalize() for state in COUNTED_STATES}


def bucket_of(minutes: float) -> int:
    """The histogram bucket of an upgrade that ended ``minutes`` after it was accepted."""
    if minutes < 1:
        return 0
    return min(MAX_BUCKET, 1 + math.floor(math.log(minutes) / math.log(RATIO)))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The minutes a bucket holds, ``[low, high)``."""
    if bucket <= 0:
        return 0.0, 1.0
    return RATIO ** (bucket - 1), RATIO**bucket


def partition_of(campaign_key: str) -> str:
    return PARTITION_PREFIX + campaign_key


@dataclass(frozen=True)
class CountedUpgrade:
    """What counting needs of an upgrade record (the ledger's, without importing it)."""

    ledger_key: str
    campaign: str
    campaign_key: str
    state: str
    #: ISO 8601 UTC text of one width (the ledger's): it orders as text as in time.
    accepted_at: str
    ended_at: str | None
    minutes_to_end: float | None

    @property
    def bucket(self) -> int | None:
        if self.state not in ENDED_STATES or self.minutes_to_end is None:
            return None
        return bucket_of(self.minutes_to_end)


@dataclass
class CampaignCounts:
    """A campaign's counts: one shard's, the sum of all shards, or (the self-check) a full scan's."""

    campaign: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_STATES, 0))
    first_accepted_at: str | None = None
    last_accepted_at: str | None = None
    last_ended_at: str | None = None
    #: Histogram bucket -> upgrades that ended in it (buckets with none left out).
    minutes_to_end: dict[int, int] = field(default_factory=dict)

    @property
    def upgrades(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(self.counts[state] for state in ENDED_STATES)

    def add(self, upgrade: CountedUpgrade, sign: int = 1) -> None:
        """Count (or, with ``sign`` -1, uncount) the upgrade in its state. Times only ever widen: an upgrade counted
        once stays counted (in one state or another), so its acceptance is never taken back."""
        self.counts[upgrade.state] = self.counts.get(upgrade.state, 0) + sign
        if sign > 0:
            self.first_accepted_at = _min(self.first_accepted_at, upgrade.accepted_at)
            self.last_accepted_at = _max(self.last_accepted_at, upgrade.accepted_at)
            if upgrade.state in ENDED_STATES:
                self.last_ended_at = _max(self.last_ended_at, upgrade.ended_at)

    def add_bucket(self, bucket: int | None, sign: int = 1) -> None:
        if bucket is None:
            return
        left = self.minutes_to_end.get(bucket, 0) + sign
        if left:
            self.minutes_to_end[bucket] = left
        else:
            self.minutes_to_end.pop(bucket, None)

    @classmethod
    def merged(cls, shards: Iterable[CampaignCounts]) -> CampaignCounts | None:
        """The sum of a campaign's shards; None when there are none (no upgrade of that campaign was counted)."""
        total: CampaignCounts | None = None
        for shard in shards:
            if total is None:
                total = cls(shard.campaign)
            for state, n in shard.counts.items():
                total.counts[state] = total.counts.get(state, 0) + n
            total.first_accepted_at = _min(total.first_accepted_at, shard.first_accepted_at)
            total.last_accepted_at = _max(total.last_accepted_at, shard.last_accepted_at)
            total.last_ended_at = _max(total.last_ended_at, shard.last_ended_at)
            for bucket, n in shard.minutes_to_end.items():
                total.add_bucket(bucket, n)
        return total

    @classmethod
    def scanned(cls, campaign: str, upgrades: Iterable[CountedUpgrade]) -> CampaignCounts:
        """The counts a full scan of the campaign's records gives: what the kept counts must equal."""
        counts = cls(campaign)
        for upgrade in upgrades:
            counts.add(upgrade)
            counts.add_bucket(upgrade.bucket)
        return counts


def _min(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


# -- the table -----------------------------------------------------------------------------------------------


def read(table: TableClient, campaign_key: str, **limits: Any) -> CampaignCounts | None:
    """The campaign's counts, summed over its shards: one query of one partition, sixteen small rows at most."""
    entities = table.query_entities(
        "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        parameters={"pk": partition_of(campaign_key), "low": SHARD_PREFIX, "high": SHARD_PREFIX[:-1] + "}"},
        results_per_page=SHARDS,
        **limits,
    )
    return CampaignCounts.merged(_shard_from(entity) for entity in entities)


def count(table: TableClient, upgrade: CountedUpgrade, **limits: Any) -> bool:
    """Count the upgrade in its present state, exactly once; True once it is counted (now or before), False
    when the partition kept changing under it (left for the next write of the record, or the sweep). Raises the
    SDK's errors when storage fails."""
    from azure.core import MatchConditions
    from azure.data.tables import TableTransactionError, UpdateMode

    partition = partition_of(upgrade.campaign_key)
    counted_row = COUNTED_PREFIX + upgrade.ledger_key
    # A worker thread starts on a shard of its own (thread ids are aligned addresses: hashed), so that threads
    # counting at once seldom meet; after a conflict it draws another at random.
    index = zlib.crc32(threading.get_ident().to_bytes(8, "little")) % SHARDS
    for attempt in range(MAX_ATTEMPTS):
        shard_row = f"{SHARD_PREFIX}{index}"
        index = random.randrange(SHARDS)
        entities = {
            entity["RowKey"]: entity
            for entity in table.query_entities(
                # The SDK substitutes parameters between spaces: none may touch a parenthesis.
                "PartitionKey eq @pk and ( RowKey eq @counted or RowKey eq @shard )",
                parameters={"pk": partition, "counted": counted_row, "shard": shard_row},
                **limits,
            )
        }
        before = entities.get(counted_row)
        if before is not None and before.get("State") == upgrade.state:
            return True
        shard = entities.get(shard_row)
        counts = _shard_from(shard) if shard is not None else CampaignCounts(upgrade.campaign)
        if before is not None:
            counts.counts[str(before["State"])] = counts.counts.get(str(before["State"]), 0) - 1
            counts.add_bucket(_bucket(before.get("Bucket")), -1)
        counts.add(upgrade)
        counts.add_bucket(upgrade.bucket)
        row: dict[str, Any] = {"PartitionKey": partition, "RowKey": counted_row, "State": upgrade.state}
        if upgrade.bucket is not None:
            row["Bucket"] = upgrade.bucket
        operations: list[Any] = [
            _write(row, before, UpdateMode, MatchConditions),
            _write(_shard_entity(partition, shard_row, counts), shard, UpdateMode, MatchConditions),
        ]
        try:
            table.submit_transaction(operations, **limits)
            return True
        except TableTransactionError as exc:
            # Another worker changed the row or the shard first (or this very transaction landed and its answer
            # was lost): read again and see.
            log.debug("Counting upgrade %s: %s; reading again", upgrade.ledger_key, getattr(exc, "error_code", exc))
        time.sleep(random.uniform(0, min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2**attempt)))
    log.warning("Counting upgrade %s in campaign %s kept meeting other writers", upgrade.ledger_key, upgrade.campaign)
    return False


def _write(entity: dict[str, Any], current: Mapping[str, Any] | None, update_mode: Any, conditions: Any) -> Any:
    """Insert where there was nothing (two inserting at once: one fails), else replace if still as read."""
    if current is None:
        return ("create", entity)
    etag = current.metadata["etag"]  # type: ignore[attr-defined]
    return ("update", entity, {"mode": update_mode.REPLACE, "etag": etag, "match_condition": conditions.IfNotModified})


def _bucket(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shard_entity(partition: str, row: str, counts: CampaignCounts) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": partition,
        "RowKey": row,
        "Campaign": counts.campaign,
        **{column: counts.counts.get(state, 0) for state, column in _STATE_COLUMNS.items()},
        "MinutesToEnd": json.dumps(dict(sorted(counts.minutes_to_end.items())), separators=(",", ":")),
    }
    for name, value in (
        ("FirstAcceptedAt", counts.first_accepted_at),
        ("LastAcceptedAt", counts.last_accepted_at),
        ("LastEndedAt", counts.last_ended_at),
    ):
        if value is not None:
            entity[name] = value
    return entity


def _shard_from(entity: Mapping[str, Any]) -> CampaignCounts:
    histogram = json.loads(str(entity.get("MinutesToEnd") or "{}"))
    return CampaignCounts(
        campaign=str(entity.get("Campaign") or ""),
        counts={state: int(entity.get(column) or 0) for state, column in _STATE_COLUMNS.items()},
        first_accepted_at=_text(entity.get("FirstAcceptedAt")),
        last_accepted_at=_text(entity.get("LastAcceptedAt")),
        last_ended_at=_text(entity.get("LastEndedAt")),
        minutes_to_end={int(bucket): int(n) for bucket, n in histogram.items() if int(n)},
    )


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, str) and value else None
