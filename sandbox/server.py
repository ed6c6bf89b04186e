"""A threaded loopback HTTP(S)/1.1 server that the fakes build on, with request recording and fault injection.

Subclasses implement :meth:`FakeHTTPServer.handle` (a :class:`RecordedRequest` in, a :class:`Response` out);
everything about the wire (TLS per connection, keep-alive, Content-Length, chunked request bodies, recording,
injected faults, bounded shutdown) lives here.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from requests.structures import CaseInsensitiveDict

from sandbox.tls import TLSMaterial, default_tls

#: How long stop() waits, in all, for handler threads to end.
STOP_TIMEOUT = 5.0


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    #: Path as sent, without the query string and still percent-encoded.
    path: str
    #: Query parameters, the first value of each (blank values kept).
    query: dict[str, str]
    #: Request headers, case-insensitive lookup.
    headers: CaseInsensitiveDict[str]
    body: bytes
    client_address: tuple[str, int] = ("", 0)
    #: Seconds since the epoch when the request was fully read.
    received_at: float = 0.0
    #: The raw request target (path and query).
    target: str = ""

    @property
    def decoded_path(self) -> str:
        return unquote(self.path)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded (first value of each field)."""
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass
class Response:
    """What a fake answers. ``body`` may be bytes, str, or anything JSON-serialisable (dict/list)."""

    status: int
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Close the connection after answering (sends ``Connection: close``).
    close: bool = False

    def body_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body).encode("utf-8")

    @classmethod
    def json(cls, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json; charset=utf-8"}
        all_headers.update(headers or {})
        return cls(status, body, all_headers)


@dataclass
class _Fault:
    kind: str  # "fail" | "reset" | "delay"
    remaining: int
    match: str | None
    status: int = 500
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def applies(self, req: RecordedRequest) -> bool:
        return self.remaining > 0 and (self.match is None or path_matches(self.match, req.path))


def path_matches(pattern: str, path: str) -> bool:
    """How ``match=``/``requests_to`` select requests, case-insensitively.

    A pattern starting with ``/`` must be the END of the path (trailing slashes ignored): ``/v1/productupgrades``
    is the create call only, not ``/v1/productupgrades/eligibility``; ``/oauth2/v2.0/token`` matches
    ``/{tenant}/oauth2/v2.0/token``. Any other pattern is a substring: ``eligibility``, ``status``.
    """
    pattern, path = pattern.lower(), path.lower()
    if pattern.startswith("/"):
        return path.rstrip("/").endswith(pattern.rstrip("/"))
    return pattern in path


_live_servers: weakref.WeakSet[FakeHTTPServer] = weakref.WeakSet()


def stop_all_servers() -> None:
    """Stop every fake server still running (a safety net for the end of a test session)."""
    for server in list(_live_servers):
        server.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a deadline.
    request_queue_size = 64

    def __init__(self, owner: FakeHTTPServer, ssl_context: ssl.SSLContext | None, port: int = 0) -> None:
        self.owner = owner
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        owner = self.owner
        conn = request
        thread = threading.current_thread()
        with owner._lock:
            owner._threads.add(thread)
            owner._connections.add(conn)
        try:
            if self.ssl_context is not None:
                request.settimeout(10)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
                with owner._lock:
                    owner._connections.discard(request)
                    owner._connections.add(conn)
            _Handler(conn, client_address, self)
        except (OSError, ValueError):
            pass  # TLS handshake failures, client disconnects, resets.
        except Exception:  # pragma: no cover - recorded for tests to assert on
            owner.errors.append(traceback.format_exc())
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with owner._lock:
                owner._connections.discard(conn)
                owner._connections.discard(request)
                owner._threads.discard(thread)

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover
        self.owner.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass

    def version_string(self) -> str:
        return self.server.owner.server_header

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in self.headers.items():
            headers[name] = value
        req = RecordedRequest(
            method=self.command,
            path=split.path,
            query=query,
            headers=headers,
            body=body,
            client_address=self.client_address,
            received_at=time.time(),
            target=self.path,
        )
        with owner._lock:
            owner.requests.append(req)
            owner.requests_per_path[req.decoded_path.lower().rstrip("/")] += 1
            owner.observe(req)
            delay = owner._take_fault(req, ("delay",))
            fault = owner._take_fault(req, ("fail", "reset"))
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._answer(owner, req, delay, fault)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _answer(self, owner: FakeHTTPServer, req: RecordedRequest, delay: _Fault | None, fault: _Fault | None) -> None:
        if delay is not None and owner._stop_event.wait(delay.seconds):
            self._reset()
            return
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None:
            response = Response(fault.status, fault.body, dict(fault.headers))
        else:
            try:
                response = owner.handle(req)
            except Exception:
                tb = traceback.format_exc()
                owner.errors.append(tb)
                response = Response(500, tb, {"Content-Type": "text/plain; charset=utf-8"})
        self._send(response)

    def _send(self, response: Response) -> None:
        payload = response.body_bytes()
        self.send_response(response.status)
        sent = {k.lower() for k in response.headers}
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status not in (204, 304) and response.status >= 200 and "content-length" not in sent:
            self.send_header("Content-Length", str(len(payload)))
        if payload and "content-type" not in sent:
            self.send_header("Content-Type", "application/octet-stream")
        if response.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and response.status not in (204, 304):
            self.wfile.write(payload)
        self.wfile.flush()

    def _reset(self) -> None:
        """Drop the connection without answering, with a TCP RST (SO_LINGER 0) rather than a FIN."""
        self.close_connection = True
        conn = self.connection
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.rfile, self.wfile):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        with contextlib.suppress(OSError):
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class FakeHTTPServer:
    """Base of the fakes: a threaded HTTP/1.1 server on 127.0.0.1, port chosen by the OS.

    HTTPS by default, with a certificate from ``tls`` (the session's :func:`default_tls` if not given);
    ``use_tls=False`` for plain http. Use as a context manager or call :meth:`start`/:meth:`stop`.
    """

    #: Value of the ``Server`` response header.
    server_header = "Microsoft-HTTPAPI/2.0"

    def __init__(self, *, tls: TLSMaterial | None = None, use_tls: bool = True, port: int = 0) -> None:
        self.tls = (tls or default_tls()) if use_tls else None
        #: Port to bind on 127.0.0.1; 0 lets the OS choose (what tests use).
        self.requested_port = port
        self.use_tls = use_tls
        self.requests: list[RecordedRequest] = []
        #: Requests by path (decoded, lower case, no trailing slash), whatever the answer: "asked twice" at a glance.
        self.requests_per_path: Counter[str] = Counter()
        #: Tracebacks of exceptions inside handlers (a fake bug, not a client bug): tests may assert it is empty.
        self.errors: list[str] = []
        #: Requests being answered right now, and the most seen at once (concurrency of the clients).
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._threads: set[threading.Thread] = set()
        self._connections: set[Any] = set()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stop_event.clear()
        ctx = self.tls.server_context() if self.tls is not None else None
        self._server = _Server(self, ctx, self.requested_port)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        _live_servers.add(self)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, drop open (keep-alive or delayed) connections, join handler threads; bounded."""
        server = self._server
        if server is None:
            return
        deadline = time.monotonic() + timeout
        self._stop_event.set()
        server.shutdown()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                # The base-class method, so an SSLSocket's TLS state is not touched from this thread.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None
        _live_servers.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        scheme = "https" if self.use_tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- recording -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget recorded requests and pending faults (subclasses also reset their own state)."""
        with self._lock:
            self.requests.clear()
            self.requests_per_path.clear()
            self._faults.clear()
            self.errors.clear()
            self.max_in_flight = self.in_flight

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests selected by :func:`path_matches` (``/...``: path ends with it; else substring),
        optionally only those with ``method``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if path_matches(path, r.path) and (method is None or r.method == method.upper())
            ]

    # -- fault injection -------------------------------------------------------------------------------
    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        match: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (selected by ``match``, see :func:`path_matches`) with ``status``/``body``.

        The default body is a JSON ``{"code": status, "description": "Injected failure"}``.
        """
        if body is None:
            body = {"code": status, "description": "Injected failure", "data": [], "source": "FakeServer"}
        all_headers = dict(headers or {})
        if not isinstance(body, (bytes, str)) and not any(k.lower() == "content-type" for k in all_headers):
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        with self._lock:
            self._faults.append(_Fault("fail", n, match, status=status, body=body, headers=all_headers))

    def delay_next(self, n: int = 1, seconds: float = 1.0, *, match: str | None = None) -> None:
        """Sleep ``seconds`` before answering each of the next ``n`` requests (other requests are not held up)."""
        with self._lock:
            self._faults.append(_Fault("delay", n, match, seconds=seconds))

    def reset_next(self, n: int = 1, *, match: str | None = None) -> None:
        """Read the next ``n`` requests, then drop their connection with a TCP reset, without answering."""
        with self._lock:
            self._faults.append(_Fault("reset", n, match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, req: RecordedRequest, kinds: tuple[str, ...]) -> _Fault | None:
        for fault in self._faults:
            if fault.kind in kinds and fault.applies(req):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- to implement ----------------------------------------------------------------------------------
    def observe(self, req: RecordedRequest) -> None:
        """Called (under the lock) for every request as it is recorded, before any injected fault."""

    def handle(self, req: RecordedRequest) -> Response:
        return Response(404, b"")
