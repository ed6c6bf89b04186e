"""Loopback fakes of the services the app talks to: Entra ID, Partner Center, Key Vault, managed identity, Azurite.

Constants first: the fake modules import them from here.
"""

from __future__ import annotations

#: The partner's Entra tenant.
TENANT_ID = "00000000-0000-0000-0000-0000000000f1"
#: The Entra app (client) id of the Partner Center app, its secret, and the user's App+User refresh token.
APP_ID = "00000000-0000-0000-0000-0000000000a1"
APP_SECRET = "fake-app-secret-Q~0123456789abcdefghijklmnopqrstuvw"
REFRESH_TOKEN = "fake-rt-initial-0.AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#: Object id of the consenting user (in ``client_info``).
USER_OBJECT_ID = "00000000-0000-0000-0000-0000000000b1"
#: Client id the fake managed identity reports.
MANAGED_IDENTITY_CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
#: A customer tenant for product-upgrade calls.
CUSTOMER_ID = "00000000-0000-0000-0000-0000000000d1"

PARTNER_CENTER_RESOURCE = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = f"{PARTNER_CENTER_RESOURCE}/.default"

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
from tests.fakes.entra import FakeEntra  # noqa: E402
from tests.fakes.key_vault import FakeKeyVault  # noqa: E402
from tests.fakes.managed_identity import FakeManagedIdentity  # noqa: E402
from tests.fakes.partner_center import FakePartnerCenter  # noqa: E402
from tests.fakes.server import FakeHTTPServer, RecordedRequest, Response  # noqa: E402
from tests.fakes.tls import CA_ENV_VARS, TLSMaterial, default_tls  # noqa: E402

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
