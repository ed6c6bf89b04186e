"""Decoding queue messages: plain JSON, or base64 of JSON (the host's default encoding, for older producers)."""

from __future__ import annotations

import base64
import binascii
import json

from shared.errors import ValidationError
from shared.models import MAX_BODY_BYTES


def decode_json_message(raw: bytes) -> object:
    """The JSON value a message carries; raises :class:`ValidationError` when there is none."""
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"the message is larger than {MAX_BODY_BYTES // 1024} KiB")
    text = _utf8(raw)
    if text is None or not text.strip():
        raise ValidationError("the message is empty or not UTF-8 text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    # The host's default messageEncoding is base64: producers written for it still work.
    try:
        decoded = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("the message is neither JSON nor base64 of JSON") from None
    inner = _utf8(decoded)
    try:
        return json.loads(inner) if inner is not None else None
    except (ValueError, RecursionError):
        raise ValidationError("the message is neither JSON nor base64 of JSON") from None


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
