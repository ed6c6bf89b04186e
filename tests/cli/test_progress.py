"""The progress bar, the plain progress lines and the summary tables."""

from __future__ import annotations

import io
import re
import time

import pytest

from shared.cli.progress import CampaignProgress, summary_tables
from tests.cli.helpers import Cli, customers, read_report, write_csv
from tests.cli.terminal import Terminal

# -- progress and summary ------------------------------------------------------------------------------------


def test_live_progress_bar_shows_counts_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # an operator's terminal; rich reads its width from COLUMNS
    stream = io.StringIO()
    with CampaignProgress(10, "bulk wave", stream=stream, force_terminal=True) as progress:
        for status in ("accepted", "accepted", "rejected"):
            progress.finished(status)
        progress.count("throttled", 2)
        progress.restart(2, "wait wave", ("completed", "failed", "throttled"))
        progress.finished("completed")
    text = stream.getvalue()
    assert progress.live
    assert "bulk wave" in text and "3/10" in text and "/s" in text and "ETA" in text
    assert "accepted 2 rejected 1 failed 0 throttled 2" in text
    assert "wait wave" in text and "1/2" in text and "completed 1 failed 0 throttled 2" in text


def test_plain_progress_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    with CampaignProgress(4, "bulk", stream=stream, interval=0.05) as progress:
        progress.carry(["accepted", "skipped"])  # from the last run: no work now, so no rate yet
        assert progress.line().startswith("bulk: 2/4 done, 0.0/s, ETA -; accepted 1")
        progress.finished("accepted")
        time.sleep(0.2)
        progress.restart(1, "wait", ("completed", "failed"))
        progress.finished("completed")
    lines = stream.getvalue().splitlines()
    assert not progress.live and len(lines) >= 4
    assert lines[0].startswith("bulk: 0/4 done")
    assert any(line.startswith("bulk: 3/4 done") and "ETA" in line for line in lines)
    assert lines[-1].startswith("wait: 1/1 done") and lines[-1].endswith("completed 1 failed 0")


def test_summary_tables_count_by_status_error_and_outcome() -> None:
    tables = summary_tables({"accepted": 3, "rejected": 1}, {"not_eligible": 1}, {})
    assert [t.title for t in tables] == ["Rows by status", "Rows by error code"]
    assert tables[0].row_count == 3  # two statuses and the total


def test_the_live_bar_fits_an_80_column_terminal(cli: Cli) -> None:
    # A real terminal of 80 columns (a pseudo-terminal): rich draws what an operator sees; no drawn line may be
    # wider, and nothing may be cut short (the issue was `16… 0.… ETA 0:1…`).
    ids = customers(24)
    path = write_csv(cli.folder / "a-campaign-with-a-rather-long-name.csv", [{"customerId": c} for c in ids])
    cli.partner_center.delay_next(24, seconds=0.3, match="/v1/productupgrades")  # long enough to be drawn live
    args = ["bulk", str(path), "--report", "r.csv", "--concurrency", "2"]
    terminal = Terminal(args, cwd=cli.folder, env=cli.env(), columns=80)
    try:
        code = terminal.proc.wait(timeout=120)
    finally:
        terminal.close()

    assert code == 0, terminal.text
    drawn = terminal.drawn_lines
    bars = [line for line in drawn if "ETA" in line]
    # What rich draws (the bar and its counters); plain messages, such as which settings file was read, wrap.
    live = bars + [line for line in drawn if line.startswith("  accepted ")]
    assert max(len(line) for line in live) <= 80, max(live, key=len)
    # Every number whole: done/total, rate and ETA end the line uncut (only a long campaign name may be cut).
    assert bars and all(re.search(r" \d+/24 (\d+\.\d/s|-/s) ETA (\d+:\d\d:\d\d|-:--:--)$", line) for line in bars), bars
    assert any("24/24" in line for line in bars)
    assert "  accepted 24 rejected 0 failed 0 throttled 0" in drawn


# -- when and why the campaign waits for Partner Center ----------------------------------------------------------


def test_the_waiting_text_says_why_and_for_how_long() -> None:
    from shared.cli.progress import waiting_text
    from shared.partner_center.pace import PaceWait

    assert waiting_text(PaceWait(0.0, 0, 0.0)) is None
    assert waiting_text(PaceWait(24.2, 0, 0.0)) == "throttled by Partner Center, resuming in 25 s"
    assert waiting_text(PaceWait(0.0, 1, 29.5)) == "throttled by Partner Center: 1 customer held, retrying in 30 s"
    assert waiting_text(PaceWait(0.0, 3, 2.0)) == "throttled by Partner Center: 3 customers held, retrying in 2 s"


def test_the_bar_and_the_plain_line_say_when_and_why_calls_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    note = ["throttled by Partner Center, resuming in 25 s"]
    stream = io.StringIO()
    with CampaignProgress(10, "bulk wave", stream=stream, force_terminal=True) as progress:
        progress.show_waiting(lambda: note[0])
        progress.finished("accepted")
        time.sleep(0.4)  # a refresh of the live display (4 a second)
    assert "throttled by Partner Center, resuming in 25 s" in stream.getvalue()
    plain = CampaignProgress(10, "bulk", stream=io.StringIO())
    plain.show_waiting(lambda: note[0])
    assert plain.line().endswith("throttled 0; throttled by Partner Center, resuming in 25 s")
    note[0] = None
    assert plain.line().endswith("throttled 0")


def test_one_always_throttled_customer_does_not_pause_a_200_row_campaign(cli: Cli) -> None:
    from sandbox.customers import THROTTLED, THROTTLED_RETRY_AFTER

    cli.partner_center.throttle_customer(THROTTLED, THROTTLED_RETRY_AFTER)  # every call 429, Retry-After 30
    ids = customers(199)
    ids.insert(7, THROTTLED)
    path = write_csv(cli.folder / "wave.csv", [{"customerId": c} for c in ids])
    proc = cli.spawn("bulk", str(path), "--report", "report.csv", "--json")
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip())
    proc.wait(timeout=120)
    # While the held customer waits its Retry-After, the others finished: the campaign (named after the CSV,
    # "wave") was never paused.
    held = [line for line in lines if "1 customer held" in line]
    assert held and any(line.startswith("bulk wave: 199/200 done") for line in held), lines
    assert not any("resuming in" in line for line in lines)  # no partner-wide pause
    report = {r["customerId"]: r for r in read_report(cli.folder / "report.csv")}
    assert report[THROTTLED]["status"] == "failed" and report[THROTTLED]["errorCode"] == "throttled"
    assert sum(r["status"] == "accepted" for r in report.values()) == 199
    assert len(cli.partner_center.requests_to("/v1/productupgrades", "POST")) == 199 + 2  # it was asked twice
