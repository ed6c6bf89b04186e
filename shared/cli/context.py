"""What every command shares: its output, the runtime, the exit codes and the errors that choose them.

Exit codes (the contract's): 0 everything asked for succeeded, 1 upgrades refused or failed, 2 usage,
3 configuration or credentials, 4 a service the command needs could not be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from shared.errors import SettingError, ValidationError
from shared.models import ProductUpgradeRequest, parse_guid, parse_product_family
from shared.settings import Settings, StorageConnection
from shared.upgrades.runtime import Runtime

from .environment import SettingsSources

PROG = "product-upgrades"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad arguments or input file: exit 2."""


class ConfigurationError(Exception):
    """A setting or the credentials need the operator: exit 3."""


class Output:
    """Human text and the ``--json`` document go to stdout; progress and warnings to stderr."""

    def __init__(self, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text, file=self.stdout, flush=True)

    def document(self, body: Any) -> None:
        if self.as_json:
            print(json.dumps(body, indent=2), file=self.stdout, flush=True)

    def warn(self, text: str) -> None:
        print(f"{PROG}: {text}", file=self.stderr, flush=True)


class Context:
    """What every command gets: its output, and the runtime built on first use from the settings."""

    def __init__(self, output: Output, folder: Path) -> None:
        self.output = output
        self.folder = folder
        #: Where the settings came from (the environment, which local.settings.json); set by main.
        self.sources = SettingsSources(None)
        self._runtime: Runtime | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def storage_connection(self) -> StorageConnection | None:
        """The storage the settings name, for messages about it; None when the settings cannot be read."""
        try:
            return self.settings.storage
        except SettingError:
            return None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.build(self.settings)
        return self._runtime


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_customer(value: str) -> str:
    try:
        return parse_guid(value, "CUSTOMER_ID")
    except ValidationError as exc:
        raise UsageError(exc.message) from None


def request_from(customer_id: str, product_family: str | None) -> ProductUpgradeRequest:
    try:
        return ProductUpgradeRequest(parse_customer(customer_id), parse_product_family(product_family))
    except ValidationError as exc:
        raise UsageError(exc.message) from None
