"""Errors about the environment: each names the service and its address, says what to check, and exits 4.

The services are really down here (a port nothing listens on) or really untrusted (a certificate from another
CA); ``bulk`` still writes its report of what it did.
"""

from __future__ import annotations

import trustme

from sandbox.azurite import free_port
from shared.cli.diagnosis import DEVELOPMENT_TABLE_ENDPOINT, storage_address
from shared.settings import StorageConnection
from tests.cli.helpers import Cli, customers, read_report, write_csv


def a_campaign(cli: Cli) -> str:
    rows = [{"customerId": c} for c in customers(3)] + [{"customerId": "not-a-guid"}]
    return str(write_csv(cli.folder / "wave.csv", rows))


def test_partner_center_down_exits_4_naming_it_and_writes_the_report(cli: Cli, monkeypatch) -> None:
    down = f"https://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PARTNER_CENTER_BASE_URL", down)

    ran = cli.run("bulk", a_campaign(cli), "--report", "r.csv", "--concurrency", "1")

    assert ran.code == 4, ran.stderr
    assert "Partner Center could not be reached (ConnectionError)" in ran.stderr
    assert f"address: {down}/v1/productupgrades" in ran.stderr
    assert "PARTNER_CENTER_BASE_URL" in ran.stderr and "is running" in ran.stderr
    # What it did is reported: the invalid row; the rows never sent are left for a resume.
    report = read_report(cli.folder / "r.csv")
    assert [row["status"] for row in report] == ["rejected"]
    assert "report: r.csv (1 of 4 rows)" in ran.stderr


def test_entra_down_exits_4_before_anything_is_sent(cli: Cli, monkeypatch) -> None:
    down = f"https://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PARTNER_CENTER_AUTHORITY_HOST", down)

    ran = cli.run("bulk", a_campaign(cli), "--report", "r.csv", "--json")

    assert ran.code == 4, ran.stderr
    assert ran.json()["error"]["code"] == "upstream_unavailable"
    assert "Entra ID token endpoint could not be reached" in ran.stderr
    assert f"address: {down}/" in ran.stderr and "PARTNER_CENTER_AUTHORITY_HOST" in ran.stderr
    assert cli.partner_center.create_posts == 0
    assert (cli.folder / "r.csv").exists()


def test_an_untrusted_certificate_is_not_retried_and_names_the_ca_bundle(cli: Cli, monkeypatch, tmp_path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    ran = cli.run("upgrade", customers(1)[0])

    assert ran.code == 4, ran.stderr
    assert "TLS certificate was not trusted (SSLError), not retried" in ran.stderr
    assert f"the CA bundle in use is {other_ca} (from REQUESTS_CA_BUNDLE)" in ran.stderr
    assert "after" not in ran.stderr.split("not trusted")[1].split(";")[0]


def test_storage_down_exits_4_naming_the_storage_address(cli: Cli, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;",
    )

    ran = cli.run("bulk", a_campaign(cli), "--report", "r.csv", "--enqueue", "--concurrency", "1")

    assert ran.code == 4, ran.stderr
    assert f"Azure Storage at http://127.0.0.1:{port}/devstoreaccount1 could not be reached" in ran.stderr
    assert "AzureWebJobsStorage" in ran.stderr and "a2V5" not in ran.stderr
    assert [row["status"] for row in read_report(cli.folder / "r.csv")] == ["rejected"]


def test_the_storage_address_never_carries_a_key_or_a_sas() -> None:
    assert storage_address(StorageConnection(connection_string="UseDevelopmentStorage=true")) == (
        DEVELOPMENT_TABLE_ENDPOINT
    )
    keyed = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net"
    assert storage_address(StorageConnection(connection_string=keyed)) == "https://acct.table.core.windows.net"
    sas = "TableEndpoint=https://acct.table.core.windows.net/?sv=x&sig=secret;SharedAccessSignature=sv=x&sig=secret"
    assert storage_address(StorageConnection(connection_string=sas)) == "https://acct.table.core.windows.net/"
    assert storage_address(StorageConnection(table_service_uri="https://acct.table.core.windows.net")) == (
        "https://acct.table.core.windows.net"
    )
