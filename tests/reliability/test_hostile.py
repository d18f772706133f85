"""Hostile input and bounded resources, in process (fast enough for hundreds of thousands of cases).

Fuzz: >= 100k byte strings derived from realistic events (truncated, spliced, wrong types, deep
nesting, NaN/Infinity, huge and negative numbers, far timestamps, 10 MB values, bad keys): the
processor never raises, every rejection has a known reason and a message, every event the models
accept is applied. Hostile rules: >= 50 broken or malicious edits are rejected whole, with file and
line, the running rules untouched, no code executed. Bounds: one account sending 1M events and 1M
distinct accounts stay within the documented bounds.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.kafka_io import sim_records
from upsell_triggers.engine import windows
from upsell_triggers.engine.events import MAX_EVENT_BYTES, InvalidEvent, decode_event
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.state import DEDUP_HORIZON, MAX_SERIES
from upsell_triggers.engine.statecodec import encode_state
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import MemoryStore, Processor
from upsell_triggers.runtime.reload import try_reload

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]
REASONS = {
    "not_json",
    "not_object",
    "too_large",
    "missing_field",
    "invalid_field",
    "unknown_type",
    "unknown_metric",
    "unknown_plan",
    "key_mismatch",
    "ts_in_future",
}
HOSTILE_VALUES = [
    None,
    True,
    "4",
    "",
    [],
    {},
    [[[[1]]]],
    -1,
    -(2**63),
    2**63 - 1,
    1e308,
    -1e308,
    0.1,
    "NaN",
    "x" * 300,
    "\u0000",
    0,
    1,
]


def _mutate(rng: random.Random, key: bytes, raw: bytes) -> tuple[bytes | None, bytes, bool | None]:
    """(key, value, expected valid?) — None when the mutation's validity is not known in advance."""
    m = rng.randrange(12)
    if m == 0:
        return key, raw[: rng.randrange(len(raw))], False  # a strict prefix of an object is not JSON
    if m == 1:
        i = rng.randrange(len(raw))
        return key, raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :], None
    obj = orjson.loads(raw)
    if m == 2:
        field = rng.choice([f for f in obj if f not in ("user_id",)])
        obj[field] = rng.choice(HOSTILE_VALUES)
        return key, orjson.dumps(obj), None
    if m == 3:
        return key, b"[" * rng.choice((10, 1000, 100_000)) + b"]" * 3, False
    if m == 4:
        return key, raw.replace(b'"ts":', b'"ts":NaN,"x":', 1), False
    if m == 5:
        obj["ts"] = rng.choice(
            (0, 1, -5, 10**15, 946684799999, 7258118400000, "1999-01-01T00:00:00Z", "tomorrow")
        )
        return key, orjson.dumps(obj), False
    if m == 6:
        obj["pad"] = "x" * rng.choice((MAX_EVENT_BYTES, 10 * 1024 * 1024))
        return key, orjson.dumps(obj), False
    if m == 7:
        return rng.choice((b"", b"\xff\xfe", b"someone-else")), raw, False
    if m == 8:
        return key, raw.decode().encode("utf-16"), False
    if m == 9:
        del obj[rng.choice(["event_id", "account_id", "ts", "type"])]
        return key, orjson.dumps(obj), False
    if m == 10:
        obj["type"] = rng.choice(["Usage", "usage ", "", "prompt_converted", 7])
        return key, orjson.dumps(obj), False
    return key, raw, True


def test_fuzz_100k_hostile_records_never_crash_and_lose_nothing() -> None:
    rng = random.Random(2026)
    proc = Processor(load_ruleset(ROOT / "rules"), store=MemoryStore())
    base = list(sim_records(20_000, 2_000, seed=9))
    cases = crashes = 0
    invalid: dict[str, int] = {}
    applied = 0
    for _ in range(6):
        for key, raw in base:
            k, v, expect_valid = _mutate(rng, key, raw)
            cases += 1
            try:
                res = proc.handle(v, k)
            except Exception:  # pragma: no cover - the point of the test
                crashes += 1
                continue
            if res.invalid is not None:
                assert res.invalid.reason in REASONS and res.invalid.message
                invalid[res.invalid.reason] = invalid.get(res.invalid.reason, 0) + 1
                assert expect_valid is not True, (v[:200], res.invalid)
            else:
                assert res.outcome is not None
                assert res.outcome.status in ("applied", "duplicate", "stale", "late")
                assert expect_valid is not False, v[:200]
                applied += 1
    print(f"\n[reliability] fuzz: cases={cases} crashes={crashes} applied={applied} invalid={invalid}")
    assert cases >= 100_000 and crashes == 0
    assert sum(invalid.values()) + applied == cases  # every record accounted for: DLQ or processed
    assert len(invalid) >= 6  # the mutations reached many distinct rejections


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected_with_a_reason_or_decoded(raw: bytes) -> None:
    ev = decode_event(raw, b"k")
    assert (isinstance(ev, InvalidEvent) and ev.reason in REASONS) or ev.account_id == "k"  # type: ignore[union-attr]


# ---- hostile rule edits ------------------------------------------------------------------------

USAGE = (ROOT / "rules" / "usage-limits.yaml").read_text()
PLANS = (ROOT / "rules" / "plans.yaml").read_text()
POLICY = (ROOT / "rules" / "policy.yaml").read_text()
PWNED = "/tmp/upsell-hostile-rules-pwned"


def _edits() -> list[tuple[str, str]]:
    """(file, new content): every one must be rejected."""
    e: list[tuple[str, str]] = [
        ("usage-limits.yaml", USAGE.replace("ratio: 0.8}", "ratio: 0.8", 1)),  # YAML syntax
        ("usage-limits.yaml", USAGE.replace("  - id: seats\n", "  - id: seats\n\t", 1)),  # tab
        ("usage-limits.yaml", USAGE.replace("metric: seats, ratio: 0.8", "metric: seatz, ratio: 0.8", 1)),
        ("usage-limits.yaml", USAGE.replace("ratio: 0.8}", "ratio: -0.8}", 1)),
        ("usage-limits.yaml", USAGE.replace("ratio: 0.8}", "ratio: 0.8, at_least: 3}", 1)),
        ("usage-limits.yaml", USAGE.replace("ratio: 0.8}", "ratio: eighty}", 1)),
        ("usage-limits.yaml", USAGE.replace("cooldown: 7d", "cooldown: 7 fortnights", 1)),
        ("usage-limits.yaml", USAGE.replace("cooldown: 7d", "cooldown: -1d", 1)),
        ("usage-limits.yaml", USAGE.replace("rearm: 0.7", "rearm: 0.95", 1)),  # above threshold
        ("usage-limits.yaml", USAGE.replace("id: seats-100", "id: seats-80", 1)),  # duplicate id
        ("usage-limits.yaml", USAGE.replace("target_plan: next", "target_plan: platinum", 1)),
        ("usage-limits.yaml", USAGE.replace("audience: [free, team, business]", "audience: [free, gold]", 1)),
        ("usage-limits.yaml", USAGE.replace("placement: banner", "placement: popup", 1)),
        ("usage-limits.yaml", USAGE.replace("version: 1", "version: 2", 1)),
        ("usage-limits.yaml", USAGE.replace("groups:", "grups:", 1)),
        ("usage-limits.yaml", USAGE + "\nextra_top_level: 1\n"),
        ("usage-limits.yaml", "[]\n"),
        ("usage-limits.yaml", "just a string\n"),
        ("usage-limits.yaml", "\xff\xfe"),
        ("usage-limits.yaml", "a: &a [1]\nb: *a\n"),  # aliases
        ("usage-limits.yaml", "a: &a [*a, *a]\n"),
        ("usage-limits.yaml", "base: &b {x: 1}\nother: {<<: *b}\n"),  # merge key
        ("usage-limits.yaml", f'groups: !!python/object/apply:os.system ["touch {PWNED}"]\n'),
        ("usage-limits.yaml", f'x: !!python/object/new:os.system ["touch {PWNED}"]\n'),
        ("usage-limits.yaml", "x: !!binary aGVsbG8=\n"),
        ("usage-limits.yaml", "x: !custom 1\n"),
        ("usage-limits.yaml", "a: 1\na: 2\n"),  # duplicate key
        (
            "usage-limits.yaml",
            "version: 1\ngroups:\n" + "  - id: g\n" * 1 + "    rules: " + "[" * 200 + "]" * 200 + "\n",
        ),
        ("usage-limits.yaml", "x: " + "y" * (2 * 1024 * 1024) + "\n"),  # huge file
        ("usage-limits.yaml", "- " * 50_000 + "1\n"),  # deep nesting
    ]
    for bad in (
        "{value.__class__}",
        "{value.__class__.__mro__}",
        "{__import__}",
        "{0}",
        "{}",
        "{value!r}",
        "{value:>100000}",
        "{limit[0]}",
        "{plan.__init__.__globals__}",
        "{unknown_name}",
        "{",
        "}",
    ):
        e.append(("usage-limits.yaml", USAGE.replace("You're using {value}", f"You're using {bad}", 1)))
    e += [
        ("plans.yaml", PLANS.replace("id: team", "id: free", 1)),  # duplicate plan id (a cycle in tiers)
        ("plans.yaml", PLANS.replace("plans:", "plans: []\nx:", 1)),
        ("plans.yaml", PLANS.replace("seats: 5", "seats: -5", 1)),
        ("plans.yaml", PLANS.replace("seats: 5", "seats: lots", 1)),
        ("plans.yaml", PLANS.replace("seats: 5", "seatz: 5", 1)),
        ("plans.yaml", "version: 1\n"),  # no plan catalog left
        ("policy.yaml", POLICY.replace("fraction: ", "fraction: 7 #", 1)),
        ("policy.yaml", POLICY.replace("default_plan: free", "default_plan: nope", 1)),
        ("policy.yaml", POLICY.replace("policy:", "policy:\n  bogus: 1", 1)),
        ("policy.yaml", POLICY + "\n" + POLICY),  # duplicate keys
        (
            "paywall.yaml",
            "version: 1\ngroups:\n  - id: p\n    rules:\n      - id: p1\n        when: {metric: paywall_hits, ratio: 0.5}\n",
        ),
        (
            "paywall.yaml",
            "version: 1\ngroups:\n  - id: p\n    rules:\n      - id: p1\n        when: {metric: seats, feature: sso, at_least: 1}\n",
        ),
        (
            "paywall.yaml",
            "version: 1\ngroups:\n  - id: p\n    rules:\n      - id: 'bad id!'\n        when: {metric: seats, at_least: 1}\n",
        ),
        ("new.yaml", "version: 1\nmetrics:\n  seats: {kind: gauge, unit: count}\n"),  # redeclare built-in
        (
            "new.yaml",
            "version: 1\nmetrics:\n  m: {kind: rolling_counter, unit: count, window: 365d, bucket: 1m}\n",
        ),
        ("new.yaml", "version: 1\nmetrics:\n  m: {kind: sometimes, unit: count}\n"),
    ]
    return e


def test_hostile_rule_edits_rejected_whole_with_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    running = load_ruleset(rules)
    swapped: list[object] = []
    metrics = Metrics()
    edits = _edits()
    assert len(edits) >= 50
    Path(PWNED).unlink(missing_ok=True)
    without_line = []
    for fname, content in edits:
        path = rules / fname
        original = path.read_text() if path.exists() else None
        path.write_text(content, encoding="utf-8", errors="surrogateescape")
        try:
            import logging

            with _capture(logging.getLogger("upsell_triggers.reload")) as logged:
                assert not try_reload(str(rules), running, swapped.append, metrics), (fname, content[:300])
            assert swapped == []  # the running rules stay
            msg = " ".join(logged)
            assert fname in msg, msg[:500]
            if f"{fname}:" not in msg:
                without_line.append((fname, msg[:200]))
        finally:
            if original is None:
                path.unlink()
            else:
                path.write_text(original)
    assert not Path(PWNED).exists()  # no code executed
    rejected = metrics.reloads.labels("rejected")._value.get()
    print(
        f"\n[reliability] hostile rules: edits={len(edits)} rejected={rejected:.0f} without_line={len(without_line)}"
    )
    assert rejected == len(edits)
    # File-level problems (unreadable bytes, no plan catalog) have no single line; all others do.
    assert len(without_line) <= 3, without_line


class _capture:
    def __init__(self, logger: object) -> None:
        import logging

        self.logger = logger
        self.lines: list[str] = []
        outer = self

        class H(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.lines.append(record.getMessage())
                fields = getattr(record, "fields", None)
                if isinstance(fields, dict):
                    outer.lines.extend(str(x) for x in fields.get("errors", []))

        self.handler = H()

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self.handler)  # type: ignore[attr-defined]
        return self.lines

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)  # type: ignore[attr-defined]


# ---- bounded resources -------------------------------------------------------------------------


def test_one_account_sending_a_million_events_stays_bounded() -> None:
    proc = Processor(load_ruleset(ROOT / "rules"), store=MemoryStore())
    t0 = 1_793_491_200_000
    rng = random.Random(1)
    proc.handle(
        orjson.dumps({"event_id": "p", "account_id": "big", "type": "plan_changed", "ts": t0, "plan": "team"})
    )
    sizes = []
    for i in range(1_000_000):
        ts = t0 + i * 60_000  # a minute apart: ~2 years of event time
        r = i % 4
        if r == 0:
            ev = {"type": "usage", "metric": "api_calls", "delta": 1}
        elif r == 1:
            ev = {"type": "usage", "metric": "seats", "value": rng.randrange(1, 40)}
        elif r == 2:
            ev = {"type": "paywall_hit", "feature": f"feature-{rng.randrange(500)}"}  # 500 distinct features
        else:
            ev = {"type": "usage", "metric": "storage_bytes", "value": rng.randrange(2**36)}
        res = proc.handle(orjson.dumps({"event_id": f"e{i}", "account_id": "big", "ts": ts, **ev}))
        assert res.invalid is None
        if i % 100_000 == 0:
            sizes.append(len(encode_state(proc.store.get("big"))))
    st_ = proc.store.get("big")
    sizes.append(len(encode_state(st_)))
    assert len(st_.dedup) == 8 * DEDUP_HORIZON  # 8-byte hashes, the horizon reached
    assert len(st_.rolling) <= MAX_SERIES
    assert all(windows.count(b) <= 30 * 24 + 1 for b in st_.rolling.values())  # 30 d of 1 h buckets
    assert len(st_.rules) <= 7 + MAX_SERIES  # rule states: one per rule, per-feature ones for kept series
    print(f"\n[reliability] one account, 1M events: state bytes over time {sizes}")
    assert max(sizes) < 64 * 1024


def test_a_million_distinct_accounts_respect_the_store_bound() -> None:
    bound = 100_000
    store = MemoryStore(max_accounts=bound)
    proc = Processor(load_ruleset(ROOT / "rules"), store=store)
    ts = 1_793_491_200_000
    for i in range(1_000_000):
        a = f"a{i}"
        proc.handle(
            orjson.dumps(
                {
                    "event_id": "e",
                    "account_id": a,
                    "ts": ts + i,
                    "type": "usage",
                    "metric": "api_calls",
                    "delta": 1,
                }
            )
        )
        assert len(store) <= bound
    assert store.evicted == 1_000_000 - bound
    # An event-time TTL drops idle accounts too.
    assert store.expire(ts + 1_000_000 + store.ttl_ms + 1) == bound and len(store) == 0
