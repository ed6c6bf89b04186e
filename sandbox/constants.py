"""The sandbox's fixed identities: one partner tenant, one Partner Center app, one consenting user.

Fake values, safe to print and commit: they open nothing but this sandbox.
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
#: A customer tenant for product-upgrade calls (no scripted behaviour: upgrades normally).
CUSTOMER_ID = "00000000-0000-0000-0000-0000000000d1"

PARTNER_CENTER_RESOURCE = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = f"{PARTNER_CENTER_RESOURCE}/.default"

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

#: What Partner Center says of a customer whose upgrade has completed (eligibility reason, 900110 description).
ALREADY_UPGRADED_REASON = "The customer's upgrade to the Azure plan has already completed."
