"""Calling the function app the way the host does, wired to the loopback fakes."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

import function_app
from sandbox import (
    APP_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET,
    APP_SECRET_SECRET_NAME,
    REFRESH_TOKEN,
    REFRESH_TOKEN_SECRET_NAME,
    TENANT_ID,
    FakeEntra,
    FakePartnerCenter,
)
from shared.functions import health
from shared.partner_center.secrets import KeyVaultSecretStore, SecretNames
from shared.retry import RetryPolicy
from shared.settings import ALL_SETTINGS, Settings
from shared.upgrades import runtime

# -- the function app wired to the fakes ----------------------------------------------------------------

#: Fast retries for tests; the contract's limits (5 attempts, 5 s / 20 s timeouts) stay.
FAST_POLICY = RetryPolicy(backoff_base=0.01, backoff_max=0.05, total_budget=15.0)


class OutCollector(func.Out[str]):
    """A queue output binding as the host gives it: the function sets a value, the host writes it."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str:
        assert self.value is not None
        return self.value


def as_bytes(body: bytes | str | dict[str, Any] | None) -> bytes:
    if isinstance(body, dict):
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return body or b""


@functools.cache
def indexed_functions() -> dict[str, Any]:
    """The app's functions by name, indexed once, as the host does (``get_functions`` refuses to index twice)."""
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_functions() -> dict[str, Any]:
    return {name: f.get_user_function() for name, f in indexed_functions().items()}


class App:
    """Calls the functions the documented way: ``app.get_functions()`` then ``get_user_function()``."""

    base_url = "https://upgrades.example.net"

    def __init__(self, partner_center: FakePartnerCenter, entra: FakeEntra) -> None:
        self.partner_center = partner_center
        self.entra = entra
        self._functions = user_functions()

    def http(
        self,
        name: str,
        method: str,
        path: str,
        *,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        route_params: dict[str, str] | None = None,
    ) -> func.HttpResponse:
        raw = (
            json.dumps(body).encode() if isinstance(body, dict) else (body.encode() if isinstance(body, str) else body)
        )
        query = ("?" + urlencode(params)) if params else ""
        req = func.HttpRequest(
            method,
            f"{self.base_url}{path}{query}",
            headers=headers or {},
            params=params or {},
            route_params=route_params or {},
            body=raw or b"",
        )
        response: func.HttpResponse = self._functions[name](req)
        return response

    def create(self, body: Any, **kwargs: Any) -> func.HttpResponse:
        return self.http("create_product_upgrade", "POST", "/api/productupgrades", body=body, **kwargs)

    def eligibility(self, body: Any, **kwargs: Any) -> func.HttpResponse:
        return self.http(
            "check_product_upgrade_eligibility", "POST", "/api/productupgrades/eligibility", body=body, **kwargs
        )

    def status(self, upgrade_id: str, params: dict[str, str], **kwargs: Any) -> func.HttpResponse:
        return self.http(
            "get_product_upgrade_status",
            "GET",
            f"/api/productupgrades/{upgrade_id}",
            params=params,
            route_params={"upgradeId": upgrade_id},
            **kwargs,
        )

    def health(self) -> func.HttpResponse:
        return self.http("health", "GET", "/api/health")

    def health_details(self) -> func.HttpResponse:
        return self.http("health_details", "GET", "/api/health/details")

    def queue(self, body: bytes | str | dict[str, Any], *, message_id: str = "msg-1", dequeue_count: int = 1) -> str:
        """Run the queue function on one message; the result message, or the exception the host would see."""
        raw = (
            json.dumps(body).encode() if isinstance(body, dict) else (body.encode() if isinstance(body, str) else body)
        )
        msg = QueueMessage(id=message_id, body=raw, dequeue_count=dequeue_count, pop_receipt="pr")
        out = OutCollector()
        self._functions["product_upgrade_from_queue"](msg, out)
        return out.get()


def run_queue_function(message: Any) -> str:
    """Run the queue function on a message received from a real queue (``azure.storage.queue.QueueMessage``),
    as the host does; the result message the output binding got. Raises what the function raised."""
    result = run_queue_function_or_none(message)
    assert result is not None, "the function set no result (deferred)"
    return result


def set_app_env(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, partner_center: FakePartnerCenter) -> None:
    for name in ALL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARTNER_CENTER_TENANT_ID", TENANT_ID)
    monkeypatch.setenv("PARTNER_CENTER_AUTHORITY_HOST", entra.url)
    monkeypatch.setenv("PARTNER_CENTER_BASE_URL", partner_center.url)
    monkeypatch.setenv("PARTNER_CENTER_APP_ID", APP_ID)
    monkeypatch.setenv("PARTNER_CENTER_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("PARTNER_CENTER_REFRESH_TOKEN", REFRESH_TOKEN)
    # Hosted as in Azure: the platform names the app's host (App.base_url's), so Location is the app's own.
    monkeypatch.setenv("WEBSITE_HOSTNAME", urlsplit(App.base_url).netloc)


def installed_app(entra: FakeEntra, partner_center: FakePartnerCenter) -> Iterator[App]:
    runtime.install(None)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    health.clear_cache()
    try:
        yield App(partner_center, entra)
    finally:
        runtime.install(None)
        health.clear_cache()


def use_key_vault(monkeypatch: pytest.MonkeyPatch, vault_url: str) -> None:
    """Switch the app's settings from environment secrets to the vault at ``vault_url``."""
    for name in ("PARTNER_CENTER_APP_ID", "PARTNER_CENTER_APP_SECRET", "PARTNER_CENTER_REFRESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEY_VAULT_URL", vault_url)


def vault_store(vault: Any, **client_options: Any) -> KeyVaultSecretStore:
    """A :class:`KeyVaultSecretStore` on ``vault`` (a fake), through the real SecretClient and
    DefaultAzureCredential, with the contract's default secret names and fast SDK retries."""
    client = SecretClient(vault.url, DefaultAzureCredential(), retry_backoff_factor=0.01, **client_options)
    names = SecretNames(APP_ID_SECRET_NAME, APP_SECRET_SECRET_NAME, REFRESH_TOKEN_SECRET_NAME)
    return KeyVaultSecretStore(client, names)


def run_tracking_function(message: Any) -> None:
    """Run the tracking function on a message received from the real tracking queue, as the host does."""
    msg = QueueMessage(
        id=message.id,
        body=message.content.encode(),
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
    )
    user_functions()["track_product_upgrade"](msg)


#: Storage that never answers: a connection string whose endpoints are the discard port.
UNREACHABLE_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)


def use_unreachable_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on the app's storage is down: its runtime rebuilt on :data:`UNREACHABLE_STORAGE`."""
    monkeypatch.setenv("AzureWebJobsStorage", UNREACHABLE_STORAGE)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))


def run_resume_function(*, past_due: bool = False) -> None:
    """Fire the timer that resumes stopped tracking, as the host does on its schedule."""
    from azure.functions.timer import TimerRequest

    user_functions()["resume_stopped_tracking"](TimerRequest(past_due=past_due))


class Host:
    """The Functions host's queue loop over Azurite, for the queues the settings name: receive a batch, run the
    function on each message in parallel, write the output binding, delete the message on success; a message
    whose invocation raised reappears after its visibility timeout. Results and outcomes are collected."""

    #: How long a received message stays hidden while its invocation runs (the host renews its lease as needed).
    LEASE_SECONDS = 300

    def __init__(self, connection_string: str, *, batch_size: int = 16, visibility_timeout: int = 1) -> None:
        from azure.storage.queue import QueueClient

        def queue(setting: str) -> QueueClient:
            client = QueueClient.from_connection_string(connection_string, os.environ[setting])
            with contextlib.suppress(Exception):
                client.create_queue()
            return client

        self.requests = queue("PRODUCT_UPGRADE_REQUESTS_QUEUE")
        self.results_queue = queue("PRODUCT_UPGRADE_RESULTS_QUEUE")
        self.tracking = queue("PRODUCT_UPGRADE_TRACKING_QUEUE")
        self.outcomes_queue = queue("PRODUCT_UPGRADE_OUTCOMES_QUEUE")
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.results: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []
        #: The outcome messages as they were on the queue, byte for byte.
        self.outcome_texts: list[str] = []
        self.raised = 0
        self.deliveries = Counter[str]()
        self._lock = threading.Lock()

    def send_request(self, body: dict[str, Any]) -> str:
        return str(self.requests.send_message(json.dumps(body)).id)

    def run_once(self) -> int:
        """One pass over the requests and tracking queues; how many messages were delivered."""
        delivered = 0
        for queue, kind in ((self.requests, "requests"), (self.tracking, "tracking")):
            batch = list(queue.receive_messages(max_messages=32, visibility_timeout=self.LEASE_SECONDS))
            if not batch:
                continue
            delivered += len(batch)
            with self._lock:
                self.deliveries[kind] += len(batch)
            with ThreadPoolExecutor(self.batch_size) as pool:
                list(pool.map(lambda m, q=queue, k=kind: self._deliver(q, k, m), batch))
        self._collect()
        return delivered

    def run_until(self, done: Callable[[], bool], *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not done after {timeout} s: {self.deliveries}"
            if not self.run_once():
                time.sleep(0.2)

    def _deliver(self, queue: Any, kind: str, message: Any) -> None:
        try:
            if kind == "requests":
                result = run_queue_function_or_none(message)
                if result is not None:
                    self.results_queue.send_message(result)
            else:
                run_tracking_function(message)
        except Exception:
            with self._lock:
                self.raised += 1
            # as the host does after a failed invocation: the message comes back after visibilityTimeout
            queue.update_message(message.id, message.pop_receipt, visibility_timeout=self.visibility_timeout)
            return
        queue.delete_message(message.id, message.pop_receipt)

    def _collect(self) -> None:
        for queue, into, texts in (
            (self.results_queue, self.results, []),
            (self.outcomes_queue, self.outcomes, self.outcome_texts),
        ):
            while page := list(queue.receive_messages(max_messages=32, visibility_timeout=60)):
                texts += [m.content for m in page]
                into += [json.loads(m.content) for m in page]
                for m in page:
                    queue.delete_message(m)


def run_queue_function_or_none(message: Any) -> str | None:
    """:func:`run_queue_function`, None when the function set no output (the request was deferred)."""
    msg = QueueMessage(
        id=message.id,
        body=message.content.encode(),
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
    )
    out = OutCollector()
    user_functions()["product_upgrade_from_queue"](msg, out)
    return out.value


def follow_async_pattern(response: Any, get: Any, *, max_polls: int = 10) -> tuple[Any, int, float]:
    """What a Logic App's HTTP action does by default with a ``202``: wait ``Retry-After`` seconds (none: at
    once), GET the absolute ``Location``, until an answer that is not ``202``. ``get(url)`` makes the call;
    returns the final response, the number of polls and the seconds waited."""
    polls, waited = 0, 0.0
    while response.status_code == 202:
        assert polls < max_polls, "still 202 after too many polls"
        location = response.headers["Location"]
        assert location.startswith(("https://", "http://")), "Location must be absolute"
        retry_after = float(response.headers.get("Retry-After") or 0)
        time.sleep(retry_after)
        waited += retry_after
        response = get(location)
        polls += 1
    return response, polls, waited
