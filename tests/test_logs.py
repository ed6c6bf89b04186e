import io
import json
import logging
import traceback

import pytest

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


# -- a log call that cannot format -------------------------------------------------------------------------


@pytest.fixture
def stream_log():
    """A logger with a plain StreamHandler, as the Functions worker and a console have."""
    logs.install()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("shared.test.stream")
    log.addHandler(handler)
    try:
        yield log, buffer
    finally:
        log.removeHandler(handler)


@pytest.mark.parametrize(
    ("fmt", "args"), [("app secret %s %s", ("plain-secret-arg",)), ("count %d", ("plain-secret-arg",))]
)
def test_a_log_call_that_cannot_format_never_emits_its_arguments(stream_log, capsys, caplog, fmt, args):
    log, buffer = stream_log
    log.warning(fmt, *args)
    emitted = buffer.getvalue() + capsys.readouterr().err + caplog.text
    assert "plain-secret-arg" not in emitted
    assert "log call failed to format: TypeError; 1 argument(s) withheld" in buffer.getvalue()


class CollectingHandler(logging.Handler):
    """Reads ``exc_info`` itself, as OpenTelemetry's LoggingHandler (and so Application Insights) does."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        exc_type, exc_value, tb = record.exc_info
        self.seen.append(("".join(traceback.format_exception(exc_type, exc_value, tb)), exc_type.__name__, record))


def test_exc_info_is_redacted_for_handlers_that_read_it():
    logs.install()
    handler = CollectingHandler()
    log = logging.getLogger("shared.test.otel")
    log.addHandler(handler)
    inner_secret, outer_secret = "inner-" + "secret-1", "outer-" + "secret-2"  # not in the traceback's source lines
    try:
        try:
            try:
                raise KeyError(f"client_secret={inner_secret}")
            except KeyError as inner:
                raise ValueError(f"token request failed: refresh_token={outer_secret}") from inner
        except ValueError:
            log.exception("failed")
        try:
            raise ValueError("nothing secret here")
        except ValueError:
            log.exception("plain")
    finally:
        log.removeHandler(handler)
    (text, name, record), (plain_text, plain_name, _) = handler.seen
    assert "inner-secret-1" not in text and "outer-secret-2" not in text
    assert "ValueError: token request failed: refresh_token=[REDACTED]" in text and "test_logs.py" in text
    assert name == "RedactedException" and "outer-secret-2" not in str(record.exc_info[1])
    assert "inner-secret-1" not in record.exc_text and "client_secret=[REDACTED]" in record.exc_text
    # an exception with nothing to hide is left as it was
    assert plain_name == "ValueError" and "nothing secret here" in plain_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("headers: x-functions-key: fnKEY0123456789", "fnKEY0123456789"),
        ("{'x-functions-key': 'fnKEY0123456789', 'Accept': 'application/json'}", "fnKEY0123456789"),
        ('{"code": "fnKEY0123456789", "sig": "sv2Zsig=="}', "fnKEY0123456789"),
        ('{"sig": "sv2Zsig/abc=="}', "sv2Zsig/abc"),
        ("{'client_secret': 'Q~secret.value', 'client_id': 'x'}", "Q~secret.value"),
        ("{'refresh_token': \"0.AQ-rt\"}", "0.AQ-rt"),
        ("redirect=https%3A%2F%2Fapp%2Fapi%3Fcode%3DfnKEY0123%26x%3D1", "fnKEY0123"),
        ("next=%2Fapi%2Fx%3Fa%3D1%26code%3DfnKEY0123", "fnKEY0123"),
        ('{"value": "kv-secret-\\"quoted\\"-tail"}', "tail"),
    ],
)
def test_more_shapes_of_secrets_are_redacted(text, secret):
    redacted = logs.redact(text)
    assert secret not in redacted, redacted
    assert logs.REDACTED in redacted


def test_error_codes_stay_readable():
    for text in ("Partner Center answered 403 with error 900108", "{'code': 900108}", "code 900109 (409)"):
        assert logs.redact(text) == text


def test_ids_cannot_forge_log_lines_or_fields(caplog):
    logs.install()
    log = logging.getLogger("shared.test.forge")
    forged = "c-1] [requestId=forged\nERROR fake line"
    with (
        caplog.at_level(logging.INFO, logger="shared.test.forge"),
        logs.operation(correlationId=forged, messageId="m-1"),
    ):
        log.info("hello")
        with logs.operation(requestId="x" * 1000):
            log.info("long")
    first, second = caplog.records
    message = first.getMessage()
    assert "\n" not in message
    assert message == 'hello [correlationId="c-1] [requestId=forged\\nERROR fake line" messageId=m-1]'
    assert first.correlationId == '"c-1] [requestId=forged\\nERROR fake line"' and first.messageId == "m-1"
    assert not hasattr(first, "requestId")
    assert second.requestId == "x" * logs.MAX_FIELD_LENGTH


def test_sdk_loggers_quiet_at_info_our_own_not(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.NOTSET, logger="azure.core")  # as in a fresh worker (the fixture set DEBUG)
    caplog.set_level(logging.DEBUG, logger="azure.identity")  # an operator's choice
    logs.quiet_sdk_loggers()
    assert logging.getLogger("azure.core").level == logging.WARNING
    http_logging = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert not http_logging.isEnabledFor(logging.INFO) and http_logging.isEnabledFor(logging.WARNING)
    assert logging.getLogger("azure.identity").level == logging.DEBUG
    assert logging.getLogger("shared.upgrades.workflow").isEnabledFor(logging.INFO)


# -- signals -----------------------------------------------------------------------------------------------------


def test_signal_records_are_redacted_in_their_message_and_their_dimensions(caplog):
    # A signal's dimensions are the JSON ending its message (what reaches traces with the host's default logging) and
    # record attributes (customDimensions once OpenTelemetry exports the logs): both pass the same redaction.
    from shared import signals

    logs.install()
    logs.register_secret("registered-secret-value")
    jwt = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJl"
    leaks = {
        signals.REASON: f"token refused: Bearer {jwt}",
        signals.ERROR_CODE: "registered-secret-value",
        signals.PARTNER_CENTER_STATUS: "https://app/api/x?code=fnKEY0123456789",
        signals.CAMPAIGN: "refresh_token=0.AQ-secret",
    }
    with caplog.at_level(logging.INFO, logger="shared.signals"):
        signals.emit(signals.STATUS_CHECK_FAILED, leaks)
    [record] = [r for r in caplog.records if getattr(r, "signal", None) == signals.STATUS_CHECK_FAILED]
    attributes = {name: getattr(record, name) for name in signals.DIMENSIONS if hasattr(record, name)}
    in_message = json.loads(record.getMessage().partition(" ")[2])
    assert in_message == attributes
    emitted = record.getMessage() + repr(attributes)
    for secret in (jwt, "registered-secret-value", "fnKEY0123456789", "0.AQ-secret"):
        assert secret not in emitted, secret
    assert record.reason == in_message["reason"] == f"token refused: Bearer {logs.REDACTED}"
