"""The process's ``requests`` session: it trusts what ``requests`` trusts, reading the environment once.

A plain ``requests.Session`` merges environment settings into every call: it scans ``os.environ`` for
proxies (and ``NO_PROXY``), reads ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` and looks for a ``.netrc``
file, each time. The environment of a worker process does not change while it runs, so this session
resolves proxies and the CA bundle once per origin (scheme and host), with requests' own rules, and
reuses the answer. ``REQUESTS_CA_BUNDLE`` and ``HTTPS_PROXY``/``NO_PROXY`` keep working as they do for
every Azure SDK; ``.netrc`` credentials are not used (every call we make carries its own Authorization).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies

if TYPE_CHECKING:
    from azure.core.pipeline.transport import RequestsTransport
    from requests.sessions import _Settings

#: Connections kept per host: the queue trigger's batchSize (16) plus room for HTTP invocations.
POOL_SIZE = 32

#: The variables requests reads for the CA bundle, in its order of preference.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def ca_bundle_in_use() -> tuple[str, str]:
    """The CA bundle outbound TLS trusts here, and where that choice came from (for an operator's error message)."""
    for name in CA_BUNDLE_VARIABLES:
        if os.environ.get(name):
            return os.environ[name], f"from {name}"
    return DEFAULT_CA_BUNDLE_PATH, "requests' default, the certifi package"


class EnvironmentOnceSession(requests.Session):
    """A ``requests.Session`` whose environment settings are resolved once per origin, then cached."""

    def __init__(self) -> None:
        super().__init__()
        # Off: requests would otherwise re-read the environment (and look for .netrc) on every call;
        # merge_environment_settings below applies the same settings from its cache instead.
        self.trust_env = False
        self._environment: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}

    def environment_for(self, url: str) -> tuple[dict[str, str], str | None]:
        """``(proxies, ca_bundle)`` the environment gives for ``url``'s origin, read on first use."""
        parts = urlsplit(url)
        origin = (parts.scheme.lower(), parts.netloc.lower())
        cached = self._environment.get(origin)
        if cached is None:  # two threads racing here compute the same answer; either may be kept
            ca_bundle = next((os.environ[name] for name in CA_BUNDLE_VARIABLES if os.environ.get(name)), None)
            cached = self._environment[origin] = (get_environ_proxies(url), ca_bundle)
        return cached

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        # requests' own rules (Session.merge_environment_settings with trust_env), on cached values:
        # explicit proxies win over the environment's, and the CA bundle variables beat verify=True.
        url = url.decode() if isinstance(url, bytes) else (url or "")
        env_proxies, ca_bundle = self.environment_for(url)
        merged_proxies = dict(proxies or {})
        if "no_proxy" in merged_proxies:  # a caller's own NO_PROXY list: resolve with it, as requests does
            env_proxies = get_environ_proxies(url, no_proxy=merged_proxies["no_proxy"])
        for key, value in env_proxies.items():
            merged_proxies.setdefault(key, value)
        if ca_bundle and (verify is True or verify is None):
            verify = ca_bundle
        return super().merge_environment_settings(url, merged_proxies, stream, verify, cert)


def azure_transport(*, connection_timeout: float, read_timeout: float) -> RequestsTransport:
    """A transport for an Azure SDK client (tables, queues) on an :class:`EnvironmentOnceSession`, with the
    client's default timeouts (given a transport, the SDK no longer applies its own timeout options to one).

    azure-core's default transport builds a plain session, which reads the environment on every call, as
    above. Its own retry policy does the retrying, so the adapter does none (as azure-core's own adapter).
    """
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = EnvironmentOnceSession()
    adapter = HTTPAdapter(pool_maxsize=POOL_SIZE, max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    return RequestsTransport(session=session, connection_timeout=connection_timeout, read_timeout=read_timeout)
