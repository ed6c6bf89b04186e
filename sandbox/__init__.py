"""A local Microsoft Entra ID + Partner Center for trying the app without a Partner Center account.

Loopback HTTPS servers speaking the product-upgrade wire protocol (token endpoint, create, eligibility, status),
with customers whose behaviour is scripted by id (``sandbox.customers``). ``python -m sandbox`` runs it as a
process (what ``scripts/run`` starts); the tests start the same classes in-process. Never deployed.
"""

from __future__ import annotations

from sandbox.constants import (
    APP_ID,
    APP_SECRET,
    CUSTOMER_ID,
    PARTNER_CENTER_RESOURCE,
    PARTNER_CENTER_SCOPE,
    REFRESH_TOKEN,
    TENANT_ID,
    USER_OBJECT_ID,
)
from sandbox.entra import FakeEntra
from sandbox.partner_center import FakePartnerCenter
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import CA_ENV_VARS, TLSMaterial, default_tls

__all__ = [
    "APP_ID",
    "APP_SECRET",
    "CA_ENV_VARS",
    "CUSTOMER_ID",
    "PARTNER_CENTER_RESOURCE",
    "PARTNER_CENTER_SCOPE",
    "REFRESH_TOKEN",
    "TENANT_ID",
    "USER_OBJECT_ID",
    "FakeEntra",
    "FakeHTTPServer",
    "FakePartnerCenter",
    "RecordedRequest",
    "Response",
    "TLSMaterial",
    "default_tls",
]
