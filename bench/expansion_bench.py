"""Expansion signals on the simulator's workload: prompts per 1k accounts and state per account.

    python bench/expansion_bench.py [--accounts 1000] [--days 45] [--resident 100000]

Replays the simulator's expansion workload (`Simulator(expansion=True)`: people and teams on every
event) through the shipped rules, through the example rules of rules/examples/expansion (distinct
counts and growth conditions), and through those together with rules/examples/pace (forecasts):
`examples`, every new kind active. In event time, with the engine alone. Prints, per rule, the prompts
per 1,000 accounts over the simulated days, and per account the state's serialized bytes (what the
changelog carries) for each rule set.

The simulated accounts carry what 45 days of the simulator leave (paywall hits in hourly buckets,
three gauges, a billing period...). A second, small shape isolates what the expansion kinds add: per
account a plan, two seats readings 31 days apart, and ten API calls by eight people of three teams in
a week (what the example rules read), replayed through both rule sets.

Resident bytes: the memory store and the Kafka worker's cache hold each active account's decoded
state. The replayed accounts' states are decoded again until `--resident` accounts are held (copies
of the real states, as many of each), and the resident memory of the process (RSS, /proc/self/statm)
grows by that much: that growth per account is the figure, for each rule set, measured in one process
one after the other. It includes what holding them costs (the account id and the dict's slot, about
100 bytes per account). Where the bytes go: per state field, the mean size of its objects
(sys.getsizeof, followed into containers; interned names, cached small ints and what decoded states
share, such as a recent prompt's rule, are counted once for all accounts). Writes
bench/results/expansion.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.events import InvalidEvent, decode_event
from upsell_triggers.engine.ruleset import RuleSet, compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def workload(accounts: int, days: int) -> list[bytes]:
    """The simulator's expansion workload, API requests included (the shipped catalog rejects those
    events, which changes no state)."""
    sim = Simulator(accounts=accounts, expansion=True, metrics=examples_ruleset().metrics)
    out: list[bytes] = []
    for _ in range(days * DAY // HOUR):
        out.extend(orjson.dumps(ev) for ev in sim.round())
    return out


def small_accounts(accounts: int) -> list[bytes]:
    """Per account: a plan, seats 31 days apart, ten calls by eight people of three teams in a week."""
    t0 = 1_793_491_200_000
    out: list[bytes] = []
    for i in range(accounts):
        a = f"acct-{i:05d}"

        def ev(n: int, at: int, **f: object) -> bytes:
            return orjson.dumps({"event_id": f"{a}-{n}", "account_id": a, "ts": t0 + at, **f})  # noqa: B023

        out.append(ev(0, 0, type="plan_changed", plan="team"))
        out.append(ev(1, HOUR, type="usage", metric="seats", value=10))
        for k in range(10):
            user = k % 8
            out.append(
                ev(
                    2 + k,
                    25 * DAY + k * 12 * HOUR,
                    type="usage",
                    metric="api_calls",
                    delta=10,
                    user_id=f"u-{user}",
                    attributes={"team_id": f"t-{user % 3}"},
                )
            )
        out.append(ev(12, 31 * DAY, type="usage", metric="seats", value=12))
    return out


def examples_rule_files() -> list[Path]:
    """rules/examples/expansion and the pace rules of rules/examples/pace (the pace directory's plans
    are the expansion catalog's): the rule files of the `examples` rule set."""
    files = [*sorted((ROOT / "rules" / "examples" / "expansion").glob("*.yaml"))]
    files.append(ROOT / "rules" / "examples" / "pace" / "pace.yaml")
    return files


def examples_ruleset() -> RuleSet:
    """rules/examples/expansion and the pace rules of rules/examples/pace as one rule set."""
    return compile_sources([(str(p), p.read_text()) for p in examples_rule_files()])


def replay(rules: RuleSet, lines: list[bytes]) -> tuple[dict[str, AccountState], Counter[str], float]:
    engine = Engine(rules)
    states: dict[str, AccountState] = {}
    prompts: Counter[str] = Counter()
    t0 = time.process_time()
    for raw in lines:
        ev = decode_event(raw)
        assert not isinstance(ev, InvalidEvent), ev
        st = states.get(ev.account_id)
        if st is None:
            st = states[ev.account_id] = AccountState()
        for d in engine.process(ev, st).decisions:
            if d.outcome == "emitted":
                prompts[d.rule_id] += 1
    return states, prompts, time.process_time() - t0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident_per_account(states: dict[str, AccountState], n: int) -> float:
    """RSS growth per account while n decoded states (copies of these) are held in a dict."""
    blobs = [encode_state(s) for s in states.values()]
    gc.collect()
    before = rss_bytes()
    held = {f"acct-{i:07d}": decode_state(blobs[i % len(blobs)]) for i in range(n)}
    gc.collect()
    grown = rss_bytes() - before
    del held
    gc.collect()
    return grown / n


def _interned(s: str) -> bool:
    """Whether s is the interned copy of its text (sys.intern(s) itself would intern s, so a copy of
    the text is asked instead: it comes back as s only if s was interned before)."""
    return sys.intern("".join(list(s))) is s


def _deep(o: object, seen: set[int]) -> int:
    """o's bytes and its contents', each object once; interned strings and cached ints are shared."""
    if id(o) in seen or o is None or type(o) is bool:
        return 0
    seen.add(id(o))
    if (type(o) is str and _interned(o)) or (type(o) is int and -5 <= o <= 256):
        return 0
    n = sys.getsizeof(o)
    if isinstance(o, dict):
        n += sum(_deep(k, seen) + _deep(v, seen) for k, v in o.items())
    elif isinstance(o, (list, tuple)):
        n += sum(_deep(v, seen) for v in o)
    elif hasattr(o, "__struct_fields__"):
        n += sum(_deep(getattr(o, f), seen) for f in o.__struct_fields__)
    return n


def bytes_by_field(states: dict[str, AccountState]) -> dict[str, float]:
    """Mean resident bytes per account of each state field (as decoded), largest first; `struct` is
    the AccountState object itself."""
    totals: Counter[str] = Counter()
    seen: set[int] = set()  # across accounts: what decoded states share (names, rule entries) counts once
    kept = []
    for st in states.values():
        d = decode_state(encode_state(st))
        kept.append(d)  # alive until the end, so no id is reused
        totals["struct"] += sys.getsizeof(d)
        for f in AccountState.__struct_fields__:
            totals[f] += _deep(getattr(d, f), seen)
    n = len(states)
    return {f: round(b / n, 1) for f, b in totals.most_common() if b}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--resident", type=int, default=100_000)
    args = ap.parse_args()
    lines = workload(args.accounts, args.days)
    print(f"{len(lines):,} events, {args.accounts:,} accounts, {args.days} days", file=sys.stderr)
    result: dict[str, object] = {"accounts": args.accounts, "days": args.days, "events": len(lines)}
    small = small_accounts(args.accounts)
    rule_sets = (
        ("shipped", load_ruleset(ROOT / "rules")),
        ("expansion", load_ruleset(ROOT / "rules" / "examples" / "expansion")),
        ("examples", examples_ruleset()),
    )
    for name, rules in rule_sets:
        states, _, _ = replay(rules, small)
        sizes = [len(encode_state(s)) for s in states.values()]
        resident = resident_per_account(states, args.resident)
        result[f"{name}-small"] = {
            "state_bytes_mean": round(statistics.fmean(sizes), 1),
            "resident_bytes_per_account": round(resident, 1),
            "resident_bytes_by_field": bytes_by_field(states),
        }
        print(
            f"{name}, small accounts: state bytes per account mean {statistics.fmean(sizes):.0f}; "
            f"resident {resident:.0f} B per account at {args.resident:,} accounts"
        )
        print(f"  by field: {bytes_by_field(states)}")
        states, prompts, cpu = replay(rules, lines)
        sizes = [len(encode_state(s)) for s in states.values()]
        per_1k = {rule: round(n * 1000 / args.accounts, 1) for rule, n in sorted(prompts.items())}
        resident = resident_per_account(states, args.resident)
        result[name] = {
            "prompts_per_1k_accounts": per_1k,
            "state_bytes_mean": round(statistics.fmean(sizes), 1),
            "state_bytes_max": max(sizes),
            "resident_bytes_per_account": round(resident, 1),
            "resident_bytes_by_field": bytes_by_field(states),
            "replay_cpu_s": round(cpu, 2),
        }
        print(f"{name}: prompts per 1k accounts over {args.days} days: {per_1k}")
        print(
            f"{name}: state bytes per account mean {statistics.fmean(sizes):.0f}, max {max(sizes)}; "
            f"resident {resident:.0f} B per account at {args.resident:,} accounts; replay {cpu:.1f} s CPU"
        )
        print(f"  by field: {bytes_by_field(states)}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "expansion.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
