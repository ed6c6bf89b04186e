"""Shared fixtures: the loopback fakes, the test CA, Azurite.

Every HTTP fake is function-scoped, started on a fresh port and stopped (bounded) in teardown; fixtures that
serve HTTPS depend on ``ca_env`` so that ``requests`` (and msal, azure-core) trust the test CA and nothing else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import (
    APP_SECRET,
    DEFAULT_SECRETS,
    MANAGED_IDENTITY_CLIENT_ID,
    REFRESH_TOKEN,
    Azurite,
    FakeEntra,
    FakeHTTPServer,
    FakeKeyVault,
    FakeManagedIdentity,
    FakePartnerCenter,
    TLSMaterial,
    default_tls,
)
from sandbox.server import stop_all_servers
from sandbox.storage_proxy import CountingStorageProxy
from sandbox.tls import CA_ENV_VARS
from shared import logs, signals
from shared.settings import Settings
from shared.upgrades import runtime
from tests.harness import FAST_POLICY, App, installed_app, set_app_env

#: The queues of a stored app, each given a name of its own per test.
QUEUE_SETTINGS = {
    "PRODUCT_UPGRADE_REQUESTS_QUEUE": "requests",
    "PRODUCT_UPGRADE_RESULTS_QUEUE": "results",
    "PRODUCT_UPGRADE_TRACKING_QUEUE": "tracking",
    "PRODUCT_UPGRADE_OUTCOMES_QUEUE": "outcomes",
}

#: Environment variables that would steer DefaultAzureCredential away from the fake managed identity.
AZURE_IDENTITY_ENV_VARS: tuple[str, ...] = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


def _no_fake_errors(fake: FakeHTTPServer) -> None:
    """An exception inside a fake's handler is a bug in the fake: fail the test's teardown loudly."""
    if fake.errors:
        pytest.fail(f"{type(fake).__name__} raised while handling a request:\n" + "\n".join(fake.errors))


@pytest.fixture(scope="session")
def tls_ca() -> TLSMaterial:
    """The session's trustme CA and loopback server certificate (``.ca``, ``.ca_bundle``, ``.cert_chain``...)."""
    return default_tls()


@pytest.fixture
def ca_env(monkeypatch: pytest.MonkeyPatch, tls_ca: TLSMaterial) -> TLSMaterial:
    """Point REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and SSL_CERT_FILE at the test CA bundle (only that CA)."""
    for name in CA_ENV_VARS:
        monkeypatch.setenv(name, tls_ca.ca_bundle)
    return tls_ca


@pytest.fixture
def entra(ca_env: TLSMaterial) -> Iterator[FakeEntra]:
    """Fake Entra tenant TENANT_ID with app APP_ID/APP_SECRET and refresh token REFRESH_TOKEN."""
    with FakeEntra(tls=ca_env) as fake:
        yield fake
    _no_fake_errors(fake)


@pytest.fixture
def partner_center(entra: FakeEntra, ca_env: TLSMaterial) -> Iterator[FakePartnerCenter]:
    """Fake Partner Center accepting access tokens issued by the ``entra`` fixture."""
    with FakePartnerCenter(entra, tls=ca_env) as fake:
        yield fake
    _no_fake_errors(fake)


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    """Fake App Service managed identity; sets IDENTITY_ENDPOINT/IDENTITY_HEADER and clears every other
    variable DefaultAzureCredential would prefer, so it lands on ManagedIdentityCredential."""
    for name in AZURE_IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with FakeManagedIdentity(client_id=MANAGED_IDENTITY_CLIENT_ID) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        yield fake
    _no_fake_errors(fake)


@pytest.fixture
def key_vault(managed_identity: FakeManagedIdentity, ca_env: TLSMaterial) -> Iterator[FakeKeyVault]:
    """Fake Key Vault holding DEFAULT_SECRETS, accepting only tokens from the ``managed_identity`` fixture."""
    with FakeKeyVault(DEFAULT_SECRETS, managed_identity=managed_identity, tls=ca_env) as fake:
        yield fake
    _no_fake_errors(fake)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite queue + table services for the whole session (in memory). Raises if `npm ci` was not run."""
    with Azurite() as instance:
        yield instance


@pytest.fixture
def azurite_env(monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> Azurite:
    """Sets AzureWebJobsStorage to Azurite's connection string."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    return azurite


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, partner_center: FakePartnerCenter) -> Iterator[App]:
    """The app's settings pointing at the fakes (secrets from the environment, no storage), a fresh runtime
    with fast retries, and an :class:`App` to call the functions."""
    set_app_env(monkeypatch, entra, partner_center)
    yield from installed_app(entra, partner_center)


@pytest.fixture
def stored_app(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, entra: FakeEntra, partner_center: FakePartnerCenter
) -> Iterator[App]:
    """:func:`app_env` with ``AzureWebJobsStorage`` on Azurite, and a ledger table and queues of its own
    (requests, results, tracking, outcomes), with status checks every second."""
    set_app_env(monkeypatch, entra, partner_center)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    suffix = uuid.uuid4().hex[:12]
    monkeypatch.setenv("PRODUCT_UPGRADE_TABLE", f"upgrades{suffix}")
    for setting, prefix in QUEUE_SETTINGS.items():
        monkeypatch.setenv(setting, f"{prefix}-{suffix}")
    monkeypatch.setenv("PRODUCT_UPGRADE_POLL_SECONDS", "1")
    yield from installed_app(entra, partner_center)


@pytest.fixture
def storage_proxy(monkeypatch: pytest.MonkeyPatch, stored_app: App, azurite: Azurite) -> Iterator[CountingStorageProxy]:
    """:func:`stored_app` with the app's storage traffic through a :class:`CountingStorageProxy` (the tests'
    own clients and ``tests.harness.Host`` still talk to Azurite directly)."""
    with CountingStorageProxy(azurite) as proxy:
        monkeypatch.setenv("AzureWebJobsStorage", proxy.connection_string)
        runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
        yield proxy


@pytest.fixture(autouse=True)
def secrets_never_logged(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with every logger at DEBUG; none may log a secret, token or refresh token.

    The secrets checked are the fakes' own: the app secret, every refresh token Entra issued (rotated ones
    included), every access token Entra and the managed identity issued, and the Key Vault secret values.
    """
    caplog.set_level(logging.DEBUG)
    for name in logs.SDK_LOGGERS:  # quiet in production (logs.install); here they must show what they would log
        caplog.set_level(logging.DEBUG, logger=name)
    # Requested before the test, so that they are torn down after this check.
    used = [name for name in ("entra", "managed_identity") if name in request.fixturenames]
    fakes = {name: request.getfixturevalue(name) for name in used}
    yield
    secrets = {APP_SECRET, REFRESH_TOKEN}
    if "entra" in fakes:
        secrets |= set(fakes["entra"].issued_access_tokens) | set(fakes["entra"].issued_refresh_tokens)
    if "managed_identity" in fakes:
        secrets |= set(fakes["managed_identity"].issued_tokens)
    # In teardown caplog.text holds only teardown's records: read the setup and call phases themselves. A signal's
    # dimensions are read both ways they leave: the JSON in its message, and its record attributes (customDimensions
    # once OpenTelemetry exports the logs).
    formatter = logging.Formatter("%(name)s %(message)s")
    text = "\n".join(
        formatter.format(r) + " " + repr({name: getattr(r, name) for name in signals.DIMENSIONS if hasattr(r, name)})
        for phase in ("setup", "call")
        for r in caplog.get_records(phase)
    )
    leaked = sorted(secret[:12] + "..." for secret in secrets if secret and secret in text)
    assert not leaked, f"secrets found in the log: {leaked}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: no fake server outlives the session, even one a test started by hand and forgot."""
    stop_all_servers()


@pytest.fixture(autouse=True, scope="session")
def the_checkouts_own_settings_file_is_left_alone() -> Iterator[None]:
    """No test may write the checkout's local.settings.json (a developer's own, holding a real refresh token)."""
    path = Path(__file__).resolve().parents[1] / "local.settings.json"
    before = path.read_bytes() if path.exists() else None
    yield
    after = path.read_bytes() if path.exists() else None
    assert after == before, f"a test wrote {path}"
