"""Renders BENCHMARKS.md from bench/results/*.json (figures, commands, machine, Kafka version).

    python bench/render.py

The table is regenerated from whatever the last benchmark runs recorded; READING, below, says what the
figures mean. Dated engineering notes are in bench/ANALYSIS.md, which BENCHMARKS.md links to.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

READING = """## Reading the figures

- **Targets are ratios within one run.** Absolute rates move 1.5-3x with the machine's speed and with
  whatever else runs on it (the set above ran on 2 cores shared with other work; `replay` got about a
  third of a core, hence its CPU-time figures). What the code controls is the share of the machine's
  own ceiling, measured in the same run. Run `python bench/throughput.py` and
  `python bench/replay_bench.py` on your hardware to size by your own ceiling.
- **Two workloads** (`bench/workloads.py`), both sent as producers send them (`ts` as RFC 3339 with
  `Z`, `+00:00` or `+05:30` for 60% of events and epoch ms for the rest, `user_id` on half, 2% resent,
  feedback on the prompts): *typical*, most accounts far from their limits (about one prompt per 50
  events), and *near-limits*, a launch week with seats and storage drifting across 80% and 100%,
  API quotas running out, paywall bursts and upgrades (about one prompt per 10 events). An event that
  crosses a threshold is evaluated, decided and may build a prompt; one far below every threshold is
  answered without evaluating the rules, so the near-limits mix costs about twice as much per event.
- **The plain-Faust reference** is a Faust agent with one table write per event and an output per 100
  events, run as `faust worker` ships it (defaults). The tuned variant (`-l info`, a 5 ms producer
  linger) is shown for comparison, without a target.
- **Memory per account** is the worker's resident memory divided by the accounts it holds, at rest after
  the load, at its peak during the load (size limits by the peak), and after a restart. Up to
  `UPSELL_STATE_CACHE_ACCOUNTS` accounts are held decoded (`auto`: 100k, or 20k under rules that keep
  per-account histories), so the per-account figure is highest around that many accounts and falls
  beyond.
- **State per account by rule set** (`bench/expansion_bench.py`) holds the replayed states decoded and
  measures the process's growth, holding included (about 100 B of account id and dict slot); the
  results file breaks it down by state field. Rolling paywall series, rule states and recent prompts
  are the same for every rule set whose rules fire alike (a rolling window is packed: 8 B per bucket
  of a paywall feature, 12 B of a usage counter; a recent prompt 12 B of id); the new kinds add their
  own fields: forecast histories (packed doubles, at most 120 B each), distinct counts (6 B per value,
  at most 398 B) and growth histories (12 B per change point, at most 408 B). An account that uses
  none of them holds none of those fields and writes none of their bytes.
- **Recovery** is the time from start to ready: a clean restart reads the changelog (memory store) or
  local files plus the changelog's tail (RocksDB); after a SIGKILL add the 15 s session timeout before
  the group reassigns the partitions.
- **Latency's tail** is laid out per run by `python bench/latency.py --timings DIR`: the slowest 2%
  of batches, by phase (waiting for records, earlier batches' apply, send, state write and commit, own
  apply), with the share of that time the worker's loop thread was on a CPU. In alternating pairs at
  10k events/s with the machine shared by about eight engineers (CPU pressure 0.96–1.0, the worker
  pinned to core 1 yet on a CPU 12–20% of the run), a batch loop that waits for each batch's
  acknowledgements spent 28–36% of its time waiting for them (65–67% at 1k events/s), 14–24% of the
  slowest batches' time (33–78% at 1k/s); the shipped loop does not wait between batches (0%). The
  rest of those batches' time is apply with the loop thread on a CPU 9–24% of it: the run queue of a
  shared core, which also kept the p99 from separating the two (B ÷ A per pair 0.32–1.92). Setting and
  per-run figures: [docs/operations.md](docs/operations.md#latency).
- **Service A/B** (`bench/service_ab.py`) answers "does this change cost the service anything?": one
  worker from each of two source trees (each a `git worktree add --detach` of the code to compare, put
  first on the worker's PYTHONPATH; same interpreter and dependencies, a rules directory per side) over
  the same pre-produced topics, in pairs whose order alternates (A then B, B then A, ...), with the CPU
  pressure before each run. Its rows give B ÷ A per pair and the median: on a shared machine the
  spread between pairs is the noise any difference has to exceed.
- **Scaling** on a 2-core machine that also runs the broker measures the machine: per-worker throughput
  is what sizes a deployment.

Engineering notes with the A/B measurements behind the design, dated: [bench/ANALYSIS.md](bench/ANALYSIS.md).
"""  # noqa: RUF001 (the figures' ranges take en dashes, as in the docs)


def load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def pct(runs: list[dict[str, float]], key: str) -> str:
    return ", ".join(f"{x[key]:.0%}" for x in runs)


def replay_rows(r: dict[str, Any], sitting: str = "") -> list[tuple[str, str, str, str, str]]:
    """Engine alone, both workloads side by side with their ratios to the baseline of the same runs.
    `sitting` names a sitting other than the last (replay-*.json), so that every sitting kept is shown."""
    cmd = r.get("command", "")
    if "median" not in r:  # a results file from before the two workloads: one favourable shape
        v = r["median_events_per_s"]
        return [(f"Engine alone: `replay`, {r['events']:,} events of the simulator's favourable shape (epoch-ms timestamps, most readings far below every threshold), one core",
                 f"{v:,.0f} events/s", "", "", cmd)]  # fmt: skip
    best_of = f", each file's best of {r['repeats']} per run" if r.get("repeats", 1) > 1 else ""
    m, runs, size = (
        r["median"],
        r["runs"],
        f"{r['events']:,} events / {r['accounts']:,} accounts{code_label(r)}{best_of}",
    )
    rows = []
    for w, what in (
        ("typical", "most accounts far from their limits"),
        ("near-limits", "a launch week, accounts drifting across 80%/100%"),
    ):
        per_run = ", ".join(f"{x[w]:,.0f}" for x in runs)
        rows.append((f"Engine alone: `replay`, {w} mix ({what}), {size}, one core: wall clock (per run); CPU time; ÷ parse-and-count baseline of the same run, in CPU time",
                     f"{m[w]:,.0f} events/s ({per_run}); {m['cpu:' + w]:,.0f} events/s; {m['over_baseline:' + w]:.1%} of {m['cpu:baseline:' + w]:,.0f}", "", "", cmd))  # fmt: skip
    t = r["targets"]
    rows.append((f"`replay`: near-limits ÷ typical (same runs, CPU time){code_label(r)}{best_of}{sitting}", f"{m['near_over_typical']:.1%} ({pct(runs, 'near_over_typical')})",
                 f"≥ {t['near_over_typical']:.0%}", verdict(m["near_over_typical"] >= t["near_over_typical"]), ""))  # fmt: skip
    rows.append((f"`replay`: the typical events with every `ts` RFC 3339 ÷ the same with epoch ms (same runs, CPU time){code_label(r)}{best_of}{sitting}",
                 f"{m['rfc3339_over_epoch_ms']:.1%} ({pct(runs, 'rfc3339_over_epoch_ms')}; {m['cpu:typical-rfc3339']:,.0f} vs {m['cpu:typical-epoch-ms']:,.0f} events/s)",
                 f"≥ {t['rfc3339_over_epoch_ms']:.0%}", verdict(m["rfc3339_over_epoch_ms"] >= t["rfc3339_over_epoch_ms"]), ""))  # fmt: skip
    return rows


def prompt_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    return [(f"Per-prompt cost: `build_prompt` alone over {r['prompts']:,} prompts of the shipped rules (best of {len(r['passes_us_per_prompt'])} passes, CPU time)",
             f"{r['best_us_per_prompt']:.1f} µs", "", "", r["command"])]  # fmt: skip


def code_label(r: dict[str, Any]) -> str:
    """How the measured code ran, where the results file says: the hot path compiled or pure Python."""
    machine = r.get("machine")
    code = r.get("code") or (machine.get("code") if isinstance(machine, dict) else None)
    return {"native": ", hot path compiled (mypyc)", "pure": ", pure Python"}.get(code or "", "")


def service_rows(r: dict[str, Any], sitting: str = "") -> list[tuple[str, str, str, str, str]]:
    """The service and its ceiling, per workload, with the ratio of the same run. `sitting` names a
    sitting other than the last (throughput-*.json): its ratio rows only."""
    m, cmd, size = (
        r["median"],
        r["command"],
        f"{r['events']:,} events / {r['accounts']:,} accounts{code_label(r)}",
    )
    if "service_1w_near_limits" not in m:  # a results file from before the two workloads
        return [
            (f"Service, 1 worker, {size} of the simulator's favourable shape, durable state", f"{m['service_1w']:,.0f} events/s", "", "", cmd),
            ("Raw aiokafka pipeline (ceiling), same topic and run", f"{m['raw']:,.0f} events/s", "", "", cmd),
            ("Service ÷ raw ceiling (same run)", f"{m['vs_raw']:.1%}", "", "", ""),
        ]  # fmt: skip
    targets = r.get("targets", {})
    rows = []
    for w, sfx in (("typical", ""), ("near-limits", "_near_limits")):
        target = targets.get("vs_raw" + sfx)
        rows += [
            (f"Service, 1 worker, {w} mix, {size}, durable state; raw aiokafka pipeline (ceiling) on the same topic and run",
             f"{m['service_1w' + sfx]:,.0f} events/s; ceiling {m['raw' + sfx]:,.0f} events/s", "", "", cmd),
            (f"Service ÷ raw ceiling, {w} mix (same run){code_label(r)}{sitting}", f"{m['vs_raw' + sfx]:.1%} ({pct(r['runs'], 'vs_raw' + sfx)})",
             f"≥ {target:.0%}" if target else "", verdict(m["vs_raw" + sfx] >= target) if target else "", ""),
        ]  # fmt: skip
    return rows if not sitting else rows[1::2]


def latency_rows(r: dict[str, Any], name: str) -> list[tuple[str, str, str, str, str]]:
    """Every rate's runs as the issue of a frontend sees them: the median run, the worst run and how many
    runs missed the target, beside the rate as a share of the worker's capacity measured in the sitting.
    `name` is the results file's: sittings of one command differ only by it."""
    rows = []
    summary = r.get("summary", {})
    mode = r.get("mode", "kafka")
    where = {
        "embedded": "embedded runtime",
        "floor": "the machine's floor: a bare relay with the worker's Kafka settings, no engine, local broker",
        "gateway": "Kafka worker and gateway, prompts read from the gateway's SSE streams, local broker",
    }.get(mode, "Kafka worker, local broker")
    if r.get("worker_core") is not None:
        who = "relay" if mode == "floor" else "worker"
        rest = "the broker, the gateway" if mode == "gateway" else "the broker"
        where += f"; the {who} on a core of its own, {rest} and the load generator on the other"
    elif mode != "embedded":
        where += "; everything shares both cores"
    where += f"; `{name}.json`"
    for rate, m in sorted(r["median"].items(), key=lambda kv: int(kv[0])):
        s = summary.get(rate, {})
        # How busy the machine was: PSI CPU pressure (share of time some task waited for a CPU).
        pressure = [x["cpu"]["cpu_pressure_share"] for x in r.get("runs", {}).get(rate, []) if x.get("cpu")]
        # the floor is no product's latency: the targets are shown against the worker, not it
        target_ms = (
            None if mode == "floor" else s.get("target_p99_ms") or (50.0 if int(rate) == 10_000 else None)
        )
        result = f"median run: p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, max {m['max_ms']:.1f} ms"
        if s:
            result += f"; worst run: p50 {s['worst_p50_ms']:.1f} ms, p99 {s['worst_p99_ms']:.1f} ms"
            if target_ms and "over_target" in s:
                result += f"; {s['runs'] - s['over_target']} of {s['runs']} runs within the target"
            if s.get("share_of_capacity"):
                result += (
                    f"; the rate is {s['share_of_capacity']:.0%} of the capacity measured in the sitting"
                )
        if pressure:
            result += (
                f"; CPU pressure {min(pressure):.2f} to {max(pressure):.2f} (median {median(pressure):.2f})"
            )
        target = (
            f"p99 ≤ {target_ms:g} ms" + (" in 19 of 20 runs" if int(rate) == 10_000 else "")
            if target_ms
            else ""
        )
        ok = ""
        if target_ms and s and "over_target" in s:
            ok = verdict(
                s["runs"] - s["over_target"] >= (0.95 * s["runs"] if int(rate) == 10_000 else s["runs"])
            )
        elif target_ms:
            ok = verdict(m["p99_ms"] <= target_ms)
        rows.append(
            (f"Event → prompt latency at {int(rate):,} events/s ({where})", result, target, ok, r["command"])
        )
    return rows


def guarantee_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """exactly_once against at_least_once in alternating pairs: capacity ratio and latency per pair,
    and where an exactly_once batch's time goes (older results files lack the phases)."""
    s, pairs, rate = r["summary"], r["pairs"], r["rate"]
    eos, alo = s["exactly_once"], s["at_least_once"]
    pressure = [p[g][k] for p in pairs for g in ("exactly_once", "at_least_once")
                for k in ("cpu_pressure_before_capacity", "cpu_pressure_before_latency") if p[g].get(k) is not None]  # fmt: skip
    shared = (
        f"; CPU pressure {min(pressure):.2f} to {max(pressure):.2f} before the measurements"
        if pressure
        else ""
    )
    rows = [
        (f"exactly_once ÷ at_least_once capacity, backlog of {r['capacity_events']:,} events, {len(pairs)} alternating pairs{shared}",
         f"{s['capacity_ratio_median']:.0%} ({pct(pairs, 'capacity_ratio')}; {eos['capacity']:,.0f} vs {alo['capacity']:,.0f} events/s)",
         "≥ 80%", verdict(s["capacity_ratio_median"] >= 0.8) + ("" if min(p["capacity_ratio"] for p in pairs) >= 0.8 else " (median; not in every pair)"), r["command"]),
        (f"Event → prompt latency at {rate:,} events/s, exactly_once; at_least_once (median of the pairs' runs, `read_committed` consumer)",
         f"p50 {eos['p50_ms']:.1f} ms, p99 {eos['p99_ms']:.1f} ms; p50 {alo['p50_ms']:.1f} ms, p99 {alo['p99_ms']:.1f} ms "
         f"(p99 per pair: " + ", ".join(f"{p['exactly_once']['p99_ms']:,.0f} vs {p['at_least_once']['p99_ms']:,.0f}" for p in pairs) + " ms)",
         *(("p99 ≤ 50 ms", verdict(eos["p99_ms"] <= 50)) if rate == 10_000 else ("", "")), ""),
    ]  # fmt: skip
    if eos.get("phases_p50_ms"):
        ph, ph_alo = eos["phases_p50_ms"], alo.get("phases_p50_ms", {})
        rows.append(
            (f"Where a batch's time goes at {rate:,} events/s (median of the pairs' p50 per batch): exactly_once's transactions and the phases of their slowest partition; at_least_once's delivery",
             f"{ph.get('deliver', float('nan')):.0f} ms (records acknowledged {ph.get('txn_send', float('nan')):.0f}, offsets added "
             f"{ph.get('txn_offsets', float('nan')):.0f}, ended {ph.get('txn_end', float('nan')):.0f}; apply {ph.get('apply', float('nan')):.0f}); "
             f"{ph_alo.get('deliver', ph_alo.get('send', float('nan'))):.0f} ms (apply {ph_alo.get('apply', float('nan')):.0f})", "", "", ""))  # fmt: skip
    return rows


def eos_latency_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Where exactly_once's event -> prompt latency goes, prompt by prompt (bench/eos_latency.py): the
    median over runs of each part's p50, how many batch cycles an event waited before its batch began,
    and what `read_committed` and aiokafka's 500 ms fetch wait add against the other two consumers."""
    runs = r["runs"]
    parts = ("to_batch_start", "to_prompt_created", "to_committed", "to_read_committed_arrival")
    p50 = {k: median([x["per_prompt_p50_ms"][k] for x in runs]) for k in parts}

    def consumer(key: str, stat: str) -> float:
        return median([x[key][stat] for x in runs])

    committed_extra = consumer("read_committed", "p50_ms") - consumer("read_uncommitted", "p50_ms")
    wait_extra = consumer("read_committed", "p50_ms") - consumer("read_committed_wait_5ms", "p50_ms")
    pressure = [x["cpu_pressure_during"] for x in runs if x.get("cpu_pressure_during") is not None]
    result = (
        f"per prompt (median of the runs' p50): waiting for its batch {p50['to_batch_start']:.1f} ms "
        f"({median([x['cycles_before_batch_start'] for x in runs]):.2f} batch cycles of "
        f"{median([x['batch_cycle_p50_ms'] for x in runs]):.1f} ms), fetch and apply "
        f"{p50['to_prompt_created']:.1f} ms, the transactions' commit {p50['to_committed']:.1f} ms, "
        f"to the `read_committed` consumer {p50['to_read_committed_arrival']:.1f} ms; `read_committed` "
        f"p50 {consumer('read_committed', 'p50_ms'):.1f} ms, p99 {consumer('read_committed', 'p99_ms'):.1f} ms: "
        f"{committed_extra:+.1f} ms (p50) against `read_uncommitted`, {wait_extra:+.1f} ms against a 5 ms fetch wait"
    )
    if pressure:
        result += f"; CPU pressure {min(pressure):.2f} to {max(pressure):.2f}"
    return [
        (f"Where exactly_once's latency goes, per prompt, at {r['rate']:,} events/s ({len(runs)} runs of {r['seconds']} s)",
         result, "", "", r["command"]),
    ]  # fmt: skip


def service_ab_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """bench/service_ab.py: one worker from two source trees in alternating pairs, B ÷ A per workload."""
    a, b = r["sides"]["A"]["label"], r["sides"]["B"]["label"]
    psi = r.get("cpu_pressure_avg10_range")
    shared = f"; CPU pressure {psi[0]:.0f}% to {psi[1]:.0f}% before the runs" if psi else ""
    rows = []
    for w, s in r["summary"].items():
        per_pair = ", ".join(f"{p['b_over_a']:.2f}" for p in r["pairs"][w])
        rows.append(
            (f"Service, 1 worker, {w} mix, {r['events']:,} events / {r['accounts']:,} accounts: {b} ÷ {a}, "
             f"{len(r['pairs'][w])} alternating pairs{shared}",
             f"{s['median_b_over_a']:.2f} ({per_pair}; {s['median_b']:,.0f} vs {s['median_a']:,.0f} events/s)",
             "", "", r["command"] if not rows else "")
        )  # fmt: skip
    return rows


def pack_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """bench/pack_bench.py: what holding an account as bytes costs, the packer against zlib's."""
    rows = []
    for rules in ("examples", "shipped"):
        m = r[rules]
        for packer, what in (("zstd", "Zstandard, trained dictionary (the worker's)"), ("zlib", "zlib, preset dictionary")):  # fmt: skip
            p = m[packer]
            rows.append((f"Evicted state held as bytes, {rules} rules, small accounts ({m['state_bytes_mean']:.0f} B): {what}: bytes; pack; read back (decode after it {m['decode_us']:.2f} µs) [best of {r['repeats']}]",
                         f"{p['packed_bytes_mean']:.0f} B; {p['pack_us']:.2f} µs; {p['unpack_us']:.2f} µs", "", "",
                         f"python bench/pack_bench.py --accounts {r['accounts']}" if not rows else ""))  # fmt: skip
    return rows


def transactions_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    s = r["summary_p50_ms"]

    def phases(k: dict[str, float]) -> str:
        per_s = f", {k['transactions_per_s']:.0f}/s" if "transactions_per_s" in k else ""
        return f"{k['total']:.1f} ms (records {k['records']:.1f}, offsets {k['offsets']:.1f}, end {k['end']:.1f}{per_s})"

    plain = s["plain_acknowledged"]
    if "transactions_back_to_back" in s:  # one retry wait: aiokafka's
        b2b, spaced = s["transactions_back_to_back"], s["transactions_spaced"]
        return [
            (f"One transaction of {r['records']} records on two partitions plus input offsets, one producer (p50, median of rounds): back to back; {r['gap_ms']:g} ms apart; the same records acknowledged without a transaction",
             f"{phases(b2b)}; {phases(spaced)}; {plain['records']:.1f} ms", "", "", r["command"]),
        ]  # fmt: skip
    waits = r["retry_backoff_ms"]
    b2b_alo, b2b, spaced = (s["transactions_back_to_back_aiokafka"], s["transactions_back_to_back_worker"],
                            s["transactions_spaced_worker"])  # fmt: skip
    return [
        (f"One transaction of {r['records']} records on two partitions plus input offsets, one producer (p50, median of rounds): back to back, retrying CONCURRENT_TRANSACTIONS after {waits['aiokafka']:g} ms (aiokafka's); after {waits['worker']:g} ms (the worker's); {r['gap_ms']:g} ms apart; the same records acknowledged without a transaction",
         f"{phases(b2b_alo)}; {phases(b2b)}; {phases(spaced)}; {plain['records']:.1f} ms", "", "", r["command"]),
    ]  # fmt: skip


def gateway_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    cmd = "python bench/gateway_bench.py"
    idle, lat, fb = r["idle_streams"], r["latency"], r["feedback"]
    return [
        (f"Gateway: {idle['streams']:,} idle SSE streams open on one process (RSS with the streams; per stream)",
         f"{idle['rss_with_streams_mib']:.0f} MiB; {idle['kib_per_stream']:.1f} KiB", "10,000 streams",
         verdict(idle["alive_after_heartbeat"] >= 10_000), cmd),
        (f"Gateway: prompt → browser stream latency, {lat['clients']:,} connected clients",
         f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
         f"({lat['deliveries_received']:,} of {lat['deliveries_expected']:,} delivered)", "p99 ≤ 100 ms",
         verdict(lat["p99_ms"] <= 100 and lat["deliveries_received"] == lat["deliveries_expected"]), cmd),
        ("Gateway: feedback requests accepted (202) per second, one process", f"{fb['per_second']:,.0f}/s", "", "", cmd),
    ]  # fmt: skip


def report_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    return [
        (f"Growth tools: `replay --sweep` of 5 values ÷ one `replay` ({r['replay_events']:,} events, same sitting)",
         f"{r['median_sweep5_over_replay']:.2f}x", "", "", r["command"]),
        (f"Growth tools: `report` of {r['report_records']:,} records ÷ one `replay` of the events (same sitting)",
         f"{r['median_report_over_replay']:.2f}x", "", "", ""),
    ]  # fmt: skip


def expansion_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Resident state per account by rule set: the new kinds' example rules against the shipped ones."""
    cmd = f"python bench/expansion_bench.py --accounts {r['accounts']} --days {r['days']}"
    names = {"shipped": "shipped rules", "expansion": "rules/examples/expansion",
             "examples": "rules/examples/expansion + pace (every new kind)"}  # fmt: skip
    rows = []
    for shape, suffix in (("small (a plan, two seats readings, ten API calls by 8 people of 3 teams)", "-small"),
                          (f"simulated {r['days']} days of {r['accounts']:,} accounts (people and teams on every event)", "")):  # fmt: skip
        for name, what in names.items():
            m = r.get(name + suffix)
            if m is None:
                continue
            new = name == "examples"
            rows.append((f"State per account, 100,000 accounts held decoded, {what}, {shape}: resident (RSS growth); changelog bytes (mean) [1 run]",
                         f"{m['resident_bytes_per_account']:,.0f} B; {m['state_bytes_mean']:,.0f} B",
                         "≤ 1 KiB" if new else "", verdict(m["resident_bytes_per_account"] <= 1024) if new else "",
                         cmd if not rows else ""))  # fmt: skip
    return rows


def main() -> int:
    rows: list[tuple[str, str, str, str, str]] = []
    machine: dict[str, Any] = {}
    if r := load("replay"):
        rows += replay_rows(r)
    for path in sorted(RESULTS.glob("replay-*.json")):  # earlier sittings of the same command: ratios only
        if r := load(path.stem):
            rows += replay_rows(r, f", `{path.name}`")[-2:]
    if r := load("prompt"):
        rows += prompt_rows(r)
    if r := load("throughput"):
        machine = r["machine"]
        m = r["median"]
        rows += service_rows(r)
        for path in sorted(RESULTS.glob("throughput-*.json")):  # other sittings: ratios only
            if (o := load(path.stem)) and "service_1w_near_limits" in o["median"]:
                rows += service_rows(o, f", `{path.name}`")
        if "faust_defaults" in m:  # older results files lack the defaults variant
            rows += [
                (f"Plain Faust agent, table write per event, output per 100, `faust worker` defaults: the reference pipeline (first {r['faust_events']:,} events)",
                 f"{m['faust_defaults']:,.0f} events/s", "", "", r["command"]),
                ("Service ÷ plain Faust with defaults (same run)", f"{m['vs_faust_defaults']:.1f}x", "≥ 25x",
                 verdict(m["vs_faust_defaults"] >= 25), ""),
            ]  # fmt: skip
            # Computed from the runs, so that results files without recorded ratios show them too.
            d = median([x["raw"] / x["faust_defaults"] for x in r["runs"]])
            t = median([x["raw"] / x["faust"] for x in r["runs"]])
            rows.append(("Raw ceiling ÷ plain Faust, defaults; tuned (same run): how far plain Faust is from the machine's ceiling",
                         f"{d:.0f}x; {t:.0f}x", "", "", ""))  # fmt: skip
        rows += [
            (f"Plain Faust agent, table write per event, output per 100, tuned (`-l info`, linger 5 ms) (first {r['faust_events']:,} events)",
             f"{m['faust']:,.0f} events/s", "", "", r["command"]),
            ("Service ÷ plain Faust tuned (same run): a stricter comparison than the reference pipeline, whose target is the defaults row",
             f"{m['vs_faust']:.1f}x", "", "", ""),
        ]  # fmt: skip
    # Every latency sitting (bench/latency.py --name): the worker, its floor, the other runtimes.
    firsts = (
        "latency-worker-pinned",
        "latency-floor",
        "latency-shared",
        "latency-embedded",
        "latency-gateway",
    )
    others = sorted(p.stem for p in RESULTS.glob("latency*.json") if p.stem not in firsts)
    for name in (*firsts, *others):
        if r := load(name):
            machine = machine or r["machine"]
            rows += latency_rows(r, name)
    for name in ("guarantee", "guarantee-2k", "guarantee-2k-current"):
        if r := load(name):
            rows += guarantee_rows(r)
    if r := load("eos-latency"):
        rows += eos_latency_rows(r)
    if r := load("transactions"):
        rows += transactions_rows(r)
    for path in sorted(RESULTS.glob("service-ab-*.json"), key=lambda p: p.stem):
        if r := load(path.stem):
            rows += service_ab_rows(r)
    if r := load("state"):
        machine = machine or r["machine"]
        counts = r.get("runs_per_config", {})
        for key, m in sorted(r["median"].items(), key=lambda kv: (int(kv[0].split("/")[1]), kv[0])):
            store, n = key.split("/")
            runs = counts.get(key, 3)
            note = f" [{runs} run{'s' if runs != 1 else ''}]"
            cmd = f"python bench/state_bench.py --accounts {n} --stores {store} --runs 3"
            peak = f"peak {m['peak_bytes_per_account']:,.0f} B; " if "peak_bytes_per_account" in m else ""
            rows.append((f"Memory per active account, {int(n):,} accounts, {store} store (RSS at rest after the load; peak during it; at rest after a restart){note}",
                         f"{m['bytes_per_account']:,.0f} B; {peak}{m['bytes_per_account_after_recovery']:,.0f} B",
                         "≤ 1 KiB", verdict(m["bytes_per_account"] <= 1024), cmd))  # fmt: skip
            target = "≤ 60 s at 1M" if int(n) >= 1_000_000 else ""
            rows.append((f"Recovery, {int(n):,} accounts, {store} store: clean restart; after SIGKILL (+ session timeout){note}",
                         f"{m['recovery_s']:.1f} s; {m.get('recovery_after_sigkill_s', float('nan')):.1f} s",
                         target, verdict(m["recovery_s"] <= 60) if target else "", cmd))  # fmt: skip
    if r := load("state-variants"):  # other rule sets, shapes and settings (bench/state_bench.py)
        counts = r.get("runs_per_config", {})
        for key, m in sorted(r["median"].items()):
            store, n, *parts = key.split("/")
            if "=" in parts[0]:  # the shipped rules' seats shape with settings
                parts.insert(0, "shipped-seats")
            variant, *settings = parts
            rules, shape = variant.split("-", 1)
            runs = counts.get(key, 1)
            sets = "".join(f" --set {kv}" for kv in settings)
            cmd = (
                f"python bench/state_bench.py --accounts {n} --stores {store} --rules {rules} --shape {shape}"
                f"{sets} --runs {runs}"
            )
            named = f"{rules} rules, {shape} shape" + "".join(f", {kv}" for kv in settings)
            rows.append((f"Memory per active account, {int(n):,} accounts, {store} store, {named} (RSS at rest after the load; peak during it; at rest after a restart) [{runs} run{'s' if runs != 1 else ''}]",
                         f"{m['bytes_per_account']:,.0f} B; peak {m['peak_bytes_per_account']:,.0f} B; {m['bytes_per_account_after_recovery']:,.0f} B",
                         "≤ 1 KiB", verdict(m["bytes_per_account"] <= 1024), cmd))  # fmt: skip
    if r := load("pack"):
        rows += pack_rows(r)
    if r := load("scaling"):
        m = r["median"]
        for k in sorted(k for k in m if k.startswith("total_")):
            wn = k.split("_")[1]
            rows.append((f"Scaling: {wn.rstrip('w')} worker(s), {r['partitions']} partitions, {r['events']:,} events",
                         f"{m[k]:,.0f} events/s total, {m['per_worker_' + wn]:,.0f}/worker", "", "", r["command"]))  # fmt: skip
    if r := load("gateway"):
        rows += gateway_rows(r)
    if r := load("report"):
        rows += report_rows(r)
    if r := load("expansion"):
        rows += expansion_rows(r)
    out = ["# Benchmarks", ""]
    out.append(
        "Every figure is the median of ≥ 3 runs on this machine unless its row says otherwise; ratios are "
        "taken within one run (the machine is shared and noisy). Regenerate: run the commands below, then "
        "`python bench/render.py`."
    )
    out.append("")
    if machine:
        out.append(
            f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu') or 'unknown'}), "
            f"{machine.get('platform')}, Python {machine.get('python')}; Apache Kafka {machine.get('kafka')} "
            "(KRaft, single node, same machine, via deploy/kafka-local)."
        )
        others = sorted(
            name
            for name in ("latency", "state", "scaling")
            if (r := load(name))
            and isinstance(r.get("machine"), dict)
            and r["machine"].get("cpu") != machine.get("cpu")
        )
        if others:
            out.append(
                f"The {', '.join(others[:-1]) + ' and ' if len(others) > 1 else ''}{others[-1]} rows come from a machine of the same size with another CPU "
                f"({load(others[0])['machine'].get('cpu')}); their commands reproduce them."
            )
        out.append("")
    out.append("| benchmark | result | target | | command |")
    out.append("| --- | --- | --- | --- | --- |")
    for name, result, target, ok, cmd in rows:
        if cmd.startswith("python ") and not cmd.startswith("python bench/"):
            cmd = "python bench/" + cmd[len("python ") :]
        out.append(
            f"| {name} | {result} | {target} | {ok} | `{cmd}` |"
            if cmd
            else f"| {name} | {result} | {target} | {ok} | |"
        )
    out.append("")
    out.append(READING)
    (ROOT / "BENCHMARKS.md").write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote BENCHMARKS.md ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
