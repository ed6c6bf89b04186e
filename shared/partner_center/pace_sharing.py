"""One pace for the partner, however many instances of the app call Partner Center.

Partner Center's limit is the partner's: N instances (Flex Consumption scales a campaign's queue out to many)
must approach that one rate together, not N times it. What the instances share, kept by the store (the ledger's
table, :class:`shared.store.pace_state.TablePaceState`) behind :class:`SharedPaceState`:

- the partner's record: the learned :class:`~shared.partner_center.pace_rules.Pace` in wall-clock time, changed
  only under its ETag: a cut when a 429 comes, an increase at most once a second in all;
- one small record per instance calling Partner Center lately: its demand (callers waiting or in flight).

Once a second, an instance with calls to make records its demand and reads both back (two storage requests);
its share of the partner's rate is its demand over the demand of every instance seen in the last few seconds.
An idle instance makes no request, and its record ages out. Storage failing or slow costs only the exchange:
the limiter keeps pacing on what it last knew, then alone (:mod:`shared.partner_center.pace`), never stopping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from shared.partner_center.pace_rules import Pace, PaceRules

#: An instance counts as calling Partner Center when it recorded its demand within this many seconds.
ACTIVE_WITHIN_SECONDS = 3.0


class PaceSnapshot(Protocol):
    """What :meth:`SharedPaceState.exchange` read."""

    @property
    def record(self) -> Mapping[str, float] | None:
        """The partner's record (:meth:`Pace.to_record`), None when no instance has written one yet."""
        ...

    @property
    def etag(self) -> str | None: ...

    @property
    def demands(self) -> Mapping[str, float]:
        """Instance id -> demand, for the instances seen lately (the asking one included)."""
        ...


class SharedPaceState(Protocol):
    """The pace's shared state, kept by the store. Both methods raise
    :class:`~shared.errors.StorageUnavailableError` when storage fails or is too slow."""

    def exchange(self, instance_id: str, demand: float, *, active_within: float) -> PaceSnapshot:
        """Record this instance's demand, then read the partner's record and the demands of the instances seen
        within ``active_within`` seconds."""
        ...

    def replace(self, record: Mapping[str, float], etag: str | None) -> str | None:
        """Write the partner's record if it is still the one read with ``etag`` (None: only if there is none
        yet). The new ETag, or None when another instance changed it first."""
        ...


@dataclass(frozen=True)
class CutEvent:
    """A 429 an instance saw, to fold into the partner's record (times in wall-clock seconds)."""

    at: float
    retry_after: float
    pause: bool
    known_cuts: int
    #: When the throttled call was sent.
    sent_at: float | None = None

    def shifted(self, offset: float) -> CutEvent:
        return replace(self, at=self.at + offset, sent_at=None if self.sent_at is None else self.sent_at + offset)


@dataclass(frozen=True)
class PartnerView:
    """The partner's pace (wall-clock times) and this instance's share of its rate."""

    pace: Pace
    share: float
    instances: int
    #: False when another instance changed the record first and this one's cuts could not be written.
    written: bool = True


class PaceSharing:
    """This instance's side of the shared pace: one exchange per call of :meth:`sync` (the limiter calls it at
    most about once a second, from a thread of its own)."""

    def __init__(
        self,
        state: SharedPaceState,
        rules: PaceRules,
        *,
        instance_id: str | None = None,
        wall: Callable[[], float] = time.time,
        active_within: float = ACTIVE_WITHIN_SECONDS,
        attempts: int = 2,
    ) -> None:
        self.state = state
        self.rules = rules
        self.instance_id = instance_id or uuid.uuid4().hex[:16]
        self.wall = wall
        self.active_within = active_within
        self.attempts = attempts
        #: Storage requests made: two per exchange (an upsert and a query), one per write of the partner's record.
        self.requests = 0
        #: Seconds spent in exchanges and writes, and the longest one (how slow storage is, seen from here).
        self.seconds = 0.0
        self.longest = 0.0
        #: The partner's pace as last read or written, its ETag, and this instance's share then.
        self._last: PartnerView | None = None
        self._etag: str | None = None

    def sync(self, demand: float, *, limited: bool, cuts: Sequence[CutEvent] = ()) -> PartnerView:
        """Record ``demand``, read the partner's pace, fold in this instance's 429s (``cuts``) and, when its calls
        waited for the rate (``limited``), the increase due; write it back under the ETag read. On a conflict
        (another instance wrote first) read and fold again, up to :attr:`attempts` times."""
        view: PartnerView | None = None
        for _ in range(self.attempts):
            started = time.monotonic()
            snapshot = self.state.exchange(self.instance_id, demand, active_within=self.active_within)
            self._took(time.monotonic() - started)
            self.requests += 2
            now = self.wall()
            current = Pace.from_record(snapshot.record) if snapshot.record is not None else None
            pace = self._folded(current or self.rules.start(now), cuts)
            if limited:
                pace = self.rules.grow(pace, now)
            share = _share(self.instance_id, demand, snapshot.demands)
            view = PartnerView(current or pace, share, max(1, len(snapshot.demands)), written=False)
            self._last, self._etag = view, snapshot.etag
            if pace == current:
                return replace(view, written=True)
            # A record this app cannot read is replaced under its ETag; a missing one is inserted.
            written = self._write(pace, view, snapshot.etag if snapshot.record is not None else None)
            if written is not None:
                return written
        assert view is not None
        return view

    def push(self, cuts: Sequence[CutEvent]) -> PartnerView | None:
        """Fold ``cuts`` into the partner's pace as last read and write it under that ETag (one request, no read:
        the other instances hear of a 429 without waiting for this one's next exchange). None when there is
        nothing to fold into yet or another instance wrote first: the next exchange folds them in."""
        if self._last is None or self._etag is None:
            return None
        return self._write(self._folded(self._last.pace, cuts), self._last, self._etag)

    def _folded(self, pace: Pace, cuts: Sequence[CutEvent]) -> Pace:
        for cut in cuts:
            pace = self.rules.cut(
                pace,
                cut.at,
                retry_after=cut.retry_after,
                pause=cut.pause,
                known_cuts=cut.known_cuts,
                sent_at=cut.sent_at,
            )
        return pace

    def _took(self, seconds: float) -> None:
        self.seconds += seconds
        self.longest = max(self.longest, seconds)

    def _write(self, pace: Pace, view: PartnerView, etag: str | None) -> PartnerView | None:
        self.requests += 1
        started = time.monotonic()
        new_etag = self.state.replace(pace.to_record(), etag)
        self._took(time.monotonic() - started)
        if new_etag is None:
            self._etag = None  # another instance wrote first: nothing more is written before the next read
            return None
        self._last, self._etag = replace(view, pace=pace, written=True), new_etag
        return self._last


def _share(instance_id: str, demand: float, demands: Mapping[str, float]) -> float:
    """This instance's share: its demand over everyone's (its own counted as it is now)."""
    others = sum(max(0.0, value) for key, value in demands.items() if key != instance_id)
    mine = max(demand, 1e-9)
    return mine / (mine + others)
