"""Azurite, the storage emulator (blob, queue and table), as one child process: the one launcher of the project.

Two ways to run it: in memory on free loopback ports (the tests and the benchmarks; a start that loses the race
for a port is tried again on fresh ports), or keeping its data in a folder on its default ports when they are
free (``scripts/run``: then ``UseDevelopmentStorage=true`` reaches it, as the Functions host expects).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

ACCOUNT_NAME = "devstoreaccount1"
#: Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEV_STORAGE = "UseDevelopmentStorage=true"
DEFAULT_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
FLAGS = ("--silent", "--skipApiVersionCheck", "--disableTelemetry")
#: In memory, for tests: their data goes with the process, and any API version a client speaks is taken.
IN_MEMORY_FLAGS = ("--inMemoryPersistence", "--loose")
ATTEMPTS = 3


class AzuriteError(RuntimeError):
    pass


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite:
    """Azurite's three services in one process. ``connection_string`` works for azure-storage-queue and
    azure-data-tables (and is what ``AzureWebJobsStorage`` takes).

    ``location``: keep the data there (else in memory, in a scratch folder removed at stop). ``default_ports``:
    take 10000-10002 when all three are free. ``own_session``: a process group of its own, so a terminal's
    Ctrl+C reaches only its parent (which stops it after the functions host).
    """

    def __init__(
        self,
        *,
        location: Path | None = None,
        log: Path | None = None,
        default_ports: bool = False,
        own_session: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="azurite-")) if location is None else None
        self.location = location
        self.log_path = log or (self.workdir or Path(tempfile.gettempdir())) / "azurite.log"
        self.default_ports = default_ports
        self.own_session = own_session
        self.startup_timeout = startup_timeout
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        if not AZURITE_BIN.exists():
            raise AzuriteError(
                f"{AZURITE_BIN} not found: Azurite is not installed. Run `npm ci` in {REPO_ROOT} "
                "(package.json pins azurite; `bash scripts/check setup` runs it)."
            )
        atexit.register(self.stop)  # safety net if the session ends without teardown
        outcome = ""
        for _attempt in range(ATTEMPTS):
            self.ports = self._choose_ports()
            outcome = self._spawn_and_wait()
            if not outcome:
                return self
            self.stop(remove=False)
            if self.ports == DEFAULT_PORTS:
                break  # the default ports were free a moment ago: another start would meet the same trouble
        tail = self.logs()
        self.stop()
        raise AzuriteError(f"Azurite {outcome}, {ATTEMPTS} attempts at most. Log:\n{tail}")

    def _choose_ports(self) -> dict[str, int]:
        if self.default_ports and all(port_free(port) for port in DEFAULT_PORTS.values()):
            return dict(DEFAULT_PORTS)
        return {name: free_port() for name in DEFAULT_PORTS}

    def _spawn_and_wait(self) -> str:
        """Start the process on ``self.ports``; '' once every port answers, else what went wrong."""
        storage: tuple[str, ...]
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
            storage = ("--location", str(self.location))
        else:
            storage = IN_MEMORY_FLAGS  # (with --location, Azurite refuses --inMemoryPersistence)
        ports = [f"--{name}Port={port}" for name, port in self.ports.items()]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(AZURITE_BIN), *FLAGS, *storage, *ports],
            cwd=self.workdir or REPO_ROOT,  # in memory: whatever Azurite still writes goes to the scratch folder
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode} (ports {self.ports})"
            if all(accepts(port) for port in self.ports.values()):
                return ""
            time.sleep(0.1)
        return f"did not accept connections on ports {self.ports} within {self.startup_timeout:.0f} s"

    def stop(self, *, remove: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.own_session:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if remove and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queue_port(self) -> int:
        return self.ports["queue"]

    @property
    def table_port(self) -> int:
        return self.ports["table"]

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT_NAME}"

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.table_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        if self.ports == DEFAULT_PORTS:
            return DEV_STORAGE
        endpoints = "".join(
            f"{name.capitalize()}Endpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};" for name, port in self.ports.items()
        )
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};{endpoints}"

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
