"""Azure Functions entry point (v2 programming model): triggers and bindings only.

Each function hands over to the shared package in a line; importing this module needs no settings.
"""

import azure.functions as func

from shared import logs
from shared.functions import api_description, http_api, keepalive, queue_worker, resumer, tracking_worker

logs.install()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
http_api.check_location_base()  # says at start-up when Location can only come from the request's host


@app.route(route="productupgrades", methods=["POST"])
def create_product_upgrade(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.create_upgrade(req)


@app.route(route="productupgrades/eligibility", methods=["POST"])
def check_product_upgrade_eligibility(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.check_eligibility(req)


@app.route(route="productupgrades/{upgradeId}", methods=["GET"])
def get_product_upgrade_status(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.get_status(req)


@app.queue_trigger(arg_name="msg", queue_name="%PRODUCT_UPGRADE_REQUESTS_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="results", queue_name="%PRODUCT_UPGRADE_RESULTS_QUEUE%", connection="AzureWebJobsStorage")
def product_upgrade_from_queue(msg: func.QueueMessage, results: func.Out[str]) -> None:
    result = queue_worker.handle(msg)
    if result is not None:  # None: deferred, back on the queue for later
        results.set(result)


@app.queue_trigger(arg_name="msg", queue_name="%PRODUCT_UPGRADE_TRACKING_QUEUE%", connection="AzureWebJobsStorage")
def track_product_upgrade(msg: func.QueueMessage) -> None:
    tracking_worker.handle(msg)


@app.timer_trigger(arg_name="timer", schedule=resumer.SCHEDULE, run_on_startup=False, use_monitor=True)
def resume_stopped_tracking(timer: func.TimerRequest) -> None:
    resumer.handle(timer)


@app.timer_trigger(arg_name="timer", schedule=keepalive.SCHEDULE, run_on_startup=False, use_monitor=True)
def keep_partner_center_token_alive(timer: func.TimerRequest) -> None:
    keepalive.handle(timer)


@app.route(route="productupgrades", methods=["GET"])
def list_product_upgrades(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.list_upgrades(req)


@app.route(route="campaigns/{name}", methods=["GET"])
def get_campaign_summary(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.campaign_summary(req)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.health(req)


@app.route(route="health/details", methods=["GET"])
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.health_details(req)


@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_definition(req: func.HttpRequest) -> func.HttpResponse:
    return api_description.serve(req)
