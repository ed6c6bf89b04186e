"""Entry point: the arguments, the settings, and each command handed to its module; errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from shared import __version__, logs
from shared.errors import ProductUpgradeError, SettingError
from shared.store.records import UPGRADE_STATES

from .context import (
    EXIT_CONFIGURATION,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    ConfigurationError,
    Context,
    Output,
    UsageError,
    positive_int,
)
from .diagnosis import describe, exit_code_for
from .environment import LocalSettingsError, SettingsSources, load_settings, project_folder
from .pool import WORKER_PREFIX
from .single import cmd_eligibility, cmd_status, cmd_upgrade

SETTINGS_HELP = (
    "the local.settings.json to read (default: the project's own, beside host.json in the checkout holding "
    "this package); the environment wins over it"
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else there")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    # Also after the command; SUPPRESS keeps a value given before it.
    common.add_argument("--settings", type=Path, metavar="PATH", default=argparse.SUPPRESS, help=SETTINGS_HELP)

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Partner Center product upgrades from the command line: one customer, or a campaign from a CSV.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--settings", type=Path, metavar="PATH", default=None, help=SETTINGS_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _one_customer_commands(commands, common)
    _campaign_commands(commands, common)
    _operator_commands(commands, common)
    return parser


def _one_customer_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
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


def _campaign_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    discover = commands.add_parser(
        "discover", parents=[common], help="the customers still on legacy Azure, as a CSV for bulk"
    )
    discover.add_argument("--output", required=True, metavar="OUT.csv", help="written as it goes; resumable")
    discover.add_argument("--check-eligibility", action="store_true", help="ask eligibility for each one written")
    discover.add_argument(
        "--include-suspended", action="store_true", help="also write customers whose legacy Azure is all suspended"
    )
    discover.add_argument("--campaign", default=None, help="the wave the CSV is for (default: the output's name)")
    discover.add_argument("--concurrency", type=positive_int, default=8, help="customers at a time (default 8)")

    bulk = commands.add_parser("bulk", parents=[common], help="a campaign: every customer of a CSV")
    bulk.add_argument("file", metavar="FILE.csv")
    bulk.add_argument("--report", required=True, metavar="OUT.csv", help="written as rows finish; resumable")
    bulk.add_argument("--enqueue", action="store_true", help="through the requests queue and the queue function")
    bulk.add_argument("--concurrency", type=positive_int, default=8, help="calls at a time (default 8)")
    bulk.add_argument("--check-eligibility", action="store_true")
    bulk.add_argument(
        "--campaign", default=None, help="the campaign recorded and counted (default: the CSV's name without extension)"
    )
    bulk.add_argument("--wait", action="store_true", help="follow every accepted upgrade until it has ended")


def _operator_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    listing = commands.add_parser("list", parents=[common], help="counts by state, then the ledger's upgrades")
    listing.add_argument("--state", choices=UPGRADE_STATES)
    listing.add_argument("--customer", metavar="CUSTOMER_ID")
    listing.add_argument("--campaign", metavar="NAME", help="one campaign: its summary, its upgrades, its report")
    listing.add_argument("--output", metavar="OUT.csv", help="write the upgrades as CSV")
    listing.add_argument("--html", metavar="REPORT.html", help="write a self-contained campaign report")

    consent = commands.add_parser("consent", parents=[common], help="the secure app model's one-time MFA consent")
    consent.add_argument("--port", type=int, default=8400, help="localhost port of the redirect (0: any free port)")
    consent.add_argument("--no-browser", action="store_true", help="print the sign-in URL instead of opening it")


def main(argv: Sequence[str] | None = None, *, folder: Path | None = None, project: Path | None = None) -> int:
    """Run one command in ``folder`` (the working folder); ``project`` stands for the checkout holding the
    package, whose ``local.settings.json`` is read (found from the package itself when not given)."""
    args = build_parser().parse_args(argv)
    output = Output(args.json)
    _configure_logging(args.verbose)
    context = Context(output, folder or Path.cwd())
    try:
        context.sources = load_settings(context.folder, explicit=args.settings, project=project or project_folder())
        _say_where_settings_come_from(output, context.sources)
        return COMMANDS[args.command](context, args)
    except UsageError as exc:
        return _fail(output, EXIT_USAGE, "usage_error", str(exc))
    except LocalSettingsError as exc:
        return _fail(output, EXIT_CONFIGURATION, "configuration_error", str(exc))
    except ConfigurationError as exc:
        return _fail(output, EXIT_CONFIGURATION, "configuration_error", str(exc))
    except ProductUpgradeError as exc:
        message = describe(exc, context.storage_connection())
        if isinstance(exc, SettingError):
            message = f"{message}; {context.sources.help()}"
        return _fail(output, exit_code_for(exc), exc.code, message, exc.partner_center_error_code)
    except KeyboardInterrupt:
        output.warn("interrupted")
        return EXIT_INTERRUPTED


def run() -> NoReturn:
    """The console script and ``python -m shared.cli``: exit with :func:`main`'s code.

    Worker threads a second Ctrl-C left in flight are not waited for (an interpreter exit would join them, and
    a call can take a minute): their rows are already reported, so the process ends at once.
    """
    code = main()
    if any(thread.name.startswith(WORKER_PREFIX) and thread.is_alive() for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _say_where_settings_come_from(output: Output, sources: SettingsSources) -> None:
    if sources.file is not None:
        output.warn(f"settings: {sources.describe()}")
    if sources.ignored is not None:
        output.warn(
            f"not reading {sources.ignored}: settings come from the environment, the project's own "
            f"local.settings.json or --settings PATH, never from a file that is merely in the working folder "
            f"(it could send the credentials elsewhere); if you trust it: --settings {sources.ignored}"
        )


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


def cmd_bulk(context: Context, args: argparse.Namespace) -> int:
    from .bulk import run_bulk

    return run_bulk(context, args)


def cmd_list(context: Context, args: argparse.Namespace) -> int:
    from .listing import run_list

    return run_list(context, args)


def cmd_discover(context: Context, args: argparse.Namespace) -> int:
    from .discover import run_discover

    return run_discover(context, args)


def cmd_consent(context: Context, args: argparse.Namespace) -> int:
    from .consent import run_consent

    return run_consent(context, args)


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "upgrade": cmd_upgrade,
    "eligibility": cmd_eligibility,
    "status": cmd_status,
    "bulk": cmd_bulk,
    "list": cmd_list,
    "discover": cmd_discover,
    "consent": cmd_consent,
}
