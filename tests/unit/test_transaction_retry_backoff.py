"""exactly_once: the wait before a transaction the broker refused with CONCURRENT_TRANSACTIONS is asked
for again (UPSELL_TRANSACTION_RETRY_BACKOFF_MS), applied to aiokafka's handler and checked at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import ConcurrentTransactions, NoError
from aiokafka.producer import sender

from upsell_triggers.runtime.faust_app import create_app
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.settings import Settings
from upsell_triggers.startup import StartupError, validated_settings

RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture(autouse=True)
def aiokafka_backoff() -> Iterator[None]:
    """Every test leaves aiokafka's module constant as it found it."""
    before = sender.BACKOFF_OVERRIDE
    yield
    sender.BACKOFF_OVERRIDE = before


def add_partitions_answer(error_code: int, partitions_added: set[Any]) -> Any:
    """What aiokafka's AddPartitionsToTxn handler makes of a broker answer: the seconds it waits before
    asking again, or None (added)."""
    txn_manager = SimpleNamespace(
        txn_partitions=partitions_added, partition_added=lambda tp: None, transactional_id="t"
    )
    fake_sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=txn_manager)
    handler = sender.AddPartitionsToTxnHandler(fake_sender, [])
    return handler.handle_response(SimpleNamespace(errors=[("topic", [(0, error_code)])]))


def test_a_refused_first_add_is_retried_after_the_configured_wait() -> None:
    assert add_partitions_answer(ConcurrentTransactions.errno, set()) == pytest.approx(0.02)  # aiokafka's
    assert compat.set_transaction_retry_backoff(0.002) == pytest.approx(0.02)
    assert add_partitions_answer(ConcurrentTransactions.errno, set()) == pytest.approx(0.002)
    # Refused after partitions were added (not the markers of the last transaction): the producer's
    # retry_backoff_ms, as before; accepted: no wait.
    assert add_partitions_answer(ConcurrentTransactions.errno, {"added"}) == pytest.approx(0.1)
    assert add_partitions_answer(NoError.errno, set()) is None


def test_an_exactly_once_worker_sets_the_wait_from_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSELL_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("UPSELL_TRANSACTION_RETRY_BACKOFF_MS", "3.5")
    s = Settings(kafka_bootstrap_servers="127.0.0.1:9", rules_dir=str(RULES), app_id="backoff-test")
    create_app(s)
    assert add_partitions_answer(ConcurrentTransactions.errno, set()) == pytest.approx(0.0035)


def test_an_at_least_once_worker_leaves_aiokafka_alone() -> None:
    create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9", rules_dir=str(RULES), app_id="backoff-alo"))
    assert add_partitions_answer(ConcurrentTransactions.errno, set()) == pytest.approx(0.02)


def test_the_setting_defaults_to_a_few_milliseconds_and_rejects_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().transaction_retry_backoff_ms == 2.0
    monkeypatch.setenv("UPSELL_TRANSACTION_RETRY_BACKOFF_MS", "0")
    with pytest.raises(StartupError) as info:
        validated_settings(Settings)
    assert "UPSELL_TRANSACTION_RETRY_BACKOFF_MS='0': Input should be greater than 0" in info.value.message


def test_start_up_stops_if_aiokafka_no_longer_retries_after_the_constant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def reshaped(self: Any, resp: Any) -> None:
        return None

    monkeypatch.setattr(sender.AddPartitionsToTxnHandler, "handle_response", reshaped)
    compat.check()  # at least once does not use it
    with pytest.raises(SystemExit) as info:
        compat.check(exactly_once=True)
    msg = str(info.value.code)
    assert "aiokafka.producer.sender.AddPartitionsToTxnHandler.BACKOFF_OVERRIDE is missing" in msg
    assert "\n" not in msg
