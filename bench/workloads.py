"""The benchmark workloads: the simulator's accounts, sent the way producers send them.

    python bench/workloads.py typical --events 1000000 --accounts 100000 --out /tmp/typical.jsonl

Two account shapes (upsell_triggers.simulate): "typical", most accounts far from their plan limits, and
"near-limits", a launch week with every account close to its limits (readings drifting across 80% and
100%, paywall bursts, upgrades, frequent prompts). On top of either, what the event contract allows and
producers do send:
- `ts` as an RFC 3339 string for 60% of events (a third each with `Z` and milliseconds as JavaScript
  writes it, `+00:00` as Python's isoformat writes it, and local time at `+05:30`), epoch
  milliseconds for the rest;
- `user_id` on half of the events;
- 2% of events sent twice (an at-least-once producer's retry, a few events later, byte for byte);
- feedback on the prompts the rules emit: shown for 90% of them (seconds later), then clicked for 15%
  or dismissed for 35% (minutes later). Which prompts fire is found by running the engine over the
  usage events first; feedback never changes a decision, so the prompts are the same in the final run.

Deterministic for a seed. The same events can be written with every `ts` in one format
(`ts_formats="epoch-ms"` or `"rfc3339"`) to compare the decoding costs on otherwise identical files.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.engine.timeutil import SECOND
from upsell_triggers.processor import MemoryStore, Processor
from upsell_triggers.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("typical", "near-limits")
TS_FORMATS = ("mixed", "epoch-ms", "rfc3339")
RFC3339_SHARE = 0.6
USER_ID_SHARE = 0.5
DUPLICATE_SHARE = 0.02
SHOWN, CLICKED, DISMISSED = 0.9, 0.15, 0.35
_IST = timezone(timedelta(hours=5, minutes=30))


def rfc3339(ms: int, style: int) -> str:
    """0: `...T10:00:00.123Z` (JavaScript's toISOString); 1: `+00:00`, microseconds only when there are
    any (Python's isoformat); 2: local time at +05:30 with milliseconds."""
    secs, milli = divmod(ms, 1000)
    if style == 0:
        return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}Z"
    if style == 1:
        return datetime.fromtimestamp(secs, UTC).replace(microsecond=milli * 1000).isoformat()
    local = datetime.fromtimestamp(secs, _IST).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{local}.{milli:03d}+05:30"


def _base(workload: str, events: int, accounts: int, seed: int, start_ms: int | None) -> list[dict[str, Any]]:
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")
    sim = Simulator(accounts=accounts, seed=seed, near_limits=workload == "near-limits")
    if start_ms is not None:
        sim.now = start_ms
    return list(sim.events(events))


def _prompts(rules: RuleSet, evs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index of the triggering event, prompt) for every prompt the engine emits over `evs`."""
    proc = Processor(rules, store=MemoryStore(max_accounts=10_000_000))
    for i, ev in enumerate(evs):
        for d in proc.handle(orjson.dumps(ev)).decisions:
            if d.prompt is not None:
                yield i, d.prompt


def generate(
    workload: str,
    events: int,
    accounts: int,
    seed: int = 11,
    start_ms: int | None = None,
    rules: RuleSet | None = None,
) -> list[dict[str, Any]]:
    """`events` event documents of the workload, in the order a topic would hold them, `ts` in epoch ms;
    `encode` writes them. A resent event is the same dict twice."""
    rng = random.Random(seed * 7919 + 1)
    evs = _base(workload, events, accounts, seed, start_ms)
    step_ms = Simulator(accounts=0).step_ms
    # Feedback lands about as many events later as its delay covers (one round of the simulator is one
    # event per account per step).
    later: dict[int, list[dict[str, Any]]] = {}
    for i, p in _prompts(rules or load_ruleset(ROOT / "rules"), evs):
        if rng.random() >= SHOWN:
            continue
        ts = int(datetime.fromisoformat(p["created_at"]).timestamp() * 1000)
        shown = ts + rng.randrange(1, 120) * SECOND
        actions = [("prompt_shown", shown)]
        r = rng.random()
        if r < CLICKED:
            actions.append(("prompt_clicked", shown + rng.randrange(5, 600) * SECOND))
        elif r < CLICKED + DISMISSED:
            actions.append(("prompt_dismissed", shown + rng.randrange(5, 1800) * SECOND))
        for n, (etype, at) in enumerate(actions):
            at_index = i + 1 + (at - ts) * accounts // step_ms
            later.setdefault(at_index, []).append(
                {
                    "event_id": f"fb-{p['prompt_id']}-{n}",
                    "account_id": p["account_id"],
                    "type": etype,
                    "ts": at,
                    "prompt_id": p["prompt_id"],
                    "user_id": p["user_id"],
                }
            )
    out: list[dict[str, Any]] = []
    resend: dict[int, list[dict[str, Any]]] = {}
    for i, ev in enumerate(evs):
        for doc in [ev, *later.pop(i, ())]:
            if doc.get("user_id") is None or rng.random() >= USER_ID_SHARE:
                doc.pop("user_id", None)
            out.append(doc)
            if rng.random() < DUPLICATE_SHARE:
                resend.setdefault(len(out) + rng.randrange(1, 50), []).append(doc)
        out.extend(resend.pop(len(out), ()))
        if len(out) >= events:
            break
    return out[:events]


def encode(docs: list[dict[str, Any]], ts_formats: str = "mixed", seed: int = 11) -> list[bytes]:
    """JSON documents with `ts` written per `ts_formats`: "mixed" (RFC 3339 for 60%, a third in each
    style of `rfc3339`, epoch ms for the rest), or every `ts` in one format. A resent event (the same
    dict) is the same bytes."""
    if ts_formats not in TS_FORMATS:
        raise ValueError(f"unknown ts_formats {ts_formats!r}; expected one of {', '.join(TS_FORMATS)}")
    rng = random.Random(seed * 104729 + 3)
    done: dict[int, bytes] = {}
    out = []
    for doc in docs:
        raw = done.get(id(doc))
        if raw is None:
            fmt = rng.random()
            style = rng.randrange(3)
            if ts_formats == "rfc3339" or (ts_formats == "mixed" and fmt < RFC3339_SHARE):
                raw = orjson.dumps({**doc, "ts": rfc3339(doc["ts"], style)})
            else:
                raw = orjson.dumps(doc)
            done[id(doc)] = raw
        out.append(raw)
    return out


def records(workload: str, events: int, accounts: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value) records for a topic, keyed by account, event time ending about now (nothing 'in
    the future' for the service's clock)."""
    sim = Simulator(accounts=0)
    start = int(time.time() * 1000) - (events // max(1, accounts) + 2) * sim.step_ms
    docs = generate(workload, events, accounts, seed, start_ms=start)
    return [(d["account_id"].encode(), raw) for d, raw in zip(docs, encode(docs, "mixed", seed), strict=True)]


def write(path: Path, docs: list[bytes]) -> None:
    with path.open("wb") as f:
        for d in docs:
            f.write(d + b"\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=WORKLOADS)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--ts-formats", choices=TS_FORMATS, default="mixed")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    write(a.out, encode(generate(a.workload, a.events, a.accounts, a.seed), a.ts_formats, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
