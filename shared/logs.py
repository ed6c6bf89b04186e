"""Log lines that carry their operation's ids, and a redaction pass as a second line of defence.

:func:`install` wraps the process's log-record factory once: every record (ours and the SDKs') gets the
current operation's ``correlationId``/``requestId``/``messageId`` appended, and anything that looks like a
bearer token, a JWT, a secret-bearing parameter or a registered secret value replaced by ``[REDACTED]``,
in the message and in a formatted traceback alike. The first line of defence stays the code itself:
it never passes a secret to a logger.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from traceback import format_exception_only
from typing import Any, NamedTuple

REDACTED = "[REDACTED]"

#: Names whose values are secrets, in forms, query strings, connection strings, JSON and dict reprs.
_SECRET_NAMES = (
    "client_secret",
    "refresh_token",
    "access_token",
    "id_token",
    "assertion",
    "password",
    "code",
    "sig",
    "accountkey",
    "sharedaccesskey",
    "x-functions-key",
)
_SECRET_KEYS = "|".join(_SECRET_NAMES)
#: Where such a name starts: a word boundary, or right after a percent-encoded byte (``%3Fcode%3D...``).
_KEY_START = r"(?:\b|(?<=%[0-9A-Fa-f]{2}))"


class _Redaction(NamedTuple):
    """A secret-shaped part of a log line and what replaces it. The pattern runs only when the text holds the
    ``gate`` character (or there is none), one of the ``hints`` once lower-cased (or there are none), and is at
    least ``min_length`` long: each a necessary condition, so the common line costs a few substring searches."""

    pattern: re.Pattern[str]
    replacement: str
    hints: tuple[str, ...] = ()
    gate: str | None = None
    min_length: int = 0


_QUOTED = (*_SECRET_NAMES, "value")

_PATTERNS: tuple[_Redaction, ...] = (
    # Authorization: Bearer <token>
    _Redaction(re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/]+=*"), r"\1" + REDACTED, ("bearer",)),
    # JWTs (access and id tokens) wherever they appear
    _Redaction(re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED, ("eyj",)),
    # form fields, query parameters and connection-string parts that carry secrets
    _Redaction(
        re.compile(rf"(?i){_KEY_START}({_SECRET_KEYS})=([^&\s;\"',]+)"), r"\1=" + REDACTED, _SECRET_NAMES, gate="="
    ),
    # the same, URL-encoded inside another URL or parameter (code%3D..., up to the next %26)
    _Redaction(
        re.compile(rf"(?i){_KEY_START}({_SECRET_KEYS})%3D((?:(?!%26)[^&\s;\"',])+)"), r"\1%3D" + REDACTED, ("%3d",)
    ),
    # the function key as a header line: "x-functions-key: ..."
    _Redaction(re.compile(r"(?i)(x-functions-key\s*:\s*)[^\s,;'\"}]+"), r"\1" + REDACTED, ("x-functions-key",)),
    # JSON members and single-quoted dict reprs that carry secrets
    _Redaction(
        re.compile(rf"(?i)(\"(?:{_SECRET_KEYS}|value)\"\s*:\s*\")(?:[^\"\\]|\\.)*"),
        r"\1" + REDACTED,
        tuple(f'"{name}"' for name in _QUOTED),
        gate='"',
    ),
    _Redaction(
        re.compile(rf"(?i)('(?:{_SECRET_KEYS}|value)'\s*:\s*['\"])(?:[^'\"\\]|\\.)*"),
        r"\1" + REDACTED,
        tuple(f"'{name}'" for name in _QUOTED),
        gate="'",
    ),
    # long opaque strings (refresh tokens are hundreds of characters of base64url and dots)
    _Redaction(re.compile(r"(?<![A-Za-z0-9_\-.])[A-Za-z0-9_\-.~+/]{120,}={0,2}"), REDACTED, min_length=120),
)

#: Longest value of an id field appended to a log line.
MAX_FIELD_LENGTH = 256
_PLAIN_FIELD = re.compile(r"[A-Za-z0-9_.:/@+-]*")

#: Azure SDK loggers held at WARNING by :func:`install` (unless configured otherwise): at INFO they log every
#: request and response they send, which costs CPU on each storage and Key Vault call (every record goes
#: through the redaction here) and Application Insights ingestion. Their warnings and errors still come through.
SDK_LOGGERS: tuple[str, ...] = (
    "azure.core",
    "azure.identity",
    "azure.keyvault",
    "azure.data.tables",
    "azure.storage",
)

_secrets_lock = threading.Lock()
_secret_values: frozenset[str] = frozenset()

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("log_context", default=())
_installed = False
_install_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it would be logged (secrets read from the vault, tokens issued)."""
    global _secret_values
    if value and len(value) >= 8:
        with _secrets_lock:
            _secret_values = _secret_values | {value}


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-looking parts replaced by ``[REDACTED]``."""
    for value in _secret_values:
        if value in text:
            text = text.replace(value, REDACTED)
    lowered = text.lower()
    for redaction in _PATTERNS:
        if len(text) < redaction.min_length or (redaction.gate is not None and redaction.gate not in text):
            continue
        if not redaction.hints or any(hint in lowered for hint in redaction.hints):
            text = redaction.pattern.sub(redaction.replacement, text)
    return text


@contextlib.contextmanager
def operation(**ids: str | None) -> Iterator[None]:
    """Within this block every log line carries ``ids`` (e.g. ``correlationId``, ``requestId``)."""
    token = _context.set(_merge(_context.get(), ids))
    try:
        yield
    finally:
        _context.reset(token)


def bind(**ids: str | None) -> None:
    """Add ids to the current :func:`operation` (e.g. the request id, once it is known)."""
    _context.set(_merge(_context.get(), ids))


def current_ids() -> dict[str, str]:
    return dict(_context.get())


def install() -> None:
    """Wrap the log-record factory once per process and quiet the Azure SDK loggers; safe to call again."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory(previous))
        quiet_sdk_loggers()
        _installed = True


def quiet_sdk_loggers() -> None:
    """Hold the :data:`SDK_LOGGERS` at WARNING; a level someone set on purpose stays."""
    for name in SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        if sdk_logger.level == logging.NOTSET:
            sdk_logger.setLevel(logging.WARNING)


def _merge(current: tuple[tuple[str, str], ...], ids: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    merged = dict(current)
    merged.update({key: _field(value) for key, value in ids.items() if value})
    return tuple(merged.items())


def _field(value: str) -> str:
    """An id as it may appear in a log line: bounded, and quoted with escapes unless plainly safe, so a
    caller's id holding a newline or ``] [requestId=...`` cannot forge a line or a field."""
    value = value[:MAX_FIELD_LENGTH]
    return value if _PLAIN_FIELD.fullmatch(value) else json.dumps(value)


class RedactedException(Exception):
    """Stands in for an exception whose text held a secret, for handlers that read ``exc_info`` themselves
    (OpenTelemetry, Application Insights): its text is the redacted one, the traceback's frames are kept."""


def _factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    formatter = logging.Formatter()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception as exc:
            # Fail closed: the arguments that did not fit the format are never emitted, only their count.
            count = len(record.args) if isinstance(record.args, tuple) else 1
            message = f"{record.msg} [log call failed to format: {type(exc).__name__}; {count} argument(s) withheld]"
        ids = _context.get()
        if ids:
            message += " [" + " ".join(f"{key}={value}" for key, value in ids) + "]"
            for key, value in ids:
                setattr(record, key, value)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            _redact_exception(record, formatter)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    return make


def _redact_exception(record: logging.LogRecord, formatter: logging.Formatter) -> None:
    assert record.exc_info is not None
    exc_type, exc_value, traceback = record.exc_info
    text = formatter.formatException(record.exc_info)
    record.exc_text = redact(text)
    if record.exc_text != text:
        assert exc_type is not None
        summary = redact("".join(format_exception_only(exc_type, exc_value)).strip())
        stand_in = RedactedException(summary)
        record.exc_info = (RedactedException, stand_in, traceback)
