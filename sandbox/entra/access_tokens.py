"""The access tokens the tenant has issued, and which of them a resource server should still accept.

Not thread-safe: the fake calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IssuedToken:
    token: str
    resource: str
    client_id: str
    expires_at: float
    grant_type: str

    def valid_for(self, resource: str | None, now: float) -> bool:
        """Not expired at ``now``, and issued for ``resource`` (any, if None; trailing slash and case ignored)."""
        if self.expires_at <= now:
            return False
        return resource is None or self.resource == resource.rstrip("/").lower()


class AccessTokenBook:
    """Every access token issued (``issued``, kept for good) and the ones not revoked, by token."""

    def __init__(self) -> None:
        #: Every access token issued so far, revoked or not (the fake's ``issued_access_tokens``).
        self.issued: set[str] = set()
        self._live: dict[str, IssuedToken] = {}

    def record(self, token: IssuedToken) -> None:
        self._live[token.token] = token
        self.issued.add(token.token)

    def find(self, token: str) -> IssuedToken | None:
        """The token, unless unknown or revoked."""
        return self._live.get(token)

    def revoke_all(self) -> None:
        self._live.clear()
