"""The sign-in page, ``/{tenant}/oauth2/v2.0/authorize``: the authorization-code flow's first leg (with PKCE).

:func:`read_sign_in` checks what the app asks for. When the app or its reply URL is unknown, Entra cannot send the
user back safely and shows an error page; any other problem goes back to the reply URL as ``error`` and
``error_description`` (``response_mode=query``). A sign-in that passes is a :class:`SignIn`, which the fake answers
with a code (or with the user's refusal).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from sandbox.entra.codes import AuthorizationCode
from sandbox.entra.errors import error_page
from sandbox.server import RecordedRequest, Response


@dataclass(frozen=True)
class SignIn:
    """A sign-in request whose app and reply URL are known: where the user goes back to, and what for."""

    client_id: str
    redirect_uri: str
    state: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None

    def back(self, **fields: str) -> Response:
        """Send the user back to the reply URL with ``fields`` (and ``state``) in the query string."""
        if self.state is not None:
            fields["state"] = self.state
        separator = "&" if "?" in self.redirect_uri else "?"
        return Response(302, b"", {"Location": self.redirect_uri + separator + urlencode(fields)})

    def code(self, code: str, expires_at: float) -> AuthorizationCode:
        """The authorization code this sign-in is answered with."""
        return AuthorizationCode(
            code=code,
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            scope=self.scope,
            nonce=self.nonce,
            code_challenge=self.code_challenge,
            code_challenge_method=self.code_challenge_method or ("plain" if self.code_challenge else None),
            expires_at=expires_at,
        )


def redirect_registered(redirect_uris: list[str], redirect_uri: str) -> bool:
    """Whether ``redirect_uri`` is a registered reply URL; for http://localhost the port is ignored, as Entra does."""
    asked = urlsplit(redirect_uri)
    for registered in redirect_uris:
        known = urlsplit(registered)
        loopback = (known.hostname or "") in ("localhost", "127.0.0.1")
        same_port = loopback or known.port == asked.port
        same_path = (known.path or "/").rstrip("/") == (asked.path or "/").rstrip("/")
        if (known.scheme, known.hostname) == (asked.scheme, asked.hostname) and same_port and same_path:
            return True
    return False


def read_sign_in(req: RecordedRequest, *, client_id: str, redirect_uris: list[str]) -> SignIn | Response:
    """The sign-in ``req`` asks for (GET query or POST form), or how Entra refuses it."""
    if req.method not in ("GET", "POST"):
        return Response(405, b"")
    params = dict(req.query) if req.method == "GET" else req.form()
    asked_client = params.get("client_id") or ""
    if asked_client.lower() != client_id.lower():
        return error_page(400, 700016, f"Application with identifier '{asked_client}' was not found in the directory.")
    redirect_uri = params.get("redirect_uri") or ""
    if not redirect_uri or not redirect_registered(redirect_uris, redirect_uri):
        return error_page(
            400,
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            f"configured for the application '{client_id}'.",
        )
    sign_in = SignIn(
        client_id=asked_client,
        redirect_uri=redirect_uri,
        state=params.get("state"),
        scope=params.get("scope") or "",
        nonce=params.get("nonce"),
        code_challenge=params.get("code_challenge"),
        code_challenge_method=params.get("code_challenge_method"),
    )
    return _refusal(sign_in, params.get("response_type")) or sign_in


def _refusal(sign_in: SignIn, response_type: str | None) -> Response | None:
    """The error redirect for a sign-in Entra will not go on with, or None."""
    if response_type != "code":
        return sign_in.back(
            error="unsupported_response_type",
            error_description="AADSTS700054: response_type is not enabled for the application.",
        )
    if not sign_in.scope.strip():
        return sign_in.back(
            error="invalid_request",
            error_description="AADSTS900144: The request body must contain the following parameter: 'scope'.",
        )
    method = sign_in.code_challenge_method
    if sign_in.code_challenge and method not in (None, "plain", "S256"):
        return sign_in.back(error="invalid_request", error_description="AADSTS501491: Invalid code_challenge_method.")
    return None
