"""Idempotency on ``MS-RequestId`` for refusals: a create refused is refused again, word for word, when the same
request id comes back (what a retry after a timeout relies on). Off until turned on.

Not thread-safe: the fake calls it under its lock.
"""

from __future__ import annotations

from sandbox.server import Response


class RefusalReplay:
    def __init__(self) -> None:
        self.on = False
        self._refusals: dict[str, Response] = {}

    def clear(self) -> None:
        self._refusals.clear()
        self.on = False

    def replayed(self, request_id: str) -> Response | None:
        """The refusal kept for ``request_id`` (lower case), while on; else None."""
        return self._refusals.get(request_id) if self.on else None

    def remember(self, request_id: str, response: Response) -> None:
        """Keep ``response`` for ``request_id`` (lower case) while on, if it is a refusal: a 4xx other than 401/429."""
        if self.on and 400 <= response.status < 500 and response.status not in (401, 429):
            self._refusals[request_id] = response
