"""Partner Center's front door: a call needs a bearer token the fake Entra issued for Partner Center.

Without one the answer is 401 with Partner Center's error body (codes as strings) and an OAuth challenge.
"""

from __future__ import annotations

import uuid

from sandbox.constants import PARTNER_CENTER_RESOURCE
from sandbox.entra import FakeEntra
from sandbox.partner_center.replies import PartnerCenterError
from sandbox.server import RecordedRequest

#: 401 bodies: no bearer token at all (Partner Center's PartnerTokenMissing), or one it does not accept.
TOKEN_MISSING = ("800001", "The partner token is missing in the request context.")
TOKEN_INVALID = ("400", "Invalid token: the access token is expired or not valid for Partner Center.")


def check_bearer(req: RecordedRequest, entra: FakeEntra | None) -> None:
    """Pass a call whose bearer token ``entra`` accepts (any token, without an ``entra``); else raise the 401."""
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    token = token.strip()
    presented = scheme.lower() == "bearer" and bool(token)
    if presented and (entra is None or entra.is_valid_access_token(token, PARTNER_CENTER_RESOURCE)):
        return
    code, description = TOKEN_INVALID if presented else TOKEN_MISSING
    challenge = {"WWW-Authenticate": f"OAuth realm=urn:cpsvc:cpid:{uuid.uuid4()}"}
    raise PartnerCenterError(401, code, description, extra=challenge)
