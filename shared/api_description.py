"""The API description: ``connector/apiDefinition.swagger.json``, served at ``GET /api/openapi.json``.

The connector file is the one description of the HTTP API (tests hold it to the function app's routes and
to what the handlers answer); this module serves it with ``host`` (and ``basePath``, ``schemes``) set to
where the app is reached, so a maker can import the connector from its URL.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import azure.functions as func

from shared import http_api
from shared.errors import InvalidSettingError
from shared.settings import PUBLIC_URL_SETTING

#: Packaged with the app (``.funcignore`` keeps it); paconn and the maker portal read the same file.
DEFINITION_PATH = Path(__file__).resolve().parents[1] / "connector" / "apiDefinition.swagger.json"
#: The host's ``routePrefix`` (host.json): the path that stands for the app's API without a public URL.
ROUTE_PREFIX = "/api"


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
    """The app's public base, by the contract's rule for ``Location``.

    ``PRODUCT_UPGRADE_PUBLIC_URL`` when set (it stands for ``/api``: API Management, a custom domain); else, in
    Azure, ``https://{WEBSITE_HOSTNAME}`` (set by the platform: a client's Host header never chooses it); else
    (local runs) the request's own scheme and host.
    """
    public_url = os.environ.get(PUBLIC_URL_SETTING, "").strip()
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidSettingError(PUBLIC_URL_SETTING, "an https:// URL")
        return PublicBase(parts.scheme, parts.netloc, parts.path.rstrip("/") or "/")
    website_host = os.environ.get("WEBSITE_HOSTNAME", "").strip()
    if website_host:
        return PublicBase("https", website_host, ROUTE_PREFIX)
    parts = urlsplit(str(req.url))
    return PublicBase(parts.scheme, parts.netloc, ROUTE_PREFIX)


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
