"""Secrets from the loopback Key Vault, read with the real SecretClient and DefaultAzureCredential."""

import json
import threading
import time

import pytest

from sandbox import (
    APP_ID,
    APP_ID_SECRET_NAME,
    APP_SECRET,
    APP_SECRET_SECRET_NAME,
    DEFAULT_SECRETS,
    REFRESH_TOKEN,
    REFRESH_TOKEN_SECRET_NAME,
)
from sandbox.server import Response
from shared.errors import MissingSettingError, SecretStoreError
from shared.partner_center.secrets import EnvironmentSecretStore, PartnerCenterCredentials
from tests.harness import vault_store


def test_reads_each_secret_once_per_process(key_vault):
    store = vault_store(key_vault)
    first = store.load()
    assert first == PartnerCenterCredentials(APP_ID, APP_SECRET, REFRESH_TOKEN)
    assert store.load() is first
    assert key_vault.gets == {APP_ID_SECRET_NAME: 1, APP_SECRET_SECRET_NAME: 1, REFRESH_TOKEN_SECRET_NAME: 1}
    store.invalidate()
    store.load()
    assert key_vault.gets[APP_SECRET_SECRET_NAME] == 2


def test_credentials_repr_hides_secrets():
    text = repr(PartnerCenterCredentials(APP_ID, APP_SECRET, REFRESH_TOKEN))
    assert APP_ID in text and APP_SECRET not in text and REFRESH_TOKEN not in text


def test_missing_secret_is_named(key_vault):
    key_vault.delete_secret(APP_SECRET_SECRET_NAME)
    with pytest.raises(SecretStoreError) as info:
        vault_store(key_vault).load()
    assert str(info.value) == f"Key Vault secret {APP_SECRET_SECRET_NAME} could not be read: not found (404)"


def test_empty_secret_is_an_error(key_vault):
    key_vault.set_secret(REFRESH_TOKEN_SECRET_NAME, "")
    with pytest.raises(SecretStoreError, match="is empty"):
        vault_store(key_vault).load()


def test_vault_failing_is_a_secret_store_error_after_retries(key_vault):
    key_vault.fail_next(20, 500, {"error": {"code": "InternalError", "message": "boom"}}, match="secrets")
    with pytest.raises(SecretStoreError, match="Key Vault answered 500"):
        vault_store(key_vault, retry_total=2).load()


def test_forbidden_identity(key_vault):
    key_vault.forbidden = True
    with pytest.raises(SecretStoreError, match="403"):
        vault_store(key_vault).load()


def test_save_refresh_token_writes_a_new_version(key_vault):
    store = vault_store(key_vault)
    store.load()
    store.save_refresh_token("rotated-refresh-token-value")
    assert key_vault.puts == [(REFRESH_TOKEN_SECRET_NAME, "rotated-refresh-token-value")]
    assert key_vault.get_value(REFRESH_TOKEN_SECRET_NAME) == "rotated-refresh-token-value"
    assert store.load().refresh_token == "rotated-refresh-token-value"
    latest = key_vault.latest(REFRESH_TOKEN_SECRET_NAME)
    assert latest.expires is not None
    assert abs(latest.expires - (time.time() + 90 * 86400)) < 60  # the token's own 90-day sliding lifetime


def test_save_refresh_token_refused_without_secrets_officer(key_vault):
    key_vault.read_only = True
    with pytest.raises(SecretStoreError) as info:
        vault_store(key_vault).save_refresh_token("rotated-refresh-token-value")
    assert "rotated-refresh-token-value" not in str(info.value)


def test_environment_store():
    env = {"PARTNER_CENTER_APP_ID": APP_ID, "PARTNER_CENTER_APP_SECRET": APP_SECRET}
    store = EnvironmentSecretStore(env)
    with pytest.raises(MissingSettingError, match="PARTNER_CENTER_REFRESH_TOKEN"):
        store.load()
    env["PARTNER_CENTER_REFRESH_TOKEN"] = REFRESH_TOKEN
    assert store.load().refresh_token == REFRESH_TOKEN
    store.save_refresh_token("in-memory-rotated")
    assert store.load().refresh_token == "in-memory-rotated"
    assert env["PARTNER_CENTER_REFRESH_TOKEN"] == REFRESH_TOKEN


def test_app_reads_secrets_from_key_vault_with_managed_identity(monkeypatch, app_env, key_vault, managed_identity):
    from shared.settings import Settings
    from shared.upgrades import runtime
    from tests.harness import FAST_POLICY, use_key_vault

    use_key_vault(monkeypatch, key_vault.url)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY))
    for customer in ("00000000-0000-0000-0000-000000000201", "00000000-0000-0000-0000-000000000202"):
        assert app_env.create({"customerId": customer}).status_code == 202
    assert key_vault.gets == {APP_ID_SECRET_NAME: 1, APP_SECRET_SECRET_NAME: 1, REFRESH_TOKEN_SECRET_NAME: 1}
    assert managed_identity.requests  # DefaultAzureCredential went through the managed identity
    # the rotated refresh token went back to the vault, once
    assert key_vault.puts == [(REFRESH_TOKEN_SECRET_NAME, app_env.entra.current_refresh_token)]


def test_failing_rotation_write_leaves_the_upgrade_successful(monkeypatch, app_env, key_vault, caplog):
    from shared.settings import Settings
    from shared.upgrades import runtime
    from tests.harness import FAST_POLICY, use_key_vault

    key_vault.read_only = True
    use_key_vault(monkeypatch, key_vault.url)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY))
    assert app_env.create({"customerId": "00000000-0000-0000-0000-000000000203"}).status_code == 202
    assert "rotated refresh token could not be stored" in caplog.text
    assert app_env.entra.current_refresh_token not in caplog.text


def test_vault_down_is_502(monkeypatch, app_env, key_vault):
    from shared.settings import Settings
    from shared.upgrades import runtime
    from tests.harness import FAST_POLICY, use_key_vault

    key_vault.forbidden = True
    use_key_vault(monkeypatch, key_vault.url)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY))
    response = app_env.create({"customerId": "00000000-0000-0000-0000-000000000204"})
    assert response.status_code == 502
    assert json.loads(response.get_body())["type"].endswith("secret_store_error")


def test_a_slow_vault_is_given_up_within_the_invocation_budget(key_vault):
    from shared.retry import time_budget

    key_vault.delay_next(20, 3.0, match="secrets")
    started = time.monotonic()
    with time_budget(1.0), pytest.raises(SecretStoreError):
        vault_store(key_vault).load()
    assert time.monotonic() - started < 2.5


def test_the_three_reads_are_in_flight_together(key_vault):
    """The vault holds each authenticated read until all three have arrived: reads one after another
    would break the barrier (a 503 the test sees as a failure), reads side by side all pass it."""
    barrier = threading.Barrier(len(DEFAULT_SECRETS), timeout=10)
    inner = key_vault.handle

    def handle(req):
        if req.method == "GET" and req.headers.get("Authorization") and req.path.lower().startswith("/secrets/"):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return Response.json(503, {"error": {"code": "NotConcurrent", "message": "reads came one by one"}})
        return inner(req)

    key_vault.handle = handle
    store = vault_store(key_vault, retry_total=0)
    assert store.load() == PartnerCenterCredentials(APP_ID, APP_SECRET, REFRESH_TOKEN)
    assert key_vault.gets == {name: 1 for name in DEFAULT_SECRETS}
