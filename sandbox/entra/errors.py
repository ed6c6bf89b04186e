"""Entra's error answers: the token endpoint's JSON error, and the page the browser shows at sign-in.

The token endpoint's checks raise :class:`EntraError`; the fake renders it with :func:`error_response` in Entra's
shape: ``{"error", "error_description": "AADSTSnnnn: ...", "error_codes": [n], "timestamp", "trace_id",
"correlation_id", "error_uri"}``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sandbox.server import Response

#: The headers of every token endpoint answer, success or error.
NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class EntraError(Exception):
    """An OAuth error of the token endpoint: the HTTP status, the ``error`` code, the AADSTS number, the message."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message


def missing(name: str) -> EntraError:
    """A required form field is absent (AADSTS900144)."""
    return EntraError(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def invalid_grant(code: int, message: str) -> EntraError:
    return EntraError(400, "invalid_grant", code, message)


def error_response(base_url: str, error: EntraError) -> Response:
    """``error`` as Entra answers it, with fresh trace and correlation ids and ``error_uri`` under ``base_url``."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{error.code}: {error.message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {now}"
    )
    body = {
        "error": error.error,
        "error_description": description,
        "error_codes": [error.code],
        "timestamp": now,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{base_url}/error?code={error.code}",
    }
    return Response.json(error.status, body, NO_STORE)


def tenant_not_found(tenant: str) -> str:
    """The message of AADSTS90002, for a tenant this fake is not."""
    return (
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant."
    )


def error_page(status: int, code: int, message: str) -> Response:
    """What Entra shows in the browser when it cannot redirect back safely."""
    html = f"<html><body><h1>Sign in</h1><p>AADSTS{code}: {message}</p></body></html>"
    return Response(status, html, {"Content-Type": "text/html; charset=utf-8"})
