import pytest

from shared import settings as s
from shared.errors import InvalidSettingError, MissingSettingError, SettingError

MINIMAL = {s.TENANT_ID_SETTING: "contoso.onmicrosoft.com"}


def test_defaults_are_the_contracts():
    settings = s.Settings.from_env(MINIMAL)
    assert settings.tenant_id == "contoso.onmicrosoft.com"
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.base_url == "https://api.partnercenter.microsoft.com"
    assert settings.key_vault_url is None
    assert (settings.app_id_secret_name, settings.app_secret_secret_name, settings.refresh_token_secret_name) == (
        "partner-center-app-id",
        "partner-center-app-secret",
        "partner-center-refresh-token",
    )
    assert (settings.requests_queue, settings.results_queue, settings.table_name) == (
        "product-upgrade-requests",
        "product-upgrade-results",
        "productupgrades",
    )
    assert settings.max_attempts == 5
    assert settings.storage is None


def test_the_ceiling_on_partner_center_calls_is_unset_by_default_and_read_when_set():
    assert s.Settings.from_env(MINIMAL).max_calls_per_minute is None
    assert s.Settings.from_env({**MINIMAL, s.MAX_CALLS_PER_MINUTE_SETTING: ""}).max_calls_per_minute is None
    assert s.Settings.from_env({**MINIMAL, s.MAX_CALLS_PER_MINUTE_SETTING: "300"}).max_calls_per_minute == 300.0


def test_missing_tenant_is_named():
    with pytest.raises(MissingSettingError) as info:
        s.Settings.from_env({})
    assert str(info.value) == "setting PARTNER_CENTER_TENANT_ID is required but not set"
    assert info.value.name == "PARTNER_CENTER_TENANT_ID"


def test_blank_value_counts_as_missing_and_falls_back_to_default():
    settings = s.Settings.from_env({**MINIMAL, s.BASE_URL_SETTING: "  ", s.KEY_VAULT_URL_SETTING: ""})
    assert settings.base_url == "https://api.partnercenter.microsoft.com"
    assert settings.key_vault_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (s.AUTHORITY_HOST_SETTING, "http://login.example"),
        (s.BASE_URL_SETTING, "not a url"),
        (s.KEY_VAULT_URL_SETTING, "ftp://vault"),
        (s.MAX_ATTEMPTS_SETTING, "five"),
        (s.MAX_ATTEMPTS_SETTING, "0"),
        (s.TENANT_ID_SETTING, "contoso/../x"),
        (s.TENANT_ID_SETTING, "a b"),
        (s.MAX_CALLS_PER_MINUTE_SETTING, "lots"),
        (s.MAX_CALLS_PER_MINUTE_SETTING, "-60"),
    ],
)
def test_malformed_values_are_named_without_echoing_the_value(name, value):
    with pytest.raises(InvalidSettingError) as info:
        s.Settings.from_env({**MINIMAL, name: value})
    assert info.value.name == name
    assert name in str(info.value)
    assert value not in str(info.value)
    assert isinstance(info.value, SettingError)


def test_urls_lose_trailing_slash_and_custom_values_are_kept():
    settings = s.Settings.from_env(
        {
            **MINIMAL,
            s.AUTHORITY_HOST_SETTING: "https://login.partner.microsoftonline.cn/",
            s.BASE_URL_SETTING: "https://partner.partnercenterapi.microsoft.com/",
            s.KEY_VAULT_URL_SETTING: "https://kv.vault.azure.net/",
            s.MAX_ATTEMPTS_SETTING: "3",
            s.REQUESTS_QUEUE_SETTING: "in",
        }
    )
    assert settings.authority_host == "https://login.partner.microsoftonline.cn"
    assert settings.base_url == "https://partner.partnercenterapi.microsoft.com"
    assert settings.key_vault_url == "https://kv.vault.azure.net"
    assert settings.max_attempts == 3
    assert settings.requests_queue == "in"


def test_storage_connection_string_stays_out_of_repr():
    conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0"
    settings = s.Settings.from_env({**MINIMAL, s.STORAGE_SETTING: conn})
    assert settings.storage is not None
    assert settings.storage.connection_string == conn
    assert "c2VjcmV0" not in repr(settings)


def test_identity_based_storage_connection():
    storage = s.storage_connection(
        {
            s.STORAGE_ACCOUNT_NAME_SETTING: "stupgrades",
            s.STORAGE_CREDENTIAL_SETTING: "managedidentity",
            s.STORAGE_CLIENT_ID_SETTING: "11111111-1111-1111-1111-111111111111",
        }
    )
    assert storage == s.StorageConnection(
        queue_service_uri="https://stupgrades.queue.core.windows.net",
        table_service_uri="https://stupgrades.table.core.windows.net",
        managed_identity_client_id="11111111-1111-1111-1111-111111111111",
    )
    explicit = s.storage_connection({s.STORAGE_TABLE_URI_SETTING: "https://t.example/"})
    assert explicit is not None and explicit.table_service_uri == "https://t.example/"
    assert s.storage_connection({}) is None


def test_every_setting_is_listed_once_and_secrets_are_a_subset():
    assert len(set(s.ALL_SETTINGS)) == len(s.ALL_SETTINGS)
    assert set(s.ALL_SETTINGS) >= s.SECRET_SETTINGS
    assert set(s.DEFAULTS) <= set(s.ALL_SETTINGS)


def test_get_settings_reads_on_first_use_and_caches(monkeypatch):
    s.get_settings.cache_clear()
    monkeypatch.delenv(s.TENANT_ID_SETTING, raising=False)
    with pytest.raises(MissingSettingError):
        s.get_settings()
    monkeypatch.setenv(s.TENANT_ID_SETTING, "t1")
    assert s.get_settings().tenant_id == "t1"
    monkeypatch.setenv(s.TENANT_ID_SETTING, "t2")
    assert s.get_settings().tenant_id == "t1"
    s.get_settings.cache_clear()


# -- max attempts and host.json's max dequeue count --------------------------------------------------------


@pytest.mark.parametrize("value", ["6", "10", "100"])
def test_max_attempts_above_max_dequeue_count_is_refused(value):
    with pytest.raises(InvalidSettingError) as info:
        s.Settings.from_env({**MINIMAL, s.MAX_ATTEMPTS_SETTING: value})
    assert info.value.name == s.MAX_ATTEMPTS_SETTING
    assert "from 1 to 5 (host.json's maxDequeueCount)" in str(info.value)
    assert s.Settings.from_env({**MINIMAL, s.MAX_ATTEMPTS_SETTING: "5"}).max_attempts == 5


def test_host_json_max_dequeue_count_and_the_default_agree():
    import json
    from pathlib import Path

    host = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())
    max_dequeue_count = host["extensions"]["queues"]["maxDequeueCount"]
    assert max_dequeue_count == s.MAX_DEQUEUE_COUNT == int(s.DEFAULTS[s.MAX_ATTEMPTS_SETTING])


# -- the token keep-alive --------------------------------------------------------------------------------------


def test_token_keepalive_days_default_to_seven_and_accept_fractions():
    assert s.Settings.from_env(MINIMAL).token_keepalive_days == 7.0
    assert s.Settings.from_env({**MINIMAL, s.TOKEN_KEEPALIVE_DAYS_SETTING: "0.5"}).token_keepalive_days == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "90", "120", "seven", "nan"])
def test_token_keepalive_days_outside_the_refresh_tokens_lifetime_are_refused(value):
    with pytest.raises(InvalidSettingError) as info:
        s.Settings.from_env({**MINIMAL, s.TOKEN_KEEPALIVE_DAYS_SETTING: value})
    assert info.value.name == s.TOKEN_KEEPALIVE_DAYS_SETTING
    assert "below 90" in str(info.value)


def test_tracking_follows_an_upgrade_for_a_week_and_checks_at_most_hourly_by_default():
    settings = s.Settings.from_env(MINIMAL)
    assert (settings.poll_seconds, settings.tracking_hours, settings.max_poll_seconds) == (300.0, 168.0, 3600.0)
    custom = s.Settings.from_env({**MINIMAL, s.MAX_POLL_SECONDS_SETTING: "900.5"})
    assert custom.max_poll_seconds == 900.5
    with pytest.raises(InvalidSettingError, match=s.MAX_POLL_SECONDS_SETTING):
        s.Settings.from_env({**MINIMAL, s.MAX_POLL_SECONDS_SETTING: "0"})


def test_the_user_assigned_identity_is_read_from_azure_client_id():
    assert s.Settings.from_env(MINIMAL).azure_client_id is None
    client_id = "00000000-0000-0000-0000-0000000000aa"
    assert s.Settings.from_env({**MINIMAL, s.AZURE_CLIENT_ID_VARIABLE: f" {client_id} "}).azure_client_id == client_id


def test_the_instance_is_named_by_the_platform_else_by_the_host_name():
    assert s.instance_name({s.INSTANCE_ID_VARIABLE: "a1b2c3"}) == "a1b2c3"
    assert s.instance_name({s.INSTANCE_ID_VARIABLE: " "}) == s.socket.gethostname()
    assert s.instance_name({}) == s.socket.gethostname()


@pytest.mark.parametrize(
    ("value", "attempts"),
    [(None, 5), ("3", 3), ("1", 1), ("0", 1), ("-2", 1), ("99", s.MAX_DEQUEUE_COUNT), ("three", 5)],
)
def test_max_attempts_read_alone_stays_within_the_hosts_dequeue_count(value, attempts):
    env = {} if value is None else {s.MAX_ATTEMPTS_SETTING: value}
    assert s.max_attempts_alone(env) == attempts


#: Modules that read the environment on purpose, besides shared/settings.py: requests' own proxy and CA variables,
#: the command line's settings sources and consent (which writes settings), local secrets, and the health route
#: (names of present settings only).
ENVIRONMENT_READERS = {
    "shared/http_session.py",
    "shared/cli/environment.py",
    "shared/cli/consent.py",
    "shared/partner_center/secrets.py",
    "shared/functions/health.py",
}


def environment_readers(root):
    return {
        path.relative_to(root).as_posix()
        for path in (root / "shared").rglob("*.py")
        if "os.environ" in path.read_text(encoding="utf-8") or "os.getenv" in path.read_text(encoding="utf-8")
    } - {"shared/settings.py"}


def test_settings_are_read_through_the_settings_module_only():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert environment_readers(root) == ENVIRONMENT_READERS


def test_the_environment_check_names_a_new_reader(tmp_path):
    (tmp_path / "shared" / "functions").mkdir(parents=True)
    (tmp_path / "shared" / "functions" / "new_route.py").write_text('import os\nos.environ.get("X")\n')
    assert environment_readers(tmp_path) == {"shared/functions/new_route.py"}
