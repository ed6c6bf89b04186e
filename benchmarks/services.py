"""The services a benchmark talks to, each in a process of its own: the loopback fakes (Entra ID, Partner
Center, managed identity, Key Vault) and a recording proxy in front of Azurite in one process
(``python -m benchmarks.services``), Azurite in its own two.

The fakes process prints one JSON line with its addresses, then answers JSON commands on stdin, one a line
(``counts``, ``reset``, ``mark``, ``admit``, ``throttle_customer``, ``service_time``, ``vault_delay``, ``quit``).
The recording proxy counts the storage requests the app sends (method and path), outside our code and outside
the SDKs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
READY = "benchmark services ready"


def serve(args: argparse.Namespace) -> int:
    """The fakes process."""
    fakes = _Fakes(args)
    print(json.dumps(fakes.addresses()), flush=True)
    print(READY, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("cmd") == "quit":
            break
        print(json.dumps(fakes.answer(command)), flush=True)
    fakes.stop()
    return 0


class _Fakes:
    """The fakes and the recording proxy of the fakes process, and what its commands set and count."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sandbox import DEFAULT_SECRETS
        from sandbox.entra import FakeEntra
        from sandbox.key_vault import FakeKeyVault
        from sandbox.managed_identity import FakeManagedIdentity
        from sandbox.partner_center import FakePartnerCenter
        from sandbox.storage_proxy import CountingStorageProxy
        from sandbox.tls import make_tls_material

        self.tls = make_tls_material(Path(args.dir))
        self.entra = FakeEntra(tls=self.tls).start()
        self.partner_center = FakePartnerCenter(self.entra, tls=self.tls).start()
        self.identity = FakeManagedIdentity().start()
        self.vault = FakeKeyVault(DEFAULT_SECRETS, managed_identity=self.identity, tls=self.tls).start()
        ports = argparse.Namespace(queue_port=args.queue_port, table_port=args.table_port)
        self.storage_proxy = CountingStorageProxy(ports).__enter__()  # type: ignore[arg-type]  # Azurite's two ports
        self.vault_state = {"delay": 0.0, "in_flight": 0, "max_in_flight": 0}
        #: When the run being measured started (``mark``): Partner Center's figures are also given from 10 s after it.
        self.marked_at = 0.0
        self._vault_lock = threading.Lock()
        self._vault_inner = self.vault.handle
        self.vault.handle = self._vault_handle  # type: ignore[method-assign]

    def _vault_handle(self, req: Any) -> Any:
        # Authenticated secret reads take `delay` (a real vault is a network round trip away) and are
        # counted while in flight: three reads side by side show max_in_flight 3.
        counted = req.method == "GET" and bool(req.headers.get("Authorization"))
        if counted:
            with self._vault_lock:
                self.vault_state["in_flight"] += 1
                self.vault_state["max_in_flight"] = max(
                    self.vault_state["max_in_flight"], self.vault_state["in_flight"]
                )
        try:
            if counted and self.vault_state["delay"]:
                time.sleep(self.vault_state["delay"])
            return self._vault_inner(req)
        finally:
            if counted:
                with self._vault_lock:
                    self.vault_state["in_flight"] -= 1

    def addresses(self) -> dict[str, Any]:
        """The first line the process prints: where each fake answers, and how to reach them."""
        return {
            "entra": self.entra.url,
            "partner_center": self.partner_center.url,
            "key_vault": self.vault.url,
            "identity_env": self.identity.env(),
            "ca_bundle": self.tls.ca_bundle,
            "storage_proxy": self.storage_proxy.connection_string,
        }

    def answer(self, command: dict[str, Any]) -> Any:
        """The reply to one command (``quit`` is the caller's)."""
        name = command.get("cmd")
        reply: Any = {"ok": True}
        if name == "counts":
            reply = self.counts()
        elif name == "reset":
            self.reset()
        elif name == "mark":
            self.marked_at = time.time()
        elif name == "admit":
            self.partner_center.admit_per_second(command.get("rate"))
        elif name == "throttle_customer":
            self.partner_center.throttle_customer(str(command["customer"]), str(command["retry_after"]))
        elif name == "service_time":
            self.partner_center.service_time(float(command["seconds"]))
        elif name == "vault_delay":
            self.vault_state["delay"] = float(command["seconds"])
        else:
            reply = {"error": f"unknown command {name!r}"}
        return reply

    def _partner_center_timeline(self) -> list[list[int]]:
        """Partner Center's calls and 429s in each second since the mark, as ``[second, calls, 429s]``."""
        timeline: dict[int, list[int]] = {}
        if self.marked_at:
            for r in list(self.partner_center.requests):
                if r.received_at >= self.marked_at:
                    timeline.setdefault(int(r.received_at - self.marked_at), [0, 0])[0] += 1
            for t in list(self.partner_center.rate_limited_at):
                if t >= self.marked_at:
                    timeline.setdefault(int(t - self.marked_at), [0, 0])[1] += 1
        return [[second, *timeline[second]] for second in sorted(timeline)]

    def counts(self) -> dict[str, Any]:
        partner_center, storage_proxy = self.partner_center, self.storage_proxy
        with storage_proxy._lock:
            storage = {f"{service} {method}": n for (service, method), n in storage_proxy.counts.items()}
        settled = self.marked_at + 10.0  # past the first 10 s, when the pace is still being learnt
        return {
            "partner_center_timeline": self._partner_center_timeline(),
            "partner_center_calls_after_10s": sum(1 for r in list(partner_center.requests) if r.received_at >= settled),
            "partner_center_rate_limited_after_10s": sum(
                1 for t in list(partner_center.rate_limited_at) if t >= settled
            ),
            "partner_center_customer_throttled": partner_center.customer_throttled,
            "token_requests": len(self.entra.requests_to("/oauth2/v2.0/token", "POST"))
            + len(self.entra.requests_to("/oauth2/token", "POST")),
            "key_vault_reads": sum(self.vault.gets.values()),
            "key_vault_max_in_flight": self.vault_state["max_in_flight"],
            "identity_requests": len(self.identity.requests),
            "partner_center_calls": len(partner_center.requests),
            "partner_center_creates": partner_center.create_posts,
            "partner_center_rate_limited": partner_center.rate_limited,
            "partner_center_max_in_flight": partner_center.max_in_flight,
            "created_upgrades": len(partner_center.created_upgrades),
            "distinct_customers_upgraded": len({u["customer_id"] for u in partner_center.created_upgrades}),
            "storage_requests": sum(storage.values()),
            "storage": storage,
        }

    def reset(self) -> None:
        for fake in (self.entra, self.partner_center, self.identity, self.vault):
            fake.requests.clear()
        self.storage_proxy.reset()
        self.partner_center.reset()
        self.vault.gets.clear()
        self.vault_state["max_in_flight"] = 0

    def stop(self) -> None:
        self.storage_proxy.__exit__()
        for fake in (self.vault, self.identity, self.partner_center, self.entra):
            fake.stop()


class Services:
    """Azurite and the fakes process, started for one benchmark run; use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        from sandbox.azurite import Azurite

        self.workdir = workdir
        self.azurite = Azurite()
        self._proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Services:
        self.azurite.start()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.services",
                "--table-port",
                str(self.azurite.table_port),
                "--queue-port",
                str(self.azurite.queue_port),
                "--dir",
                str(self.workdir / "tls"),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.info = json.loads(self._proc.stdout.readline())
        if self._proc.stdout.readline().strip() != READY:
            raise RuntimeError("the fakes process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self.command("quit")
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self.azurite.stop()

    def command(self, name: str, **args: Any) -> Any:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps({"cmd": name, **args}) + "\n")
            self._proc.stdin.flush()
            if name == "quit":
                return None
            return json.loads(self._proc.stdout.readline())

    def counts(self) -> dict[str, Any]:
        return dict(self.command("counts"))

    def storage_connection(self, *, counted: bool) -> str:
        """``AzureWebJobsStorage`` for the app: through the recording proxy when ``counted``."""
        return str(self.info["storage_proxy"]) if counted else self.azurite.connection_string

    def app_env(self, *, storage: str | None, key_vault: bool = False, table: str = "benchupgrades") -> dict[str, str]:
        """The environment of an app process pointed at these services."""
        import os

        from sandbox import APP_ID, APP_SECRET, REFRESH_TOKEN, TENANT_ID
        from shared.settings import ALL_SETTINGS

        env = {k: v for k, v in os.environ.items() if k not in ALL_SETTINGS and not k.startswith("AzureWebJobs")}
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            env[name] = self.info["ca_bundle"]
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PARTNER_CENTER_TENANT_ID": TENANT_ID,
                "PARTNER_CENTER_AUTHORITY_HOST": self.info["entra"],
                "PARTNER_CENTER_BASE_URL": self.info["partner_center"],
                "PRODUCT_UPGRADE_TABLE": table,
                # Queues of this app process's own, created by the app on first use.
                "PRODUCT_UPGRADE_TRACKING_QUEUE": f"{table}-tracking",
                "PRODUCT_UPGRADE_OUTCOMES_QUEUE": f"{table}-outcomes",
                "PRODUCT_UPGRADE_REQUESTS_QUEUE": f"{table}-requests",
                "PRODUCT_UPGRADE_RESULTS_QUEUE": f"{table}-results",
            }
        )
        if key_vault:
            env["KEY_VAULT_URL"] = self.info["key_vault"]
            env.update(self.info["identity_env"])
        else:
            env.update(
                {
                    "PARTNER_CENTER_APP_ID": APP_ID,
                    "PARTNER_CENTER_APP_SECRET": APP_SECRET,
                    "PARTNER_CENTER_REFRESH_TOKEN": REFRESH_TOKEN,
                }
            )
        if storage is not None:
            env["AzureWebJobsStorage"] = storage
        return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.services")
    parser.add_argument("--table-port", type=int, required=True)
    parser.add_argument("--queue-port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
