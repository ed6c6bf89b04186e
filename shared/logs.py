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
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

REDACTED = "[REDACTED]"

_PATTERNS = [
    # Authorization: Bearer <token>
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/]+=*"), r"\1" + REDACTED),
    # JWTs (access and id tokens) wherever they appear
    (re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
    # form fields, query parameters and connection-string parts that carry secrets
    (
        re.compile(
            r"(?i)\b(client_secret|refresh_token|access_token|id_token|assertion|password|code|sig|"
            r"accountkey|sharedaccesskey|x-functions-key)=([^&\s;\"',]+)"
        ),
        r"\1=" + REDACTED,
    ),
    # JSON members that carry secrets
    (
        re.compile(r"(?i)(\"(?:client_secret|refresh_token|access_token|id_token|value|password)\"\s*:\s*\")[^\"]*"),
        r"\1" + REDACTED,
    ),
    # long opaque strings (refresh tokens are hundreds of characters of base64url and dots)
    (re.compile(r"(?<![A-Za-z0-9_\-.])[A-Za-z0-9_\-.~+/]{120,}={0,2}"), REDACTED),
]

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
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
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
    merged.update({key: value for key, value in ids.items() if value})
    return tuple(merged.items())


def _factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    formatter = logging.Formatter()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line; the logging module reports it
            return record
        ids = _context.get()
        if ids:
            message += " [" + " ".join(f"{key}={value}" for key, value in ids) + "]"
            for key, value in ids:
                setattr(record, key, value)
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(formatter.formatException(record.exc_info))
        return record

    return make
