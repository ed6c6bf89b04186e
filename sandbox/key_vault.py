"""A fake Azure Key Vault (secrets only), speaking the REST protocol azure-keyvault-secrets 4.12 uses.

* Challenge authentication: a request without a valid bearer token gets ``401`` with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="<resource>"``.
  The resource is ``https://0.0.1:<port>`` by default: SecretClient only accepts a challenge resource whose
  authority is a parent domain of the vault's (``127.0.0.1:<port>`` ends with ``.0.0.1:<port>``), so the
  client's ``verify_challenge_resource`` stays on.
* ``GET /secrets/{name}/`` (latest) and ``GET /secrets/{name}/{version}``; ``PUT /secrets/{name}`` (set_secret);
  ``GET /secrets`` (list_properties_of_secrets: each secret's latest attributes, no value, one page).
  ``api-version`` is required. Errors: ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.constants import TENANT_ID
from sandbox.managed_identity import FakeManagedIdentity
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import TLSMaterial

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str
    created: int
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    #: ``attributes.exp``: expiry in seconds since the epoch, when set.
    expires: int | None = None


class FakeKeyVault(FakeHTTPServer):
    """Records: ``requests`` (all, including the unauthenticated challenge requests), ``gets`` (Counter of
    authenticated GETs per secret name, lower-cased, found or not), ``puts`` (list of (name, value) stored),
    ``unauthorized`` (count of 401 answers)."""

    server_header = "Microsoft-IIS/10.0"

    def __init__(
        self,
        secrets: Mapping[str, str] | None = None,
        *,
        managed_identity: FakeManagedIdentity | None = None,
        tls: TLSMaterial | None = None,
        tenant_id: str = TENANT_ID,
        read_only: bool = False,
    ) -> None:
        super().__init__(tls=tls)
        self.managed_identity = managed_identity
        self.tenant_id = tenant_id
        #: PUTs answer 403 ForbiddenByRbac (the identity lacks Key Vault Secrets Officer).
        self.read_only = read_only
        #: Every request answers 403 ForbiddenByRbac (the identity has no role on the vault at all).
        self.forbidden = False
        self.gets: Counter[str] = Counter()
        self.puts: list[tuple[str, str]] = []
        self.unauthorized = 0
        self._versions: dict[str, list[SecretVersion]] = {}
        for name, value in (secrets or {}).items():
            self.set_secret(name, value)

    # -- control ---------------------------------------------------------------------------------------
    @property
    def challenge_resource(self) -> str:
        return f"https://0.0.1:{self.port}"

    def set_secret(self, name: str, value: str, content_type: str | None = None, *, expires: int | None = None) -> str:
        """Store a new version directly (test setup; not recorded in ``puts``), expiring at ``expires`` (seconds
        since the epoch) when given. Returns the version."""
        version = uuid.uuid4().hex
        with self._lock:
            self._versions.setdefault(name.lower(), []).append(
                SecretVersion(name, version, value, int(time.time()), content_type, expires=expires)
            )
        return version

    def get_value(self, name: str) -> str | None:
        """The latest value of ``name``, or None."""
        with self._lock:
            versions = self._versions.get(name.lower())
            return versions[-1].value if versions else None

    def latest(self, name: str) -> SecretVersion | None:
        """The latest version of ``name`` with its attributes, or None."""
        with self._lock:
            versions = self._versions.get(name.lower())
            return versions[-1] if versions else None

    def versions(self, name: str) -> list[str]:
        with self._lock:
            return [v.version for v in self._versions.get(name.lower(), [])]

    def delete_secret(self, name: str) -> None:
        with self._lock:
            self._versions.pop(name.lower(), None)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.gets.clear()
            self.puts.clear()
            self.unauthorized = 0

    # -- wire ------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-keyvault-service-version": "1.9.2222.1",
            "x-ms-keyvault-network-info": "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
            "x-ms-keyvault-region": "westeurope",
            "Cache-Control": "no-cache",
        }

    def _error(self, status: int, code: str, message: str, extra: Mapping[str, str] | None = None) -> Response:
        headers = self._headers()
        headers.update(extra or {})
        return Response.json(status, {"error": {"code": code, "message": message}}, headers)

    def _challenge(self, message: str) -> Response:
        with self._lock:
            self.unauthorized += 1
        header = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
            f'resource="{self.challenge_resource}"'
        )
        return self._error(401, "Unauthorized", message, {"WWW-Authenticate": header})

    def _bundle(self, v: SecretVersion) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "value": v.value,
            "id": f"{self.url}/secrets/{v.name}/{v.version}",
            "attributes": {
                "enabled": v.enabled,
                "created": v.created,
                "updated": v.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": dict(v.tags),
        }
        if v.expires is not None:
            bundle["attributes"]["exp"] = v.expires
        if v.content_type is not None:
            bundle["contentType"] = v.content_type
        return bundle

    def handle(self, req: RecordedRequest) -> Response:
        auth = req.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        if self.managed_identity is not None and not self.managed_identity.is_valid(token, self.challenge_resource):
            return self._challenge(f"AKV10022: Invalid audience. Expected {self.challenge_resource}.")
        if not req.query.get("api-version"):
            return self._error(400, "BadParameter", "The 'api-version' query parameter is missing.")
        if self.forbidden:
            return self._forbidden(req, "secrets/get" if req.method == "GET" else "secrets/set")

        segments = req.path.split("/")[1:]  # "/secrets/x/" -> ["secrets", "x", ""]
        if req.method == "GET" and [segment.lower() for segment in segments if segment] == ["secrets"]:
            return self._list()
        if len(segments) < 2 or segments[0].lower() != "secrets" or len(segments) > 3:
            return self._error(404, "NotFound", "The requested resource was not found.")
        name = segments[1]
        version = segments[2] if len(segments) == 3 else ""
        if not _NAME.match(name):
            return self._error(
                400,
                "BadParameter",
                f"The request URI contains an invalid name: {name}. Follow this rule: '^[0-9a-zA-Z-]+$'",
            )
        if req.method == "GET":
            return self._get(name, version)
        if req.method == "PUT" and not version:
            if self.read_only:
                return self._forbidden(req, "secrets/setSecret")
            return self._put(req, name)
        return self._error(405, "MethodNotAllowed", f"The method {req.method} is not allowed on this resource.")

    def _forbidden(self, req: RecordedRequest, action: str) -> Response:
        return Response.json(
            403,
            {
                "error": {
                    "code": "Forbidden",
                    "message": "Caller is not authorized to perform action on resource.\r\nIf role assignments, "
                    "deny assignments or role definitions were changed recently, please observe propagation time."
                    f"\r\nAction: 'Microsoft.KeyVault/vaults/{action}/action'",
                    "innererror": {"code": "ForbiddenByRbac"},
                }
            },
            self._headers(),
        )

    def _get(self, name: str, version: str) -> Response:
        with self._lock:
            self.gets[name.lower()] += 1
            versions = self._versions.get(name.lower(), [])
            found = [v for v in versions if v.version == version] if version else versions[-1:]
        if not found:
            what = f"{name}/{version}" if version else name
            return self._error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {what} was not found in this key vault. If you recently deleted this "
                "secret you may be able to recover it using the correct recovery command. For help resolving "
                "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        return Response.json(200, self._bundle(found[0]), self._headers())

    def _list(self) -> Response:
        """SecretListResult: a SecretItem (id without version, attributes, tags, contentType) per secret."""
        with self._lock:
            latest = [versions[-1] for versions in self._versions.values() if versions]
        items = []
        for v in latest:
            item = {key: value for key, value in self._bundle(v).items() if key != "value"}
            item["id"] = f"{self.url}/secrets/{v.name}"
            items.append(item)
        return Response.json(200, {"value": items, "nextLink": None}, self._headers())

    def _put(self, req: RecordedRequest, name: str) -> Response:
        try:
            body = req.json()
        except ValueError:
            return self._error(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return self._error(400, "BadParameter", "Property 'value' is required.")
        attributes = body.get("attributes") or {}
        v = SecretVersion(
            name,
            uuid.uuid4().hex,
            body["value"],
            int(time.time()),
            body.get("contentType"),
            dict(body.get("tags") or {}),
            bool(attributes.get("enabled", True)),
            int(attributes["exp"]) if isinstance(attributes.get("exp"), int | float) else None,
        )
        with self._lock:
            existing = self._versions.setdefault(name.lower(), [])
            if existing:
                v.name = existing[0].name
            existing.append(v)
            self.puts.append((name, v.value))
        return Response.json(200, self._bundle(v), self._headers())
