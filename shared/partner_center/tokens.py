"""App+User access tokens for Partner Center, from the secure app model's refresh token.

One :class:`TokenProvider` per process: it holds the access token until shortly before it expires, so N
upgrades cost one token request, and concurrent invocations that start cold wait for one request
instead of sending one each.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import msal
import msal.exceptions
import requests

from shared.errors import SecretStoreError, TokenError, UpstreamUnavailableError
from shared.logs import register_secret
from shared.partner_center.secrets import PartnerCenterCredentials, SecretStore
from shared.retry import RetryPolicy

log = logging.getLogger(__name__)

PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/.default"

#: Renew this many seconds before the access token expires, so no call leaves with a token about to lapse.
EXPIRY_MARGIN_SECONDS = 300.0

_AADSTS = re.compile(r"AADSTS\d+")


class RetryingHttpClient:
    """The ``http_client`` msal calls: our shared session behind our retry policy."""

    def __init__(self, session: requests.Session, policy: RetryPolicy) -> None:
        self._session = session
        self._policy = policy

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._request("GET", url, **kwargs)

    def close(self) -> None:  # msal may call it; the session is shared and outlives msal's app
        pass

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.pop("timeout", None)  # ours, from the policy, rule
        # Never followed: a 307 would re-post the app secret and the refresh token to wherever it points.
        kwargs["allow_redirects"] = False
        response = self._policy.send(
            lambda timeout: self._session.request(method, url, timeout=timeout, **kwargs),
            service="Entra ID token endpoint",
        )
        if 300 <= response.status_code < 400:
            raise TokenError(f"Entra ID answered {response.status_code}, a redirect, which is not followed")
        return response


class TokenProvider:
    """Exchanges the refresh token for Partner Center access tokens; caches and rotates."""

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        secrets: SecretStore,
        session: requests.Session,
        policy: RetryPolicy,
        scope: str = PARTNER_CENTER_SCOPE,
    ) -> None:
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._secrets = secrets
        self._http = RetryingHttpClient(session, policy)
        self._scope = scope
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_key: tuple[str, str] | None = None
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._refresh_token: str | None = None

    def get_token(self, *, force_refresh: bool = False, stale_token: str | None = None) -> str:
        """A valid access token. ``force_refresh`` renews it unless another caller already replaced
        ``stale_token`` (the one Partner Center just refused) meanwhile."""
        with self._lock:
            renew = force_refresh and (stale_token is None or stale_token == self._access_token)
            if renew or self._access_token is None or time.monotonic() >= self._expires_at:
                self._refresh()
            assert self._access_token is not None
            return self._access_token

    def _refresh(self) -> None:
        credentials = self._secrets.load()
        refresh_token = self._refresh_token or credentials.refresh_token
        app = self._application(credentials)
        started = time.monotonic()
        try:
            result: dict[str, Any] = app.acquire_token_by_refresh_token(refresh_token, scopes=[self._scope])
        except msal.exceptions.MsalServiceError as exc:
            # msal raises on a 5xx or 429 that our retries could not get past: a transient outage, not a refusal.
            raise UpstreamUnavailableError(
                f"Entra ID token endpoint failed ({exc.args[0] if exc.args else 'error'})"
            ) from None
        if "access_token" not in result:
            self._secrets.invalidate()  # the operator may fix the vault; read it again next time
            self._refresh_token = None
            raise _token_error(result)
        self._access_token = str(result["access_token"])
        register_secret(self._access_token)
        expires_in = float(result.get("expires_in") or 3600)
        self._expires_at = started + max(0.0, expires_in - EXPIRY_MARGIN_SECONDS)
        rotated = result.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            register_secret(rotated)
            self._refresh_token = rotated
            self._store_rotated(rotated)
        log.info("Partner Center access token acquired; valid for %d s", int(expires_in))

    def _store_rotated(self, refresh_token: str) -> None:
        # Entra ID hands back a new refresh token on each use; keeping it extends the 90-day sliding chain.
        try:
            self._secrets.save_refresh_token(refresh_token)
        except SecretStoreError as exc:
            log.warning("The rotated refresh token could not be stored; the current one stays in use: %s", exc)

    def _application(self, credentials: PartnerCenterCredentials) -> msal.ConfidentialClientApplication:
        key = (credentials.app_id, credentials.app_secret)
        if self._app is None or self._app_key != key:
            try:
                self._app = msal.ConfidentialClientApplication(
                    credentials.app_id,
                    client_credential=credentials.app_secret,
                    authority=self._authority,
                    # Sovereign clouds and test doubles: any https authority, no instance discovery.
                    instance_discovery=False,
                    http_client=self._http,
                    token_cache=msal.TokenCache(),
                )
            except ValueError as exc:
                raise TokenError(f"the authority {self._authority} could not be used: {exc}") from None
            self._app_key = key
        return self._app


def _token_error(result: dict[str, Any]) -> TokenError:
    error = str(result.get("error") or "unknown_error")
    description = str(result.get("error_description") or "")
    codes = ", ".join(dict.fromkeys(_AADSTS.findall(description)))
    reason = f" ({codes})" if codes else ""
    if error == "invalid_grant":
        hint = "the refresh token is expired or revoked: re-consent with MFA to mint a new one"
    elif error in ("invalid_client", "unauthorized_client"):
        hint = "the app id or app secret is wrong or expired"
    else:
        hint = "the token endpoint refused the request"
    return TokenError(f"Partner Center token could not be acquired: {error}{reason}; {hint}", error=error)
