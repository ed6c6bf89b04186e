"""Every setting the app reads, with its default, typed; read on first use, never at import.

The names here are the app's settings contract: the settings table of docs/settings.md, ``local.settings.sample.json``
and the Bicep app settings (``infra/app/api.bicep``) mirror :data:`ALL_SETTINGS`, and tests keep them in step.
"""

from __future__ import annotations

import functools
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.errors import InvalidSettingError, MissingSettingError

KEY_VAULT_URL_SETTING = "KEY_VAULT_URL"
APP_ID_SECRET_NAME_SETTING = "PARTNER_CENTER_APP_ID_SECRET_NAME"
APP_SECRET_SECRET_NAME_SETTING = "PARTNER_CENTER_APP_SECRET_SECRET_NAME"
REFRESH_TOKEN_SECRET_NAME_SETTING = "PARTNER_CENTER_REFRESH_TOKEN_SECRET_NAME"
APP_ID_SETTING = "PARTNER_CENTER_APP_ID"
APP_SECRET_SETTING = "PARTNER_CENTER_APP_SECRET"
REFRESH_TOKEN_SETTING = "PARTNER_CENTER_REFRESH_TOKEN"
TENANT_ID_SETTING = "PARTNER_CENTER_TENANT_ID"
AUTHORITY_HOST_SETTING = "PARTNER_CENTER_AUTHORITY_HOST"
BASE_URL_SETTING = "PARTNER_CENTER_BASE_URL"
REQUESTS_QUEUE_SETTING = "PRODUCT_UPGRADE_REQUESTS_QUEUE"
RESULTS_QUEUE_SETTING = "PRODUCT_UPGRADE_RESULTS_QUEUE"
TABLE_SETTING = "PRODUCT_UPGRADE_TABLE"
MAX_ATTEMPTS_SETTING = "PRODUCT_UPGRADE_MAX_ATTEMPTS"
TRACKING_QUEUE_SETTING = "PRODUCT_UPGRADE_TRACKING_QUEUE"
OUTCOMES_QUEUE_SETTING = "PRODUCT_UPGRADE_OUTCOMES_QUEUE"
POLL_SECONDS_SETTING = "PRODUCT_UPGRADE_POLL_SECONDS"
TRACKING_HOURS_SETTING = "PRODUCT_UPGRADE_TRACKING_HOURS"
MAX_POLL_SECONDS_SETTING = "PRODUCT_UPGRADE_MAX_POLL_SECONDS"
DEFER_SECONDS_SETTING = "PRODUCT_UPGRADE_DEFER_SECONDS"
MAX_DEFERRALS_SETTING = "PRODUCT_UPGRADE_MAX_DEFERRALS"
PUBLIC_URL_SETTING = "PRODUCT_UPGRADE_PUBLIC_URL"
TOKEN_KEEPALIVE_DAYS_SETTING = "PRODUCT_UPGRADE_TOKEN_KEEPALIVE_DAYS"
CONTINUATION_KEY_SETTING = "PRODUCT_UPGRADE_CONTINUATION_KEY"
MAX_CALLS_PER_MINUTE_SETTING = "PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE"
STORAGE_SETTING = "AzureWebJobsStorage"

#: host.json's ``extensions.queues.maxDequeueCount``: a message's attempts beyond it go to the poison queue
#: without a result, so ``PRODUCT_UPGRADE_MAX_ATTEMPTS`` may not exceed it.
MAX_DEQUEUE_COUNT = 5

#: Defaults of the contract; a setting absent here has none.
DEFAULTS: Mapping[str, str] = {
    APP_ID_SECRET_NAME_SETTING: "partner-center-app-id",
    APP_SECRET_SECRET_NAME_SETTING: "partner-center-app-secret",
    REFRESH_TOKEN_SECRET_NAME_SETTING: "partner-center-refresh-token",
    AUTHORITY_HOST_SETTING: "https://login.microsoftonline.com",
    BASE_URL_SETTING: "https://api.partnercenter.microsoft.com",
    REQUESTS_QUEUE_SETTING: "product-upgrade-requests",
    RESULTS_QUEUE_SETTING: "product-upgrade-results",
    TABLE_SETTING: "productupgrades",
    MAX_ATTEMPTS_SETTING: "5",
    TRACKING_QUEUE_SETTING: "product-upgrade-tracking",
    OUTCOMES_QUEUE_SETTING: "product-upgrade-outcomes",
    POLL_SECONDS_SETTING: "300",
    TRACKING_HOURS_SETTING: "168",
    MAX_POLL_SECONDS_SETTING: "3600",
    DEFER_SECONDS_SETTING: "3600",
    MAX_DEFERRALS_SETTING: "24",
    TOKEN_KEEPALIVE_DAYS_SETTING: "7",
}

#: Every setting the code reads, in the contract's order.
ALL_SETTINGS: tuple[str, ...] = (
    KEY_VAULT_URL_SETTING,
    APP_ID_SECRET_NAME_SETTING,
    APP_SECRET_SECRET_NAME_SETTING,
    REFRESH_TOKEN_SECRET_NAME_SETTING,
    APP_ID_SETTING,
    APP_SECRET_SETTING,
    REFRESH_TOKEN_SETTING,
    TENANT_ID_SETTING,
    AUTHORITY_HOST_SETTING,
    BASE_URL_SETTING,
    REQUESTS_QUEUE_SETTING,
    RESULTS_QUEUE_SETTING,
    TABLE_SETTING,
    MAX_ATTEMPTS_SETTING,
    TRACKING_QUEUE_SETTING,
    OUTCOMES_QUEUE_SETTING,
    POLL_SECONDS_SETTING,
    TRACKING_HOURS_SETTING,
    MAX_POLL_SECONDS_SETTING,
    DEFER_SECONDS_SETTING,
    MAX_DEFERRALS_SETTING,
    PUBLIC_URL_SETTING,
    TOKEN_KEEPALIVE_DAYS_SETTING,
    CONTINUATION_KEY_SETTING,
    MAX_CALLS_PER_MINUTE_SETTING,
    STORAGE_SETTING,
)

#: The shortest ``PRODUCT_UPGRADE_CONTINUATION_KEY`` accepted: 32 characters (of a random value: 128 bits and more).
MIN_CONTINUATION_KEY_LENGTH = 32

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")

#: Settings holding secret values: only ever read in environment-fallback mode, never logged or reported.
SECRET_SETTINGS: frozenset[str] = frozenset({APP_ID_SETTING, APP_SECRET_SETTING, REFRESH_TOKEN_SETTING})

#: An App+User refresh token left unused this many days lapses: the keep-alive must renew it well before.
REFRESH_TOKEN_MAX_INACTIVE_DAYS = 90

#: Identity-based storage connection (``AzureWebJobsStorage__*``), used in Azure instead of a connection string.
STORAGE_ACCOUNT_NAME_SETTING = f"{STORAGE_SETTING}__accountName"
STORAGE_QUEUE_URI_SETTING = f"{STORAGE_SETTING}__queueServiceUri"
STORAGE_TABLE_URI_SETTING = f"{STORAGE_SETTING}__tableServiceUri"
STORAGE_CREDENTIAL_SETTING = f"{STORAGE_SETTING}__credential"
STORAGE_CLIENT_ID_SETTING = f"{STORAGE_SETTING}__clientId"


@dataclass(frozen=True)
class StorageConnection:
    """How to reach the storage account: a connection string, or service URIs plus a managed identity."""

    connection_string: str | None = field(default=None, repr=False)
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    managed_identity_client_id: str | None = None


@dataclass(frozen=True)
class Settings:
    """The app's settings, validated. Build with :meth:`from_env`; use :func:`get_settings` in the app."""

    tenant_id: str
    authority_host: str
    base_url: str
    key_vault_url: str | None
    app_id_secret_name: str
    app_secret_secret_name: str
    refresh_token_secret_name: str
    requests_queue: str
    results_queue: str
    table_name: str
    max_attempts: int
    storage: StorageConnection | None
    tracking_queue: str = DEFAULTS[TRACKING_QUEUE_SETTING]
    outcomes_queue: str = DEFAULTS[OUTCOMES_QUEUE_SETTING]
    poll_seconds: float = float(DEFAULTS[POLL_SECONDS_SETTING])
    tracking_hours: float = float(DEFAULTS[TRACKING_HOURS_SETTING])
    #: The longest gap between two status checks of one upgrade (checks slow down after its first hour).
    max_poll_seconds: float = float(DEFAULTS[MAX_POLL_SECONDS_SETTING])
    defer_seconds: float = float(DEFAULTS[DEFER_SECONDS_SETTING])
    max_deferrals: int = int(DEFAULTS[MAX_DEFERRALS_SETTING])
    #: Base URL standing for the app's ``/api`` in ``Location`` (API Management, a custom domain), or None.
    public_url: str | None = None
    #: The keep-alive renews the App+User token when the stored refresh token has not been used for this many days.
    token_keepalive_days: float = float(DEFAULTS[TOKEN_KEEPALIVE_DAYS_SETTING])
    #: Signs the list route's continuation tokens (HMAC-SHA256); None: tokens are not signed.
    continuation_key: str | None = field(default=None, repr=False)
    #: The partner's known limit on Partner Center calls, all instances together; None: learned from 429s alone.
    max_calls_per_minute: float | None = None
    #: ``AZURE_CLIENT_ID``: the user-assigned managed identity to sign in with (azure-identity's own variable).
    azure_client_id: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raises :class:`SettingError` naming the first bad one."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        key_vault_url = reader.optional(KEY_VAULT_URL_SETTING)
        return cls(
            tenant_id=reader.tenant(TENANT_ID_SETTING),
            authority_host=reader.https_url(AUTHORITY_HOST_SETTING),
            base_url=reader.https_url(BASE_URL_SETTING),
            key_vault_url=_https_url(KEY_VAULT_URL_SETTING, key_vault_url) if key_vault_url else None,
            app_id_secret_name=reader.required(APP_ID_SECRET_NAME_SETTING),
            app_secret_secret_name=reader.required(APP_SECRET_SECRET_NAME_SETTING),
            refresh_token_secret_name=reader.required(REFRESH_TOKEN_SECRET_NAME_SETTING),
            requests_queue=reader.required(REQUESTS_QUEUE_SETTING),
            results_queue=reader.required(RESULTS_QUEUE_SETTING),
            table_name=reader.required(TABLE_SETTING),
            max_attempts=reader.positive_int(MAX_ATTEMPTS_SETTING, maximum=MAX_DEQUEUE_COUNT),
            storage=storage_connection(env),
            tracking_queue=reader.required(TRACKING_QUEUE_SETTING),
            outcomes_queue=reader.required(OUTCOMES_QUEUE_SETTING),
            poll_seconds=reader.positive_float(POLL_SECONDS_SETTING),
            tracking_hours=reader.positive_float(TRACKING_HOURS_SETTING),
            max_poll_seconds=reader.positive_float(MAX_POLL_SECONDS_SETTING),
            defer_seconds=reader.positive_float(DEFER_SECONDS_SETTING),
            max_deferrals=reader.positive_int(MAX_DEFERRALS_SETTING),
            public_url=read_public_url(env),
            token_keepalive_days=reader.keepalive_days(TOKEN_KEEPALIVE_DAYS_SETTING),
            continuation_key=reader.secret(CONTINUATION_KEY_SETTING, min_length=MIN_CONTINUATION_KEY_LENGTH),
            max_calls_per_minute=reader.optional_positive_float(MAX_CALLS_PER_MINUTE_SETTING),
            azure_client_id=reader.optional(AZURE_CLIENT_ID_VARIABLE),
        )


#: azure-identity's ``AZURE_CLIENT_ID``: which user-assigned managed identity signs in (not an app setting of ours).
AZURE_CLIENT_ID_VARIABLE = "AZURE_CLIENT_ID"
#: The platform's ``WEBSITE_INSTANCE_ID``: the instance this process runs on.
INSTANCE_ID_VARIABLE = "WEBSITE_INSTANCE_ID"


def instance_name(environ: Mapping[str, str] | None = None) -> str:
    """This instance's name, for records an operator reads: ``WEBSITE_INSTANCE_ID`` in Azure, else the host name."""
    env = os.environ if environ is None else environ
    return (env.get(INSTANCE_ID_VARIABLE) or "").strip() or socket.gethostname()


def max_attempts_alone(environ: Mapping[str, str] | None = None) -> int:
    """``PRODUCT_UPGRADE_MAX_ATTEMPTS`` read on its own, for when the other settings are broken (the failure being
    reported): the setting, else its default, never beyond host.json's ``maxDequeueCount``, so that the last
    attempt still writes a result."""
    env = os.environ if environ is None else environ
    try:
        attempts = int(env.get(MAX_ATTEMPTS_SETTING) or DEFAULTS[MAX_ATTEMPTS_SETTING])
    except ValueError:
        attempts = int(DEFAULTS[MAX_ATTEMPTS_SETTING])
    return min(MAX_DEQUEUE_COUNT, max(1, attempts))


#: The platform's ``WEBSITE_HOSTNAME``: a host name, optionally with a port (Core Tools sets localhost:7071).
WEBSITE_HOSTNAME_VARIABLE = "WEBSITE_HOSTNAME"
#: ``Development`` under Core Tools (``func start``); ``Production`` (or unset) when hosted.
FUNCTIONS_ENVIRONMENT_VARIABLE = "AZURE_FUNCTIONS_ENVIRONMENT"
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0"})


@dataclass(frozen=True)
class Hosting:
    """Where the app is reached: what ``Location`` and the served API description are built on."""

    #: ``PRODUCT_UPGRADE_PUBLIC_URL``, validated: the public URL standing for the app's ``/api``.
    public_url: str | None
    #: ``WEBSITE_HOSTNAME`` as App Service and Flex Consumption set it; None when unset or a local host.
    platform_host: str | None
    #: Under Core Tools (``func start``): ``AZURE_FUNCTIONS_ENVIRONMENT`` is ``Development``, or
    #: ``WEBSITE_HOSTNAME`` names a local host.
    local_run: bool


def hosting(environ: Mapping[str, str] | None = None) -> Hosting:
    """:class:`Hosting` from the environment, read at each call: the routes that build public URLs need no other
    setting, and the platform's own values are no app setting an operator sets. Raises :class:`SettingError` for a
    malformed ``PRODUCT_UPGRADE_PUBLIC_URL``."""
    env = os.environ if environ is None else environ
    host = (env.get(WEBSITE_HOSTNAME_VARIABLE) or "").strip()
    local_host = bool(host) and host.rsplit(":", 1)[0].lower() in _LOCAL_HOSTS
    development = (env.get(FUNCTIONS_ENVIRONMENT_VARIABLE) or "").strip().lower() == "development"
    return Hosting(
        public_url=read_public_url(env),
        platform_host=host if _HOST.fullmatch(host) and not local_host else None,
        local_run=development or local_host,
    )


def read_public_url(env: Mapping[str, str]) -> str | None:
    """``PRODUCT_UPGRADE_PUBLIC_URL``, validated (an https URL standing for the app's ``/api``); None when unset.
    Read on its own too: the routes that build public URLs need no other setting."""
    value = (env.get(PUBLIC_URL_SETTING) or "").strip()
    return _https_url(PUBLIC_URL_SETTING, value) if value else None


def storage_connection(env: Mapping[str, str]) -> StorageConnection | None:
    """The storage connection the host uses, or None when none is configured."""
    connection_string = (env.get(STORAGE_SETTING) or "").strip()
    if connection_string:
        return StorageConnection(connection_string=connection_string)
    account = (env.get(STORAGE_ACCOUNT_NAME_SETTING) or "").strip()
    queue_uri = (env.get(STORAGE_QUEUE_URI_SETTING) or "").strip()
    table_uri = (env.get(STORAGE_TABLE_URI_SETTING) or "").strip()
    if account:
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
    if not (queue_uri or table_uri):
        return None
    client_id = (env.get(STORAGE_CLIENT_ID_SETTING) or "").strip() or None
    return StorageConnection(
        queue_service_uri=queue_uri or None,
        table_service_uri=table_uri or None,
        managed_identity_client_id=client_id,
    )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = (self._env.get(name) or "").strip()
        return value or DEFAULTS.get(name)

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise MissingSettingError(name)
        return value

    def secret(self, name: str, *, min_length: int) -> str | None:
        """An optional secret value; set, it must be at least ``min_length`` characters (never echoed)."""
        value = self.optional(name)
        if value is not None and len(value) < min_length:
            raise InvalidSettingError(name, f"a secret of at least {min_length} characters")
        return value

    def tenant(self, name: str) -> str:
        value = self.required(name)
        if not _TENANT.match(value):
            raise InvalidSettingError(name, "a tenant id (GUID) or domain name")
        return value

    def https_url(self, name: str) -> str:
        return _https_url(name, self.required(name))

    def positive_int(self, name: str, *, maximum: int | None = None) -> int:
        expected = "a whole number of at least 1"
        if maximum is not None:
            expected = f"a whole number from 1 to {maximum} (host.json's maxDequeueCount)"
        raw = self.required(name)
        try:
            value = int(raw)
        except ValueError:
            raise InvalidSettingError(name, expected) from None
        if value < 1 or (maximum is not None and value > maximum):
            raise InvalidSettingError(name, expected)
        return value

    def optional_positive_float(self, name: str) -> float | None:
        return self.positive_float(name) if self.optional(name) is not None else None

    def positive_float(self, name: str) -> float:
        raw = self.required(name)
        try:
            value = float(raw)
        except ValueError:
            raise InvalidSettingError(name, "a number greater than 0 (fractions allowed)") from None
        if not math.isfinite(value) or value <= 0:
            raise InvalidSettingError(name, "a number greater than 0 (fractions allowed)")
        return value

    def keepalive_days(self, name: str) -> float:
        # A keep-alive at or past the refresh token's lifetime would renew a token that has already lapsed.
        expected = f"a number of days greater than 0 and below {REFRESH_TOKEN_MAX_INACTIVE_DAYS} (fractions allowed)"
        try:
            value = self.positive_float(name)
        except InvalidSettingError:
            raise InvalidSettingError(name, expected) from None
        if value >= REFRESH_TOKEN_MAX_INACTIVE_DAYS:
            raise InvalidSettingError(name, expected)
        return value


def _https_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidSettingError(name, "an https:// URL")
    return value.rstrip("/")


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use and kept."""
    return Settings.from_env()
