"""The function app's HTTP functions behind a small WSGI application, routed as the Functions host routes them.

Tools that speak WSGI (schemathesis, werkzeug's test client) can then call the functions by URL: each
request becomes a real ``func.HttpRequest`` with the route parameters the host would extract, and the
function's ``func.HttpResponse`` becomes the WSGI response. Routes and methods come from the functions'
own ``httpTrigger`` bindings, so the adapter serves exactly what the app declares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func

from tests.harness import indexed_functions, user_functions

ROUTE_PREFIX = "/api"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP function as the host indexes it: its name, methods and route template (without ``/api``)."""

    function_name: str
    methods: frozenset[str]
    template: str
    auth_level: str

    @property
    def pattern(self) -> re.Pattern[str]:
        # "{upgradeId}" matches one path segment, as the host's route constraints do by default.
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        return re.compile(f"^{regex}$")

    @property
    def literal_segments(self) -> int:
        return sum(1 for part in self.template.split("/") if not part.startswith("{"))


def http_routes() -> list[HttpRoute]:
    """Every HTTP-triggered function of the app, most specific first (literal segments beat parameters)."""
    routes = []
    for name, function in indexed_functions().items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                methods = frozenset(m.upper() for m in binding["methods"])
                routes.append(HttpRoute(name, methods, binding["route"], binding["authLevel"].upper()))
    return sorted(routes, key=lambda r: (-r.literal_segments, r.template))


class FunctionsWsgiApp:
    """A WSGI application that dispatches to the HTTP functions (``get_user_function()``), as the host does.

    Like the host, a route with auth level ``FUNCTION`` answers ``401`` with no body unless the request carries,
    in the ``x-functions-key`` header or the ``code`` query parameter, a host key (``function_keys``: each opens
    every function-level route) or one of that function's own keys (``keys_of[function name]``: each opens that
    function only).
    """

    def __init__(
        self, function_keys: Iterable[str] = (), keys_of: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        self.routes = http_routes()
        self.functions = user_functions()
        self.function_keys = frozenset(function_keys)
        self.keys_of = {name: frozenset(keys.values()) for name, keys in (keys_of or {}).items()}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO", "")
        response = self.dispatch(environ, method, path)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-type"]
        body = response.get_body() or b""
        if body:  # the host's own answers (401, 404) have no body and no Content-Type
            headers.append(("Content-Type", response.headers.get("Content-Type") or response.mimetype))
        status = response.status_code
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def dispatch(self, environ: dict[str, Any], method: str, path: str) -> func.HttpResponse:
        if not path.startswith(ROUTE_PREFIX + "/"):
            return func.HttpResponse(status_code=404)
        relative = path[len(ROUTE_PREFIX) + 1 :]
        for route in self.routes:
            match = route.pattern.match(relative)
            if match and method in route.methods:
                req = self.request(environ, method, path, match.groupdict())
                if route.auth_level != "ANONYMOUS" and not self.authorized(req, route.function_name):
                    return func.HttpResponse(status_code=401)
                return self.functions[route.function_name](req)
        return func.HttpResponse(status_code=404)

    def authorized(self, req: func.HttpRequest, function_name: str) -> bool:
        key = req.headers.get("x-functions-key") or req.params.get("code")
        return key in self.function_keys or key in self.keys_of.get(function_name, frozenset())

    @staticmethod
    def request(environ: dict[str, Any], method: str, path: str, route_params: dict[str, str]) -> func.HttpRequest:
        query = environ.get("QUERY_STRING", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
        url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")
        return func.HttpRequest(
            method,
            url,
            headers=headers,
            params=dict(parse_qsl(query, keep_blank_values=True)),
            route_params=route_params,
            body=body,
        )
