"""A local Microsoft Entra ID + Partner Center for trying the app without a Partner Center account.

Loopback HTTPS servers speaking the product-upgrade wire protocol (token endpoint, create, eligibility, status),
with customers whose behaviour is scripted by id (``sandbox.customers``) and a customer list holding a seeded
population of customers and their subscriptions (``sandbox.population``). ``python -m sandbox`` runs it as a
process (what ``scripts/run`` starts); the tests and benchmarks start the same classes in-process, with the
other services the app talks to: Key Vault, the managed-identity endpoint, Azurite (the storage emulator) and a
storage proxy that plays faults at the wire. Never deployed.
"""

from __future__ import annotations

from sandbox.azurite import Azurite
from sandbox.constants import (
    APP_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET,
    APP_SECRET_SECRET_NAME,
    CUSTOMER_ID,
    DEFAULT_SECRETS,
    MANAGED_IDENTITY_CLIENT_ID,
    PARTNER_CENTER_RESOURCE,
    PARTNER_CENTER_SCOPE,
    REFRESH_TOKEN,
    REFRESH_TOKEN_SECRET_NAME,
    TENANT_ID,
    USER_OBJECT_ID,
)
from sandbox.entra import FakeEntra
from sandbox.key_vault import FakeKeyVault
from sandbox.managed_identity import FakeManagedIdentity
from sandbox.partner_center import FakePartnerCenter
from sandbox.population import Population
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import CA_ENV_VARS, TLSMaterial, default_tls

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
    "Population",
    "RecordedRequest",
    "Response",
    "TLSMaterial",
    "default_tls",
]
