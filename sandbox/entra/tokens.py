"""What the token endpoint hands out: access and id tokens (JWTs, unsigned for this fake) and the answer's body.

Delegated (App+User) access tokens carry the user, the consented scope and, when known, the sign-in's ``amr``;
app-only ones (client credentials) carry none of these.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from sandbox.constants import USER_OBJECT_ID

#: Authentication methods of a sign-in that passed multi-factor authentication, as the ``amr`` claim lists them.
MFA_METHODS: tuple[str, ...] = ("pwd", "mfa")


def jwt(claims: dict[str, Any]) -> str:
    """A JWT of ``claims`` in Entra's compact form; the signature is random bytes (nobody here checks it)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header = {"typ": "JWT", "alg": "RS256", "kid": "fake-key"}
    return f"{part(header)}.{part(claims)}." + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def access_token(
    *,
    tenant_id: str,
    client_id: str,
    resource: str,
    grant_type: str,
    amr: tuple[str, ...] | None,
    now: float,
    expires_in: int,
) -> str:
    """An access token as Entra issues it for ``resource``: a v1.0 JWT, valid ``expires_in`` seconds from ``now``."""
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + expires_in,
        "appid": client_id,
        "tid": tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    if grant_type != "client_credentials":
        claims.update({"oid": USER_OBJECT_ID, "scp": "user_impersonation", "upn": "admin@contoso-partner.com"})
        if amr is not None:
            claims["amr"] = list(amr)
    return jwt(claims)


def id_token(*, issuer: str, tenant_id: str, client_id: str, nonce: str | None, now: float) -> str:
    """An id token as Entra issues it (the signature is not checked by msal, nor by anyone here)."""
    issued = int(now)
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 3600,
        "oid": USER_OBJECT_ID,
        "sub": "fake-subject-" + USER_OBJECT_ID,
        "tid": tenant_id,
        "preferred_username": "admin@contoso-partner.onmicrosoft.com",
        "name": "Partner Admin",
        "ver": "2.0",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt(claims)


def token_body(
    form: dict[str, str],
    *,
    grant_type: str,
    resource: str,
    access: str,
    now: float,
    expires_in: int,
    tenant_id: str,
    v2: bool,
) -> dict[str, Any]:
    """The token response's fields, as the v2.0 or the v1.0 endpoint spells them."""
    granted_scope = ".default" if grant_type == "client_credentials" else "user_impersonation"
    body: dict[str, Any]
    if v2:
        # Delegated: the consented scope, plus ".default" when that is what was asked (as Entra answers).
        v2_scope = f"{resource}/{granted_scope}"
        requested = (form.get("scope") or "").split()
        if grant_type == "refresh_token" and any(s.lower() == f"{resource}/.default" for s in requested):
            v2_scope += f" {resource}/.default"
        body = {
            "token_type": "Bearer",
            "scope": v2_scope,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access,
        }
    else:
        body = {
            "token_type": "Bearer",
            "scope": granted_scope,
            "expires_in": str(expires_in),
            "ext_expires_in": str(expires_in),
            "expires_on": str(int(now) + expires_in),
            "not_before": str(int(now)),
            "resource": resource,
            "access_token": access,
        }
    if grant_type != "client_credentials" and form.get("client_info") == "1":
        info = json.dumps({"uid": USER_OBJECT_ID, "utid": tenant_id}).encode()
        body["client_info"] = base64.urlsafe_b64encode(info).decode().rstrip("=")
    return body
