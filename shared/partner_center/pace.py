"""The pace of Partner Center calls: every call passes :class:`PaceLimiter`, in the client's one send path.

Partner Center throttles a rate of calls per partner, or per partner and customer. The limiter:

- spaces this process's calls at a rate (a token bucket), learned by AIMD from Partner Center's 429s
  (:class:`~shared.partner_center.pace_rules.PaceRules`), under ``PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE`` when set;
- shares that rate with every other instance of the app when the store keeps the shared state
  (:mod:`shared.partner_center.pace_sharing`): this process takes its share of the partner's one rate;
- holds a customer whose calls Partner Center throttles on their own until its Retry-After, while the calls
  about other customers go on; a partner-wide 429 holds every call until its Retry-After;
- never waits past the caller's time budget (:func:`shared.retry.time_budget`): a call that cannot start in time
  fails as Partner Center's own throttling, with the seconds left as ``retry_after``; inside
  :func:`customer_hold_patience` a held customer's call fails at once (the queue function defers it).

Storage slow or down: the exchange runs on a thread of its own, so calls never wait for it; after
:data:`STALE_AFTER_SECONDS` without an answer this process paces alone from what it last knew, and goes back
to the shared pace when storage answers again.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shared.errors import PartnerCenterError
from shared.partner_center.pace_rules import (
    DEFAULT_RETRY_AFTER_SECONDS,
    Pace,
    PaceRules,
    ThrottleEvidence,
    ThrottleKind,
    TokenBucket,
)
from shared.partner_center.pace_sharing import CutEvent, PaceSharing, PartnerView
from shared.retry import parse_retry_after, remaining_budget

log = logging.getLogger(__name__)

#: Seconds between two exchanges with the shared state while this process calls Partner Center.
SYNC_INTERVAL_SECONDS = 1.0
#: Without an answer from the shared state for this long, this process paces alone.
STALE_AFTER_SECONDS = 5.0
#: After the shared state failed, wait this long before asking again.
RETRY_SHARED_AFTER_SECONDS = 5.0
#: Cuts kept for the shared record while storage does not answer (older ones are moot by then).
MAX_PENDING_CUTS = 16

_patience: contextvars.ContextVar[float | None] = contextvars.ContextVar("customer_hold_patience", default=None)


@contextlib.contextmanager
def customer_hold_patience(seconds: float) -> Iterator[None]:
    """Within this block, a call about a customer Partner Center holds for longer than ``seconds`` is not waited
    for: it fails at once as throttled (``customer_throttled``), so a queue function can defer it."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=_Response)


@dataclass(frozen=True)
class PaceWait:
    """Why calls wait now, for a progress bar: a partner-wide pause, customers held."""

    paused_for: float
    customers_held: int
    held_for: float


@dataclass(frozen=True)
class _Ticket:
    customer: str | None
    #: Cuts known when the call was sent: its 429 cuts again only if no cut came since.
    known_cuts: int
    sent_at: float


class PaceLimiter:
    """Spaces Partner Center calls at a learned rate, shared across instances when ``sharing`` is given."""

    def __init__(
        self,
        rules: PaceRules | None = None,
        *,
        sharing: PaceSharing | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[threading.Condition, float], object] | None = None,
        background: bool = True,
        reserve_seconds: float = 0.5,
    ) -> None:
        self.rules = rules or PaceRules()
        self._sharing = sharing
        self._clock = clock
        self._wall = wall
        # Waiting is a wait on the condition (woken early by a cut or a pause); tests pass a fake that moves time.
        self._sleep = sleep or (lambda condition, seconds: condition.wait(seconds))
        self._background = background
        #: A call that could not start with this many seconds of its budget left would not finish either.
        self._reserve = reserve_seconds
        self._cond = threading.Condition()
        now = clock()
        self._pace = self.rules.start(now)
        #: The partner's cuts as last heard: with a shared pace, a call's round is the partner's, so that this
        #: instance's own cut, made before it heard of another's in the same round, does not start a new one.
        self._partner_cuts = 0
        self._share = 1.0
        self._bucket = TokenBucket(self._pace.rate, now)
        #: Bumped by every change of the pace: callers sleeping on a slot handed out before ask again.
        self._epoch = 0
        #: When the last call was let go: a new plan keeps its spacing from it.
        self._last_start = -math.inf
        self._evidence = ThrottleEvidence()
        self._callers = 0
        self._peak = 0
        #: When a call last waited for the rate: the rate grows only while calls wait for it.
        self._limited_at = -math.inf
        #: Callers asleep until a slot planned for them: calls waiting for the rate, even when none has asked lately.
        self._waiting = 0
        self._pending: list[CutEvent] = []
        #: A write of cuts lost to another instance's write: the next exchange (which reads again) folds them in.
        self._push_lost = False
        #: True while this process paces on its own (no shared state, or it stopped answering).
        self._alone = sharing is None
        self._syncing = False
        self._sync_started = -math.inf
        self._next_sync = -math.inf
        self._failing = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts = dict.fromkeys(
            ("calls", "throttled", "partner", "alone", "customer", "syncs", "pushes", "failures"), 0
        )

    # -- the send path ----------------------------------------------------------------------------------
    def call(self, customer: str | None, send: Callable[[], R]) -> R:
        """Run ``send`` (one HTTP attempt about ``customer``, None for a call about no customer) at this
        process's pace, and learn from its answer."""
        ticket = self._acquire(customer)
        response: R | None = None
        try:
            response = send()
            return response
        finally:
            self._release(ticket, response)

    def hold_left(self, customer: str | None) -> float:
        """Seconds until calls about ``customer`` may go again (0: not held)."""
        with self._cond:
            now = self._clock()
            return max(0.0, self._evidence.held_until(customer, now) - now)

    def surfaces(self, customer: str | None) -> bool:
        """True when a 429 about ``customer`` should reach the caller now rather than be retried after its
        Retry-After: the customer is held longer than the :func:`customer_hold_patience` of this context."""
        patience = _patience.get()
        return patience is not None and customer is not None and self.hold_left(customer) > patience

    # -- what it knows ----------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Calls per second this process allows itself now."""
        with self._cond:
            return self._bucket.rate

    def waiting(self) -> PaceWait:
        with self._cond:
            now = self._clock()
            held, held_for = self._evidence.held(now)
            return PaceWait(max(0.0, self._pace.paused_until - now), held, held_for)

    def figures(self) -> dict[str, Any]:
        """Counters and the current pace (benchmarks, health details)."""
        with self._cond:
            figures: dict[str, Any] = dict(self._counts)
            figures.update(
                rate=self._bucket.rate,
                share=self._share,
                partner_rate=self._pace.rate if not self._alone else None,
                alone=self._alone,
                cuts=self._pace.cuts,
            )
        if self._sharing is not None:
            figures["storage_requests"] = self._sharing.requests
            figures["storage_seconds"] = self._sharing.seconds
            figures["storage_longest_seconds"] = self._sharing.longest
        return figures

    # -- acquiring a slot -------------------------------------------------------------------------------
    def _acquire(self, customer: str | None) -> _Ticket:
        budget = remaining_budget()
        patience = _patience.get()
        with self._cond:
            deadline = None if budget is None else self._clock() + budget - self._reserve
            self._callers += 1
            self._peak = max(self._peak, self._callers)
            try:
                return self._wait_for_slot(customer, deadline, patience)
            except BaseException:
                self._callers -= 1
                raise

    def _wait_for_slot(self, customer: str | None, deadline: float | None, patience: float | None) -> _Ticket:
        while True:
            now = self._clock()
            self._refresh(now)
            hold = self._evidence.held_until(customer, now) - now
            if hold > 0:
                if (patience is not None and hold > patience) or (deadline is not None and now + hold > deadline):
                    raise _throttled_here(hold, customer=True)
                self._sleep(self._cond, hold)
                continue
            start = max(now, self._pace.paused_until)
            if deadline is not None and self._bucket.next_slot(start) > deadline:
                raise _throttled_here(self._bucket.next_slot(start) - now, customer=False)
            slot = self._bucket.reserve(start)
            epoch = self._epoch
            if slot > now:
                self._limited_at = now
            self._waiting += 1
            try:
                while self._epoch == epoch and (left := slot - self._clock()) > 0:
                    self._sleep(self._cond, left)
            finally:
                self._waiting -= 1
            if self._epoch == epoch:
                self._last_start = slot
                known = self._pace.cuts if self._alone else self._partner_cuts
                return _Ticket(customer, known, max(slot, self._clock()))
            # The pace changed (a cut, a pause, an increase) while this call waited for its slot: ask again.

    def tick(self) -> None:
        """Once a second, from the background thread: what :meth:`_refresh` does on a call, for callers already
        waiting on their slots (a queue worker's invocations all wait at once, and start no call for a while)."""
        with self._cond:
            if self._callers or self._pending:
                self._refresh(self._clock())

    def _refresh(self, now: float) -> None:
        """Under the lock, on every call: grow the pace when calls waited for it; keep the shared view fresh."""
        if self._alone:
            if self._limited(now):
                self._set(self.rules.grow(self._pace, now), now)
        elif self._syncing and now - self._sync_started > STALE_AFTER_SECONDS:
            self._go_alone(now, "the shared pace has not answered for a while")
        pushing = self._pending and not self._push_lost
        if self._sharing is not None and not self._syncing and (now >= self._next_sync or pushing):
            self._want_sync()
        else:
            self._ensure_thread()

    # -- learning from the answer -----------------------------------------------------------------------
    def _release(self, ticket: _Ticket, response: _Response | None) -> None:
        with self._cond:
            self._callers -= 1
            if response is None:
                return  # no answer (a timeout, a reset): nothing learned about the pace
            self._counts["calls"] += 1
            if response.status_code != 429:
                return
            now = self._clock()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            retry_after = DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else max(retry_after, 0.0)
            kind, wait = self._evidence.throttled(ticket.customer, now, retry_after)
            self._counts["throttled"] += 1
            self._counts[kind.value] += 1
            if kind is ThrottleKind.CUSTOMER:
                log.info("Partner Center throttled customer %s again; holding it %.0f s", ticket.customer, retry_after)
                return
            pause = kind is ThrottleKind.PARTNER
            before = self._pace
            self._set(
                self.rules.cut(
                    before,
                    now,
                    retry_after=wait if pause else retry_after,
                    pause=pause,
                    known_cuts=ticket.known_cuts,
                    sent_at=ticket.sent_at,
                ),
                now,
            )
            if self._sharing is not None:
                self._pending = [*self._pending, CutEvent(now, wait, pause, ticket.known_cuts, ticket.sent_at)][
                    -MAX_PENDING_CUTS:
                ]
                self._want_sync()
        if pause:
            log.warning(
                "Partner Center's partner-wide limit: every call waits %.0f s; rate %.2f -> %.2f calls/s",
                wait,
                before.rate,
                self._pace.rate,
            )
        else:
            log.info(
                "Partner Center throttled customer %s; holding it %.0f s, rate %.2f -> %.2f calls/s",
                ticket.customer,
                retry_after,
                before.rate,
                self._pace.rate,
            )

    def _limited(self, now: float) -> bool:
        """Under the lock: whether calls wait for the rate now, or waited within the last interval. Callers that
        planned their slots a while ago and sleep until them count: all of a queue worker's invocations may be
        waiting at once, and none asks again until the rate changes."""
        return self._waiting > 0 or now - self._limited_at <= self.rules.interval

    def _set(self, pace: Pace, now: float) -> None:
        """Under the lock: adopt ``pace`` (this process's own, or the partner's at this process's share). Callers
        waiting on a slot planned at another pace plan again, spaced at the new rate from the last call let go."""
        rate = max(pace.rate * self._share, 1e-6)
        changed = (
            pace.cuts != self._pace.cuts
            or pace.paused_until > self._pace.paused_until + 1e-3
            or abs(rate - self._bucket.rate) > 1e-6 * self._bucket.rate
        )
        self._pace = pace
        self._bucket.rate = rate
        if changed:
            self._epoch += 1
            self._bucket.restart(max(now, pace.paused_until, self._last_start + 1.0 / rate))
            self._cond.notify_all()

    def _go_alone(self, now: float, why: str) -> None:
        if not self._alone:
            log.warning("Pacing Partner Center calls on this instance alone: %s", why)
            self._alone = True
            # What this process last had of the partner's rate becomes its own to learn from.
            self._pace, self._share = self._pace.scaled(self._share), 1.0
            self._set(self._pace, now)

    # -- the shared pace ---------------------------------------------------------------------------------
    def sync_now(self) -> None:
        """Share what this process learnt (the background thread calls it; tests too): an exchange with the shared
        state when one is due (at most one a second), else only a write of the cuts it made since."""
        sharing = self._sharing
        if sharing is None:
            return
        with self._cond:
            now = self._clock()
            exchange = now >= self._next_sync
            if self._syncing or not (exchange or (self._pending and not self._push_lost)):
                return
            self._syncing, self._sync_started = True, now
            demand = float(max(self._peak, self._callers, 1 if self._pending else 0))
            if exchange:
                self._next_sync = now + SYNC_INTERVAL_SECONDS
                self._peak = self._callers
            limited = self._limited(now)
            offset = self._wall() - now
            cuts, self._pending = self._pending, []
        if demand <= 0:
            with self._cond:
                self._syncing = False  # idle: nothing to share, and this instance's record ages out
            return
        shifted = [cut.shifted(offset) for cut in cuts]
        view: PartnerView | None
        try:
            view = sharing.sync(demand, limited=limited, cuts=shifted) if exchange else sharing.push(shifted)
        except Exception as exc:  # storage in any state: pace alone, never stop upgrading
            self._failed(exc, cuts)
            return
        if view is None:  # a push that lost to another instance's write: the next exchange folds the cuts in
            with self._cond:
                self._syncing = False
                self._push_lost = True
                self._pending = [*cuts, *self._pending][-MAX_PENDING_CUTS:]
            return
        self._adopt(view, offset, [] if view.written else cuts, exchanged=exchange)

    def _failed(self, exc: Exception, cuts: list[CutEvent]) -> None:
        with self._cond:
            now = self._clock()
            self._syncing = False
            self._counts["failures"] += 1
            self._push_lost = True  # nothing more is tried before the next exchange, after a pause
            self._pending = [*cuts, *self._pending][-MAX_PENDING_CUTS:]
            self._next_sync = now + RETRY_SHARED_AFTER_SECONDS
            first = not self._failing
            self._failing = True
            self._go_alone(now, f"the shared pace could not be read ({type(exc).__name__})")
        if first:
            log.warning("The shared pace of Partner Center calls is unavailable (%s); pacing alone", type(exc).__name__)

    def _adopt(self, view: PartnerView, offset: float, unwritten: list[CutEvent], *, exchanged: bool) -> None:
        with self._cond:
            now = self._clock()
            self._syncing = False
            self._counts["syncs" if exchanged else "pushes"] += 1
            if exchanged:
                self._push_lost = False
            self._pending = [*unwritten, *self._pending][-MAX_PENDING_CUTS:]
            if self._failing or self._alone:
                log.info("Pacing Partner Center calls with the other instances again (%d)", view.instances)
            self._failing = self._alone = False
            self._share = view.share
            self._partner_cuts = view.pace.cuts
            self._set(view.pace.shifted(-offset), now)

    def _want_sync(self) -> None:
        """Under the lock: have the background thread exchange with the shared state now."""
        if self._ensure_thread():
            self._wake.set()

    def _ensure_thread(self) -> bool:
        """Under the lock: the background thread running (started on first use); False without one (tests)."""
        if not self._background:
            return False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=_sync_loop, args=(weakref.ref(self), self._wake), name="pace", daemon=True
            )
            self._thread.start()
        return True


def _sync_loop(limiter: weakref.ref[PaceLimiter], wake: threading.Event) -> None:
    """The limiter's thread: once a second (or when asked) its tick, and the exchange with the shared state when
    due; it ends when its limiter is gone."""
    while True:
        wake.wait(SYNC_INTERVAL_SECONDS)
        current = limiter()
        if current is None:
            return
        wake.clear()
        current.tick()
        current.sync_now()
        del current


def _throttled_here(wait: float, *, customer: bool) -> PartnerCenterError:
    """What a caller sees when it may not call Partner Center before its budget (or patience) ends."""
    what = "calls about this customer" if customer else "this app"
    return PartnerCenterError(
        429,
        None,
        f"Partner Center is still throttling {what}; this call was held back rather than sent",
        retry_after=max(1, math.ceil(wait)),
        customer_throttled=customer,
    )
