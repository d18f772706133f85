"""Where a Kafka run lost or doubled events: its changelog against a replay of its own input topic.

    python -m devkit.diagnose BOOTSTRAP APP_ID [ACCOUNT]

Replays the app's events topic (per partition, in offset order: accounts are independent, so this is
the order that matters), compares each account's last changelog state with the replay's, and prints the
mismatches by partition, which fields differ, and for one account its events (offset, record time,
dedup hash) and its changelog history (the source offsets and counters each write carried). Run tests
with UPSELL_TEST_KEEP_TOPICS=1 so that a failed run's topics are still there.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from devkit.exactness import differing_fields, read_all, replay_expected, view
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state
from upsell_triggers.engine.stateops import event_hash, period_items

ROOT = Path(__file__).resolve().parents[1]


def _ring(st: AccountState) -> list[bytes]:
    """The account's dedup ring as its 8-byte event-id hashes, oldest first (see stateops.seen)."""
    return [bytes(st.dedup[i : i + 8]) for i in range(0, len(st.dedup), 8)]


async def diagnose(bs: str, app: str, account: str | None = None) -> None:
    events = await read_all(bs, f"{app}-events")
    changelog = await read_all(bs, f"{app}-account-state-changelog")
    history: dict[str, list[Any]] = collections.defaultdict(list)
    for r in changelog:
        history[r.key.decode()].append(r)
    partition_of: dict[str, int] = {}
    by_account: dict[str, list[Any]] = collections.defaultdict(list)
    for r in events:
        partition_of[r.key.decode()] = r.partition
        by_account[r.key.decode()].append(r)
    ordered = sorted(events, key=lambda r: (r.partition, r.offset))
    expected = replay_expected([r.value for r in ordered], ROOT / "rules")
    final = {acct: decode_state(recs[-1].value) for acct, recs in history.items()}
    bad: list[str] = []
    fields: collections.Counter[tuple[str, ...]] = collections.Counter()
    for acct, want in expected.states.items():
        got = final.get(acct)
        if got is None or view(got) != view(want):
            bad.append(acct)
            if got is not None:
                fields[tuple(n for n, _, _ in differing_fields(got, want))] += 1
    print(f"{len(bad)} of {len(expected.states)} accounts differ from the replay")
    print("by partition:", dict(collections.Counter(partition_of[a] for a in bad)))
    print("differing fields:", fields.most_common(6))
    # Events whose id is not in their account's final dedup ring were never applied (accounts here have
    # fewer events than the ring holds): their offsets show which fetch was skipped.
    missing: dict[int, list[int]] = collections.defaultdict(list)
    for acct, recs in by_account.items():
        if acct not in final:
            continue
        ring = set(_ring(final[acct]))
        for r in recs:
            if event_hash(orjson.loads(r.value)["event_id"]) not in ring:
                missing[r.partition].append(r.offset)
    for p, offs in sorted(missing.items()):
        print(f"partition {p}: {len(offs)} events never applied, offsets {min(offs)}..{max(offs)}")
    chosen = account or (bad[0] if bad else None)
    if chosen is None:
        return
    print(f"\n{chosen} (partition {partition_of.get(chosen)}): events")
    for r in by_account[chosen]:
        d = orjson.loads(r.value)
        when = datetime.fromtimestamp(r.timestamp / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
        h = event_hash(d["event_id"]).hex()
        print(f"  offset {r.offset:>7} at {when} {h} {d['type']} {d.get('metric', '')}")
    print(f"{chosen}: changelog writes (changelog offset, source offsets, period counters, dedup hashes)")
    for r in history.get(chosen, []):
        st = decode_state(r.value)
        hashes = [h.hex()[:8] for h in _ring(st)]
        periods = ", ".join(f"{k}: {v.total}" for k, v in period_items(st.periods).items())
        print(f"  {r.offset:>7} {[st.events_offset, st.feedback_offset]} {{{periods}}} {hashes}")


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    asyncio.run(diagnose(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
