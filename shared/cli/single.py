"""The one-customer commands: ``upgrade``, ``eligibility`` and ``status``."""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from typing import Any

from shared.models import DEFAULT_PRODUCT_FAMILY, ProductUpgradeRequest
from shared.upgrades.workflow import OperationIds, UpgradeOrder, request_id_for

from .context import EXIT_OK, EXIT_REFUSED, PROG, Context, UsageError, request_from
from .follow import Ended, follow_upgrade


def cmd_upgrade(context: Context, args: argparse.Namespace) -> int:
    request = request_from(args.customer_id, args.product_family)
    key = (args.idempotency_key or "").strip()
    # The same mapping as the HTTP route's Idempotency-Key: one key is one upgrade, whichever door it came in.
    correlation_id = str(uuid.uuid4())
    ids = (
        OperationIds.of_caller(request_id_for("idempotency-key", key), correlation_id)
        if key
        else OperationIds.new(correlation_id)
    )
    runtime = context.runtime
    created = runtime.workflow.create(
        UpgradeOrder(request, ids, caller_request_id=key or None, check_eligibility=args.check_eligibility)
    )
    body: dict[str, Any] = {
        "upgradeId": created.upgrade_id,
        "customerId": created.customer_id,
        "productFamily": created.product_family,
        "status": "accepted",
    }
    context.output.say(created.upgrade_id)
    if not args.wait:
        family = (
            "" if created.product_family == DEFAULT_PRODUCT_FAMILY else f" --product-family {created.product_family}"
        )
        context.output.warn(f"next: {PROG} status {created.upgrade_id} --customer {created.customer_id}{family} --wait")
        context.output.document(body)
        return EXIT_OK
    ended = _follow(context, created.upgrade_id, request, ids.correlation_id, ids.request_id)
    outcome = ended.outcome
    body.update({"outcome": outcome, "partnerCenterStatus": ended.status.status})
    context.output.say(f"{outcome} ({ended.status.status})")
    context.output.document(body)
    return EXIT_OK if outcome == "completed" else EXIT_REFUSED


def cmd_eligibility(context: Context, args: argparse.Namespace) -> int:
    request = request_from(args.customer_id, args.product_family)
    eligibility = context.runtime.workflow.check_eligibility(request, OperationIds.new(str(uuid.uuid4())))
    if eligibility.is_eligible:
        context.output.say(f"eligible: customer {request.customer_id} ({request.product_family})")
    else:
        running = f"; upgrade {eligibility.upgrade_id} is in progress" if eligibility.upgrade_id else ""
        context.output.say(f"not eligible: {eligibility.reason or 'no reason given'}{running}")
    context.output.document(eligibility.to_json())
    return EXIT_OK


def cmd_status(context: Context, args: argparse.Namespace) -> int:
    request = request_from(args.customer, args.product_family)
    upgrade_id = args.upgrade_id.strip()
    if not upgrade_id or not upgrade_id.replace("-", "").isalnum():
        raise UsageError("UPGRADE_ID must be Partner Center's upgrade id")
    correlation_id = str(uuid.uuid4())
    if args.wait:
        ended = _follow(context, upgrade_id, request, correlation_id, None)
        status, outcome = ended.status, ended.outcome
    else:
        status = context.runtime.workflow.get_status(upgrade_id, request, OperationIds.new(correlation_id))
        outcome = "completed"  # without --wait, any answer is a success
    body = {"upgradeId": upgrade_id, "customerId": request.customer_id, **status.to_json()}
    context.output.say(json.dumps(body, indent=2))
    context.output.document(body)
    return EXIT_OK if outcome == "completed" else EXIT_REFUSED


def _follow(
    context: Context, upgrade_id: str, request: ProductUpgradeRequest, correlation_id: str, ledger_key: str | None
) -> Ended:
    """Until the upgrade has ended, recorded in the ledger when it holds the upgrade; Ctrl-C interrupts (130)."""
    ended = follow_upgrade(
        context.runtime,
        upgrade_id,
        request,
        correlation_id,
        ledger_key=ledger_key,
        stop=threading.Event(),  # never set: only KeyboardInterrupt ends the wait early
        on_poll=lambda status: context.output.warn(f"upgrade {upgrade_id}: {status.status}"),
    )
    assert ended is not None
    return ended
