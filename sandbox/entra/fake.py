"""The fake tenant itself: :class:`FakeEntra`, its control surface for tests and the routing of its endpoints.

What each endpoint answers lives beside it: discovery (:mod:`~sandbox.entra.discovery`), the sign-in page
(:mod:`~sandbox.entra.authorize`), the token endpoint's checks (:mod:`~sandbox.entra.token_request`) and grants
(:mod:`~sandbox.entra.grants`), the tokens handed out (:mod:`~sandbox.entra.tokens`) and the books of codes,
refresh tokens and access tokens.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sandbox.constants import APP_ID, APP_SECRET, PARTNER_CENTER_RESOURCE, REFRESH_TOKEN, TENANT_ID
from sandbox.entra import grants, tokens
from sandbox.entra.access_tokens import AccessTokenBook, IssuedToken
from sandbox.entra.authorize import read_sign_in
from sandbox.entra.codes import AUTH_CODE_LIFETIME_SECONDS, CodeBook
from sandbox.entra.discovery import JWKS, openid_configuration
from sandbox.entra.errors import NO_STORE, EntraError, error_page, error_response, tenant_not_found
from sandbox.entra.refresh_tokens import RefreshTokenBook, RefreshTokenGrant
from sandbox.entra.token_request import App, authenticate_client, requested_resource
from sandbox.entra.tokens import MFA_METHODS
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import TLSMaterial

_DISCOVERY = (["v2.0", ".well-known", "openid-configuration"], [".well-known", "openid-configuration"])
_KEYS = (["discovery", "v2.0", "keys"], ["discovery", "keys"])
_AUTHORIZE = ["oauth2", "v2.0", "authorize"]
_TOKEN = (["oauth2", "v2.0", "token"], ["oauth2", "token"])


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
        self.grants: list[dict[str, Any]] = []
        amr = None if auth_methods is None else tuple(auth_methods)
        self._refresh_tokens = RefreshTokenBook(refresh_token, RefreshTokenGrant(clock(), amr))
        self._access_tokens = AccessTokenBook()
        self._codes = CodeBook()
        #: How the user signs in at the consent page (the ``amr`` of the chain it starts); None leaves it out.
        self.sign_in_methods: tuple[str, ...] | None = MFA_METHODS
        #: Reply URLs registered on the app; for http://localhost the port is ignored, as Entra does.
        self.redirect_uris = list(redirect_uris)
        #: The user's answer at the sign-in page: None signs in (MFA done); an OAuth error code refuses.
        self.sign_in_error: str | None = None
        #: The ``error_description`` that comes back with ``sign_in_error``.
        self.sign_in_error_description = "AADSTS65004: User declined to consent."
        self.authorize_requests = 0

    # -- control ---------------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        """``{url}/{tenant}``: what msal takes as ``authority`` (with ``instance_discovery=False``)."""
        return f"{self.url}/{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def issued_access_tokens(self) -> set[str]:
        """Every access token issued so far (the live set)."""
        return self._access_tokens.issued

    @property
    def issued_refresh_tokens(self) -> list[str]:
        """Every refresh token issued so far, in order, the constructor's first (the live list)."""
        return self._refresh_tokens.issued

    @property
    def current_refresh_token(self) -> str:
        return self._refresh_tokens.current

    @property
    def valid_refresh_tokens(self) -> set[str]:
        with self._lock:
            return self._refresh_tokens.valid

    def add_refresh_token(self, token: str, auth_methods: Iterable[str] | None = MFA_METHODS) -> None:
        """Make ``token`` a valid refresh token, issued now, of a sign-in with ``auth_methods``."""
        with self._lock:
            amr = None if auth_methods is None else tuple(auth_methods)
            self._refresh_tokens.add(token, RefreshTokenGrant(self.clock(), amr))

    def refresh_token_issued_at(self, token: str) -> float | None:
        with self._lock:
            return self._refresh_tokens.issued_at(token)

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far becomes expired (answers ``invalid_grant`` AADSTS70043)."""
        with self._lock:
            self._refresh_tokens.expire_all()

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far stops being valid (the resource server answers 401)."""
        with self._lock:
            self._access_tokens.revoke_all()

    def expire_access_tokens(self) -> None:
        self.revoke_access_tokens()

    def is_valid_access_token(self, token: str, resource: str | None = None) -> bool:
        with self._lock:
            issued = self._access_tokens.find(token)
        return issued is not None and issued.valid_for(resource, self.clock())

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
        if rest in _DISCOVERY:
            if req.method != "GET":
                return Response(405, b"")
            if not self._known_tenant(tenant):
                return self._error(EntraError(400, "invalid_tenant", 90002, tenant_not_found(tenant)))
            return Response.json(200, openid_configuration(self.url, self.tenant_id, v2=rest[0] == "v2.0"))
        if rest in _KEYS:
            return Response.json(200, JWKS)
        if rest == _AUTHORIZE:
            with self._lock:
                self.authorize_requests += 1
            if not self._known_tenant(tenant):
                return error_page(400, 90002, tenant_not_found(tenant))
            return self._authorize(req)
        if rest in _TOKEN:
            with self._lock:
                self.token_requests += 1
            try:
                return self._token(req, tenant, v2=rest[1] == "v2.0")
            except EntraError as error:
                return self._error(error)
        return Response(404, b"")

    def _error(self, error: EntraError) -> Response:
        return error_response(self.url, error)

    def _authorize(self, req: RecordedRequest) -> Response:
        """The sign-in page: the user signs in (and passes MFA) and goes back to the app's reply URL with ``code``
        and ``state``, or with the error they answered with (``sign_in_error``)."""
        sign_in = read_sign_in(req, client_id=self.client_id, redirect_uris=self.redirect_uris)
        if isinstance(sign_in, Response):
            return sign_in
        if self.sign_in_error is not None:
            return sign_in.back(error=self.sign_in_error, error_description=self.sign_in_error_description)
        code = "fake-code-" + secrets.token_urlsafe(32)
        with self._lock:
            self._codes.add(sign_in.code(code, self.clock() + AUTH_CODE_LIFETIME_SECONDS))
        return sign_in.back(code=code, session_state=str(uuid.uuid4()))

    def _token(self, req: RecordedRequest, tenant: str, *, v2: bool) -> Response:
        """The token endpoint: the client authenticated, the resource named, then the grant it asks for."""
        if req.method != "POST":
            raise EntraError(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        if not self._known_tenant(tenant):
            raise EntraError(400, "invalid_tenant", 90002, tenant_not_found(tenant))
        form = req.form()
        client_id = authenticate_client(req, form, App(self.tenant_id, self.client_id, self.client_secret))
        grant_type = form["grant_type"]
        resource = requested_resource(form, grant_type, v2=v2, resources=self.resources, tenant_id=self.tenant_id)
        with self._lock:
            issued = self._grant(grant_type, form, client_id)
            now = self.clock()
            access = tokens.access_token(
                tenant_id=self.tenant_id,
                client_id=client_id,
                resource=resource,
                grant_type=grant_type,
                amr=issued.amr,
                now=now,
                expires_in=self.expires_in,
            )
            self._access_tokens.record(IssuedToken(access, resource, client_id, now + self.expires_in, grant_type))
            self.grants.append(
                {
                    "grant_type": grant_type,
                    "client_id": client_id,
                    "resource": resource,
                    "scope": form.get("scope"),
                    "version": "v2.0" if v2 else "v1.0",
                }
            )
        body = tokens.token_body(
            form,
            grant_type=grant_type,
            resource=resource,
            access=access,
            now=now,
            expires_in=self.expires_in,
            tenant_id=self.tenant_id,
            v2=v2,
        )
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        if issued.id_token is not None:
            body["id_token"] = issued.id_token
        return Response.json(200, body, NO_STORE)

    def _grant(self, grant_type: str, form: dict[str, str], client_id: str) -> grants.Issued:
        """The grant ``grant_type`` (one of :data:`~sandbox.entra.token_request.GRANT_TYPES`); under the lock."""
        if grant_type == "authorization_code":
            return grants.authorization_code(
                form,
                client_id,
                codes=self._codes,
                refresh_tokens=self._refresh_tokens,
                amr=self.sign_in_methods,
                id_token=lambda nonce: self._id_token(client_id, nonce),
                clock=self.clock,
            )
        if grant_type == "refresh_token":
            return grants.refresh_token(
                form, refresh_tokens=self._refresh_tokens, rotate=self.rotate_refresh_tokens, clock=self.clock
            )
        return grants.client_credentials()

    def _id_token(self, client_id: str, nonce: str | None) -> str:
        issuer = f"{self.url}/{self.tenant_id}/v2.0"
        return tokens.id_token(
            issuer=issuer, tenant_id=self.tenant_id, client_id=client_id, nonce=nonce, now=self.clock()
        )
