"""A counting HTTP proxy in front of Azurite: how many storage requests the app really makes, and of what kind.

The app's connection string points at the proxy; every request is forwarded to Azurite unchanged (the
shared-key signature covers the path and headers, not the host) and counted by service and method. Nothing
of the app is touched: the count is what crossed the wire.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import requests

from tests.fakes.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _Forwarder:
    def __init__(self, service: str, target: str, counts: Counter[tuple[str, str]], lock: threading.Lock) -> None:
        self.service = service
        self.target = target
        self.counts = counts
        self.lock = lock
        self.session = requests.Session()
        self.session.trust_env = False
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
                with forwarder.lock:
                    forwarder.counts[(forwarder.service, self.command)] += 1
                upstream = forwarder.session.request(
                    self.command, forwarder.target + self.path, data=body, headers=headers, timeout=30
                )
                content = upstream.content
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_MERGE = do_PATCH = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


class CountingStorageProxy:
    """Queue and table endpoints in front of ``azurite``; ``counts`` is keyed by ``(service, method)``."""

    def __init__(self, azurite: Azurite) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._queue = _Forwarder("queue", f"http://127.0.0.1:{azurite.queue_port}", self.counts, self._lock)
        self._table = _Forwarder("table", f"http://127.0.0.1:{azurite.table_port}", self.counts, self._lock)

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

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
