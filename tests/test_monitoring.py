"""The alerts and the campaign workbook (infra/app/monitoring.bicep): every KQL query they run is read token by
token. A query that reads signals reads their dimensions from one normalised bag ``d`` (:data:`NORMALISE`):
``customDimensions`` when it holds ``signal`` (OpenTelemetry exports the logs), else the JSON that ends the signal's
message (the Functions host's default logging, which never turns a record's attributes into customDimensions). Each
name it reads must be one the app writes (``shared.signals``), and the JSON parsed the query's way must be what the
app wrote. Each alert has a runbook entry in the docs; the action group exists only with an email address.

The KQL check is lexical (strings, comments, brackets, the dimensions read), not a full grammar: what it guards is
the contract between the queries and the signals, which no deployment would catch (a query reading a name nobody
writes, or reading customDimensions the default logging leaves empty, returns nothing, and its alert never fires).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from shared import logs, signals
from tests.test_infra import INFRA, REPO, body, module_params, parse

ALERTS = INFRA / "app" / "alerts"
WORKBOOK = INFRA / "app" / "workbook.json"
MONITORING = "app/monitoring.bicep"
#: The tables the queries may read: Application Insights' (classic schema) and the workspace's queue logs.
TABLES = {"traces", "requests", "StorageQueueLogs"}
#: What a placeholder in an alert's query is replaced with by the Bicep (any number will do here).
PLACEHOLDER = re.compile(r"__[A-Z]+__")
#: The one stage every query that reads signals normalises their dimensions with (see the module's docstring).
NORMALISE = (
    "| extend d = iff(isnotempty(tostring(customDimensions.signal)), customDimensions, "
    'parse_json(extract(@"(\\{.*\\})$", 1, message)))'
)
#: The regular expression NORMALISE extracts the JSON with (a verbatim KQL string: backslashes as they stand). RE2
#: and Python's re read it alike: ``.`` stops at a newline (a signal's message holds none), ``$`` is the text's end.
EXTRACT = re.compile(re.search(r'extract\(@"([^"]*)"', NORMALISE)[1])  # type: ignore[index]
#: Where a query picks its signals before parsing: ``message startswith_cs "<signal> "`` (the message starts with it,
#: both ways the logs travel), so the parse runs on few rows.
STARTS_WITH = ("startswith", "startswith_cs")

TOKEN = re.compile(
    r"""
    (?P<comment>//[^\n]*)
    | (?P<string>@?"(?:[^"\\\n]|\\.)*"|@?'(?:[^'\\\n]|\\.)*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>\d+(?:\.\d+)?(?:[a-z]+\b)?)
    | (?P<op>==|!=|<=|>=|=~|!~|[|()\[\]{}.,;:=<>+\-*/%!])
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE,
)


class KqlError(AssertionError):
    pass


def tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) of every token but blanks and comments; raises :class:`KqlError` on what KQL cannot hold."""
    found = []
    for match in TOKEN.finditer(query):
        kind = match.lastgroup
        assert kind is not None
        if kind in ("comment", "space"):
            continue
        if kind == "other":
            raise KqlError(f"unexpected character {match.group()!r} (an unterminated string?)")
        found.append((kind, match.group()))
    return found


def check_syntax(query: str) -> list[tuple[str, str]]:
    """The query's tokens, once its brackets balance, it starts with a table or ``let``, and no pipe is empty."""
    found = tokens(query)
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for kind, text in found:
        if kind != "op":
            continue
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            raise KqlError(f"unbalanced {text!r}")
    if stack:
        raise KqlError(f"unclosed {stack[-1]!r}")
    texts = [text for _, text in found]
    if not texts or (texts[0] not in TABLES and texts[0] != "let"):
        raise KqlError(f"a query starts with a table of {sorted(TABLES)} or a let, not {texts[:1]}")
    for before, after in zip(texts, texts[1:], strict=False):
        if before == "|" and after in ("|", ";"):
            raise KqlError("an empty pipe stage")
    if texts[-1] in ("|", ","):
        raise KqlError("a query ends in the middle of a stage")
    tables = {text for kind, text in found if kind == "name" and text in TABLES}
    assert tables, "a query reads no known table"
    return found


def normalising_stages(found: list[tuple[str, str]]) -> list[int]:
    """Where :data:`NORMALISE` starts in the tokens (its ``|``)."""
    stage = tokens(NORMALISE)
    return [index for index in range(len(found)) if found[index : index + len(stage)] == stage]


def dimensions_read(query: str) -> set[str]:
    """Every dimension the query reads from ``d`` (``d.name`` or ``d["name"]``). Raises :class:`KqlError` for
    ``customDimensions`` anywhere but in :data:`NORMALISE` (with the host's default logging it holds no dimension of
    ours) and for a bare ``d`` (e.g. ``bag_unpack(d)``, reading names nobody declared)."""
    found = check_syntax(query)
    inside = {start + offset for start in normalising_stages(found) for offset in range(len(tokens(NORMALISE)))}
    names = set()
    for index, (kind, text) in enumerate(found):
        if index in inside or kind != "name":
            continue
        if text == "customDimensions":
            raise KqlError("customDimensions read outside the normalising stage: the host's default logging fills none")
        if text != "d":
            continue
        following = found[index + 1 : index + 4]
        if len(following) >= 2 and following[0][1] == "." and following[1][0] == "name":
            names.add(following[1][1])
        elif len(following) == 3 and following[0][1] == "[" and following[1][0] == "string" and following[2][1] == "]":
            names.add(following[1][1].lstrip("@")[1:-1])
        else:
            raise KqlError("d read without naming the dimension")
    return names


def signals_filtered(found: list[tuple[str, str]], start: int) -> list[str]:
    """The ``message startswith_cs "<signal> "`` values of the stage right before ``start`` (a normalising stage)."""
    stage_start = max((index for index in range(start) if found[index][1] == "|"), default=-1)
    stage = found[stage_start + 1 : start]
    if not stage or stage[0][1] != "where":
        # the stage before a let's first pipe is the table itself: no filter
        raise KqlError("the normalising stage must follow a where that picks the signals by their message")
    values = []
    for index, (kind, text) in enumerate(stage[:-2]):
        if (
            kind == "name"
            and text == "message"
            and stage[index + 1][1] in STARTS_WITH
            and stage[index + 2][0] == "string"
        ):
            values.append(stage[index + 2][1].strip("@")[1:-1])
    if not values:
        raise KqlError("the normalising stage must follow a where that picks the signals by their message")
    return values


def signal_names_compared(query: str) -> set[str]:
    """The signals a query picks: ``message startswith_cs "x "`` before its normalising stage, and
    ``tostring(d.signal) == "x"`` or ``in (...)`` after it. A message filter without the space after the name would
    take in any signal whose name merely starts the same."""
    found = check_syntax(query)
    values: set[str] = set()
    for start in normalising_stages(found):
        for value in signals_filtered(found, start):
            if not value.endswith(" "):
                raise KqlError(f"message filter {value!r} without the space that ends the signal's name")
            values.add(value[:-1])
    texts = [text for _, text in found]
    for index in range(len(texts) - 4):
        if texts[index : index + 4] != ["d", ".", "signal", ")"]:
            continue
        rest = texts[index + 4 :]
        if rest[0] in ("==", "!="):
            values.add(rest[1].strip("\"'"))
        elif rest[:2] == ["in", "("]:
            for text in rest[2:]:
                if text == ")":
                    break
                if text != ",":
                    values.add(text.strip("\"'"))
    return values


def reads_signals(query: str) -> bool:
    texts = [text for _, text in tokens(query)]
    return "customDimensions" in texts or "d" in texts or "message" in texts


def check_query(query: str) -> None:
    """Everything asked of a query (raises AssertionError): a query that reads signals normalises their dimensions
    after picking them by message, and reads only signals and dimensions the app writes."""
    read = dimensions_read(query)
    assert read <= signals.DIMENSIONS, f"reads {sorted(read - signals.DIMENSIONS)}, which no signal writes"
    compared = signal_names_compared(query)
    assert compared <= signals.SIGNALS, f"waits for {sorted(compared - signals.SIGNALS)}, which no code emits"
    if reads_signals(query):
        assert normalising_stages(check_syntax(query)), "reads signals without the normalising stage"
        assert compared, "reads signals without saying which"


def alert_queries() -> dict[str, str]:
    """Every alert query file, its placeholders filled as the Bicep fills them."""
    return {path.name: PLACEHOLDER.sub("10", path.read_text(encoding="utf-8")) for path in sorted(ALERTS.glob("*.kql"))}


def workbook_queries() -> dict[str, str]:
    """Every query of the workbook (items and parameters), its parameter references filled as the portal does."""
    queries: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("query"), str):
                queries[f"{where}/{node.get('name') or node.get('title')}"] = node["query"]
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")

    walk(json.loads(WORKBOOK.read_text(encoding="utf-8")), "workbook")
    return {name: re.sub(r"\{Campaign\}", "'*'", query) for name, query in queries.items()}


def every_query() -> dict[str, str]:
    return {**alert_queries(), **workbook_queries()}


# The queries


@pytest.mark.parametrize("name", sorted(every_query()))
def test_every_query_reads_only_dimensions_the_app_writes_through_the_normalised_bag(name: str) -> None:
    check_query(every_query()[name])


def test_every_alert_and_workbook_query_that_reads_signals_normalises_them() -> None:
    # Five alerts (the poison queue and the failed invocations read other tables) and every workbook query.
    queries = every_query()
    normalised = {name for name, query in queries.items() if normalising_stages(check_syntax(query))}
    assert normalised == {name for name, query in queries.items() if reads_signals(query)}
    assert set(alert_queries()) - normalised == {"failed-invocations.kql", "poison-queue.kql"}
    assert set(workbook_queries()) <= normalised


def test_the_workbook_shows_what_an_operator_asked_for() -> None:
    queries = workbook_queries()
    assert len(queries) >= 7  # the campaign parameter and six parts
    text = "\n".join(queries.values())
    for signal in (signals.UPGRADE_ACCEPTED, signals.UPGRADE_ENDED, signals.PARTNER_CENTER_THROTTLED):
        assert f'"{signal}"' in text
    assert "percentile(DurationMs, 50)" in text and "percentile(DurationMs, 95)" in text
    assert "d.reason" in text and "d.outcome" in text
    workbook = json.loads(WORKBOOK.read_text(encoding="utf-8"))
    assert workbook["version"] == "Notebook/1.0"


GOOD = f'traces | where message startswith_cs "upgradeEnded " {NORMALISE} | summarize count() by tostring(d.outcome)'


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('traces | where tostring(customDimensions.outcome) == "failed"', "customDimensions only"),
        ('traces | where tostring(customDimensions.signal) == "upgradeEnded"', "customDimensions only, by signal"),
        (GOOD.replace("d.outcome", "d.upgradeID"), "a dimension nobody writes"),
        (GOOD.replace("d.outcome", 'd["token"]'), "a dimension nobody writes, bracketed"),
        (GOOD.replace("summarize count() by tostring(d.outcome)", "evaluate bag_unpack(d)"), "bare d"),
        (GOOD.replace("d.outcome", "customDimensions.outcome"), "customDimensions after normalising"),
        (GOOD.replace('"upgradeEnded "', '"upgradeVanished "'), "a signal nobody emits"),
        (GOOD.replace('"upgradeEnded "', '"upgradeEnded"'), "a message filter without the space"),
        (GOOD.replace('| where message startswith_cs "upgradeEnded " ', ""), "no message filter before the parse"),
        (GOOD + ' | where tostring(d.signal) in ("upgradeVanished")', "a signal nobody emits, after the parse"),
        (GOOD.replace("(\\{.*\\})$", "(\\{.*\\})"), "a normalising stage of its own"),
        (GOOD.replace("summarize count() by tostring(d.outcome)", "summarize count() by (x"), "unclosed"),
        ('traces | where message == "unterminated', "unexpected"),
        (GOOD.replace("traces", "secretTable"), "table"),
    ],
)
def test_the_query_check_finds_what_it_is_there_to_find(query: str, problem: str) -> None:
    # The guard of the guard: each of these must fail the check every query passes; GOOD passes it.
    check_query(GOOD)
    with pytest.raises(AssertionError):
        check_query(query)


def test_the_queries_parse_the_dimensions_the_app_writes(caplog: pytest.LogCaptureFixture) -> None:
    # The records as the app writes them, read the two ways NORMALISE reads them: the JSON that ends the message
    # (the host's default logging: message only) and the record attributes (OpenTelemetry: customDimensions).
    logs.install()
    with caplog.at_level(logging.INFO, logger="shared.signals"), logs.operation(correlationId="c-1", messageId="m 1"):
        signals.emit(
            signals.UPGRADE_ENDED,
            {signals.UPGRADE_ID: "u-1", signals.OUTCOME: "failed", signals.REASON: 'No "eligible" {offer}, sorry'},
        )
        signals.emit(
            signals.PARTNER_CENTER_THROTTLED,
            {signals.OPERATION: "status", signals.HTTP_STATUS: 429, signals.DURATION_MS: 12},
        )
        signals.emit(
            signals.TOKEN_KEEPALIVE, {signals.MFA: False, signals.OUTCOME: "refused", signals.REASON: "refused 'code':"}
        )
    records = [record for record in caplog.records if hasattr(record, signals.SIGNAL)]
    assert len(records) == 3
    for record in records:
        message = record.getMessage()
        signal = getattr(record, signals.SIGNAL)
        assert message.startswith(f"{signal} ")  # the query's message filter
        match = EXTRACT.search(message)
        assert match, message
        from_message = json.loads(match[1])
        as_attributes = {name: getattr(record, name) for name in signals.DIMENSIONS if hasattr(record, name)}
        assert from_message == as_attributes and set(from_message) <= signals.DIMENSIONS
        assert from_message["signal"] == signal and from_message["correlationId"] == "c-1"


# The alert rules


def alerts() -> list[dict[str, Any]]:
    return parse(MONITORING)["variables"]["alerts"]["value"]


def test_every_alert_query_file_is_used_and_every_placeholder_filled() -> None:
    text = (INFRA / MONITORING).read_text(encoding="utf-8")
    used = set(re.findall(r"loadTextContent\('alerts/([\w.-]+)'\)", text))
    assert used == {path.name for path in ALERTS.glob("*.kql")}
    for path in ALERTS.glob("*.kql"):
        for placeholder in set(PLACEHOLDER.findall(path.read_text(encoding="utf-8"))):
            assert f"'{placeholder}'" in text, f"{path.name}: {placeholder} is never replaced"


def test_the_alerts_cover_what_the_operations_need() -> None:
    names = {alert["displayName"] for alert in alerts()}
    assert names == {
        "Poison queue not empty",
        "Failed invocations",
        "Failed or expired outcomes",
        "Upgrade running long",
        "Token refresh refused",
        "Token without MFA",
        "Key Vault secret near expiry",
    }
    rules = body(parse(MONITORING)["resources"]["alertRules"])
    assert rules["kind"] == "LogAlert" and rules["properties"]["autoMitigate"] is True
    [condition] = rules["properties"]["criteria"]["allOf"]
    assert (condition["timeAggregation"], condition["operator"], condition["threshold"]) == ("Count", "GreaterThan", 0)
    # the running-long threshold is half of the tracking window the app runs with
    assert module_params("main.bicep", "monitoringAlerts")["trackingHours"] == "trackingHours"
    [running] = [alert for alert in alerts() if alert["name"] == "upgrade-running-long"]
    assert "trackingHours" in json.dumps(running["query"]) and '"operand_2": 2' in json.dumps(running["query"])


def test_the_action_group_mails_the_azd_address_and_exists_only_with_one() -> None:
    tree = parse(MONITORING)
    group = tree["resources"]["actionGroup"]
    assert group["config"]["condition"] == {
        "operator": {
            "type": "not",
            "operands": {"bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}},
        }
    }
    assert body(group)["properties"]["emailReceivers"][0]["emailAddress"] == "alertEmail"
    assert tree["parameters"]["alertEmail"]["default"] == ""
    assert parse("main.bicep")["parameters"]["alertEmail"]["default"] == ""
    assert module_params("main.bicep", "monitoringAlerts")["alertEmail"] == "alertEmail"
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["alertEmail"]["value"] == "${ALERT_EMAIL=}"


def runbook() -> str:
    """The operations page."""
    return (REPO / "docs" / "operations.md").read_text(encoding="utf-8")


def test_every_alert_has_a_runbook_entry() -> None:
    text = runbook()
    for alert in alerts():
        match = re.search(rf"^#{{3,4}} {re.escape(alert['displayName'])}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
        assert match, f"no runbook entry '### {alert['displayName']}'"
        entry = match[1]
        assert "**What it means**" in entry and "**What to do**" in entry, alert["displayName"]


def test_every_signal_dimension_is_documented() -> None:
    text = runbook()
    for name in sorted(signals.DIMENSIONS | signals.SIGNALS):
        assert f"`{name}`" in text, name


# Type-check suppressions on the new resources (../shared's types do not hold them yet)

#: The leads' shared folder: beside the repository, or where SHARED_DIR says (as .ci/infra-check reads it).
TYPES_INDEX = Path(os.environ.get("SHARED_DIR") or REPO.parent / "shared") / "schemas" / "azure-types" / "index.json"


def test_type_check_suppressions_name_a_reason_and_a_type_still_missing() -> None:
    if not TYPES_INDEX.is_file():
        pytest.skip(f"{TYPES_INDEX} not found: ../shared is not beside this repository")
    known = {name.lower() for name in json.loads(TYPES_INDEX.read_text(encoding="utf-8"))["resources"]}
    for path in sorted(INFRA.rglob("*.bicep")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "bicep-types: ignore" not in line:
                continue
            assert re.search(r"bicep-types: ignore \(.{20,}\)", line), f"{path.name}: no reason: {line.strip()}"
            declared = re.search(r"^resource \w+ '([^']+)'", line)
            # On a declaration: a type missing from ../shared. Once it is extracted there, the mark must go: it
            # would hide real findings. (A mark on another line names a defect of the published type.)
            if declared:
                assert declared[1].lower() not in known, f"{path.name}: {declared[1]} is type-checked now: drop it"


def test_azure_yaml_hands_every_infra_parameter_to_the_pipeline() -> None:
    import yaml

    parameters = (INFRA / "main.parameters.json").read_text(encoding="utf-8")
    # azd sets these itself (its environment, the signed-in principal); the rest are the operator's.
    own = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"}
    wanted = set(re.findall(r"\$\{([A-Z0-9_]+)", parameters)) - own
    azure_yaml = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    assert set(azure_yaml["pipeline"]["variables"]) == wanted
    assert "ALERT_EMAIL" in wanted


def test_queries_are_files_an_operator_can_paste() -> None:
    # Each alert's query file says what it means and names its runbook entry.
    names = {alert["displayName"] for alert in alerts()}
    for path in ALERTS.glob("*.kql"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("//"), path.name
        runbook_entry = re.search(r'Runbook: "([^"]+)"', text)
        assert runbook_entry and runbook_entry[1] in names, path.name


def test_no_trace_record_an_alert_reads_is_sampled_away() -> None:
    # The token alerts fire on one record; Application Insights' adaptive sampling would drop some of them.
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    excluded = set(sampling["excludedTypes"].split(";")) if sampling.get("isEnabled", True) else {"Trace"}
    assert {"Trace", "Exception", "Request"} <= excluded
