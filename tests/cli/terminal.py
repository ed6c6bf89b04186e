"""The command line in a pseudo-terminal: a real terminal for rich, and a real Ctrl-C (the terminal's SIGINT)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
#: Sequences that move the cursor or erase (a live display redrawing itself): each starts a drawn line anew.
MOVES = re.compile(r"\x1b\[[0-9;?]*[ABCDEFGHJK]|\r")
STYLES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Terminal:
    """``python -m shared.cli ARGS`` with a pseudo-terminal of ``columns`` x ``rows`` as its controlling terminal."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], columns: int = 80, rows: int = 24) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=cwd,
            env={**env, "COLUMNS": str(columns), "LINES": str(rows), "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def raw(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")

    @property
    def text(self) -> str:
        """What was printed, terminal control sequences removed."""
        return ANSI.sub("", self.raw)

    @property
    def drawn_lines(self) -> list[str]:
        """Every line as the terminal drew it: split where the cursor moved, styles removed, blanks dropped."""
        lines = STYLES.sub("", MOVES.sub("\n", self.raw)).split("\n")
        return [line for line in lines if line.strip()]

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(2)
        os.close(self.master)
