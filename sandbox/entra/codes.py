"""Authorization codes: handed out by the sign-in page, redeemed once at the token endpoint (with PKCE).

Not thread-safe: the fake calls it under its lock. A redemption that fails raises Entra's ``invalid_grant``
(:class:`~sandbox.entra.errors.EntraError`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.entra.errors import invalid_grant, missing

#: Authorization codes are single-use and short-lived (Entra: about 10 minutes).
AUTH_CODE_LIFETIME_SECONDS = 600.0


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def verifies(self, verifier: str) -> bool:
        """Whether the token request's ``code_verifier`` answers this code's PKCE challenge."""
        if self.code_challenge_method == "S256":
            digest = hashlib.sha256(verifier.encode("ascii")).digest()
            expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        else:
            expected = verifier
        return bool(verifier) and secrets.compare_digest(expected, self.code_challenge or "")


class CodeBook:
    """The codes handed out and not yet redeemed."""

    def __init__(self) -> None:
        self._codes: dict[str, AuthorizationCode] = {}

    def add(self, code: AuthorizationCode) -> None:
        self._codes[code.code] = code

    def redeem(self, form: dict[str, str], client_id: str, clock: Callable[[], float]) -> AuthorizationCode:
        """The code of an ``authorization_code`` grant, checked as Entra does; spent either way."""
        presented = form.get("code")
        if not presented:
            raise missing("code")
        code = self._codes.pop(presented, None)
        if code is None or code.expires_at <= clock():
            raise invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, "
                "please retry with a new valid code or use an existing refresh token.",
            )
        if code.client_id.lower() != client_id.lower():
            raise invalid_grant(70000, "Provided grant is invalid or malformed.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise invalid_grant(
                500112,
                "The reply address does not match the reply address provided when requesting Authorization code.",
            )
        if code.code_challenge and not code.verifies(form.get("code_verifier") or ""):
            raise invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        return code
