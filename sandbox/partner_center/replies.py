"""Partner Center's answers on the wire: the headers of every answer, its error body, the gateway's 429.

Every answer carries ``MS-CorrelationId`` and ``MS-RequestId`` (echoed when sent, else generated), ``MS-CV`` and
``MS-ServerId``. Errors are ``{"code", "description", "data", "source"}``; the checks of a call raise
:class:`PartnerCenterError` and the fake renders it with :meth:`Replies.error`.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from sandbox.server import RecordedRequest, Response


class PartnerCenterError(Exception):
    """An error answer in Partner Center's shape; ``code`` None or "" leaves ``code`` out of the body."""

    def __init__(
        self,
        status: int,
        code: int | str | None,
        description: str,
        data: list[Any] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.data = data
        #: Headers beyond Partner Center's own (``Retry-After``, ``WWW-Authenticate``).
        self.extra = extra


def rate_limit_body(retry_after: str | int) -> dict[str, Any]:
    """The gateway's 429 body (it answers before Partner Center does)."""
    return {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."}


class Replies:
    """Answers of the Partner Center instance whose ``MS-ServerId`` is ``server_id``."""

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id

    def headers(self, req: RecordedRequest) -> dict[str, str]:
        cv = base64.b64encode(secrets.token_bytes(12)).decode().rstrip("=") + ".0"
        return {
            "MS-CorrelationId": req.headers.get("MS-CorrelationId") or str(uuid.uuid4()),
            "MS-RequestId": req.headers.get("MS-RequestId") or str(uuid.uuid4()),
            "MS-CV": cv,
            "MS-ServerId": self.server_id,
        }

    def json(self, req: RecordedRequest, status: int, body: Any, extra: dict[str, str] | None = None) -> Response:
        headers = self.headers(req)
        headers.update(extra or {})
        return Response.json(status, body, headers)

    def error(self, req: RecordedRequest, error: PartnerCenterError) -> Response:
        body: dict[str, Any] = {
            "code": error.code,
            "description": error.description,
            "data": error.data or [],
            "source": "PartnerCenter",
        }
        if error.code is None or error.code == "":
            del body["code"]  # e.g. a 403 for a token without the needed role: no Partner Center error code
        return self.json(req, error.status, body, error.extra)

    def throttled(self, req: RecordedRequest, retry_after: str | int) -> Response:
        """429 with ``Retry-After`` and the gateway's body."""
        return self.json(req, 429, rate_limit_body(retry_after), {"Retry-After": str(retry_after)})

    def no_route(self, req: RecordedRequest) -> Response:
        return self.json(
            req, 404, {"Message": f"No HTTP resource was found that matches the request URI '{req.target}'."}
        )

    def wrong_method(self, req: RecordedRequest) -> Response:
        return self.json(req, 405, {"Message": f"The requested resource does not support http method '{req.method}'."})
