"""The worker's batch apply without a broker: BatchApplier and the state encoding of TableState.flush
over a benchmark mix, per event, for A/B runs and instruction counts.

    python bench/batch_apply_bench.py near-limits [--events 200000] [--accounts 20000] [--batches N]
                                      [--runs 3] [--cache FILE] [--digest]

The mix's records (bench/workloads.py) are split over 4 partitions as Kafka's default partitioner
splits them, and applied in batches of 20,000 (5,000 per partition, the worker's default bound) on a
memory-store TableState, each batch followed by the flush that encodes its changed states; no
producer. Prints the process CPU time per event of apply and flush (best of --runs). `--batches 0`
does everything but the batches: under `valgrind --tool=callgrind` the difference between a run with
N batches and one with 0 is the instructions of the batches alone (records generated under valgrind
take hours: generate them once with --cache, the runs read them from it). `--digest` prints a hash of
the prompts, leads, dead letters, spans and metric tallies, to compare two source trees' outputs
(PYTHONPATH=<tree>/src).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import murmur2
from faust.types import TP
from workloads import WORKLOADS, records

import upsell_triggers
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import EVENTS, Processor
from upsell_triggers.runtime.batch_apply import BatchApplier, Outputs
from upsell_triggers.runtime.table_state import TableState

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
PER_PARTITION = 5_000
NOW_MS = 4_102_444_800_000  # the records' clock (2100): nothing is ahead of it


class Record:
    """The members of aiokafka's record object that the batch path reads."""

    __slots__ = ("key", "offset", "timestamp", "value")

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self.key, self.value, self.offset, self.timestamp = key, value, offset, NOW_MS


def batches_of(recs: list[tuple[bytes, bytes]]) -> list[dict[TP, list[Record]]]:
    parts: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for key, value in recs:
        p = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        parts[p].append(Record(key, value, len(parts[p])))
    longest = max(map(len, parts.values()))
    return [
        {TP("events", p): rs[i : i + PER_PARTITION] for p, rs in parts.items() if rs[i : i + PER_PARTITION]}
        for i in range(0, longest, PER_PARTITION)
    ]


def run(batches: list[dict[TP, list[Record]]]) -> tuple[float, float, list[Outputs], Metrics]:
    metrics = Metrics(runtime="kafka")
    states = TableState(SimpleNamespace(data=SimpleNamespace(data={}, _key_partition={})))
    proc = Processor(load_ruleset(ROOT / "rules"), metrics, get_state=states.get)
    apply = BatchApplier(proc, states, {"events": EVENTS}, metrics)
    t_apply = t_flush = 0.0
    outs = []
    for b in batches:
        t0 = time.process_time()
        outs.append(apply(b))
        t1 = time.process_time()
        states.flush()
        t_apply, t_flush = t_apply + t1 - t0, t_flush + time.process_time() - t1
    return t_apply, t_flush, outs, metrics


def digest(outs: list[Outputs], m: Metrics) -> str:
    h = hashlib.sha256()
    for o in outs:
        for k, v in o.prompts + o.leads:
            h.update(k + b"\0" + v)
        for d in o.dead_letters:
            h.update(repr((d.reason, d.error, d.raw, d.key, dict(d.source))).encode())
        h.update(repr((o.spans, o.lead_ends, o.newest_ts)).encode())
    tallies: list[Any] = [m.events, m.invalid, m.duplicates, m.ignored, m.decisions, m.prompts, m.feedback]
    tallies += [m.conversions, m.leads, m.leads_suppressed, m.dlq, m.erased, m.redelivered]
    h.update(repr([(t.name, sorted(t.values.items())) for t in tallies]).encode())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=WORKLOADS)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--batches", type=int, help="apply only the first N batches (0: none)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="the generated records: read if it exists, else written")
    ap.add_argument("--digest", action="store_true")
    a = ap.parse_args()
    if a.cache is not None and a.cache.exists():
        recs = pickle.loads(a.cache.read_bytes())
    else:
        recs = records(a.workload, a.events, a.accounts)
        if a.cache is not None:
            a.cache.write_bytes(pickle.dumps(recs))
    batches = batches_of(recs)[: a.batches]
    n = sum(len(rs) for b in batches for rs in b.values())
    best: tuple[float, float, list[Outputs], Metrics] | None = None
    for _ in range(a.runs):
        got = run(batches)
        best = got if best is None or got[0] + got[1] < best[0] + best[1] else best
    assert best is not None
    t_apply, t_flush, outs, metrics = best
    per = 1e6 / max(1, n)
    print(
        f"{upsell_triggers.__file__} {a.workload}: {n:,} events in {len(batches)} batches; "
        f"apply {t_apply * per:.2f} us/event, flush {t_flush * per:.2f} us/event, "
        f"{sum(len(o.prompts) for o in outs):,} prompts"
    )
    if a.digest:
        print("digest", digest(outs, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
