"""One retry policy for every outbound call: bounded attempts, honoured ``Retry-After``, a time budget.

Why our own loop: the rules we need (a per-invocation deadline shared by Key Vault, the token endpoint and
Partner Center; ``Retry-After`` beyond the budget surfaced to the caller instead of slept through; the
same ``MS-RequestId`` on every attempt) are a few lines here, and awkward to express in urllib3's ``Retry``
or tenacity's stop/wait combinators.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from shared.errors import UpstreamTimeoutError, UpstreamUnavailableError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

#: Statuses worth another attempt: throttling, request timeout and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Within this block, every outbound call with every retry finishes within ``seconds`` in all."""
    deadline = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining_budget() -> float | None:
    """Seconds left in the innermost :func:`time_budget`, or None outside one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def azure_call_limits(*, total: float = 45.0, read: float = 20.0, connect: float = 5.0) -> dict[str, Any]:
    """Per-call keyword arguments for an Azure SDK call, so its own retries end inside the current
    :func:`time_budget` (azure-core reads a per-call ``timeout`` as the total time its retries may take)."""
    left = remaining_budget()
    total = total if left is None else max(0.5, min(total, left))
    return {"timeout": total, "read_timeout": min(read, total), "connection_timeout": min(connect, total)}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one outbound operation. Defaults are the contract's limits for callers."""

    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    #: Upper bound for one operation with all its retries, on top of any :func:`time_budget`.
    total_budget: float = 45.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    #: Below this many seconds left, no new attempt starts: it could not finish.
    min_attempt_time: float = 0.5

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def send(
        self,
        attempt_fn: Callable[[tuple[float, float]], requests.Response],
        *,
        service: str,
        retry_on: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Call ``attempt_fn(timeout)`` until a response is final, attempts run out or the budget would be spent.

        A final response (any status not worth retrying, or a retryable one when no attempt is left) is
        returned for the caller to interpret; transport failures on the last attempt raise
        :class:`UpstreamTimeoutError` (read timeout) or :class:`UpstreamUnavailableError`.
        """
        import requests  # imported on first call, not with the module: indexing the functions stays quick

        should_retry = retry_on or (lambda response: response.status_code in RETRYABLE_STATUSES)
        deadline = time.monotonic() + self.total_budget
        outer = _deadline.get()
        if outer is not None:
            deadline = min(deadline, outer)
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            if left < self.min_attempt_time:
                raise UpstreamTimeoutError(f"{service} was not called: the time budget of this operation is spent")
            timeout = (min(self.connect_timeout, left), min(self.read_timeout, left))
            response: requests.Response | None = None
            failure: Exception | None = None
            try:
                response = attempt_fn(timeout)
            except requests.exceptions.SSLError as exc:
                # An untrusted certificate stays untrusted: another attempt only delays the answer.
                raise _transport_error(service, exc, attempt) from None
            except (requests.Timeout, requests.ConnectionError) as exc:
                failure = exc
            if response is not None:
                if not should_retry(response):
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                wait = retry_after if retry_after is not None else self.backoff(attempt)
            else:
                wait = self.backoff(attempt)
            left = deadline - time.monotonic()
            if attempt >= self.max_attempts or wait + self.min_attempt_time > left:
                if response is not None:
                    return response
                assert failure is not None
                raise _transport_error(service, failure, attempt) from None
            log.warning(
                "%s attempt %d failed (%s); retrying in %.1f s",
                service,
                attempt,
                f"HTTP {response.status_code}" if response is not None else type(failure).__name__,
                wait,
            )
            time.sleep(wait)


def _transport_error(service: str, failure: Exception, attempts: int) -> UpstreamUnavailableError:
    # Exception text from requests can carry URLs but never our headers or bodies; the message (which callers
    # of the HTTP routes see) names only the kind of failure. The address and what to check are for operators.
    import requests

    from shared.http_session import ca_bundle_in_use

    url = _address(failure)
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(failure, requests.exceptions.SSLError):
        bundle, source = ca_bundle_in_use()
        return UpstreamUnavailableError(
            f"{service}'s TLS certificate was not trusted (SSLError), not retried",
            unreachable=True,
            url=url,
            hint=f"the CA bundle in use is {bundle} ({source}); point REQUESTS_CA_BUNDLE at the CA that signed "
            "the service's certificate (the sandbox's is .sandbox/ca.pem)",
        )
    hint = "check that the service is running and reachable from here, and that the setting naming it is right"
    if isinstance(failure, requests.ReadTimeout):
        return UpstreamTimeoutError(f"{service} timed out {tries}", unreachable=True, url=url, hint=hint)
    message = f"{service} could not be reached ({type(failure).__name__}) {tries}"
    return UpstreamUnavailableError(message, unreachable=True, url=url, hint=hint)


def _address(failure: Exception) -> str | None:
    """The address a failed call went to: scheme, host and path; the query (where keys travel) left out."""
    request = getattr(failure, "request", None)
    url = getattr(request, "url", None)
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
