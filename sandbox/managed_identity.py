"""A fake App Service / Azure Functions managed-identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

azure-identity 1.27 delegates to msal's ``ManagedIdentityClient``, which sends
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>`` (plus ``client_id``/``mi_res_id``/
``object_id`` for a user-assigned identity) with headers ``X-IDENTITY-HEADER: <IDENTITY_HEADER>`` and
``Metadata: true``, and expects ``{"access_token", "expires_on": "<epoch seconds, a string>", "resource",
"token_type", "client_id"}``. Plain http on loopback, as on App Service (``http://localhost:8081/msi/token``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sandbox.constants import MANAGED_IDENTITY_CLIENT_ID
from sandbox.server import FakeHTTPServer, RecordedRequest, Response

#: Path of the endpoint (App Service uses /msi/token).
TOKEN_PATH = "/msi/token"


@dataclass
class IssuedMIToken:
    token: str
    resource: str
    client_id: str
    expires_on: int


class FakeManagedIdentity(FakeHTTPServer):
    """Records: ``requests``, ``token_requests`` (count of GETs to the token path), ``issued_tokens``
    (token -> IssuedMIToken), ``resources`` (the resource of each successful request, in order)."""

    server_header = "Kestrel"

    def __init__(
        self,
        *,
        identity_header: str | None = None,
        client_id: str = MANAGED_IDENTITY_CLIENT_ID,
        expires_in: int = 86399,
    ) -> None:
        super().__init__(use_tls=False)
        self.identity_header = identity_header or secrets.token_hex(16)
        self.client_id = client_id
        self.expires_in = expires_in
        self.token_requests = 0
        self.issued_tokens: dict[str, IssuedMIToken] = {}
        self.resources: list[str] = []
        self._revoked: set[str] = set()

    @property
    def endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``."""
        return f"{self.url}{TOKEN_PATH}"

    def env(self) -> dict[str, str]:
        """``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` as App Service sets them."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.identity_header}

    def is_valid(self, token: str, resource: str | None = None) -> bool:
        with self._lock:
            issued = self.issued_tokens.get(token)
            revoked = token in self._revoked
        if issued is None or revoked or issued.expires_on <= time.time():
            return False
        return resource is None or issued.resource.rstrip("/").lower() == resource.rstrip("/").lower()

    def revoke_tokens(self) -> None:
        with self._lock:
            self._revoked |= set(self.issued_tokens)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.token_requests = 0
            self.resources.clear()

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return Response.json(status, {"statusCode": status, "message": message})

    def handle(self, req: RecordedRequest) -> Response:
        if req.path.rstrip("/").lower() != TOKEN_PATH:
            return self._error(404, "Not found")
        if req.method != "GET":
            return self._error(405, "Method not allowed")
        with self._lock:
            self.token_requests += 1
        if req.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return self._error(401, "The X-IDENTITY-HEADER header is missing or not valid.")
        if req.query.get("api-version") != "2019-08-01":
            return self._error(400, f"The api-version '{req.query.get('api-version')}' could not be found.")
        resource = req.query.get("resource")
        if not resource:
            return self._error(400, "Required query variable 'resource' is missing")
        client_id = req.query.get("client_id") or self.client_id
        token = "fake-mi-" + secrets.token_urlsafe(48)
        expires_on = int(time.time()) + self.expires_in
        with self._lock:
            self.issued_tokens[token] = IssuedMIToken(token, resource, client_id, expires_on)
            self.resources.append(resource)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
        return Response.json(200, body)
