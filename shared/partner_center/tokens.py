"""App+User access tokens for Partner Center, from the secure app model's refresh token.

One :class:`TokenProvider` per process: it holds the access token until shortly before it expires, so N
upgrades cost one token request, and concurrent invocations that start cold wait for one request
instead of sending one each.

Each refresh is recorded where every instance can read it (:data:`TOKEN_RECORD`, through
:class:`~shared.partner_center.state.SharedState`): when the stored refresh token was last renewed, when it
lapses if left unused, whether the sign-in behind it used MFA, and whether Entra refused it (consent needed).
Dates and flags only, never a token. The keep-alive (:mod:`shared.partner_center.keepalive`) and the health
details read it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import msal.exceptions
import requests

from shared import signals
from shared.errors import ProductUpgradeError, SecretStoreError, TokenError, UpstreamUnavailableError
from shared.logs import register_secret
from shared.partner_center.secrets import REFRESH_TOKEN_LIFETIME, PartnerCenterCredentials, SecretStore
from shared.partner_center.state import NoSharedState, SharedState
from shared.retry import RetryPolicy

log = logging.getLogger(__name__)

PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/.default"

#: Renew this many seconds before the access token expires, so no call leaves with a token about to lapse.
EXPIRY_MARGIN_SECONDS = 300.0

_AADSTS = re.compile(r"AADSTS\d+")

#: The shared record of the App+User token's state (see the module's docstring).
TOKEN_RECORD = "partner-center-token"


def utc_now() -> datetime:
    return datetime.now(UTC)


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT access token, read without checking its signature (the token came straight from
    Entra ID over TLS; only its own claims are read from it, to tell the operator about it). None for a token
    that is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def carries_mfa(token: str) -> bool | None:
    """Whether the access token says the user signed in with multi-factor authentication (its ``amr`` claim holds
    ``mfa``): Partner Center refuses App+User calls without it. None when the token is not a JWT."""
    claims = token_claims(token)
    if claims is None:
        return None
    methods = claims.get("amr")
    return isinstance(methods, list) and "mfa" in methods


@dataclass(frozen=True)
class TokenRefresh:
    """One refresh: when, until when the access token is good, and whether the stored refresh token was renewed
    (rotated and kept, so its 90 days start again)."""

    refreshed_at: datetime
    access_token_expires_at: datetime
    mfa: bool | None
    refresh_token_renewed: bool


@dataclass(frozen=True)
class TokenStatus:
    """What every instance knows of the App+User token: dates and flags, never the token."""

    last_refreshed_at: datetime | None = None
    refresh_token_lapses_at: datetime | None = None
    access_token_expires_at: datetime | None = None
    mfa: bool | None = None
    consent_needed: bool = False
    last_error: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> TokenStatus:
        mfa = fields.get("Mfa")
        return cls(
            last_refreshed_at=_parse(fields.get("RefreshedAt")),
            refresh_token_lapses_at=_parse(fields.get("RefreshTokenLapsesAt")),
            access_token_expires_at=_parse(fields.get("AccessTokenExpiresAt")),
            mfa=mfa if isinstance(mfa, bool) else None,
            consent_needed=fields.get("ConsentNeeded") is True,
            last_error=str(fields.get("LastError") or "") or None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "lastRefreshedAt": _iso(self.last_refreshed_at),
            "refreshTokenLapsesAt": _iso(self.refresh_token_lapses_at),
            "accessTokenExpiresAt": _iso(self.access_token_expires_at),
            "mfa": self.mfa,
            "consentNeeded": self.consent_needed,
            "lastError": self.last_error,
        }


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
        state: SharedState | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._state = state or NoSharedState()
        self._clock = clock
        self._last: TokenRefresh | None = None
        #: Entra ID's error for this process's latest refresh, None once one succeeds.
        self._refused: str | None = None
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
        refreshed: TokenRefresh | None = None
        try:
            with self._lock:
                renew = force_refresh and (stale_token is None or stale_token == self._access_token)
                if renew or self._access_token is None or time.monotonic() >= self._expires_at:
                    refreshed = self._refresh()
                token = self._access_token
        except TokenError as exc:
            self._record_refusal(exc)
            raise
        if refreshed is not None:
            self._record(refreshed)
        assert token is not None
        return token

    def refresh(self) -> TokenRefresh:
        """Redeem the refresh token now (the keep-alive): a new access token, and a rotated refresh token stored
        back. Raises :class:`TokenError` when Entra ID refuses it."""
        try:
            with self._lock:
                refreshed = self._refresh()
        except TokenError as exc:
            self._record_refusal(exc)
            raise
        self._record(refreshed)
        return refreshed

    @property
    def last_refresh(self) -> TokenRefresh | None:
        """This process's latest refresh, None before the first."""
        return self._last

    def status(self) -> TokenStatus:
        """The shared record of the token (every instance's refreshes); this process's own last refresh when the
        record cannot be read. Raises nothing."""
        try:
            fields = self._state.read(TOKEN_RECORD)
        except ProductUpgradeError as exc:
            log.warning("The token's shared record could not be read: %s", exc.message)
            fields = None
        if fields is not None:
            return TokenStatus.from_fields(fields)
        last, refused = self._last, self._refused
        consent_needed = refused == "invalid_grant"
        if last is None:
            return TokenStatus(consent_needed=consent_needed, last_error=refused)
        renewed = last.refreshed_at if last.refresh_token_renewed else None
        return TokenStatus(
            renewed,
            renewed + REFRESH_TOKEN_LIFETIME if renewed else None,
            last.access_token_expires_at,
            last.mfa,
            consent_needed,
            refused,
        )

    def _record(self, refreshed: TokenRefresh) -> None:
        """Share what a refresh learnt (best effort: the token is good either way)."""
        self._refused = None
        fields: dict[str, Any] = {
            "AccessTokenExpiresAt": _iso(refreshed.access_token_expires_at),
            "ConsentNeeded": False,
            "LastError": "",
        }
        if refreshed.mfa is not None:
            fields["Mfa"] = refreshed.mfa
        lapses_at = None
        if refreshed.refresh_token_renewed:
            lapses_at = refreshed.refreshed_at + REFRESH_TOKEN_LIFETIME
            fields.update({"RefreshedAt": _iso(refreshed.refreshed_at), "RefreshTokenLapsesAt": _iso(lapses_at)})
        signals.emit(
            signals.TOKEN_REFRESH,
            {
                signals.OUTCOME: "refreshed",
                signals.TOKEN_EXPIRES_ON: refreshed.access_token_expires_at,
                signals.REFRESH_TOKEN_LAPSES_ON: lapses_at,
                signals.MFA: refreshed.mfa,
            },
        )
        self._write(fields)

    def _record_refusal(self, exc: TokenError) -> None:
        """Entra ID refused the refresh token (``invalid_grant``: an operator must consent again) or the app."""
        self._refused = exc.error or exc.code
        signals.emit(
            signals.TOKEN_REFRESH,
            {signals.OUTCOME: "refused", signals.ERROR_CODE: exc.error, signals.REASON: exc.message},
            level=logging.ERROR,
        )
        self._write({"ConsentNeeded": exc.error == "invalid_grant", "LastError": exc.error or exc.code})

    def _write(self, fields: Mapping[str, Any]) -> None:
        try:
            self._state.write(TOKEN_RECORD, fields)
        except ProductUpgradeError as exc:
            log.warning("The token's shared record could not be written: %s", exc.message)

    def _refresh(self) -> TokenRefresh:
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
        renewed = True  # Entra handing back the same refresh token keeps it in use: its inactivity starts again
        rotated = result.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            register_secret(rotated)
            self._refresh_token = rotated
            renewed = self._store_rotated(rotated)
        log.info("Partner Center access token acquired; valid for %d s", int(expires_in))
        now = self._clock()
        self._last = TokenRefresh(now, now + timedelta(seconds=expires_in), carries_mfa(self._access_token), renewed)
        return self._last

    def _store_rotated(self, refresh_token: str) -> bool:
        # Entra ID hands back a new refresh token on each use; keeping it extends the 90-day sliding chain.
        try:
            self._secrets.save_refresh_token(refresh_token)
        except SecretStoreError as exc:
            log.warning("The rotated refresh token could not be stored; the current one stays in use: %s", exc)
            return False
        return True

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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
