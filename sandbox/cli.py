"""A local Entra ID + Partner Center for ``func start`` and the command line, without a partner account.

    .venv/bin/python -m sandbox [--entra-port 8443] [--partner-center-port 8444] [--dir .sandbox]
                                [--completed-after-seconds 10] [--completed-after-polls N] [--settings-out FILE]
                                [--customers 1000] [--seed 2027]

It prints the ``Values`` that point the app at it (authority host, base URL, the fake app id, secret and refresh
token, and ``REQUESTS_CA_BUNDLE`` pointing at its own CA), then serves until Ctrl+C. ``scripts/run`` merges them
into ``local.settings.json`` for you. No real tenant or customer is touched: upgrades live in memory and end
after the delay; the scripted customers (``sandbox.customers``) answer as their table says. The customer list
(``GET /v1/customers``, paged) holds a seeded population of ``--customers`` customers (``sandbox.population``)
with their subscriptions, for ``product-upgrades discover``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.constants import APP_ID, APP_SECRET, REFRESH_TOKEN, TENANT_ID
from sandbox.customers import SCRIPTED_CUSTOMERS
from sandbox.entra import FakeEntra
from sandbox.partner_center import FakePartnerCenter
from sandbox.population import DEFAULT_CUSTOMERS, DEFAULT_SEED, Population
from sandbox.tls import make_tls_material
from shared.cli.environment import write_private_text

READY_LINE = "Sandbox ready; Ctrl+C to stop."
DEFAULT_ENTRA_PORT = 8443
DEFAULT_PARTNER_CENTER_PORT = 8444
DEFAULT_COMPLETED_AFTER_SECONDS = 10.0


@dataclass
class Sandbox:
    entra: FakeEntra
    partner_center: FakePartnerCenter
    ca_bundle: str
    population: Population

    def settings(self) -> dict[str, str]:
        """The app settings that point the function app (and the command line) at this sandbox."""
        return {
            "PARTNER_CENTER_TENANT_ID": TENANT_ID,
            "PARTNER_CENTER_AUTHORITY_HOST": self.entra.url,
            "PARTNER_CENTER_BASE_URL": self.partner_center.url,
            "KEY_VAULT_URL": "",
            "PARTNER_CENTER_APP_ID": APP_ID,
            "PARTNER_CENTER_APP_SECRET": APP_SECRET,
            "PARTNER_CENTER_REFRESH_TOKEN": REFRESH_TOKEN,
            # requests (and so msal and the Partner Center client) trust the sandbox's CA only
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
        }


@contextlib.contextmanager
def running_sandbox(
    directory: Path,
    *,
    entra_port: int = DEFAULT_ENTRA_PORT,
    partner_center_port: int = DEFAULT_PARTNER_CENTER_PORT,
    completed_after_seconds: float | None = DEFAULT_COMPLETED_AFTER_SECONDS,
    completed_after_polls: int | None = None,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
) -> Iterator[Sandbox]:
    """Start Entra ID and Partner Center on loopback (port 0: a free one) with a fresh CA in ``directory``, listing a
    population of ``customers`` customers built from ``seed`` (the scripted ones among them)."""
    tls = make_tls_material(directory.resolve())
    entra = FakeEntra(tls=tls)
    entra.requested_port = entra_port
    partner_center = FakePartnerCenter(entra, tls=tls)
    partner_center.requested_port = partner_center_port
    partner_center.complete_after_seconds(completed_after_seconds)
    if completed_after_polls is not None:
        partner_center.complete_after_polls(completed_after_polls)
    population = Population.build(customers, seed=seed)
    population.install(partner_center)
    with entra, partner_center:
        yield Sandbox(entra, partner_center, tls.ca_bundle, population)


def customers_table(population: Population | None = None) -> str:
    rows = [f"  {c.customer_id}  {c.behaviour}" for c in SCRIPTED_CUSTOMERS]
    table = "Scripted customers (any other GUID: eligible):\n" + "\n".join(rows)
    return table if population is None else f"{table}\n{population.summary()}"


def write_json(path: Path, document: object) -> None:
    """Write ``document`` whole or not at all (a reader never sees half a file), readable by its owner only:
    ``local.settings.json`` holds the app secret and refresh token (the sandbox's, or later a real partner's)."""
    write_private_text(path, json.dumps(document, indent=2) + "\n")


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return seconds


def _count(value: str) -> int:
    count = int(value)
    if count < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entra-port", type=int, default=DEFAULT_ENTRA_PORT, help="0 picks a free port")
    parser.add_argument("--partner-center-port", type=int, default=DEFAULT_PARTNER_CENTER_PORT, help="0: a free port")
    parser.add_argument("--dir", default=".sandbox", help="where the sandbox's CA and certificate are written")
    parser.add_argument(
        "--completed-after-seconds",
        type=_seconds,
        default=DEFAULT_COMPLETED_AFTER_SECONDS,
        help="an upgrade ends on the first status check this long after it was created (default %(default)s)",
    )
    parser.add_argument(
        "--completed-after-polls", type=int, default=None, help="or on status check N+1, whichever comes first"
    )
    parser.add_argument("--settings-out", type=Path, help="also write the Values, as JSON, to this file")
    parser.add_argument(
        "--customers",
        type=_count,
        default=DEFAULT_CUSTOMERS,
        help="customers in the customer list, the scripted ones among them (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="builds the same customers each time")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with running_sandbox(
        Path(args.dir),
        entra_port=args.entra_port,
        partner_center_port=args.partner_center_port,
        completed_after_seconds=args.completed_after_seconds,
        completed_after_polls=args.completed_after_polls,
        customers=args.customers,
        seed=args.seed,
    ) as sandbox:
        values = sandbox.settings()
        if args.settings_out is not None:
            write_json(args.settings_out, {"Values": values})
        print(customers_table(sandbox.population), file=sys.stderr)
        print(json.dumps({"Values": values}, indent=2))
        print(READY_LINE, flush=True)
        stop.wait()
        created = len(sandbox.partner_center.created_upgrades)
        print(f"Stopping: {created} upgrade(s) created.", file=sys.stderr)
    return 0
