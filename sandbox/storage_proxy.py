"""A counting HTTP proxy in front of Azurite: how many storage requests the app really makes, and of what kind.

The app's connection string points at the proxy; every request is forwarded to Azurite unchanged (the
shared-key signature covers the path and headers, not the host) and counted by service and method once
answered. Nothing of the app is touched: the count is what crossed the wire. A request the proxy gets no
answer to from Azurite is counted apart, as unanswered, and its connection closed (on a loaded machine the app
then saw the connection close after 9 to 14 s, its SDK sent the request again, and one copy was carried out).

Each request is also kept as a :class:`SeenRequest` (path, ``x-ms-client-request-id``, whether Azurite carried it
out), so a test can count the sends of one message at the wire.

It also plays what Azurite never does (:class:`Fault`): an answer that comes late or never after the request
was carried out, which is when a client cannot tell whether its write landed, and storage's refusals in its
own words (a 403 to an identity whose role does not allow an operation, a 412 to a stale ETag).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self

import requests

from sandbox.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite

#: Storage's refusals: (status, reason, error code, message).
PERMISSION_MISMATCH = (
    403,
    "Forbidden",
    "AuthorizationPermissionMismatch",
    "This request is not authorized to perform this operation using this permission.",
)
CONDITION_NOT_MET = (
    412,
    "Precondition Failed",
    "UpdateConditionNotSatisfied",
    "The update condition specified in the request was not satisfied.",
)
#: Table storage's answer to input it cannot read (e.g. a continuation it did not issue).
INVALID_INPUT = (400, "Bad Request", "InvalidInput", "One of the request inputs is not valid.")

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """What happens to the next ``times`` requests of ``method`` whose path holds ``path_part``.

    ``held``: carried out ``delay`` seconds late (a slow write, overtaken by later ones); ``late``: carried out,
    answered ``delay`` seconds late; ``lost``: carried out, the connection closed without an answer;
    ``refused``: not carried out, answered with ``refusal`` (status, reason, error code, message) in storage's
    own format.
    """

    service: str
    method: str
    path_part: str
    times: int
    kind: Literal["held", "late", "lost", "refused"]
    delay: float = 0.0
    refusal: tuple[int, str, str, str] = PERMISSION_MISMATCH
    #: How many requests it has met so far.
    hits: int = 0


def _error_body(service: str, code: str, message: str) -> tuple[str, bytes]:
    """Storage's error body: XML for queues, OData JSON for tables."""
    if service == "queue":
        xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        return "application/xml", xml.encode()
    error = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}
    return "application/json;odata=minimalmetadata;streaming=true;charset=utf-8", json.dumps(error).encode()


@dataclass(frozen=True)
class SeenRequest:
    """One request the proxy got: ``carried_out`` when Azurite answered it (whether or not the answer then went
    back), False when a fault refused it or Azurite closed the connection on it unanswered."""

    service: str
    method: str
    path: str
    client_request_id: str | None
    carried_out: bool


class _ProxyHandler(BaseHTTPRequestHandler):
    """One request to the proxy: refused, or carried out by Azurite, then answered (late, or not at all)."""

    protocol_version = "HTTP/1.1"
    forwarder: _Forwarder  # set on the subclass each forwarder makes

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _forward(self) -> None:
        forwarder = self.forwarder
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
        fault = forwarder.take_fault(self.command, self.path)
        client_request_id = self.headers.get("x-ms-client-request-id")
        if fault is not None and fault.kind == "refused":
            forwarder.count(forwarder.counts, self.command)
            forwarder.see(self.command, self.path, client_request_id, carried_out=False)
            self._refuse(fault)
            return
        if fault is not None and fault.kind == "held":
            time.sleep(fault.delay)
        try:
            upstream = forwarder.session.request(
                self.command, forwarder.target + self.path, data=body, headers=headers, timeout=30
            )
            content = upstream.content
        except requests.RequestException:
            # Azurite gave no answer (it closed the connection): neither does the proxy.
            forwarder.count(forwarder.unanswered, self.command)
            forwarder.see(self.command, self.path, client_request_id, carried_out=False)
            self.close_connection = True
            return
        forwarder.count(forwarder.counts, self.command)
        forwarder.see(self.command, self.path, client_request_id, carried_out=True)
        if fault is not None and fault.kind == "lost":
            self.close_connection = True  # the request was carried out; its answer goes with the connection
            return
        if fault is not None and fault.kind == "late":
            time.sleep(fault.delay)
        self._relay(upstream, content)

    do_GET = do_PUT = do_POST = do_DELETE = do_MERGE = do_PATCH = do_HEAD = _forward

    def _refuse(self, fault: Fault) -> None:
        """Storage's own refusal, in the service's own error format."""
        status, reason, code, message = fault.refusal
        content_type, content = _error_body(self.forwarder.service, code, message)
        self.send_response(status, reason)
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _relay(self, upstream: requests.Response, content: bytes) -> None:
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


class _Forwarder:
    def __init__(
        self,
        service: str,
        target: str,
        counts: Counter[tuple[str, str]],
        unanswered: Counter[tuple[str, str]],
        faults: list[Fault],
        lock: threading.Lock,
        seen: list[SeenRequest],
    ) -> None:
        self.service = service
        self.target = target
        self.counts = counts
        self.unanswered = unanswered
        self.faults = faults
        self.lock = lock
        self.seen = seen
        self.session = requests.Session()
        self.session.trust_env = False
        # as many connections to Azurite as the app may hold to the proxy (shared.http_session.POOL_SIZE)
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
        # The handler class the server instantiates per request, bound to this forwarder.
        handler = type("Handler", (_ProxyHandler,), {"forwarder": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def count(self, counter: Counter[tuple[str, str]], method: str) -> None:
        with self.lock:
            counter[(self.service, method)] += 1

    def see(self, method: str, path: str, client_request_id: str | None, *, carried_out: bool) -> None:
        with self.lock:
            self.seen.append(SeenRequest(self.service, method, path, client_request_id, carried_out))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                matches = (fault.service, fault.method) == (self.service, method) and fault.path_part in path
                if matches and fault.hits < fault.times:
                    fault.hits += 1
                    return fault
        return None


class CountingStorageProxy:
    """Queue and table endpoints in front of ``azurite``; ``counts`` is keyed by ``(service, method)``."""

    def __init__(self, azurite: Azurite) -> None:
        #: Requests answered (by Azurite, or by a fault in its name), by ``(service, method)``.
        self.counts: Counter[tuple[str, str]] = Counter()
        #: Requests Azurite closed the connection on without an answer (and, as far as seen, did not carry out).
        self.unanswered: Counter[tuple[str, str]] = Counter()
        self.faults: list[Fault] = []
        #: Every request, in the order answered (or given up on).
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        queue, table = f"http://127.0.0.1:{azurite.queue_port}", f"http://127.0.0.1:{azurite.table_port}"
        self._queue = _Forwarder("queue", queue, self.counts, self.unanswered, self.faults, self._lock, self.seen)
        self._table = _Forwarder("table", table, self.counts, self.unanswered, self.faults, self._lock, self.seen)

    def __enter__(self) -> Self:
        for forwarder in (self._queue, self._table):
            forwarder.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for forwarder in (self._queue, self._table):
            forwarder.server.shutdown()
            forwarder.server.server_close()

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{self._queue.port}/{ACCOUNT_NAME};"
            f"TableEndpoint=http://127.0.0.1:{self._table.port}/{ACCOUNT_NAME};"
        )

    def hold(self, service: str, method: str, path_part: str, seconds: float, *, times: int = 1) -> Fault:
        """Hold the next ``times`` matching requests back ``seconds``, then carry them out and answer."""
        return self._add(Fault(service, method, path_part, times, "held", seconds))

    def answer_late(self, service: str, method: str, path_part: str, seconds: float, *, times: int = 1) -> Fault:
        """Carry out the next ``times`` matching requests, then hold each answer back ``seconds``."""
        return self._add(Fault(service, method, path_part, times, "late", seconds))

    def lose_answer(self, service: str, method: str, path_part: str, *, times: int = 1) -> Fault:
        """Carry out the next ``times`` matching requests, then close the connection without answering."""
        return self._add(Fault(service, method, path_part, times, "lost"))

    def forbid(self, service: str, method: str, path_part: str, *, times: int = 1) -> Fault:
        """Refuse the next ``times`` matching requests with 403 ``AuthorizationPermissionMismatch``."""
        return self._add(Fault(service, method, path_part, times, "refused", refusal=PERMISSION_MISMATCH))

    def fail_condition(self, service: str, method: str, path_part: str, *, times: int = 1) -> Fault:
        """Refuse the next ``times`` matching requests with 412 ``UpdateConditionNotSatisfied`` (a stale ETag)."""
        return self._add(Fault(service, method, path_part, times, "refused", refusal=CONDITION_NOT_MET))

    def refuse_input(self, service: str, method: str, path_part: str, *, times: int = 1) -> Fault:
        """Refuse the next ``times`` matching requests with 400 ``InvalidInput`` (input storage cannot read)."""
        return self._add(Fault(service, method, path_part, times, "refused", refusal=INVALID_INPUT))

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests_to(self, service: str, method: str, path_part: str) -> list[SeenRequest]:
        """The requests seen of ``method`` to ``service`` whose path holds ``path_part``."""
        with self._lock:
            return [r for r in self.seen if (r.service, r.method) == (service, method) and path_part in r.path]

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.unanswered.clear()
            self.seen.clear()
