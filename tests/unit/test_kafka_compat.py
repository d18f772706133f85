"""kafka.compat: the start-up check of the Faust/aiokafka members the batch path relies on."""

from __future__ import annotations

import subprocess
import sys

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
