"""Property-based tests (hypothesis): windows, cooldowns, determinism."""

from __future__ import annotations

import io
import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import windows
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.engine.windows import Series
from upsell_triggers.replay import replay

from .helpers import T0, Account, fixture_rules

BUCKET, WINDOW = HOUR, 7 * DAY


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20 * DAY), st.integers(1, 5)), min_size=1, max_size=80),
    st.randoms(use_true_random=False),
)
def test_window_sum_equals_bruteforce_under_any_order(events, rnd):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    buckets: Series | None = None
    applied = []
    for ts, n in shuffled:
        added = windows.add(buckets, T0 + ts, n, BUCKET, WINDOW)
        if added is not None:
            buckets = added
            applied.append((ts, n))
    assert buckets is not None
    newest = max(T0 + ts for ts, _ in events)
    newest_bucket = newest - newest % BUCKET
    # brute force: every event whose bucket lies within the window ending at the newest bucket
    expected = sum(n for ts, n in events if (T0 + ts) - (T0 + ts) % BUCKET > newest_bucket - WINDOW)
    assert windows.window_sum(buckets, WINDOW) == expected
    # and the events dropped as late are exactly those outside the window
    late = [e for e in shuffled if e not in applied]
    assert all((T0 + ts) - (T0 + ts) % BUCKET <= newest_bucket - WINDOW for ts, _ in late)
    assert windows.count(buckets) <= WINDOW // BUCKET


usage_ops = st.one_of(
    st.tuples(st.just("seats"), st.integers(0, 7)),
    st.tuples(st.just("storage_bytes"), st.integers(0, 3 * 2**30)),
    st.tuples(st.just("api_calls"), st.integers(0, 4000)),
    st.tuples(st.just("paywall"), st.sampled_from(["sso", "scim", "audit_log"])),
    st.tuples(st.just("plan"), st.sampled_from(["free", "team", "business"])),
)


def _events(ops: list[tuple[str, object]], gaps: list[int]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    t = T0
    for i, ((kind, v), gap) in enumerate(zip(ops, gaps, strict=False)):
        t += gap
        base: dict[str, object] = {"event_id": f"e{i}", "account_id": "acme", "ts": t}
        if kind == "paywall":
            out.append({**base, "type": "paywall_hit", "feature": v})
        elif kind == "plan":
            out.append({**base, "type": "plan_changed", "plan": v})
        elif kind == "api_calls":
            out.append({**base, "type": "usage", "metric": kind, "delta": v})
        else:
            out.append({**base, "type": "usage", "metric": kind, "value": v})
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(usage_ops, min_size=1, max_size=120),
    st.lists(st.integers(0, 2 * DAY), min_size=120, max_size=120),
)
def test_no_rule_fires_twice_inside_its_cooldown(ops, gaps):
    rs = fixture_rules()
    cooldown = {r.id: r.cooldown_ms for r in rs.rules}
    a = Account(rs)
    fired: dict[tuple[str, str | None], list[int]] = {}
    for ev in _events(ops, gaps):
        fields = {k: v for k, v in ev.items() if k not in ("event_id", "account_id", "ts")}
        for d in a.send(int(ev["ts"]) - T0, **fields):  # type: ignore[arg-type]
            if d.outcome == "emitted":
                fired.setdefault((d.rule_id, d.feature), []).append(d.ts)
    for (rule, _), times in fired.items():
        assert all(b - a_ >= cooldown[rule] for a_, b in itertools.pairwise(times)), (rule, times)


@settings(max_examples=50, deadline=None)
@given(st.lists(usage_ops, min_size=1, max_size=80), st.lists(st.integers(0, DAY), min_size=80, max_size=80))
def test_replay_twice_is_identical(ops, gaps):
    data = b"".join(orjson.dumps(e) + b"\n" for e in _events(ops, gaps))
    outs = []
    for _ in range(2):
        out, err = io.BytesIO(), io.StringIO()
        replay(fixture_rules(), io.BytesIO(data), out, err)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
