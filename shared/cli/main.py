"""Entry point: arguments, settings, exit codes; one-upgrade commands (upgrade, eligibility, status).

Exit codes (the contract's): 0 everything asked for succeeded, 1 upgrades refused or failed, 2 usage,
3 configuration or credentials, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from shared import logs
from shared.errors import (
    CredentialError,
    PartnerCenterError,
    ProductUpgradeError,
    SettingError,
    TokenError,
    ValidationError,
)
from shared.models import ProductUpgradeRequest, ProductUpgradesStatus, parse_guid, parse_product_family
from shared.runtime import Runtime
from shared.settings import Settings
from shared.workflow import OperationIds, request_id_for

from .environment import LocalSettingsError, apply_local_settings
from .follow import follow_upgrade, outcome_of

PROG = "product-upgrades"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


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
        self._runtime: Runtime | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.build(self.settings)
        return self._runtime


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else there")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Partner Center product upgrades from the command line: one customer, or a campaign from a CSV.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upgrade = commands.add_parser("upgrade", parents=[common], help="upgrade one customer")
    upgrade.add_argument("customer_id", metavar="CUSTOMER_ID")
    upgrade.add_argument("--product-family", default=None)
    upgrade.add_argument("--check-eligibility", action="store_true", help="ask first; refuse when not eligible")
    upgrade.add_argument("--idempotency-key", default=None, help="the same key never upgrades twice")
    upgrade.add_argument("--wait", action="store_true", help="follow the upgrade until it has ended")

    eligibility = commands.add_parser("eligibility", parents=[common], help="is a customer eligible?")
    eligibility.add_argument("customer_id", metavar="CUSTOMER_ID")
    eligibility.add_argument("--product-family", default=None)

    status = commands.add_parser("status", parents=[common], help="an upgrade's status document")
    status.add_argument("upgrade_id", metavar="UPGRADE_ID")
    status.add_argument("--customer", required=True, metavar="CUSTOMER_ID")
    status.add_argument("--product-family", default=None)
    status.add_argument("--wait", action="store_true", help="follow the upgrade until it has ended")

    bulk = commands.add_parser("bulk", parents=[common], help="a campaign: every customer of a CSV")
    bulk.add_argument("file", metavar="FILE.csv")
    bulk.add_argument("--report", required=True, metavar="OUT.csv", help="written as rows finish; resumable")
    bulk.add_argument("--enqueue", action="store_true", help="through the requests queue and the queue function")
    bulk.add_argument("--concurrency", type=_positive_int, default=8, help="calls at a time (default 8)")
    bulk.add_argument("--check-eligibility", action="store_true")
    bulk.add_argument("--campaign", default=None, help="names the run (default: the CSV file's name)")
    bulk.add_argument("--wait", action="store_true", help="follow every accepted upgrade until it has ended")

    listing = commands.add_parser("list", parents=[common], help="counts by state, then the ledger's upgrades")
    listing.add_argument("--state", choices=("running", "completed", "failed", "expired"))
    listing.add_argument("--customer", metavar="CUSTOMER_ID")
    listing.add_argument("--output", metavar="OUT.csv", help="write the upgrades as CSV")
    listing.add_argument("--html", metavar="REPORT.html", help="write a self-contained campaign report")

    consent = commands.add_parser("consent", parents=[common], help="the secure app model's one-time MFA consent")
    consent.add_argument("--port", type=int, default=8400, help="localhost port of the redirect (0: any free port)")
    consent.add_argument("--no-browser", action="store_true", help="print the sign-in URL instead of opening it")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None, *, folder: Path | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Output(args.json)
    _configure_logging(args.verbose)
    try:
        apply_local_settings(folder or Path.cwd())
        context = Context(output, folder or Path.cwd())
        return COMMANDS[args.command](context, args)
    except UsageError as exc:
        return _fail(output, EXIT_USAGE, "usage_error", str(exc))
    except LocalSettingsError as exc:
        return _fail(output, EXIT_CONFIGURATION, "configuration_error", str(exc))
    except ConfigurationError as exc:
        return _fail(output, EXIT_CONFIGURATION, "configuration_error", str(exc))
    except ProductUpgradeError as exc:
        return _fail(output, exit_code_for(exc), exc.code, describe(exc), exc.partner_center_error_code)
    except KeyboardInterrupt:
        output.warn("interrupted")
        return EXIT_INTERRUPTED


def exit_code_for(exc: ProductUpgradeError) -> int:
    """3 when the operator must fix settings or credentials; 2 for our own validation; else 1."""
    if isinstance(exc, SettingError | CredentialError):
        return EXIT_CONFIGURATION
    if isinstance(exc, PartnerCenterError) and exc.token_rejected:
        return EXIT_CONFIGURATION
    if isinstance(exc, ValidationError):
        return EXIT_USAGE
    return EXIT_REFUSED


def describe(exc: ProductUpgradeError) -> str:
    """The error's message, with what an operator does about refused credentials."""
    if isinstance(exc, TokenError) and exc.error == "invalid_grant":
        return f"{exc.message}; run `{PROG} consent` to sign in again and store a new refresh token"
    return exc.message


def _fail(output: Output, code: int, error: str, message: str, partner_center_error_code: str | None = None) -> int:
    output.warn(f"error: {message}")
    output.document({"error": {"code": error, "message": message, "partnerCenterErrorCode": partner_center_error_code}})
    return code


def _configure_logging(verbose: bool) -> None:
    """Log lines go to stderr: errors only (retries and throttling are counted by the commands), all with -v."""
    logs.install()
    root = logging.getLogger()
    for old in [handler for handler in root.handlers if getattr(handler, "_cli", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.ERROR)
    handler._cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if verbose and root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)


def parse_customer(value: str) -> str:
    try:
        return parse_guid(value, "CUSTOMER_ID")
    except ValidationError as exc:
        raise UsageError(exc.message) from None


def _request(customer_id: str, product_family: str | None) -> ProductUpgradeRequest:
    try:
        return ProductUpgradeRequest(parse_customer(customer_id), parse_product_family(product_family))
    except ValidationError as exc:
        raise UsageError(exc.message) from None


def cmd_upgrade(context: Context, args: argparse.Namespace) -> int:
    request = _request(args.customer_id, args.product_family)
    key = (args.idempotency_key or "").strip()
    # The same mapping as the HTTP route's Idempotency-Key: one key is one upgrade, whichever door it came in.
    ids = OperationIds(request_id_for("idempotency-key", key) if key else str(uuid.uuid4()), str(uuid.uuid4()))
    runtime = context.runtime
    created = runtime.workflow.create(request, ids, check_eligibility=args.check_eligibility)
    body: dict[str, Any] = {
        "upgradeId": created.upgrade_id,
        "customerId": created.customer_id,
        "productFamily": created.product_family,
        "status": "accepted",
    }
    context.output.say(created.upgrade_id)
    if not args.wait:
        context.output.document(body)
        return EXIT_OK
    status = _follow(context, created.upgrade_id, request, ids.correlation_id)
    outcome = outcome_of(status)
    body.update({"outcome": outcome, "partnerCenterStatus": status.status})
    context.output.say(f"{outcome} ({status.status})")
    context.output.document(body)
    return EXIT_OK if outcome == "completed" else EXIT_REFUSED


def cmd_eligibility(context: Context, args: argparse.Namespace) -> int:
    request = _request(args.customer_id, args.product_family)
    eligibility = context.runtime.workflow.check_eligibility(request, OperationIds.new(str(uuid.uuid4())))
    if eligibility.is_eligible:
        context.output.say(f"eligible: customer {request.customer_id} ({request.product_family})")
    else:
        running = f"; upgrade {eligibility.upgrade_id} is in progress" if eligibility.upgrade_id else ""
        context.output.say(f"not eligible: {eligibility.reason or 'no reason given'}{running}")
    context.output.document(eligibility.to_json())
    return EXIT_OK


def cmd_status(context: Context, args: argparse.Namespace) -> int:
    request = _request(args.customer, args.product_family)
    upgrade_id = args.upgrade_id.strip()
    if not upgrade_id or not upgrade_id.replace("-", "").isalnum():
        raise UsageError("UPGRADE_ID must be Partner Center's upgrade id")
    correlation_id = str(uuid.uuid4())
    if args.wait:
        status = _follow(context, upgrade_id, request, correlation_id)
    else:
        status = context.runtime.workflow.get_status(upgrade_id, request, OperationIds.new(correlation_id))
    body = {"upgradeId": upgrade_id, "customerId": request.customer_id, **status.to_json()}
    context.output.say(json.dumps(body, indent=2))
    context.output.document(body)
    if args.wait and outcome_of(status) != "completed":
        return EXIT_REFUSED
    return EXIT_OK


def _follow(
    context: Context, upgrade_id: str, request: ProductUpgradeRequest, correlation_id: str
) -> ProductUpgradesStatus:
    """Until the upgrade has ended; Ctrl-C interrupts (exit 130)."""
    status = follow_upgrade(
        context.runtime.workflow,
        upgrade_id,
        request,
        correlation_id,
        poll_seconds=context.settings.poll_seconds,
        stop=threading.Event(),  # never set: only KeyboardInterrupt ends the wait early
        on_poll=lambda status: context.output.warn(f"upgrade {upgrade_id}: {status.status}"),
    )
    assert status is not None
    return status


def cmd_bulk(context: Context, args: argparse.Namespace) -> int:
    from .bulk import run_bulk

    return run_bulk(context, args)


def cmd_list(context: Context, args: argparse.Namespace) -> int:
    from .listing import run_list

    return run_list(context, args)


def cmd_consent(context: Context, args: argparse.Namespace) -> int:
    from .consent import run_consent

    return run_consent(context, args)


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "upgrade": cmd_upgrade,
    "eligibility": cmd_eligibility,
    "status": cmd_status,
    "bulk": cmd_bulk,
    "list": cmd_list,
    "consent": cmd_consent,
}
