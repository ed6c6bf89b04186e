"""The process's requests session against a loopback HTTPS fake: CA bundle and proxies from the environment,
with requests' own rules, read once per origin."""

import uuid

import certifi
import pytest
import requests

from sandbox import FakeHTTPServer, Response
from shared.http_session import EnvironmentOnceSession


class Echo(FakeHTTPServer):
    def handle(self, req):
        return Response.json(200, {"path": req.path})


@pytest.fixture
def echo(ca_env):
    with Echo(tls=ca_env) as server:
        yield server


def test_requests_ca_bundle_is_trusted(monkeypatch, echo):
    monkeypatch.delenv("CURL_CA_BUNDLE")
    session = EnvironmentOnceSession()
    assert session.trust_env is False  # requests itself no longer reads the environment per call
    assert session.get(f"{echo.url}/a", timeout=5).json() == {"path": "/a"}


def test_a_bundle_without_the_ca_is_refused(monkeypatch, echo):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(requests.exceptions.SSLError):
        EnvironmentOnceSession().get(f"{echo.url}/a", timeout=5)


def test_curl_ca_bundle_is_the_fallback(monkeypatch, echo):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert EnvironmentOnceSession().get(f"{echo.url}/b", timeout=5).status_code == 200


def test_environment_is_read_once_per_origin(monkeypatch, echo):
    session = EnvironmentOnceSession()
    assert session.get(f"{echo.url}/1", timeout=5).status_code == 200
    # A later change is not seen by this session (a worker's environment does not change) ...
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert session.get(f"{echo.url}/2", timeout=5).status_code == 200
    # ... while a new session reads it.
    with pytest.raises(requests.exceptions.SSLError):
        EnvironmentOnceSession().get(f"{echo.url}/3", timeout=5)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_explicit_verify_false_beats_the_environment(monkeypatch, echo):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert EnvironmentOnceSession().get(f"{echo.url}/c", timeout=5, verify=False).status_code == 200


@pytest.mark.parametrize(
    ("url", "proxies", "verify"),
    [
        ("https://api.example/v1", {}, None),
        ("https://bypassed.example/", {}, None),
        ("http://api.example/", {}, True),
        ("https://api.example/", {"https": "http://mine:1"}, None),
        ("https://api.example/", {"no_proxy": "api.example"}, None),
        ("https://api.example/", {}, "/own/bundle.pem"),
    ],
)
def test_same_settings_as_requests_with_trust_env(monkeypatch, url, proxies, verify):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain-proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.example")
    ours = EnvironmentOnceSession().merge_environment_settings(url, dict(proxies), None, verify, None)
    theirs = requests.Session().merge_environment_settings(url, dict(proxies), None, verify, None)
    assert ours == theirs


def test_azure_sdk_transport_reads_the_environment_once(azurite):
    from azure.data.tables import TableServiceClient

    from shared.http_session import azure_transport

    transport = azure_transport(connection_timeout=5, read_timeout=10)
    service = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    table = service.create_table_if_not_exists(f"session{uuid.uuid4().hex[:10]}")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": 1})
    assert table.get_entity("p", "r")["Value"] == 1
    assert isinstance(transport.session, EnvironmentOnceSession) and transport.session.trust_env is False
