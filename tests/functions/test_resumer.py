"""Resuming tracking that has stopped: the timer function over Azurite and the loopback Partner Center."""

import logging
from dataclasses import replace
from datetime import timedelta

from sandbox import CUSTOMER_ID
from shared.settings import StorageConnection
from shared.store.records import UpgradeRecord, utc_now
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime
from shared.upgrades.tracking import MIN_STALL_SECONDS
from tests.harness import Host, run_resume_function, use_unreachable_storage

LONG_AGO = timedelta(seconds=MIN_STALL_SECONDS + 60)


def ledger_of(azurite) -> TableLedger:
    return TableLedger(
        StorageConnection(connection_string=azurite.connection_string), runtime.get_runtime().settings.table_name
    )


def lose_the_tracking_messages(host: Host) -> None:
    """What a failed first schedule, or a check gone to the poison queue, leaves: no check on its way."""
    host.tracking.clear_messages()


def aged(ledger: TableLedger, **changes) -> UpgradeRecord:
    """The one upgrade record, last changed long ago (and with ``changes``)."""
    [record] = ledger.list_upgrades().items
    written = ledger.update_upgrade(replace(record, updated_at=utc_now() - LONG_AGO, **changes))
    assert written is not None
    return written


def test_an_upgrade_whose_checks_stopped_is_checked_again_and_ends_once(stored_app, azurite, caplog):
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    lose_the_tracking_messages(host)
    record = aged(ledger_of(azurite))

    with caplog.at_level(logging.WARNING):
        run_resume_function()
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()
    run_resume_function()  # ended and sent: nothing more to resume

    assert [o["outcome"] for o in host.outcomes] == ["completed"]
    assert f"Tracking of upgrade {record.upgrade_id} had stopped" in caplog.text
    [ended] = ledger_of(azurite).list_upgrades().items
    assert ended.state == "completed" and ended.outcome_sent
    assert host.tracking.get_queue_properties().approximate_message_count == 0


def test_upgrades_still_followed_are_left_alone(stored_app, azurite):
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})  # running, its first check on the way
    run_resume_function()
    assert host.tracking.get_queue_properties().approximate_message_count == 1
    assert stored_app.partner_center.status_polls == 0


def test_an_ended_upgrade_whose_outcome_never_went_out_is_sent_once(stored_app, azurite):
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    lose_the_tracking_messages(host)
    # its worker claimed the outcome long ago and was gone before sending it; no check was left to notice
    claimed_at = utc_now() - LONG_AGO
    aged(ledger_of(azurite), state="completed", ended_at=claimed_at, outcome_claimed_at=claimed_at, checks=1)

    run_resume_function()
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()

    assert [o["outcome"] for o in host.outcomes] == ["completed"]
    assert stored_app.partner_center.status_polls == 0  # the ledger knew it had ended
    assert ledger_of(azurite).list_upgrades().items[0].outcome_sent


def test_storage_down_waits_for_the_next_run(monkeypatch, app_env, caplog):
    use_unreachable_storage(monkeypatch)
    with caplog.at_level(logging.WARNING):
        run_resume_function(past_due=True)  # returns: the host would otherwise log a failed run every 15 min
    assert "Could not resume stopped tracking: the ledger could not be read" in caplog.text


def test_without_storage_there_is_nothing_to_resume(app_env, caplog):
    with caplog.at_level(logging.INFO):
        run_resume_function()
    assert "no upgrade is tracked, none to resume" in caplog.text


def test_a_long_running_upgrade_whose_next_check_is_far_off_is_left_alone(stored_app, azurite):
    # Checks slow down after an upgrade's first hour (up to an hour apart): a record unchanged for 40 minutes is
    # then merely waiting. Resuming it would add a status call every 15 minutes, undoing the back-off.
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    ledger = ledger_of(azurite)
    [record] = ledger.list_upgrades().items
    now = utc_now()
    waiting = ledger.update_upgrade(
        replace(record, accepted_at=now - timedelta(hours=5), updated_at=now - timedelta(minutes=40))
    )
    assert waiting is not None
    run_resume_function()
    assert host.tracking.get_queue_properties().approximate_message_count == 1  # only its own next check

    # overdue by more than the gap it was given (an hour): resumed
    assert ledger.update_upgrade(replace(waiting, updated_at=now - timedelta(hours=2, minutes=1))) is not None
    run_resume_function()
    assert host.tracking.get_queue_properties().approximate_message_count == 2
