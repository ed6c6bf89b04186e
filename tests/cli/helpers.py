"""What the command line's tests share: running it in-process or as a child process, CSV in and out, and the
functions host's queue loop on a thread."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import threading
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import FakeEntra, FakePartnerCenter
from shared.cli import main as cli_main
from shared.settings import STORAGE_SETTING
from tests.harness import Host

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs the command line in ``folder`` with the app's settings pointing at the fakes."""

    def __init__(self, folder: Path, entra: FakeEntra, partner_center: FakePartnerCenter) -> None:
        self.folder = folder
        self.entra = entra
        self.partner_center = partner_center
        #: Stands for the checkout holding the package (in-process runs): its local.settings.json is the
        #: project's own, read by every command; empty unless a test writes it (never the developer's own).
        self.project = folder / "checkout"
        self.project.mkdir(exist_ok=True)

    @property
    def project_settings(self) -> Path:
        return self.project / "local.settings.json"

    def run(self, *args: str) -> Ran:
        """``main(args)`` in this process, in ``folder``; os.environ is restored after (local.settings.json is
        applied to it)."""
        saved = dict(os.environ)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.chdir(self.folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main.main(list(args), project=self.project)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return Ran(code, out.getvalue(), err.getvalue())

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """The real entry point, ``python -m shared.cli``, as a child process."""
        return subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=self.folder,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_process(self, *args: str, timeout: float = 120) -> Ran:
        proc = self.spawn(*args)
        stdout, stderr = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, stdout, stderr)


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def customers(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def posts_per_customer(partner_center: FakePartnerCenter) -> Counter[str]:
    """Create POSTs that reached Partner Center's handler, by customer (what "upgraded twice" would show)."""
    return Counter(r.json()["customerId"] for r in partner_center.requests_to("/v1/productupgrades", "POST"))


def created_per_customer(partner_center: FakePartnerCenter) -> Counter[str]:
    return Counter(u["customer_id"] for u in partner_center.created_upgrades)


class BackgroundHost:
    """tests/harness.py's Host (the Functions host's queue loop over Azurite) on a thread, while the command
    line runs; it also plays the consumer of the results and outcomes queues."""

    def __init__(self) -> None:
        self.host = Host(os.environ[STORAGE_SETTING])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def __enter__(self) -> Host:
        self._thread.start()
        return self.host

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _pump(self) -> None:
        while not self._stop.is_set():
            if not self.host.run_once():
                self._stop.wait(0.2)


#: The failed line item of a partial upgrade (see :func:`script_partial`).
PARTIAL_DETAILS = {"code": "900114", "description": "The subscription could not be moved to the Azure plan."}


def script_partial(partner_center: FakePartnerCenter, customer: str) -> None:
    """Upgrades of ``customer`` move two subscriptions: one moves, one fails; the upgrade says Completed."""
    from sandbox.partner_center import LineOutcome

    lines = (LineOutcome("Completed"), LineOutcome("Failed", PARTIAL_DETAILS))
    partner_center.set_outcome(customer, "Completed", line_items=lines)


def left_behind(partner_center: FakePartnerCenter, customer: str) -> str:
    """The id of the subscription that did not move in ``customer``'s partial upgrade."""
    [upgrade] = [u for u in partner_center.upgrades.values() if u.customer_id == customer]
    return upgrade.subscriptions[1][0]


def png_ink(png: bytes) -> float:
    """The share of a PNG's pixels that are not its most common colour (0.0: blank). Decoded here (8-bit RGB or
    RGBA, as Chromium writes screenshots), so the check needs no imaging library."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    width = height = channels = 0
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind, body = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[9] in (2, 6) and body[12] == 0, "only 8-bit RGB(A), not interlaced"
            channels = 3 if body[9] == 2 else 4
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    raw, stride = zlib.decompress(b"".join(chunks)), width * channels
    previous, colours = bytearray(stride), Counter[bytes]()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                nearest = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - corner), 2, corner))[2]
                line[x] = (line[x] + nearest) & 0xFF
        colours.update(bytes(line[x : x + channels]) for x in range(0, stride, channels))
        previous = line
    return 1 - colours.most_common(1)[0][1] / (width * height)
