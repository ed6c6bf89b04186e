"""The API description: ``connector/apiDefinition.swagger.json``, served at ``GET /api/openapi.json``.

The connector file is the one description of the HTTP API (tests hold it to the function app's routes and
to what the handlers answer); this module serves it with ``host`` (and ``basePath``, ``schemes``) set to
where the app is reached, so a maker can import the connector from its URL.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import azure.functions as func

from shared.errors import InvalidSettingError
from shared.functions import http_api

#: Packaged with the app (``.funcignore`` keeps it); paconn and the maker portal read the same file.
DEFINITION_PATH = Path(__file__).resolve().parents[2] / "connector" / "apiDefinition.swagger.json"


class PublicBase(NamedTuple):
    """Where callers reach the app's ``/api``: scheme, host (with port) and path."""

    scheme: str
    host: str
    base_path: str


@functools.cache
def definition() -> dict[str, Any]:
    """The connector's OpenAPI 2.0 definition, read once per process."""
    loaded: dict[str, Any] = json.loads(DEFINITION_PATH.read_text(encoding="utf-8"))
    return loaded


def public_base(req: func.HttpRequest) -> PublicBase:
    """The app's public base, by the same rule as ``Location`` (:func:`shared.functions.http_api.api_base_url`):
    ``PRODUCT_UPGRADE_PUBLIC_URL``, else ``https://{WEBSITE_HOSTNAME}`` in Azure, else the request's own host."""
    parts = urlsplit(http_api.api_base_url(req))
    return PublicBase(parts.scheme, parts.netloc, parts.path.rstrip("/") or "/")


def served_definition(req: func.HttpRequest) -> dict[str, Any]:
    """The definition as served: the connector file with this app's public host, base path and scheme."""
    served = copy.deepcopy(definition())
    base = public_base(req)
    served["host"] = base.host
    served["basePath"] = base.base_path
    served["schemes"] = [base.scheme]
    return served


def serve(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/openapi.json`` (anonymous: the document holds no secret)."""
    try:
        served = served_definition(req)
    except InvalidSettingError as exc:
        return http_api.problem(500, exc.title, exc.message, code=exc.code, correlation_id=str(uuid.uuid4()))
    return func.HttpResponse(
        json.dumps(served, indent=2),
        status_code=200,
        mimetype="application/json",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )
