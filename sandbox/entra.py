"""A fake Microsoft Entra ID (login.microsoftonline.com) tenant: OIDC discovery, the v2 authorize endpoint
(authorization-code flow with PKCE, for the consent sign-in) and the v2/v1 token endpoints.

Speaks what msal's ``ConfidentialClientApplication`` (with ``instance_discovery=False``) and a hand-rolled
``requests.post`` to ``/oauth2/v2.0/token`` or ``/oauth2/token`` need. Errors use Entra's shape:
``{"error", "error_description": "AADSTSnnnn: ...", "error_codes": [n], "timestamp", "trace_id", "correlation_id",
"error_uri"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from sandbox.constants import APP_ID, APP_SECRET, PARTNER_CENTER_RESOURCE, REFRESH_TOKEN, TENANT_ID, USER_OBJECT_ID
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import TLSMaterial

_OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}


#: Authorization codes are single-use and short-lived (Entra: about 10 minutes).
AUTH_CODE_LIFETIME_SECONDS = 600.0
#: A refresh token left unused this long lapses (Entra's default max inactive time: 90 days); each use issues a
#: new one, which starts its own 90 days.
REFRESH_TOKEN_MAX_INACTIVE_SECONDS = 90 * 24 * 3600.0
#: Authentication methods of a sign-in that passed multi-factor authentication, as the ``amr`` claim lists them.
MFA_METHODS: tuple[str, ...] = ("pwd", "mfa")


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


@dataclass
class IssuedToken:
    token: str
    resource: str
    client_id: str
    expires_at: float
    grant_type: str


@dataclass(frozen=True)
class RefreshTokenGrant:
    """What Entra remembers of a refresh token: when it was issued, and how the user signed in for its chain."""

    issued_at: float
    #: The sign-in's authentication methods (the access tokens' ``amr``); None: the claim is left out.
    amr: tuple[str, ...] | None


@dataclass(frozen=True)
class Issued:
    """What a grant gives besides the access token: the sign-in's methods, a refresh token, an id token."""

    amr: tuple[str, ...] | None
    refresh_token: str | None = None
    id_token: str | None = None


class FakeEntra(FakeHTTPServer):
    """One Entra tenant with one confidential app and one user's (App+User) refresh-token chain.

    Records: ``requests`` (all), ``token_requests`` (POSTs to a token endpoint, whatever the outcome),
    ``issued_access_tokens`` (set), ``issued_refresh_tokens`` (list, in order), ``current_refresh_token``
    (the newest one), ``grants`` (one dict per successful token answer: grant_type, client_id, scope/resource,
    endpoint version).

    Time is ``clock()`` (seconds since the epoch; ``time.time`` unless a test simulates days): access tokens
    expire on it, and a refresh token unused for :data:`REFRESH_TOKEN_MAX_INACTIVE_SECONDS` lapses on it
    (``invalid_grant`` AADSTS700082), as Entra's do. Access tokens are JWTs (unsigned for this fake) whose
    ``amr`` claim lists how the user signed in: ``auth_methods`` for the initial refresh token's chain,
    ``sign_in_methods`` for a consent sign-in; a chain's later tokens carry its sign-in's methods.
    """

    server_header = "Microsoft-IIS/10.0"

    def __init__(
        self,
        tenant_id: str = TENANT_ID,
        client_id: str = APP_ID,
        client_secret: str = APP_SECRET,
        refresh_token: str = REFRESH_TOKEN,
        *,
        tls: TLSMaterial | None = None,
        expires_in: int = 3599,
        tenant_aliases: Iterable[str] = (),
        resources: Iterable[str] = (PARTNER_CENTER_RESOURCE,),
        rotate_refresh_tokens: bool = True,
        redirect_uris: Iterable[str] = ("http://localhost",),
        clock: Callable[[], float] = time.time,
        auth_methods: Iterable[str] | None = MFA_METHODS,
    ) -> None:
        super().__init__(tls=tls)
        self.clock = clock
        self.tenant_id = tenant_id
        self.tenant_aliases = {a.lower() for a in tenant_aliases}
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.resources = {r.rstrip("/").lower() for r in resources}
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.token_requests = 0
        self.issued_access_tokens: set[str] = set()
        self.issued_refresh_tokens: list[str] = [refresh_token]
        self.current_refresh_token = refresh_token
        self.grants: list[dict[str, Any]] = []
        self._valid_refresh_tokens: set[str] = {refresh_token}
        self._expired_refresh_tokens: set[str] = set()
        self._refresh_grants: dict[str, RefreshTokenGrant] = {
            refresh_token: RefreshTokenGrant(clock(), None if auth_methods is None else tuple(auth_methods))
        }
        #: How the user signs in at the consent page (the ``amr`` of the chain it starts); None leaves it out.
        self.sign_in_methods: tuple[str, ...] | None = MFA_METHODS
        self._access_tokens: dict[str, IssuedToken] = {}
        #: Reply URLs registered on the app; for http://localhost the port is ignored, as Entra does.
        self.redirect_uris = list(redirect_uris)
        #: The user's answer at the sign-in page: None signs in (MFA done); an OAuth error code refuses.
        self.sign_in_error: str | None = None
        #: The ``error_description`` that comes back with ``sign_in_error``.
        self.sign_in_error_description = "AADSTS65004: User declined to consent."
        self.authorize_requests = 0
        self._codes: dict[str, AuthorizationCode] = {}

    # -- control ---------------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        """``{url}/{tenant}``: what msal takes as ``authority`` (with ``instance_discovery=False``)."""
        return f"{self.url}/{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def valid_refresh_tokens(self) -> set[str]:
        with self._lock:
            return set(self._valid_refresh_tokens)

    def add_refresh_token(self, token: str, auth_methods: Iterable[str] | None = MFA_METHODS) -> None:
        """Make ``token`` a valid refresh token, issued now, of a sign-in with ``auth_methods``."""
        with self._lock:
            self._valid_refresh_tokens.add(token)
            self._expired_refresh_tokens.discard(token)
            amr = None if auth_methods is None else tuple(auth_methods)
            self._refresh_grants[token] = RefreshTokenGrant(self.clock(), amr)

    def refresh_token_issued_at(self, token: str) -> float | None:
        with self._lock:
            grant = self._refresh_grants.get(token)
        return None if grant is None else grant.issued_at

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far becomes expired (answers ``invalid_grant`` AADSTS70043)."""
        with self._lock:
            self._expired_refresh_tokens |= self._valid_refresh_tokens
            self._valid_refresh_tokens.clear()

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops being valid (the resource server answers 401)."""
        with self._lock:
            self._access_tokens.clear()

    def expire_access_tokens(self) -> None:
        self.revoke_access_tokens()

    def is_valid_access_token(self, token: str, resource: str | None = None) -> bool:
        with self._lock:
            issued = self._access_tokens.get(token)
        if issued is None or issued.expires_at <= self.clock():
            return False
        return resource is None or issued.resource == resource.rstrip("/").lower()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.token_requests = 0
            self.grants.clear()

    # -- wire ------------------------------------------------------------------------------------------
    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() == self.tenant_id.lower() or tenant.lower() in self.tenant_aliases

    def handle(self, req: RecordedRequest) -> Response:
        segments = [s for s in req.path.split("/") if s]
        if len(segments) < 2:
            return Response(404, b"")
        tenant, rest = segments[0], [s.lower() for s in segments[1:]]
        if rest in (["v2.0", ".well-known", "openid-configuration"], [".well-known", "openid-configuration"]):
            if req.method != "GET":
                return Response(405, b"")
            if not self._known_tenant(tenant):
                return self._error(400, "invalid_tenant", 90002, self._tenant_not_found(tenant))
            return Response.json(200, self._openid_configuration(v2=rest[0] == "v2.0"))
        if rest in (["discovery", "v2.0", "keys"], ["discovery", "keys"]):
            return Response.json(200, {"keys": []})
        if rest == ["oauth2", "v2.0", "authorize"]:
            with self._lock:
                self.authorize_requests += 1
            if not self._known_tenant(tenant):
                return self._error_page(400, 90002, self._tenant_not_found(tenant))
            return self._authorize(req)
        if rest in (["oauth2", "v2.0", "token"], ["oauth2", "token"]):
            v2 = rest[1] == "v2.0"
            with self._lock:
                self.token_requests += 1
            if req.method != "POST":
                return self._error(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
            if not self._known_tenant(tenant):
                return self._error(400, "invalid_tenant", 90002, self._tenant_not_found(tenant))
            return self._token(req, v2=v2)
        return Response(404, b"")

    def _tenant_not_found(self, tenant: str) -> str:
        return (
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
            "the correct cloud. Check with your subscription administrator, this may happen if there are no "
            "active subscriptions for the tenant."
        )

    def _openid_configuration(self, *, v2: bool) -> dict[str, Any]:
        base = f"{self.url}/{self.tenant_id}"
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
            "issuer": f"{base}{suffix}" if v2 else f"https://sts.windows.net/{self.tenant_id}/",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.url}/oidc/userinfo",
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

    def _error(self, status: int, error: str, code: int, message: str) -> Response:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        description = f"AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {now}"
        body = {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.url}/error?code={code}",
        }
        return Response.json(status, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _missing(self, name: str) -> Response:
        return self._error(
            400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
        )

    def _token(self, req: RecordedRequest, *, v2: bool) -> Response:
        """The token endpoint: the client authenticated, the resource named, then the grant it asks for."""
        form = req.form()
        client = self._client(req, form)
        if isinstance(client, Response):
            return client
        client_id, _secret = client
        grant_type = form["grant_type"]
        resource = self._resource(form, grant_type, v2=v2)
        if isinstance(resource, Response):
            return resource
        grant = {
            "authorization_code": self._authorization_code_grant,
            "refresh_token": self._refresh_token_grant,
            "client_credentials": self._client_credentials_grant,
        }[grant_type]
        with self._lock:
            issued = grant(form, client_id)
            if isinstance(issued, Response):
                return issued
            now = self.clock()
            access = self._access_token(client_id, resource, grant_type, issued.amr, now)
            self._access_tokens[access] = IssuedToken(access, resource, client_id, now + self.expires_in, grant_type)
            self.issued_access_tokens.add(access)
            self.grants.append(
                {
                    "grant_type": grant_type,
                    "client_id": client_id,
                    "resource": resource,
                    "scope": form.get("scope"),
                    "version": "v2.0" if v2 else "v1.0",
                }
            )
        body = self._token_body(form, grant_type, resource, access, now, v2=v2)
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        if issued.id_token is not None:
            body["id_token"] = issued.id_token
        return Response.json(200, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _client(self, req: RecordedRequest, form: dict[str, str]) -> tuple[str, str] | Response:
        """The calling app, from the form or HTTP Basic, checked as Entra does: (client id, secret) or the error."""
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        auth = req.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                basic_id, _, basic_secret = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except ValueError:
                return self._error(401, "invalid_client", 7000216, "Client authentication failed.")
            client_id = client_id or basic_id
            client_secret = client_secret or basic_secret
        grant_type = form.get("grant_type")
        if not grant_type:
            return self._missing("grant_type")
        if not client_id:
            return self._missing("client_id")
        if grant_type not in ("refresh_token", "client_credentials", "authorization_code"):
            return self._error(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
            )
        if client_id.lower() != self.client_id.lower():
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_id}'. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You may have sent your authentication request to the "
                "wrong tenant.",
            )
        if not client_secret:
            return self._error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if not secrets.compare_digest(client_secret.encode(), self.client_secret.encode()):
            return self._error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{self.client_id}'.",
            )
        return client_id, client_secret

    def _resource(self, form: dict[str, str], grant_type: str, *, v2: bool) -> str | Response:
        """The resource a token is asked for: v2 from the scope, v1 from the resource parameter."""
        if v2:
            scope = form.get("scope")
            if not scope:
                return self._missing("scope")
            resource_scopes = [s for s in scope.split() if s.lower() not in _OIDC_SCOPES]
            resources = {s.rsplit("/", 1)[0].lower() for s in resource_scopes if "/" in s}
            if len(resources) != 1:
                return self._error(
                    400,
                    "invalid_scope",
                    70011,
                    f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
                )
            resource = resources.pop()
        else:
            resource = (form.get("resource") or "").rstrip("/").lower()
            if not resource:
                return self._missing("resource")
        if resource not in self.resources:
            return self._error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {self.tenant_id}. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You might have sent your authentication request to the "
                "wrong tenant.",
            )
        if grant_type == "client_credentials" and v2 and not form.get("scope", "").endswith("/.default"):
            return self._error(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        return resource

    # -- the grants (each called under the lock) -------------------------------------------------------------
    def _authorization_code_grant(self, form: dict[str, str], client_id: str) -> Issued | Response:
        redeemed = self._redeem_code(form, client_id)
        if isinstance(redeemed, Response):
            return redeemed
        amr = self.sign_in_methods
        id_token = self._id_token(client_id, redeemed.nonce) if "openid" in redeemed.scope.split() else None
        return Issued(amr, self._issue_refresh_token(amr), id_token)

    def _refresh_token_grant(self, form: dict[str, str], client_id: str) -> Issued | Response:
        used = self._use_refresh_token(form.get("refresh_token"))
        if isinstance(used, Response):
            return used
        new_refresh, amr = used
        return Issued(amr, new_refresh)

    def _client_credentials_grant(self, form: dict[str, str], client_id: str) -> Issued | Response:
        return Issued(None)  # an app-only token: no user, no refresh token

    def _token_body(
        self, form: dict[str, str], grant_type: str, resource: str, access: str, now: float, *, v2: bool
    ) -> dict[str, Any]:
        """The token response's fields, as the v2.0 or the v1.0 endpoint spells them."""
        granted_scope = ".default" if grant_type == "client_credentials" else "user_impersonation"
        if v2:
            # Delegated: the consented scope, plus ".default" when that is what was asked (as Entra answers).
            v2_scope = f"{resource}/{granted_scope}"
            requested = (form.get("scope") or "").split()
            if grant_type == "refresh_token" and any(s.lower() == f"{resource}/.default" for s in requested):
                v2_scope += f" {resource}/.default"
            body: dict[str, Any] = {
                "token_type": "Bearer",
                "scope": v2_scope,
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": access,
            }
        else:
            body = {
                "token_type": "Bearer",
                "scope": granted_scope,
                "expires_in": str(self.expires_in),
                "ext_expires_in": str(self.expires_in),
                "expires_on": str(int(now) + self.expires_in),
                "not_before": str(int(now)),
                "resource": resource,
                "access_token": access,
            }
        if grant_type != "client_credentials" and form.get("client_info") == "1":
            info = json.dumps({"uid": USER_OBJECT_ID, "utid": self.tenant_id}).encode()
            body["client_info"] = base64.urlsafe_b64encode(info).decode().rstrip("=")
        return body

    def _issue_refresh_token(self, amr: tuple[str, ...] | None) -> str:
        """A new refresh token of a chain signed in with ``amr`` (called under the lock)."""
        token = "fake-rt-" + secrets.token_urlsafe(48)
        self._valid_refresh_tokens.add(token)
        self._refresh_grants[token] = RefreshTokenGrant(self.clock(), amr)
        self.issued_refresh_tokens.append(token)
        self.current_refresh_token = token
        return token

    def _use_refresh_token(self, presented: str | None) -> tuple[str, tuple[str, ...] | None] | Response:
        """Redeem a refresh token (under the lock): the one to hand back (rotated unless rotation is off) and its
        chain's ``amr``, or Entra's error: expired, lapsed after 90 days unused, or unknown."""
        if not presented:
            return self._missing("refresh_token")
        if presented in self._expired_refresh_tokens:
            return self._error(
                400,
                "invalid_grant",
                70043,
                "The refresh token has expired or is invalid due to sign-in frequency checks by conditional "
                "access. The token was issued on 2024-01-01T00:00:00.0000000Z and the maximum allowed "
                "lifetime for this request is 7776000.",
            )
        if presented not in self._valid_refresh_tokens:
            return self._error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
        grant = self._refresh_grants.get(presented) or RefreshTokenGrant(self.clock(), MFA_METHODS)
        if self.clock() - grant.issued_at >= REFRESH_TOKEN_MAX_INACTIVE_SECONDS:
            self._valid_refresh_tokens.discard(presented)
            self._expired_refresh_tokens.add(presented)
            issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
            return self._error(
                400,
                "invalid_grant",
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                "inactive for 90.00:00:00.",
            )
        if not self.rotate_refresh_tokens:
            return presented, grant.amr
        return self._issue_refresh_token(grant.amr), grant.amr

    def _access_token(
        self, client_id: str, resource: str, grant_type: str, amr: tuple[str, ...] | None, now: float
    ) -> str:
        """An access token as Entra issues it for ``resource``: a JWT (this fake's signature is random bytes).
        Delegated (App+User) tokens carry the user, the consented scope and, when known, the sign-in's ``amr``."""
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + self.expires_in,
            "appid": client_id,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if grant_type != "client_credentials":
            claims.update({"oid": USER_OBJECT_ID, "scp": "user_impersonation", "upn": "admin@contoso-partner.com"})
            if amr is not None:
                claims["amr"] = list(amr)
        return _jwt(claims)

    # -- authorization-code flow -----------------------------------------------------------------------
    def _redirect_registered(self, redirect_uri: str) -> bool:
        asked = urlsplit(redirect_uri)
        for registered in self.redirect_uris:
            known = urlsplit(registered)
            loopback = (known.hostname or "") in ("localhost", "127.0.0.1")
            same_port = loopback or known.port == asked.port
            same_path = (known.path or "/").rstrip("/") == (asked.path or "/").rstrip("/")
            if (known.scheme, known.hostname) == (asked.scheme, asked.hostname) and same_port and same_path:
                return True
        return False

    def _error_page(self, status: int, code: int, message: str) -> Response:
        """What Entra shows in the browser when it cannot redirect back safely."""
        html = f"<html><body><h1>Sign in</h1><p>AADSTS{code}: {message}</p></body></html>"
        return Response(status, html, {"Content-Type": "text/html; charset=utf-8"})

    def _authorize(self, req: RecordedRequest) -> Response:
        """``GET /{tenant}/oauth2/v2.0/authorize``: the user signs in (and passes MFA) and is sent back to the
        app's reply URL with ``code`` and ``state`` (``response_mode=query``), or with ``error``."""
        if req.method not in ("GET", "POST"):
            return Response(405, b"")
        params = dict(req.query) if req.method == "GET" else req.form()
        client_id = params.get("client_id") or ""
        if client_id.lower() != self.client_id.lower():
            return self._error_page(
                400, 700016, f"Application with identifier '{client_id}' was not found in the directory."
            )
        redirect_uri = params.get("redirect_uri") or ""
        if not redirect_uri or not self._redirect_registered(redirect_uri):
            return self._error_page(
                400,
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                f"configured for the application '{self.client_id}'.",
            )
        state = params.get("state")

        def back(**fields: str) -> Response:
            if state is not None:
                fields["state"] = state
            separator = "&" if "?" in redirect_uri else "?"
            return Response(302, b"", {"Location": redirect_uri + separator + urlencode(fields)})

        if params.get("response_type") != "code":
            return back(
                error="unsupported_response_type",
                error_description="AADSTS700054: response_type is not enabled for the application.",
            )
        scope = params.get("scope") or ""
        if not scope.strip():
            return back(
                error="invalid_request",
                error_description="AADSTS900144: The request body must contain the following parameter: 'scope'.",
            )
        method = params.get("code_challenge_method")
        if params.get("code_challenge") and method not in (None, "plain", "S256"):
            return back(error="invalid_request", error_description="AADSTS501491: Invalid code_challenge_method.")
        if self.sign_in_error is not None:
            return back(error=self.sign_in_error, error_description=self.sign_in_error_description)
        code = "fake-code-" + secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = AuthorizationCode(
                code=code,
                client_id=client_id,
                redirect_uri=redirect_uri,
                scope=scope,
                nonce=params.get("nonce"),
                code_challenge=params.get("code_challenge"),
                code_challenge_method=method or ("plain" if params.get("code_challenge") else None),
                expires_at=self.clock() + AUTH_CODE_LIFETIME_SECONDS,
            )
        return back(code=code, session_state=str(uuid.uuid4()))

    def _redeem_code(self, form: dict[str, str], client_id: str) -> AuthorizationCode | Response:
        """Check an ``authorization_code`` grant (called under the lock); the code is spent either way."""
        presented = form.get("code")
        if not presented:
            return self._missing("code")
        code = self._codes.pop(presented, None)
        if code is None or code.expires_at <= self.clock():
            return self._error(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, "
                "please retry with a new valid code or use an existing refresh token.",
            )
        if code.client_id.lower() != client_id.lower():
            return self._error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if form.get("redirect_uri") != code.redirect_uri:
            return self._error(
                400,
                "invalid_grant",
                500112,
                "The reply address does not match the reply address provided when requesting Authorization code.",
            )
        if code.code_challenge:
            verifier = form.get("code_verifier") or ""
            if code.code_challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode("ascii")).digest()
                expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            else:
                expected = verifier
            if not verifier or not secrets.compare_digest(expected, code.code_challenge):
                return self._error(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                )
        return code

    def _id_token(self, client_id: str, nonce: str | None) -> str:
        """An id token as Entra issues it (the signature is not checked by msal, nor by anyone here)."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": f"{self.url}/{self.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": USER_OBJECT_ID,
            "sub": "fake-subject-" + USER_OBJECT_ID,
            "tid": self.tenant_id,
            "preferred_username": "admin@contoso-partner.onmicrosoft.com",
            "name": "Partner Admin",
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce

        return _jwt(claims)


def _jwt(claims: dict[str, Any]) -> str:
    """A JWT of ``claims`` in Entra's compact form; the signature is random bytes (nobody here checks it)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header = {"typ": "JWT", "alg": "RS256", "kid": "fake-key"}
    return f"{part(header)}.{part(claims)}." + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
