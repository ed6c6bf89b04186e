"""Partner Center's per-partner rate limit: a token bucket holding one second's worth of calls.

Not thread-safe: the fake calls it under its lock.
"""

from __future__ import annotations

import math


class TokenBucket:
    """At most ``rate`` calls a second, all callers together; no limit while ``rate`` is None."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._tokens = 0.0
        self._refilled_at = 0.0

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the limit at ``now`` (a monotonic time). Changing the rate of a limit in force keeps the tokens in
        hand, up to the new second's worth; a new limit starts full."""
        if self.rate is not None and rate is not None:
            self._refill(now)
            self._tokens = min(self._tokens, max(1.0, rate))
        else:
            self._tokens = max(1.0, rate or 0.0)
            self._refilled_at = now
        self.rate = rate

    def take(self, now: float) -> int | None:
        """Admit a call at ``now``: None if admitted, else the whole seconds until the next token (``Retry-After``)."""
        if self.rate is None:
            return None
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / self.rate))

    def _refill(self, now: float) -> None:
        assert self.rate is not None
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
