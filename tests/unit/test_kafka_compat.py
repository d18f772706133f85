"""kafka.compat: the start-up check of the Faust/aiokafka members the batch path relies on."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from faust.transport import consumer as faust_consumer

from upsell_triggers.runtime.kafka import compat


def test_the_installed_libraries_have_every_member_relied_on() -> None:
    members = compat.MEMBERS + compat.ROCKSDB_MEMBERS + compat.EXACTLY_ONCE_MEMBERS
    assert [m.qualname for m in members if compat.problem(m)] == []
    compat.check(rocksdb=True)  # returns: nothing missing


def test_a_missing_method_stops_start_up_naming_it_and_the_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(faust_consumer.Consumer, "_add_gap")
    with pytest.raises(SystemExit) as info:
        compat.check()
    msg = str(info.value.code)
    assert "faust.transport.drivers.aiokafka.Consumer._add_gap() is missing" in msg
    assert "faust-streaming==0.15.3" in msg and "aiokafka" in msg and "\n" not in msg


def test_a_reshaped_method_and_a_missing_attribute_are_named() -> None:
    reshaped = compat.Member("faust.transport.drivers.aiokafka", "Consumer", "_add_gap", ("self", "offsets"))
    assert "does not take ('self', 'offsets')" in (compat.problem(reshaped) or "")
    missing = compat.Member("faust.tables.recovery", "Recovery", "no_such_attribute")
    assert compat.problem(missing) == "faust.tables.recovery.Recovery.no_such_attribute is missing"
    assert (
        compat.problem(compat.Member("faust.no_such_module", "X", "y")) == "faust.no_such_module.X is missing"
    )


def test_the_failure_is_one_line_without_a_traceback() -> None:
    code = (
        "import faust.transport.consumer as c\n"
        "del c.Consumer._wait_next_records\n"
        "from upsell_triggers.runtime.kafka import compat\n"
        "compat.check()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Consumer._wait_next_records() is missing" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_retries_are_told_with_the_request_the_error_and_the_wait() -> None:
    from aiokafka import errors
    from aiokafka.producer import sender as aiokafka_sender

    told: list[tuple[str, str, float]] = []
    compat.watch_retries(lambda request, error, backoff: told.append((request, error, backoff)))
    sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=object(), client=None)
    # An offset-only transaction's first request, refused while the last one's markers are written.
    offsets = aiokafka_sender.AddOffsetsToTxnHandler(sender, "group")
    concurrent = SimpleNamespace(error_code=errors.ConcurrentTransactions.errno)
    assert offsets.handle_response(concurrent) == 0.1
    # A transactional Produce the broker could not verify yet: retried after retry_backoff_ms too.
    produce = aiokafka_sender.SendProduceReqHandler(sender, {})
    assert produce._can_retry(errors.NotEnoughReplicasError(), None)
    assert not produce._can_retry(errors.InvalidProducerEpoch(), None)  # not retried: not told
    assert told[-2:] == [
        ("AddOffsetsToTxn", "ConcurrentTransactions", 0.1),
        ("Produce", "NotEnoughReplicasError", 0.1),
    ]
    assert compat.count_transaction_retries() is compat.count_transaction_retries()
