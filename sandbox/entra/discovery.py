"""The tenant's OpenID Connect metadata (``.well-known/openid-configuration``, v2.0 and v1) and its key set."""

from __future__ import annotations

from typing import Any

#: The signing keys document (``discovery/keys``): empty, as nobody here checks a signature.
JWKS: dict[str, Any] = {"keys": []}


def openid_configuration(base_url: str, tenant_id: str, *, v2: bool) -> dict[str, Any]:
    """The discovery document of ``tenant_id`` served at ``base_url``, as the v2.0 or the v1 endpoint words it."""
    base = f"{base_url}/{tenant_id}"
    suffix = "/v2.0" if v2 else ""
    oauth = f"{base}/oauth2/v2.0" if v2 else f"{base}/oauth2"
    return {
        "token_endpoint": f"{oauth}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery{suffix}/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}{suffix}" if v2 else f"https://sts.windows.net/{tenant_id}/",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base_url}/oidc/userinfo",
        "authorization_endpoint": f"{oauth}/authorize",
        "device_authorization_endpoint": f"{oauth}/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{oauth}/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "tid", "oid"],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }
