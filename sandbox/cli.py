"""A local Entra ID + Partner Center sandbox for ``func start``: the test fakes, run as a process.

    .venv/bin/python -m sandbox [--entra-port 8443] [--partner-center-port 8444] [--dir .sandbox]

It prints the ``Values`` to merge into ``local.settings.json`` (authority host, base URL, the fake app id,
secret and refresh token, and ``REQUESTS_CA_BUNDLE`` pointing at its own test CA), then serves until Ctrl+C.
No real tenant or customer is touched: upgrades live in memory, and the third status poll of an upgrade
answers ``Completed``. The fakes are the ones the tests use, so they speak the same wire protocol.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sandbox.constants import APP_ID, APP_SECRET, REFRESH_TOKEN, TENANT_ID
from sandbox.entra import FakeEntra
from sandbox.partner_center import FakePartnerCenter
from sandbox.tls import make_tls_material

READY_LINE = "Sandbox ready; Ctrl+C to stop."


def settings_for(entra: FakeEntra, partner_center: FakePartnerCenter, ca_bundle: str) -> dict[str, str]:
    """The app settings that point the function app at this sandbox."""
    return {
        "PARTNER_CENTER_TENANT_ID": TENANT_ID,
        "PARTNER_CENTER_AUTHORITY_HOST": entra.url,
        "PARTNER_CENTER_BASE_URL": partner_center.url,
        "KEY_VAULT_URL": "",
        "PARTNER_CENTER_APP_ID": APP_ID,
        "PARTNER_CENTER_APP_SECRET": APP_SECRET,
        "PARTNER_CENTER_REFRESH_TOKEN": REFRESH_TOKEN,
        # requests (and so msal and the Partner Center client) trust the sandbox's CA only
        "REQUESTS_CA_BUNDLE": ca_bundle,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entra-port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--partner-center-port", type=int, default=8444, help="0 picks a free port")
    parser.add_argument("--dir", default=".sandbox", help="where the test CA and certificate are written")
    parser.add_argument("--polls-until-completed", type=int, default=2)
    args = parser.parse_args(argv)

    tls = make_tls_material(Path(args.dir).resolve())
    entra = FakeEntra(tls=tls)
    entra.requested_port = args.entra_port
    partner_center = FakePartnerCenter(entra, tls=tls)
    partner_center.requested_port = args.partner_center_port
    partner_center.complete_after_polls(args.polls_until_completed)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with entra, partner_center:
        values: dict[str, Any] = settings_for(entra, partner_center, tls.ca_bundle)
        print(json.dumps({"Values": values}, indent=2))
        print(READY_LINE, flush=True)
        stop.wait()
        print(f"Stopping: {len(partner_center.created_upgrades)} upgrade(s) created.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
