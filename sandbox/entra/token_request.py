"""The token endpoint's checks before any grant: which app is calling (and its secret), and for which resource.

Each check raises Entra's error (:class:`~sandbox.entra.errors.EntraError`) in the order Entra makes them.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from sandbox.entra.errors import EntraError, missing
from sandbox.server import RecordedRequest

#: The grants the token endpoint knows.
GRANT_TYPES = ("refresh_token", "client_credentials", "authorization_code")

_OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}


@dataclass(frozen=True)
class App:
    """The confidential app registered in the tenant."""

    tenant_id: str
    client_id: str
    client_secret: str


def authenticate_client(req: RecordedRequest, form: dict[str, str], app: App) -> str:
    """The calling app's client id, from the form or HTTP Basic, once its grant type and secret are checked."""
    client_id, client_secret = _credentials(req, form)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise missing("grant_type")
    if not client_id:
        raise missing("client_id")
    if grant_type not in GRANT_TYPES:
        raise EntraError(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )
    if client_id.lower() != app.client_id.lower():
        raise EntraError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{app.tenant_id}'. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You may have sent your authentication request to the "
            "wrong tenant.",
        )
    if not client_secret:
        raise EntraError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if not secrets.compare_digest(client_secret.encode(), app.client_secret.encode()):
        raise EntraError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
        )
    return client_id


def _credentials(req: RecordedRequest, form: dict[str, str]) -> tuple[str | None, str | None]:
    """Client id and secret: the form's, else HTTP Basic's."""
    client_id = form.get("client_id")
    client_secret = form.get("client_secret")
    auth = req.headers.get("Authorization") or ""
    if auth.lower().startswith("basic "):
        try:
            basic_id, _, basic_secret = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
        except ValueError:
            raise EntraError(401, "invalid_client", 7000216, "Client authentication failed.") from None
        client_id = client_id or basic_id
        client_secret = client_secret or basic_secret
    return client_id, client_secret


def requested_resource(
    form: dict[str, str], grant_type: str, *, v2: bool, resources: Collection[str], tenant_id: str
) -> str:
    """The resource a token is asked for (v2 from the scope, v1 from the resource parameter), if it is one of
    ``resources`` (lower case, no trailing slash)."""
    resource = _v2_resource(form) if v2 else (form.get("resource") or "").rstrip("/").lower()
    if not v2 and not resource:
        raise missing("resource")
    if resource not in resources:
        raise EntraError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {tenant_id}. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You might have sent your authentication request to the "
            "wrong tenant.",
        )
    if grant_type == "client_credentials" and v2 and not form.get("scope", "").endswith("/.default"):
        raise EntraError(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        )
    return resource


def _v2_resource(form: dict[str, str]) -> str:
    """The one resource the v2 ``scope`` names (OpenID scopes aside)."""
    scope = form.get("scope")
    if not scope:
        raise missing("scope")
    resource_scopes = [s for s in scope.split() if s.lower() not in _OIDC_SCOPES]
    resources = {s.rsplit("/", 1)[0].lower() for s in resource_scopes if "/" in s}
    if len(resources) != 1:
        raise EntraError(
            400,
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
        )
    return resources.pop()
