"""Delayed and follow-up work as queue messages on the host's storage connection.

Status checks go to ``%PRODUCT_UPGRADE_TRACKING_QUEUE%`` and deferred requests back to
``%PRODUCT_UPGRADE_REQUESTS_QUEUE%``, each made visible after a delay (the queue's visibility timeout: the
platform's own timer, which survives restarts and scale-in); outcomes go to ``%PRODUCT_UPGRADE_OUTCOMES_QUEUE%``.
Messages are plain JSON text, as ``host.json``'s ``messageEncoding: none`` expects. Queues are created on
first use.

A queue has no send-once: when storage's answer to a send is lost, the SDK sends it again, and the first copy may
have landed. For an outcome that is a second copy a consumer would count, so an outcome send waits for storage's
whole deadline on every attempt (never less: a shorter wait is what made copies on a loaded machine), is not
started when the invocation's budget cannot hold that wait, and reports every resend that may have left a copy.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import StorageUnavailableError
from shared.store.storage import ATTEMPTS, call_limits, ensure_exists, full_wait_limits

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.queue import QueueClient

    from shared.settings import StorageConnection

log = logging.getLogger(__name__)

#: The longest visibility delay a queue accepts (7 days).
MAX_DELAY_SECONDS = 7 * 24 * 3600
#: Storage's deadline for a queue call. Longer than the table's: a message sent twice is a duplicate (only a
#: status check's duplicate is harmless), so an answer is worth waiting for. Azurite on a loaded machine has
#: been seen to keep a queue call waiting past 11 s, a few times in 10,000.
QUEUE_DEADLINE_SECONDS = 20
#: The longest pause the queue client takes before a retry (its ExponentialRetry: 1 s, then 3 s, each up to 3 s more).
RETRY_PAUSE_SECONDS = 6.0


class NoTimeToSendError(StorageUnavailableError):
    """Too little of the invocation's time budget is left to wait for storage's whole answer to an outcome send:
    nothing was sent."""


@dataclass(frozen=True)
class ScheduledMessage:
    """A sent message, enough to take it back (a duplicate status check that lost its race)."""

    queue: str
    message_id: str
    pop_receipt: str


class Scheduler(Protocol):
    def schedule_check(self, payload: dict[str, Any], delay_seconds: float) -> ScheduledMessage:
        """Put a status check on the tracking queue, visible after ``delay_seconds``."""
        ...

    def defer_request(self, payload: dict[str, Any], delay_seconds: float) -> None:
        """Put a request message back on the requests queue, visible after ``delay_seconds``."""
        ...

    def send_request(self, payload: dict[str, Any]) -> None:
        """Put a new request message on the requests queue (the command line's ``bulk --enqueue``)."""
        ...

    def send_outcome(self, payload: dict[str, Any]) -> int:
        """Put an outcome message (with its ``outcomeId``) on the outcomes queue. Returns how many times it was
        sent again after an attempt storage may have carried out without its answer arriving (each may have left a
        copy, and is logged as a warning naming the ``outcomeId``). Raises :class:`NoTimeToSendError` (nothing
        sent) when the time budget left cannot hold one full attempt, :class:`StorageUnavailableError` when it
        could not be written (it may still have landed)."""
        ...

    def cancel(self, message: ScheduledMessage) -> None:
        """Delete a message this scheduler sent; best effort."""
        ...


class NoScheduler:
    """No storage configured: nothing can be scheduled; every call raises :class:`StorageUnavailableError`."""

    def schedule_check(self, payload: dict[str, Any], delay_seconds: float) -> ScheduledMessage:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def defer_request(self, payload: dict[str, Any], delay_seconds: float) -> None:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def send_request(self, payload: dict[str, Any]) -> None:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def send_outcome(self, payload: dict[str, Any]) -> int:
        raise StorageUnavailableError("no storage connection is configured (AzureWebJobsStorage)")

    def cancel(self, message: ScheduledMessage) -> None:
        return None


class QueueScheduler:
    """The scheduler on Azure Storage queues; failures raise :class:`StorageUnavailableError`."""

    def __init__(
        self,
        storage: StorageConnection,
        *,
        requests_queue: str,
        tracking_queue: str,
        outcomes_queue: str,
        credential: TokenCredential | None = None,
    ) -> None:
        self._storage = storage
        self._credential = credential
        self._requests_queue = requests_queue
        self._tracking_queue = tracking_queue
        self._outcomes_queue = outcomes_queue
        self._lock = threading.Lock()
        self._service: Any = None
        self._queues: dict[str, QueueClient] = {}

    def schedule_check(self, payload: dict[str, Any], delay_seconds: float) -> ScheduledMessage:
        return self._send(self._tracking_queue, payload, delay_seconds)

    def defer_request(self, payload: dict[str, Any], delay_seconds: float) -> None:
        self._send(self._requests_queue, payload, delay_seconds)

    def send_request(self, payload: dict[str, Any]) -> None:
        self._send(self._requests_queue, payload, 0)

    def send_outcome(self, payload: dict[str, Any]) -> int:
        outcome_id = str(payload.get("outcomeId"))
        limits = full_wait_limits(QUEUE_DEADLINE_SECONDS, retry_pause=RETRY_PAUSE_SECONDS)
        if limits is None:
            raise NoTimeToSendError(f"too little time left to wait for storage's answer to outcome {outcome_id}")
        resends = _Resends(outcome_id, str(payload.get("upgradeId")))
        # The first try carries the outcomeId as its client request id, so storage's logs find each send of an
        # outcome; the SDK gives every retry an id of its own.
        self._send(self._outcomes_queue, payload, 0, {**limits, "retry_hook": resends, "client_request_id": outcome_id})
        return resends.count

    def cancel(self, message: ScheduledMessage) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._queue(message.queue).delete_message(message.message_id, message.pop_receipt, **_limits())
        except (AzureError, ValueError) as exc:
            log.warning("Could not take back message %s (%s)", message.message_id, type(exc).__name__)

    def _send(
        self, queue: str, payload: dict[str, Any], delay_seconds: float, limits: dict[str, Any] | None = None
    ) -> ScheduledMessage:
        from azure.core.exceptions import AzureError

        # The queue counts visibility in whole seconds: round up, so a check never comes early.
        delay = min(MAX_DELAY_SECONDS, max(0, math.ceil(delay_seconds)))
        try:
            sent = self._queue(queue).send_message(
                json.dumps(payload, separators=(",", ":")), visibility_timeout=delay, **(limits or _limits())
            )
        except (AzureError, ValueError) as exc:
            raise StorageUnavailableError(f"queue {queue} could not be written ({type(exc).__name__})") from None
        return ScheduledMessage(queue, str(sent.id), str(sent.pop_receipt))

    def _queue(self, name: str) -> QueueClient:
        with self._lock:
            client = self._queues.get(name)
            if client is None:
                client = self._service_client().get_queue_client(name)
                ensure_exists(lambda: client.create_queue(**_limits()), f"queue {name}")
                self._queues[name] = client
            return client

    def _service_client(self) -> Any:
        from azure.storage.queue import ExponentialRetry, QueueServiceClient

        from shared.http_session import azure_transport

        if self._service is None:
            # Storage's default retry waits 15 s, then 45 s: far past an invocation's budget. Two quick retries.
            retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=ATTEMPTS - 1)
            transport = azure_transport(connection_timeout=5, read_timeout=10)
            options: dict[str, Any] = {"transport": transport, "retry_policy": retry}
            if self._storage.connection_string:
                self._service = QueueServiceClient.from_connection_string(self._storage.connection_string, **options)
            else:
                # The runtime builds this scheduler only with a connection string or a queue URI and a credential.
                assert self._storage.queue_service_uri and self._credential is not None
                self._service = QueueServiceClient(
                    account_url=self._storage.queue_service_uri, credential=self._credential, **options
                )
        return self._service


def _limits() -> dict[str, Any]:
    return call_limits(QUEUE_DEADLINE_SECONDS)


class _Resends:
    """The queue client's per-call retry hook for one outcome send: counts, and logs, each retry after an attempt
    that storage may have carried out (an answer lost or late, a 5xx other than 503 "server busy"); a retry after a
    connection that never reached storage, or a 503, cannot leave a copy."""

    def __init__(self, outcome_id: str, upgrade_id: str) -> None:
        self.outcome_id = outcome_id
        self.upgrade_id = upgrade_id
        self.count = 0

    def __call__(self, *, response: Any = None, error: Any = None, **_: Any) -> None:
        from azure.core.exceptions import ServiceRequestError

        status = getattr(response, "status_code", None)
        if isinstance(error, ServiceRequestError) or status == 503:
            return
        self.count += 1
        log.warning(
            "Outcome %s of upgrade %s: storage's answer to its send did not come (%s); sending it again, "
            "so it may arrive twice",
            self.outcome_id,
            self.upgrade_id,
            type(error).__name__ if error is not None else f"HTTP {status}",
        )
