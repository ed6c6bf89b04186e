"""Loopback fakes of the services the app talks to: Entra ID, Partner Center, Key Vault, managed identity, Azurite.

Entra ID and Partner Center are the local sandbox's (the ``sandbox`` package, one implementation); Key Vault,
the managed-identity endpoint and Azurite are the tests' own. Constants first: the fake modules import them.
"""

from __future__ import annotations

from sandbox import (
    APP_ID,
    APP_SECRET,
    CA_ENV_VARS,
    CUSTOMER_ID,
    PARTNER_CENTER_RESOURCE,
    PARTNER_CENTER_SCOPE,
    REFRESH_TOKEN,
    TENANT_ID,
    USER_OBJECT_ID,
    FakeEntra,
    FakeHTTPServer,
    FakePartnerCenter,
    RecordedRequest,
    Response,
    TLSMaterial,
    default_tls,
)

#: Client id the fake managed identity reports.
MANAGED_IDENTITY_CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
#: Secret names (the contract's defaults) and what the fake Key Vault holds by default.
APP_ID_SECRET_NAME = "partner-center-app-id"
APP_SECRET_SECRET_NAME = "partner-center-app-secret"
REFRESH_TOKEN_SECRET_NAME = "partner-center-refresh-token"
DEFAULT_SECRETS: dict[str, str] = {
    APP_ID_SECRET_NAME: APP_ID,
    APP_SECRET_SECRET_NAME: APP_SECRET,
    REFRESH_TOKEN_SECRET_NAME: REFRESH_TOKEN,
}

from tests.fakes.azurite import Azurite  # noqa: E402
from tests.fakes.key_vault import FakeKeyVault  # noqa: E402
from tests.fakes.managed_identity import FakeManagedIdentity  # noqa: E402

__all__ = [
    "APP_ID",
    "APP_ID_SECRET_NAME",
    "APP_SECRET",
    "APP_SECRET_SECRET_NAME",
    "CA_ENV_VARS",
    "CUSTOMER_ID",
    "DEFAULT_SECRETS",
    "MANAGED_IDENTITY_CLIENT_ID",
    "PARTNER_CENTER_RESOURCE",
    "PARTNER_CENTER_SCOPE",
    "REFRESH_TOKEN",
    "REFRESH_TOKEN_SECRET_NAME",
    "TENANT_ID",
    "USER_OBJECT_ID",
    "Azurite",
    "FakeEntra",
    "FakeHTTPServer",
    "FakeKeyVault",
    "FakeManagedIdentity",
    "FakePartnerCenter",
    "RecordedRequest",
    "Response",
    "TLSMaterial",
    "default_tls",
]
