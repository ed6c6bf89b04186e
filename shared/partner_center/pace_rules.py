"""The arithmetic of the pace of Partner Center calls: pure functions of an injected time, no threads, no I/O.

Partner Center throttles a *rate* of calls per partner (or per partner and customer) and publishes no numbers for
product upgrades. So the rate is learned, as TCP learns a path's capacity, but on calls per second:

- :class:`Pace` is what is learned: the rate, when it last changed, the last cut, a pause. It is also the record
  the instances of the app share (:mod:`shared.partner_center.pace_sharing`), so it converts to and from a
  mapping of numbers.
- :class:`PaceRules` changes it. Slow start doubles the rate each second calls wait for it, until the first 429;
  then additive increase (a step fixed for the whole probe, a share of the rate the last cut left) while calls
  wait for it and no 429 comes; multiplicative decrease on a 429, once per round of calls, harder when the last
  cut was not enough; Retry-After honoured as a pause.
- :class:`TokenBucket` spaces calls at the rate.
- :class:`ThrottleEvidence` tells a 429 about one customer from the partner-wide limit, and holds the customer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

#: Seconds to hold after a 429 that carried no usable Retry-After (Partner Center's guidance: never retry at once).
DEFAULT_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class Pace:
    """The learned pace. Times are seconds on the clock of whoever holds it (a process's monotonic clock, or
    wall-clock time in the record the instances share: :meth:`shifted` converts)."""

    #: Calls per second allowed to the partner (shared) or to this process (when it paces alone).
    rate: float
    #: The rate right after the last cut: the additive step of the probe that follows is a share of it.
    base: float
    #: True until the first 429: the rate doubles each second instead of growing by a step.
    slow_start: bool
    #: Last increase or cut: the rate grows at most once per :attr:`PaceRules.interval` after it.
    changed_at: float
    #: Last cut (0: never), and how many cuts so far: a 429 for a call sent before the latest cut cuts nothing.
    cut_at: float = 0.0
    cuts: int = 0
    #: No call before this (Retry-After of a partner-wide 429).
    paused_until: float = 0.0
    #: Seconds of probing (calls waiting for the rate, no 429) since the last cut: the step widens with it.
    probed: float = 0.0

    def shifted(self, offset: float) -> Pace:
        """The same pace on a clock ``offset`` seconds ahead (a time 0 stays 0: "never")."""

        def shift(t: float) -> float:
            return t + offset if t else 0.0

        return replace(
            self,
            changed_at=shift(self.changed_at),
            cut_at=shift(self.cut_at),
            paused_until=shift(self.paused_until),
        )

    def scaled(self, share: float) -> Pace:
        """This pace for one of several callers sharing it: ``share`` of the rate."""
        return replace(self, rate=self.rate * share, base=self.base * share)

    def to_record(self) -> dict[str, float]:
        return {
            "Rate": self.rate,
            "Base": self.base,
            "SlowStart": 1.0 if self.slow_start else 0.0,
            "ChangedAt": self.changed_at,
            "CutAt": self.cut_at,
            "Cuts": float(self.cuts),
            "PausedUntil": self.paused_until,
            "Probed": self.probed,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, float]) -> Pace | None:
        """The pace in a shared record; None when the record is not one (missing or nonsense figures)."""
        try:
            figures = {name: float(record[name]) for name in cls._FIELDS}
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(value) for value in figures.values()) or figures["Rate"] <= 0:
            return None
        return cls(
            rate=figures["Rate"],
            base=figures["Base"] if figures["Base"] > 0 else figures["Rate"],
            slow_start=figures["SlowStart"] >= 0.5,
            changed_at=figures["ChangedAt"],
            cut_at=figures["CutAt"],
            cuts=int(figures["Cuts"]),
            paused_until=figures["PausedUntil"],
            probed=max(0.0, figures["Probed"]),
        )

    _FIELDS = ("Rate", "Base", "SlowStart", "ChangedAt", "CutAt", "Cuts", "PausedUntil", "Probed")


@dataclass(frozen=True)
class PaceRules:
    """AIMD on the rate of Partner Center calls. The defaults are argued in docs/performance.md ("Draining a campaign at
    Partner Center's pace") and measured by ``python -m benchmarks --only drain``."""

    #: Calls per second before anything is learned, and the bounds of what may be learned.
    initial: float = 10.0
    minimum: float = 0.2
    maximum: float = 1000.0
    #: Additive step per second: this share of the rate the last cut left...
    increase: float = 0.05
    #: ...but never more than ``base * base / calls_per_probe``: each probe past Partner Center's limit costs about
    #: a few 429s (one per instance, about), so at low rates the probe is slowed until it spans a few hundred calls...
    calls_per_probe: float = 500.0
    #: ...and twice that step for every this many seconds of probing without a 429: a rate cut far below the limit
    #: (a burst of 429s from elsewhere, Partner Center easing) comes back within a minute or two, not hours.
    quiet_doubling: float = 15.0
    #: Multiplicative decrease on a 429; harder when the previous cut, ``repeat_within`` seconds ago, was not enough.
    decrease: float = 0.85
    repeated_decrease: float = 0.6
    repeat_within: float = 3.0
    #: Seconds between two increases.
    interval: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.initial <= self.maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        if not (0 < self.repeated_decrease <= self.decrease < 1 and self.increase > 0 and self.calls_per_probe > 0):
            raise ValueError("need 0 < repeated_decrease <= decrease < 1, increase > 0 and calls_per_probe > 0")

    @classmethod
    def with_ceiling(cls, calls_per_minute: float | None) -> PaceRules:
        """The rules under a partner's known limit (``PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE``), or the defaults."""
        if calls_per_minute is None:
            return cls()
        ceiling = calls_per_minute / 60.0
        return cls(initial=min(cls.initial, ceiling), minimum=min(cls.minimum, ceiling), maximum=ceiling)

    def start(self, now: float) -> Pace:
        return Pace(rate=self.initial, base=self.initial, slow_start=self.initial < self.maximum, changed_at=now)

    def step(self, pace: Pace) -> float:
        """Calls per second added each second of the current probe."""
        widening = math.pow(2.0, min(pace.probed / self.quiet_doubling, 16.0))
        return pace.base * min(self.increase, pace.base / self.calls_per_probe) * widening

    def grow(self, pace: Pace, now: float) -> Pace:
        """The pace after calls waited for the rate (no 429 came): at most one increase per :attr:`interval`, and
        none while a pause runs. Time since the last change counts up to two intervals: an idle spell earns nothing."""
        elapsed = now - pace.changed_at
        if elapsed < self.interval or now < pace.paused_until:
            return pace
        if pace.slow_start:
            rate = min(self.maximum, pace.rate * 2.0)
            return replace(pace, rate=rate, base=rate, slow_start=rate < self.maximum, changed_at=now)
        probed = min(elapsed, 2 * self.interval)
        rate = min(self.maximum, pace.rate + self.step(pace) * probed)
        return replace(pace, rate=rate, changed_at=now, probed=pace.probed + probed)

    def cut(
        self, pace: Pace, now: float, *, retry_after: float, pause: bool, known_cuts: int, sent_at: float | None = None
    ) -> Pace:
        """The pace after a 429 for a call sent (at ``sent_at``) when ``known_cuts`` cuts had been made. ``pause``:
        the 429 is Partner Center's partner-wide limit, so no call starts before its Retry-After has passed."""
        paused_until = max(pace.paused_until, now + retry_after) if pause else pace.paused_until
        after_pause = (
            sent_at is not None
            and pace.paused_until > 0
            and 0 <= sent_at - pace.paused_until < max(1.0 / pace.rate, self.interval)
        )
        # Sent within an interval of the latest cut: other instances hear of a cut at their next exchange, a second
        # later, and the limit has not refilled yet; their 429s then are of the cut's own round.
        just_cut = sent_at is not None and pace.cut_at > 0 and sent_at < pace.cut_at + self.interval
        if known_cuts < pace.cuts or just_cut or (pace.slow_start and not pause) or after_pause:
            # Sent before the latest cut: this 429 is of the same round, already answered. One customer's 429 in slow
            # start: not yet a sign of the partner's limit, which shows as 429s for several customers. The first
            # call after a pause, refused: the pause was too short, not the rate too high; wait its Retry-After.
            return replace(pace, paused_until=paused_until)
        if pace.slow_start:
            factor = 0.5  # slow start overshoots by up to twice the limit
        elif pace.cut_at and now - pace.cut_at < self.repeat_within:
            factor = self.repeated_decrease  # the last cut did not bring the rate under the limit
        else:
            factor = self.decrease
        rate = max(self.minimum, pace.rate * factor)
        return Pace(
            rate=rate,
            base=rate,
            slow_start=False,
            changed_at=max(now, paused_until),  # the probe starts again once the pause is over
            cut_at=now,
            cuts=pace.cuts + 1,
            paused_until=paused_until,
        )


class TokenBucket:
    """Calls spaced at ``rate`` per second, one token at most in hand (no burst: Partner Center's window does
    not need one, and a burst from every instance at once is exactly what trips it). :meth:`reserve` hands out
    start times in order; a caller sleeps until its own."""

    def __init__(self, rate: float, now: float = 0.0) -> None:
        self._rate = rate
        self._next = now

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self._rate = rate

    def next_slot(self, now: float) -> float:
        """When a call asking now would start."""
        return max(now, self._next)

    def reserve(self, now: float) -> float:
        """The start time of a call asking now; the slot is taken."""
        slot = max(now, self._next)
        self._next = slot + 1.0 / self._rate
        return slot

    def restart(self, at: float) -> None:
        """Forget the slots handed out (their holders ask again): the next call starts at ``at``."""
        self._next = at


class ThrottleKind(Enum):
    #: A 429 about a customer held already (or lately): Partner Center's limit for that customer, nothing more.
    CUSTOMER = "customer"
    #: A first 429 for a customer while no other customer was throttled: maybe that customer's limit, maybe the
    #: first sign of the partner's. The customer is held; the rate is cut gently, without a pause.
    ALONE = "alone"
    #: 429s for several customers close together, or a call about no customer: the partner-wide limit.
    PARTNER = "partner"


class ThrottleEvidence:
    """What recent 429s have in common, and the customers held until their Retry-After.

    Partner Center limits calls per partner, or per partner and customer. One customer throttled again and
    again while others go through is that customer's limit: hold it, go on with the rest. 429s for different
    customers within :attr:`window` seconds are the partner's limit: everyone waits.
    """

    #: Held customers remembered at most (the oldest hold is forgotten first).
    MAX_REMEMBERED = 10_000

    def __init__(self, *, window: float = 2.0, memory: float = 120.0) -> None:
        self.window = window
        #: A customer throttled within this many seconds (or within twice its Retry-After) counts as held lately.
        self.memory = memory
        #: customer -> (last 429 at, held until)
        self._customers: dict[str, tuple[float, float]] = {}
        #: The last 429 that was not a held customer's: (when, lower-cased customer or None, its Retry-After).
        self._last: tuple[float, str | None, float] | None = None

    def throttled(self, customer: str | None, now: float, retry_after: float) -> tuple[ThrottleKind, float]:
        """Record a 429 answered at ``now`` for a call about ``customer`` (None: about no customer): what it is, and
        for the partner's limit, how long every call waits. Concluded from two customers' 429s, that is the shorter
        of their Retry-Afters: a customer held for longer (30 s, where the partner's window says 1) is the likelier
        to be that customer's own limit, met by chance at the same time."""
        if customer is None:
            self._last = (now, None, retry_after)
            return ThrottleKind.PARTNER, retry_after
        key = customer.lower()
        previous = self._customers.pop(key, None)
        self._customers[key] = (now, now + retry_after)  # re-inserted: the dict stays in order of last 429
        self._forget(now)
        if previous is not None and now - previous[0] < max(self.memory, 2 * (previous[1] - previous[0])):
            # A held customer's 429 says nothing of the partner's limit: it is not evidence for the window either.
            return ThrottleKind.CUSTOMER, 0.0
        last, self._last = self._last, (now, key, retry_after)
        if last is not None and now - last[0] < self.window and last[1] != key:
            return ThrottleKind.PARTNER, min(retry_after, last[2])
        return ThrottleKind.ALONE, 0.0

    def held_until(self, customer: str | None, now: float) -> float:
        """When calls about ``customer`` may go again (``now`` or earlier: not held)."""
        if customer is None:
            return now
        entry = self._customers.get(customer.lower())
        return entry[1] if entry is not None else now

    def held(self, now: float) -> tuple[int, float]:
        """How many customers are held at ``now``, and the longest hold left (seconds)."""
        left = [until - now for _, until in self._customers.values() if until > now]
        return len(left), max(left, default=0.0)

    def _forget(self, now: float) -> None:
        while len(self._customers) > self.MAX_REMEMBERED:
            del self._customers[next(iter(self._customers))]
        oldest = next(iter(self._customers.items()), None)
        # Amortised: drop expired entries from the front (the oldest 429s) while they are past remembering.
        while oldest is not None and now - oldest[1][0] > max(self.memory, 2 * (oldest[1][1] - oldest[1][0])):
            del self._customers[oldest[0]]
            oldest = next(iter(self._customers.items()), None)
