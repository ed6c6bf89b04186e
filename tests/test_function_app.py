"""The function app as the host sees it: indexing, bindings, and a queue round trip through Azurite."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from azure.storage.queue import QueueClient

from sandbox import CUSTOMER_ID
from shared.settings import (
    ALL_SETTINGS,
    DEFAULTS,
    REQUESTS_QUEUE_SETTING,
    RESULTS_QUEUE_SETTING,
    TRACKING_QUEUE_SETTING,
)
from tests.harness import indexed_functions, run_queue_function

ROOT = Path(__file__).resolve().parents[1]


def test_import_and_indexing_need_no_settings():
    env = {k: v for k, v in os.environ.items() if k not in ALL_SETTINGS and not k.startswith("AzureWebJobsStorage")}
    code = "import function_app; print(sorted(f.get_function_name() for f in function_app.app.get_functions()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(
        [
            "check_product_upgrade_eligibility",
            "create_product_upgrade",
            "get_campaign_summary",
            "get_product_upgrade_status",
            "health",
            "health_details",
            "keep_partner_center_token_alive",
            "list_product_upgrades",
            "openapi_definition",
            "product_upgrade_from_queue",
            "resume_stopped_tracking",
            "track_product_upgrade",
        ]
    )


def test_import_and_indexing_load_no_sdk():
    """The SDKs are imported where first needed: a cold start indexes the functions without them."""
    code = (
        "import sys, function_app; function_app.app.get_functions(); "
        "print(sorted(m for m in ('requests', 'azure.core', 'azure.identity', 'azure.keyvault.secrets', "
        "'azure.data.tables', 'azure.storage.queue', 'msal') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def bindings(name):
    return {b["name"]: b for b in json.loads(indexed_functions()[name].get_function_json())["bindings"]}


def test_http_bindings():
    expected = {
        "create_product_upgrade": ("productupgrades", ["POST"], "FUNCTION"),
        "check_product_upgrade_eligibility": ("productupgrades/eligibility", ["POST"], "FUNCTION"),
        "get_product_upgrade_status": ("productupgrades/{upgradeId}", ["GET"], "FUNCTION"),
        "list_product_upgrades": ("productupgrades", ["GET"], "FUNCTION"),
        "get_campaign_summary": ("campaigns/{name}", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
        "health_details": ("health/details", ["GET"], "FUNCTION"),
    }
    for name, (route, methods, auth) in expected.items():
        trigger = bindings(name)["req"]
        assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth)
        assert bindings(name)["$return"]["type"] == "http"


def test_queue_bindings_use_the_settings_by_name():
    queue = bindings("product_upgrade_from_queue")
    assert queue["msg"]["type"] == "queueTrigger" and queue["msg"]["direction"] == "IN"
    assert queue["msg"]["queueName"] == f"%{REQUESTS_QUEUE_SETTING}%"
    assert queue["results"]["type"] == "queue" and queue["results"]["direction"] == "OUT"
    assert queue["results"]["queueName"] == f"%{RESULTS_QUEUE_SETTING}%"
    assert queue["msg"]["connection"] == queue["results"]["connection"] == "AzureWebJobsStorage"


def test_tracking_queue_binding_uses_the_setting_by_name():
    tracking = bindings("track_product_upgrade")
    assert tracking["msg"]["type"] == "queueTrigger" and tracking["msg"]["direction"] == "IN"
    assert tracking["msg"]["queueName"] == f"%{TRACKING_QUEUE_SETTING}%"
    assert tracking["msg"]["connection"] == "AzureWebJobsStorage"
    # outcomes are sent by the tracker itself, once per upgrade, not through an output binding
    assert set(tracking) == {"msg"}


def test_timer_binding_resumes_tracking_every_15_minutes_not_at_startup():
    timer = bindings("resume_stopped_tracking")["timer"]
    assert (timer["type"], timer["direction"]) == ("timerTrigger", "IN")
    # NCRONTAB with seconds; not at startup (every scale-out would run it), and a missed run is caught up
    assert (timer["schedule"], timer["runOnStartup"], timer["useMonitor"]) == ("0 */15 * * * *", False, True)


def test_queue_round_trip_through_azurite(azurite, app_env):
    suffix = uuid.uuid4().hex[:8]
    requests_queue = QueueClient.from_connection_string(
        azurite.connection_string, f"{DEFAULTS[REQUESTS_QUEUE_SETTING]}-{suffix}"
    )
    results_queue = QueueClient.from_connection_string(
        azurite.connection_string, f"{DEFAULTS[RESULTS_QUEUE_SETTING]}-{suffix}"
    )
    requests_queue.create_queue()
    results_queue.create_queue()
    # a producer puts plain JSON (messageEncoding "none" in host.json)
    requests_queue.send_message(json.dumps({"customerId": CUSTOMER_ID, "requestId": "crm-1", "correlationId": "c-1"}))
    [received] = list(requests_queue.receive_messages(max_messages=1, visibility_timeout=30))
    result_text = run_queue_function(received)
    # what the host does with the output binding and a successful invocation
    results_queue.send_message(result_text)
    requests_queue.delete_message(received.id, received.pop_receipt)
    [result_message] = list(results_queue.receive_messages(max_messages=1))
    result = json.loads(result_message.content)
    [created] = app_env.partner_center.created_upgrades
    assert result == {
        "status": "accepted",
        "upgradeId": created["upgrade_id"],
        "customerId": CUSTOMER_ID,
        "productFamily": "Azure",
        "correlationId": "c-1",
        "requestId": "crm-1",
        "messageId": received.id,
        "error": None,
    }
    assert requests_queue.get_queue_properties().approximate_message_count == 0
