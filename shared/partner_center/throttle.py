"""An adaptive limit on concurrent Partner Center calls in this worker process.

Partner Center throttles per partner. Scaled-out instances each running a host batch of 16 invocations would
otherwise meet its limit with a storm of 429s; instead each process keeps its own share of calls in flight,
found by AIMD (as TCP finds its congestion window):

- additive increase: each call that was not throttled adds ``increase / limit`` (half a call more in
  flight per round of ``limit`` calls: gentler than TCP's one, because a throttled call still counts
  against Partner Center's limit and its Retry-After can be a minute);
- multiplicative decrease: a 429 multiplies the limit by ``decrease``, once per round: calls that were
  already in flight when the limit was cut do not cut it again;
- ``Retry-After`` honoured: after a 429, no new call starts in this process before it has passed.

A call that could not start within its invocation's time budget (see :func:`shared.retry.time_budget`)
raises Partner Center's own throttling error, with the time left to wait as ``retry_after``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from shared.errors import PartnerCenterError
from shared.retry import parse_retry_after, remaining_budget

#: Seconds to hold new calls after a 429 that carried no usable Retry-After.
DEFAULT_PAUSE_SECONDS = 1.0


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=_Response)


class AdaptiveConcurrencyLimit:
    """At most :attr:`limit` calls in flight; AIMD on 429; no call starts while a Retry-After runs."""

    def __init__(
        self,
        *,
        initial: float = 8.0,
        minimum: float = 1.0,
        maximum: float = 32.0,
        increase: float = 0.5,
        decrease: float = 0.5,
        reserve_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1.0 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        if not 0.0 < decrease < 1.0 or increase <= 0.0:
            raise ValueError("need 0 < decrease < 1 and increase > 0")
        self._minimum = minimum
        self._maximum = maximum
        self._increase = increase
        self._decrease = decrease
        #: A call that could not start with this many seconds of its budget left would not finish either.
        self._reserve = reserve_seconds
        self._clock = clock
        self._condition = threading.Condition()
        self._limit = initial
        self._in_flight = 0
        self._resume_at = 0.0
        #: Rounds: a cut starts a new one; a 429 for a call that started in an earlier round cuts nothing.
        self._round = 0

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        with self._condition:
            return int(self._limit)

    @property
    def in_flight(self) -> int:
        with self._condition:
            return self._in_flight

    @property
    def paused_for(self) -> float:
        """Seconds until new calls may start (0 when they may start now)."""
        with self._condition:
            return max(0.0, self._resume_at - self._clock())

    def call(self, send: Callable[[], R]) -> R:
        """Run ``send`` (one HTTP attempt) inside the limit and learn from its response."""
        started_round = self._acquire()
        throttled = False
        retry_after: float | None = None
        try:
            response = send()
            throttled = response.status_code == 429
            if throttled:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return response
        finally:
            self._release(started_round, throttled=throttled, retry_after=retry_after)

    def _acquire(self) -> int:
        budget = remaining_budget()
        deadline = None if budget is None else self._clock() + budget - self._reserve
        with self._condition:
            while True:
                now = self._clock()
                paused = self._resume_at - now
                if paused <= 0 and self._in_flight < int(self._limit):
                    self._in_flight += 1
                    return self._round
                wake_at = self._resume_at if paused > 0 else math.inf
                if deadline is not None:
                    if now >= deadline or (paused > 0 and self._resume_at > deadline):
                        raise _throttled_here(paused)
                    wake_at = min(wake_at, deadline)
                self._condition.wait(None if wake_at == math.inf else wake_at - now)

    def _release(self, started_round: int, *, throttled: bool, retry_after: float | None) -> None:
        with self._condition:
            self._in_flight -= 1
            if throttled:
                pause = retry_after if retry_after is not None else DEFAULT_PAUSE_SECONDS
                self._resume_at = max(self._resume_at, self._clock() + pause)
                if started_round == self._round:
                    self._limit = max(self._minimum, self._limit * self._decrease)
                    self._round += 1
            else:
                self._limit = min(self._maximum, self._limit + self._increase / self._limit)
            self._condition.notify_all()


def _throttled_here(paused: float) -> PartnerCenterError:
    """What a caller sees when its budget ends before this process may call Partner Center again."""
    return PartnerCenterError(
        429,
        None,
        "still throttling this app; this call was held back until its time budget ran out",
        retry_after=max(1, math.ceil(paused)),
    )
