"""What went wrong, for an operator: the exit code an error chooses, and a message that says what to fix.

Errors about the environment (a service not reached, a certificate not trusted, storage down) name the service
and its address and say what to check; they exit 4, apart from refusals (1), usage (2) and configuration (3).
"""

from __future__ import annotations

from shared.errors import (
    CredentialError,
    PartnerCenterError,
    ProductUpgradeError,
    SecretStoreError,
    SettingError,
    StorageUnavailableError,
    TokenError,
    UpstreamUnavailableError,
    ValidationError,
)
from shared.settings import (
    AUTHORITY_HOST_SETTING,
    BASE_URL_SETTING,
    KEY_VAULT_URL_SETTING,
    STORAGE_SETTING,
    StorageConnection,
)

from .context import EXIT_CONFIGURATION, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, PROG

#: The setting that names each service's address, by the name the retry policy gives the service.
SERVICE_SETTINGS = {"Partner Center": BASE_URL_SETTING, "Entra ID token endpoint": AUTHORITY_HOST_SETTING}

#: Azurite's table endpoint for ``UseDevelopmentStorage=true``.
DEVELOPMENT_TABLE_ENDPOINT = "http://127.0.0.1:10002/devstoreaccount1"


def unreachable(exc: ProductUpgradeError) -> bool:
    """A service the command needs was not reached at all (as opposed to answering with a refusal)."""
    if isinstance(exc, StorageUnavailableError):
        return True
    return isinstance(exc, UpstreamUnavailableError | SecretStoreError) and exc.unreachable


def exit_code_for(exc: ProductUpgradeError) -> int:
    """4 when a service was not reached; 3 when the operator must fix settings or credentials; 2 for our own
    validation; else 1."""
    if unreachable(exc):
        return EXIT_UNREACHABLE
    if isinstance(exc, SettingError | CredentialError):
        return EXIT_CONFIGURATION
    if isinstance(exc, PartnerCenterError) and exc.token_rejected:
        return EXIT_CONFIGURATION
    if isinstance(exc, ValidationError):
        return EXIT_USAGE
    return EXIT_REFUSED


def describe(exc: ProductUpgradeError, storage: StorageConnection | None = None) -> str:
    """The error's message, with what an operator does about it."""
    if isinstance(exc, TokenError) and exc.error == "invalid_grant":
        return f"{exc.message}; run `{PROG} consent` to sign in again and store a new refresh token"
    if isinstance(exc, UpstreamUnavailableError) and exc.unreachable:
        service = next((name for name in SERVICE_SETTINGS if exc.message.startswith(name)), None)
        setting = f" ({SERVICE_SETTINGS[service]})" if service else ""
        return f"{exc.message}; address: {exc.url or 'unknown'}; {exc.hint or 'check the service'}{setting}"
    if isinstance(exc, SecretStoreError) and exc.unreachable:
        return (
            f"{exc.message}; address: {exc.url}; check that the vault is reachable from here and that "
            f"{KEY_VAULT_URL_SETTING} names it"
        )
    if isinstance(exc, StorageUnavailableError):
        return (
            f"{exc.message}; Azure Storage at {storage_address(storage)} could not be reached: check that it is "
            f"running (locally: Azurite, which scripts/run starts) and that {STORAGE_SETTING} names it"
        )
    return exc.message


def storage_address(storage: StorageConnection | None) -> str:
    """The storage account's table endpoint, never a key or a SAS token."""
    if storage is None:
        return "(no storage connection)"
    if storage.table_service_uri:
        return storage.table_service_uri.split("?")[0]
    parts = dict(part.split("=", 1) for part in (storage.connection_string or "").split(";") if "=" in part)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return DEVELOPMENT_TABLE_ENDPOINT
    if parts.get("TableEndpoint"):
        return parts["TableEndpoint"].split("?")[0]
    account, suffix = parts.get("AccountName"), parts.get("EndpointSuffix", "core.windows.net")
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    return f"{protocol}://{account}.table.{suffix}" if account else "(unknown)"
