"""What the ledger and the scheduler share about the storage account they use."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.retry import remaining_budget

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.settings import StorageConnection

log = logging.getLogger(__name__)

#: How much longer than storage's own deadline a client waits for its answer: the network's share.
ANSWER_MARGIN_SECONDS = 5
#: Attempts of one storage call (the queue and table clients retry twice).
ATTEMPTS = 3


def call_limits(server_seconds: int, *, connect: float = 3.0) -> dict[str, Any]:
    """Per-call keyword arguments for a queue or table call: storage's own deadline for the operation (its
    ``timeout`` parameter: at most ``server_seconds``, less when :data:`ATTEMPTS` would not fit in what is left of
    the current :func:`~shared.retry.time_budget`) and a read timeout :data:`ANSWER_MARGIN_SECONDS` past it.

    Storage answers within the deadline it is given, with the result or an error. A client that stops waiting
    sooner cannot tell whether its write landed, and the SDK sends it again: a second copy of a queue message, or a
    conditional update that fails against its own first copy. Near the end of a budget both shrink; a write whose
    copy a consumer would count (an outcome) uses :func:`full_wait_limits` instead, which never shrinks them.
    """
    left = remaining_budget()
    if left is not None:
        server_seconds = min(server_seconds, math.floor(left / ATTEMPTS) - ANSWER_MARGIN_SECONDS)
    server_seconds = max(1, server_seconds)
    return {
        "timeout": server_seconds,
        "read_timeout": server_seconds + ANSWER_MARGIN_SECONDS,
        "connection_timeout": min(connect, server_seconds),
    }


def full_wait_limits(server_seconds: int, *, connect: float = 3.0, retry_pause: float = 0.0) -> dict[str, Any] | None:
    """Per-call keyword arguments for a write that a resend would duplicate (an outcome message): storage's whole
    deadline ``server_seconds`` and a read timeout :data:`ANSWER_MARGIN_SECONDS` past it on every attempt, never
    less, and only as many attempts as fit in what is left of the current :func:`~shared.retry.time_budget`
    (``retry_total``; ``retry_pause``: the longest pause before a retry). None when not even one attempt fits: the
    caller must not start the write, rather than stop waiting while storage may still be carrying it out.
    """
    attempt = connect + server_seconds + ANSWER_MARGIN_SECONDS
    left = remaining_budget()
    attempts = ATTEMPTS if left is None else min(ATTEMPTS, math.floor((left + retry_pause) / (attempt + retry_pause)))
    if attempts < 1:
        return None
    return {
        "timeout": server_seconds,
        "read_timeout": server_seconds + ANSWER_MARGIN_SECONDS,
        "connection_timeout": connect,
        "retry_total": attempts - 1,
    }


def ensure_exists(create: Callable[[], object], what: str) -> None:
    """Create a queue or table on first use, as Azurite needs; where it exists already, or the app's role may
    not create it (in Azure, Bicep creates every queue and the table and the app holds data roles only), go on:
    the next read or write says whether it is really there."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    try:
        create()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        log.debug("Not allowed to create %s; taking it as provisioned", what)


def table_service(storage: StorageConnection, credential: TokenCredential | None) -> Any:
    """A table service client for ``storage``, with the short timeouts and few retries of a record kept beside the
    upgrades (the ledger builds its own the same way)."""
    from azure.data.tables import TableServiceClient

    from shared.http_session import azure_transport

    options: dict[str, Any] = {
        "transport": azure_transport(connection_timeout=5, read_timeout=10),
        "retry_total": ATTEMPTS - 1,
        "retry_backoff_factor": 0.2,
    }
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, **options)
    if not storage.table_service_uri or credential is None:
        raise ValueError("no table endpoint and credential for identity-based storage")
    return TableServiceClient(endpoint=storage.table_service_uri, credential=credential, **options)
