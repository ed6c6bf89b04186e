"""The three Partner Center secrets: from Key Vault in Azure, or from the environment for local development."""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from shared.errors import MissingSettingError, SecretStoreError
from shared.logs import register_secret
from shared.retry import azure_call_limits
from shared.settings import APP_ID_SETTING, APP_SECRET_SETTING, REFRESH_TOKEN_SETTING

log = logging.getLogger(__name__)

#: How long an App+User refresh token stays valid after it was issued (sliding: each use issues a new one).
REFRESH_TOKEN_LIFETIME = timedelta(days=90)


@dataclass(frozen=True)
class PartnerCenterCredentials:
    """The secure app model's three values. Secret fields stay out of ``repr``."""

    app_id: str
    app_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


@dataclass(frozen=True)
class SecretNames:
    app_id: str
    app_secret: str
    refresh_token: str


class SecretStore(Protocol):
    """Where the credentials live. Implementations cache what they read for the life of the process."""

    def load(self) -> PartnerCenterCredentials:
        """The credentials; read from the backing store at most once until :meth:`invalidate`."""
        ...

    def save_refresh_token(self, refresh_token: str) -> None:
        """Keep a rotated refresh token; raises :class:`SecretStoreError` when it cannot be stored."""
        ...

    def invalidate(self) -> None:
        """Forget the cached values, so the next :meth:`load` reads them again (an operator may have fixed them)."""
        ...

    def expiries(self) -> dict[str, datetime | None]:
        """The expiry date recorded on each secret, by secret name (None where none is set): metadata only,
        never a value. Empty where the store keeps no dates. Raises :class:`SecretStoreError`."""
        ...


class KeyVaultSecretStore:
    """Reads the secrets from Key Vault with the given ``SecretClient`` (built once per process)."""

    def __init__(self, client: SecretClient, names: SecretNames) -> None:
        self._client = client
        self._names = names
        self._lock = threading.Lock()
        self._cached: PartnerCenterCredentials | None = None

    def load(self) -> PartnerCenterCredentials:
        with self._lock:
            if self._cached is None:
                app_id, app_secret, refresh_token = self._get_all(
                    (self._names.app_id, self._names.app_secret, self._names.refresh_token)
                )
                self._cached = PartnerCenterCredentials(app_id, app_secret, refresh_token)
            return self._cached

    def load_app(self) -> tuple[str, str]:
        """The app id and secret alone, for the consent sign-in that mints the refresh token."""
        return self._get(self._names.app_id), self._get(self._names.app_secret)

    def _get_all(self, names: tuple[str, str, str]) -> tuple[str, str, str]:
        """The three secrets read side by side: a cold start waits for one Key Vault round trip, not three.

        Each read runs in a copy of this context, so the invocation's time budget and log ids go with it;
        the first failure (in the order of ``names``) is the one raised.
        """
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="key-vault") as pool:
            futures = [pool.submit(contextvars.copy_context().run, self._get, name) for name in names]
            first, second, third = (future.result() for future in futures)
        return first, second, third

    def save_refresh_token(self, refresh_token: str) -> None:
        name = self._names.refresh_token
        try:
            self._client.set_secret(
                name,
                refresh_token,
                content_type="text/plain",
                # Entra refresh tokens live 90 days, sliding: the new version's expiry says when this one lapses.
                expires_on=datetime.now(UTC) + REFRESH_TOKEN_LIFETIME,
                tags={"rotatedBy": "partner-center-product-upgrades"},
                **azure_call_limits(),
            )
        except AzureError as exc:
            raise self._error(f"Key Vault refused to store secret {name}: {_describe(exc)}", exc) from None
        with self._lock:
            if self._cached is not None:
                self._cached = PartnerCenterCredentials(self._cached.app_id, self._cached.app_secret, refresh_token)

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def expiries(self) -> dict[str, datetime | None]:
        # One listing of the vault's secrets' attributes (no values: Key Vault Secrets User may read them).
        wanted = {
            name.lower(): name for name in (self._names.app_id, self._names.app_secret, self._names.refresh_token)
        }
        found: dict[str, datetime | None] = {}
        try:
            for properties in self._client.list_properties_of_secrets(**azure_call_limits()):
                name = wanted.get((properties.name or "").lower())
                if name is not None:
                    found[name] = properties.expires_on
        except AzureError as exc:
            raise self._error(f"Key Vault secrets could not be listed: {_describe(exc)}", exc) from None
        return found

    def _error(self, message: str, exc: AzureError) -> SecretStoreError:
        return SecretStoreError(message, unreachable=isinstance(exc, ServiceRequestError), url=self._client.vault_url)

    def _get(self, name: str) -> str:
        try:
            value = self._client.get_secret(name, **azure_call_limits()).value
        except AzureError as exc:
            raise self._error(f"Key Vault secret {name} could not be read: {_describe(exc)}", exc) from None
        if not value:
            raise SecretStoreError(f"Key Vault secret {name} is empty")
        register_secret(value)
        return value


class EnvironmentSecretStore:
    """Local development: the values come from settings; a rotated refresh token is kept in memory only."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._rotated_refresh_token: str | None = None

    def load(self) -> PartnerCenterCredentials:
        with self._lock:
            rotated = self._rotated_refresh_token
        return PartnerCenterCredentials(
            app_id=self._required(APP_ID_SETTING),
            app_secret=self._required(APP_SECRET_SETTING),
            refresh_token=rotated or self._required(REFRESH_TOKEN_SETTING),
        )

    def save_refresh_token(self, refresh_token: str) -> None:
        with self._lock:
            self._rotated_refresh_token = refresh_token

    def invalidate(self) -> None:
        with self._lock:
            self._rotated_refresh_token = None

    def expiries(self) -> dict[str, datetime | None]:
        return {}  # settings carry no expiry date

    def _required(self, name: str) -> str:
        value = (self._env.get(name) or "").strip()
        if not value:
            # KEY_VAULT_URL unset means these three must be set: say so, naming the one missing.
            raise MissingSettingError(name)
        register_secret(value)
        return value


def _describe(exc: AzureError) -> str:
    """A short, secret-free reason: the kind of failure and Key Vault's status, not the SDK's full text."""
    if isinstance(exc, ResourceNotFoundError):
        return "not found (404)"
    if isinstance(exc, ClientAuthenticationError):
        status = f" ({exc.status_code})" if exc.status_code else ""
        return f"authentication or authorization failed{status}; check the managed identity and its vault role"
    if isinstance(exc, HttpResponseError):
        return f"Key Vault answered {exc.status_code}"
    return f"Key Vault could not be reached ({type(exc).__name__})"
