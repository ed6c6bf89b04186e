"""Azurite (queue and table services) as child processes on free loopback ports.

``azurite-table`` does not report the port it bound, so ports are picked here (bind to port 0, read, close)
and a start that loses the race for a port is retried on fresh ports.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

from sandbox.run import ACCOUNT_KEY, ACCOUNT_NAME, accepts, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"

COMMON_FLAGS = ("--inMemoryPersistence", "--loose", "--skipApiVersionCheck", "--silent", "--disableTelemetry")


class AzuriteError(RuntimeError):
    pass


class _Service:
    def __init__(self, name: str, port_flag: str, workdir: Path) -> None:
        self.name = name
        self.port_flag = port_flag
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] | None = None

    def binary(self) -> Path:
        path = NODE_BIN / self.name
        if not path.exists():
            raise AzuriteError(
                f"{path} not found: Azurite is not installed. Run `npm ci` in {REPO_ROOT} (package.json pins azurite)."
            )
        return path

    def start(self, deadline_s: float) -> None:
        binary = self.binary()
        last = ""
        outcome = ""
        for _attempt in range(3):
            self.port = free_port()
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen(
                [str(binary), self.port_flag, str(self.port), *COMMON_FLAGS],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + deadline_s
            outcome = f"did not accept connections on port {self.port} within {deadline_s:.0f} s"
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    outcome = f"exited with code {self.proc.returncode} (port {self.port})"
                    break
                if accepts(self.port):
                    return
                time.sleep(0.1)
            last = self.log_tail()
            self.stop()
        raise AzuriteError(f"{self.name} {outcome}, 3 attempts. Log:\n{last}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


class Azurite:
    """Azurite queue and table services. ``connection_string`` works for azure-storage-queue and azure-data-tables
    (and is what ``AzureWebJobsStorage`` takes)."""

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
        self.queue = _Service("azurite-queue", "--queuePort", self.workdir)
        self.table = _Service("azurite-table", "--tablePort", self.workdir)

    def start(self) -> Self:
        atexit.register(self.stop)  # safety net if the session ends without teardown
        try:
            self.queue.start(self.startup_timeout)
            self.table.start(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.queue.stop()
        self.table.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queue_port(self) -> int:
        return self.queue.port

    @property
    def table_port(self) -> int:
        return self.table.port

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.queue.port}/{ACCOUNT_NAME}"

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.table.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )

    def logs(self) -> str:
        return f"--- queue ---\n{self.queue.log_tail()}\n--- table ---\n{self.table.log_tail()}"
