"""The user's refresh-token chain: issue, rotate on each use, lapse after 90 days unused, expire on demand.

Not thread-safe: the fake calls it under its lock. Redeeming a token that is expired, lapsed or unknown raises
Entra's ``invalid_grant`` (:class:`~sandbox.entra.errors.EntraError`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sandbox.entra.errors import invalid_grant, missing
from sandbox.entra.tokens import MFA_METHODS

#: A refresh token left unused this long lapses (Entra's default max inactive time: 90 days); each use issues a
#: new one, which starts its own 90 days.
REFRESH_TOKEN_MAX_INACTIVE_SECONDS = 90 * 24 * 3600.0


@dataclass(frozen=True)
class RefreshTokenGrant:
    """What Entra remembers of a refresh token: when it was issued, and how the user signed in for its chain."""

    issued_at: float
    #: The sign-in's authentication methods (the access tokens' ``amr``); None: the claim is left out.
    amr: tuple[str, ...] | None


class RefreshTokenBook:
    """Which refresh tokens are valid, which expired, and what Entra remembers of each.

    ``issued`` lists every token in the order issued (the first one given at construction), ``current`` is the
    newest.
    """

    def __init__(self, first: str, grant: RefreshTokenGrant) -> None:
        self.issued: list[str] = [first]
        self.current = first
        self._valid: set[str] = {first}
        self._expired: set[str] = set()
        self._grants: dict[str, RefreshTokenGrant] = {first: grant}

    @property
    def valid(self) -> set[str]:
        return set(self._valid)

    def add(self, token: str, grant: RefreshTokenGrant) -> None:
        """Make ``token`` valid (again), remembered as ``grant``; not listed in ``issued``."""
        self._valid.add(token)
        self._expired.discard(token)
        self._grants[token] = grant

    def issued_at(self, token: str) -> float | None:
        grant = self._grants.get(token)
        return None if grant is None else grant.issued_at

    def expire_all(self) -> None:
        """Every token valid so far becomes expired (answers ``invalid_grant`` AADSTS70043)."""
        self._expired |= self._valid
        self._valid.clear()

    def issue(self, amr: tuple[str, ...] | None, now: float) -> str:
        """A new token of a chain signed in with ``amr``; it becomes ``current``."""
        token = "fake-rt-" + secrets.token_urlsafe(48)
        self._valid.add(token)
        self._grants[token] = RefreshTokenGrant(now, amr)
        self.issued.append(token)
        self.current = token
        return token

    def redeem(
        self, presented: str | None, clock: Callable[[], float], *, rotate: bool
    ) -> tuple[str, tuple[str, ...] | None]:
        """The token to hand back for ``presented`` (a new one if ``rotate``, else the same) and its chain's
        ``amr``; raises Entra's error if it is missing, expired, lapsed after 90 days unused, or unknown."""
        if not presented:
            raise missing("refresh_token")
        if presented in self._expired:
            raise invalid_grant(
                70043,
                "The refresh token has expired or is invalid due to sign-in frequency checks by conditional "
                "access. The token was issued on 2024-01-01T00:00:00.0000000Z and the maximum allowed "
                "lifetime for this request is 7776000.",
            )
        if presented not in self._valid:
            raise invalid_grant(70000, "Provided grant is invalid or malformed.")
        grant = self._grants.get(presented) or RefreshTokenGrant(clock(), MFA_METHODS)
        if clock() - grant.issued_at >= REFRESH_TOKEN_MAX_INACTIVE_SECONDS:
            self._valid.discard(presented)
            self._expired.add(presented)
            issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
            raise invalid_grant(
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                "inactive for 90.00:00:00.",
            )
        if not rotate:
            return presented, grant.amr
        return self.issue(grant.amr, clock()), grant.amr
