import logging

from shared import logs


def test_redact_patterns():
    jwt = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJl"
    samples = {
        f"Authorization: Bearer {jwt}": jwt,
        "grant_type=refresh_token&refresh_token=0.ARoAv4j5cvGGr0&client_secret=s3cr3t~value": "s3cr3t~value",
        '{"access_token": "opaque-123", "expires_in": 3599}': "opaque-123",
        "AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqF==;": "Eby8vdM02xNOcqF",
        "https://app.azurewebsites.net/api/productupgrades/x?code=abcDEF123": "abcDEF123",
        "rt " + "0.A" + "x" * 300: "x" * 300,
    }
    for text, secret in samples.items():
        redacted = logs.redact(text)
        assert secret not in redacted, text
        assert logs.REDACTED in redacted


def test_registered_secret_is_redacted_anywhere():
    logs.register_secret("short-but-registered")
    assert logs.redact("value short-but-registered here") == f"value {logs.REDACTED} here"
    logs.register_secret("tiny")  # too short to register safely: would redact ordinary words
    assert logs.redact("tiny") == "tiny"


def test_ordinary_text_is_untouched():
    text = "Product upgrade 42d075a4-bfe7-43e7-af6d-7c68a57edcb4 accepted for customer x (Azure); code 900109"
    assert logs.redact(text) == text


def test_installed_factory_adds_ids_and_redacts_args_and_tracebacks(caplog):
    logs.install()
    logs.install()  # idempotent
    log = logging.getLogger("shared.test")
    with caplog.at_level(logging.INFO, logger="shared.test"):
        with logs.operation(correlationId="corr-1"):
            logs.bind(requestId="req-1")
            log.info("token %s", "Bearer abc.def")
            try:
                raise ValueError("refresh_token=verysecretvalue")
            except ValueError:
                log.exception("failed")
        log.info("outside")
    first, second, third = caplog.records
    assert first.getMessage() == f"token Bearer {logs.REDACTED} [correlationId=corr-1 requestId=req-1]"
    assert first.correlationId == "corr-1" and first.requestId == "req-1"
    assert "verysecretvalue" not in caplog.text and "refresh_token=[REDACTED]" in caplog.text
    assert second.getMessage().endswith("[correlationId=corr-1 requestId=req-1]")
    assert third.getMessage() == "outside"
    assert logs.current_ids() == {}


def test_sdk_loggers_quiet_at_info_our_own_not(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.NOTSET, logger="azure.core")  # as in a fresh worker (the fixture set DEBUG)
    caplog.set_level(logging.DEBUG, logger="azure.identity")  # an operator's choice
    logs.quiet_sdk_loggers()
    assert logging.getLogger("azure.core").level == logging.WARNING
    http_logging = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert not http_logging.isEnabledFor(logging.INFO) and http_logging.isEnabledFor(logging.WARNING)
    assert logging.getLogger("azure.identity").level == logging.DEBUG
    assert logging.getLogger("shared.workflow").isEnabledFor(logging.INFO)
