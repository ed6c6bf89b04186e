"""Azure SDK clients (Key Vault, the managed-identity credential) kept inside the invocation's time budget.

azure-core's own total (``RetryPolicy(timeout=...)``, 7 days by default; ``retry_timeout`` is not read at
all) is set once per client, and the managed-identity credential takes no per-call limits. So the limits
live in the pipeline itself, read at each call from :func:`shared.retry.time_budget`: the retry policy's
total and back-off never outlast what is left, and the transport cuts each attempt's connect and read
timeouts to it. A server that accepts the connection and never answers costs the caller what is left of
its budget, no more.
"""

from __future__ import annotations

import functools
from typing import Any

from azure.core.exceptions import ServiceRequestTimeoutError
from azure.core.pipeline.policies import RetryPolicy as AzureRetryPolicy
from azure.core.pipeline.transport import RequestsTransport

from shared.retry import RetryPolicy, remaining_budget

#: Below this many seconds left, no new attempt starts: it could not finish.
MIN_ATTEMPT_SECONDS = 0.05


class BudgetRetryPolicy(AzureRetryPolicy[Any, Any]):
    """azure-core's retry policy whose total and back-off end inside the current time budget."""

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = super().configure_retries(options)
        left = remaining_budget()
        if left is not None:
            settings["timeout"] = max(0.0, min(float(settings["timeout"]), left))
        return settings

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return _within_budget(super().get_backoff_time(settings))

    def get_retry_after(self, response: Any) -> float | None:
        retry_after = super().get_retry_after(response)
        return None if retry_after is None else _within_budget(retry_after)


class BudgetTransport(RequestsTransport):  # type: ignore[misc]  # azure-core exports it lazily, untyped
    """azure-core's requests transport; each attempt's connect and read timeouts end inside the budget."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        left = remaining_budget()
        if left is not None:
            if left < MIN_ATTEMPT_SECONDS:
                raise ServiceRequestTimeoutError("the time budget of this operation is spent")
            config = self.connection_config
            kwargs["connection_timeout"] = min(float(kwargs.get("connection_timeout") or config.timeout), left)
            kwargs["read_timeout"] = min(float(kwargs.get("read_timeout") or config.read_timeout), left)
        return super().send(request, **kwargs)


def client_options(policy: RetryPolicy) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client (``SecretClient``, table and queue clients)."""
    return {
        "transport": _transport(policy),
        "retry_policy": BudgetRetryPolicy(**_retry_settings(policy)),
    }


def credential_options(policy: RetryPolicy) -> dict[str, Any]:
    """Keyword arguments for ``DefaultAzureCredential``: azure-identity builds each pipeline itself, from a
    retry policy class and these settings (the managed-identity request included)."""
    return {
        "transport": _transport(policy),
        "retry_policy_class": functools.partial(BudgetRetryPolicy, timeout=policy.total_budget),
        **{key: value for key, value in _retry_settings(policy).items() if key != "timeout"},
    }


def _retry_settings(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "retry_total": policy.max_attempts - 1,
        "retry_backoff_factor": policy.backoff_base,
        "retry_backoff_max": policy.backoff_max,
        "timeout": policy.total_budget,
    }


def _transport(policy: RetryPolicy) -> BudgetTransport:
    return BudgetTransport(connection_timeout=policy.connect_timeout, read_timeout=policy.read_timeout)


def _within_budget(seconds: float) -> float:
    left = remaining_budget()
    return seconds if left is None else max(0.0, min(seconds, left - MIN_ATTEMPT_SECONDS))
