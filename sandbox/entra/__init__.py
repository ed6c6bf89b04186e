"""A fake Microsoft Entra ID (login.microsoftonline.com) tenant: OIDC discovery, the v2 authorize endpoint
(authorization-code flow with PKCE, for the consent sign-in) and the v2/v1 token endpoints.

Speaks what msal's ``ConfidentialClientApplication`` (with ``instance_discovery=False``) and a hand-rolled
``requests.post`` to ``/oauth2/v2.0/token`` or ``/oauth2/token`` need. Errors use Entra's shape:
``{"error", "error_description": "AADSTSnnnn: ...", "error_codes": [n], "timestamp", "trace_id", "correlation_id",
"error_uri"}``.

The tenant is :class:`FakeEntra` (:mod:`~sandbox.entra.fake`); each module beside it does one part of the job.
"""

from __future__ import annotations

from sandbox.entra.access_tokens import IssuedToken
from sandbox.entra.codes import AUTH_CODE_LIFETIME_SECONDS, AuthorizationCode
from sandbox.entra.fake import FakeEntra
from sandbox.entra.grants import Issued
from sandbox.entra.refresh_tokens import REFRESH_TOKEN_MAX_INACTIVE_SECONDS, RefreshTokenGrant
from sandbox.entra.tokens import MFA_METHODS

__all__ = [
    "AUTH_CODE_LIFETIME_SECONDS",
    "MFA_METHODS",
    "REFRESH_TOKEN_MAX_INACTIVE_SECONDS",
    "AuthorizationCode",
    "FakeEntra",
    "Issued",
    "IssuedToken",
    "RefreshTokenGrant",
]
