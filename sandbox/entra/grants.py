"""The token endpoint's grants, one function each: what each gives besides the access token.

The fake calls them under its lock, after the client and the resource are checked; a grant that fails raises
Entra's error (:class:`~sandbox.entra.errors.EntraError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandbox.entra.codes import CodeBook
from sandbox.entra.refresh_tokens import RefreshTokenBook


@dataclass(frozen=True)
class Issued:
    """What a grant gives besides the access token: the sign-in's methods, a refresh token, an id token."""

    amr: tuple[str, ...] | None
    refresh_token: str | None = None
    id_token: str | None = None


def authorization_code(
    form: dict[str, str],
    client_id: str,
    *,
    codes: CodeBook,
    refresh_tokens: RefreshTokenBook,
    amr: tuple[str, ...] | None,
    id_token: Callable[[str | None], str],
    clock: Callable[[], float],
) -> Issued:
    """A code from the sign-in page: a new refresh-token chain signed in with ``amr``, and an id token (of the
    code's nonce) when ``openid`` was asked for."""
    code = codes.redeem(form, client_id, clock)
    token = id_token(code.nonce) if "openid" in code.scope.split() else None
    return Issued(amr, refresh_tokens.issue(amr, clock()), token)


def refresh_token(
    form: dict[str, str], *, refresh_tokens: RefreshTokenBook, rotate: bool, clock: Callable[[], float]
) -> Issued:
    """A refresh token of the chain: the chain's ``amr``, and the refresh token to use next."""
    next_token, amr = refresh_tokens.redeem(form.get("refresh_token"), clock, rotate=rotate)
    return Issued(amr, next_token)


def client_credentials() -> Issued:
    """The app alone: no user, so no ``amr`` and no refresh token."""
    return Issued(None)
