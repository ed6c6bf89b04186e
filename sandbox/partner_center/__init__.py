"""A fake Partner Center REST API (api.partnercenter.microsoft.com): the three product-upgrade operations, and the
customer list and each customer's subscriptions (:mod:`sandbox.directory`), which discovery reads.

Paths are matched case-insensitively, as the real service does. Every answer carries ``MS-CorrelationId`` and
``MS-RequestId`` (echoed when sent, else generated), ``MS-CV`` and ``MS-ServerId``. Errors use Partner Center's
shape ``{"code", "description", "data", "source"}``; throttling answers 429 with ``Retry-After`` and the gateway's
``{"statusCode": 429, "message"}`` body. A status document is shaped like the docs' example: one line item per
subscription, source ``AzureSubscription`` with the subscription's GUID, target ``Microsoft Azure plan``, and no
``errorDetails`` key where there is no error.

The service is :class:`FakePartnerCenter` (:mod:`~sandbox.partner_center.fake`); each module beside it does one
part of the job.
"""

from __future__ import annotations

from sandbox.partner_center.auth import TOKEN_INVALID, TOKEN_MISSING
from sandbox.partner_center.documents import SOURCE_PRODUCT_NAME, TARGET_PRODUCT_NAME
from sandbox.partner_center.fake import FakePartnerCenter
from sandbox.partner_center.routes import is_guid
from sandbox.partner_center.scripts import CustomerError
from sandbox.partner_center.upgrades import COMPLETED, RUNNING_STATES, LineOutcome, Outcome, Upgrade

__all__ = [
    "COMPLETED",
    "RUNNING_STATES",
    "SOURCE_PRODUCT_NAME",
    "TARGET_PRODUCT_NAME",
    "TOKEN_INVALID",
    "TOKEN_MISSING",
    "CustomerError",
    "FakePartnerCenter",
    "LineOutcome",
    "Outcome",
    "Upgrade",
    "is_guid",
]
