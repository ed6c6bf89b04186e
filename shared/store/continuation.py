"""The listing's continuation tokens: opaque to callers, signed (HMAC-SHA256) when a key is set, so only
tokens this app issued are accepted."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import ValidationError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_TOKEN_VERSION = "v1"
#: Tokens signed with PRODUCT_UPGRADE_CONTINUATION_KEY: ``<payload>.<HMAC-SHA256 of it>``, both base64url.
_SIGNED_TOKEN_VERSION = "v2"
_MAX_TOKEN_LENGTH = 2048
#: Storage's own continuation values are printable ASCII (base64 and ``!``-separated counts): nothing else
#: can be one, and a request could not even carry some of it.
_MAX_POSITION_LENGTH = 1024


def encode_continuation_token(position: Mapping[str, Any], key: str | None = None) -> str:
    """An opaque, URL-safe token for the table's next page (partition and row key to resume from); signed with
    ``key`` (HMAC-SHA256) when one is given."""
    version = _SIGNED_TOKEN_VERSION if key else _TOKEN_VERSION
    payload = {"v": version, "pk": position.get("PartitionKey"), "rk": position.get("RowKey")}
    encoded = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{encoded}.{_b64encode(_signature(key, encoded))}" if key else encoded


def decode_continuation_token(token: str, key: str | None = None) -> dict[str, str]:
    """The table position of a token this app issued (signed with ``key`` when one is given);
    :class:`ValidationError` for anything else."""
    invalid = ValidationError("continuationToken is not one this app issued; start again without it")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    encoded, dot, signature = token.partition(".")
    if key:
        try:
            signed = hmac.compare_digest(_b64decode(signature), _signature(key, encoded))
        except (binascii.Error, ValueError):
            signed = False
        if not (dot and signed):
            raise invalid
    elif dot:
        raise invalid
    try:
        payload = json.loads(_b64decode(encoded))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(payload, dict) or payload.get("v") != (_SIGNED_TOKEN_VERSION if key else _TOKEN_VERSION):
        raise invalid
    partition, row = payload.get("pk"), payload.get("rk")
    if not (_storage_position(partition) and _storage_position(row)):
        raise invalid
    assert isinstance(partition, str) and isinstance(row, str)
    return {"PartitionKey": partition, "RowKey": row}


def _storage_position(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_POSITION_LENGTH and value.isascii() and value.isprintable()


def _signature(key: str, encoded: str) -> bytes:
    return hmac.new(key.encode(), b"continuationToken:" + encoded.encode(), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
