"""Per-prompt cost: `build_prompt` alone, over prompts of every shipped rule with varied readings.

    python bench/prompt_bench.py [--prompts 20000] [--repeats 7]

Prints microseconds per prompt and writes bench/results/prompt.json: the best of --repeats passes over
the same cases, timed in this process's CPU time, so that other processes on a shared machine inflate
it least.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from upsell_triggers.engine.prompts import build_prompt
from upsell_triggers.engine.ruleset import RuleSet, load_ruleset

ROOT = Path(__file__).resolve().parent.parent


def cases(rs: RuleSet, n: int, seed: int = 5) -> list[dict[str, Any]]:
    """build_prompt's keyword arguments for n prompts: every rule, plans below the top, readings around
    the limits (and limits of 0 and unlimited), features for the paywall rules, user ids on half."""
    rng = random.Random(seed)
    out = []
    plans = [p for p in rs.plans if p.tier < rs.plans[-1].tier]
    for i in range(n):
        rule = rs.rules[i % len(rs.rules)]
        plan = rng.choice(plans)
        limit = rng.choice([plan.limits.get(rule.primary.metric), 0.0, None, 5.0, 2.0**31])
        value = float(rng.choice([rng.randrange(0, 50), rng.uniform(0, 2) * (limit or 10), 3.0]))
        out.append(
            {
                "rs": rs,
                "rule": rule,
                "account_id": f"acct-{rng.randrange(100_000):05d}",
                "user_id": f"u-{i}" if rng.random() < 0.5 else None,
                "feature": rng.choice(["sso", "audit_log", "scim"]) if rule.primary.feature else None,
                "value": value,
                "limit": limit,
                "plan": plan,
                "target": rs.plans[plan.tier + 1],
                "trigger_event_id": f"e-{i}",
                "ts": 1_793_491_200_000 + rng.randrange(10**10),
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    rs = load_ruleset(ROOT / "rules")
    cs = cases(rs, a.prompts)
    passes = []
    for _ in range(a.repeats):
        t = time.process_time()
        for c in cs:
            build_prompt(**c)
        passes.append((time.process_time() - t) / len(cs) * 1e6)
    result = {
        "benchmark": "build_prompt alone, per prompt",
        "prompts": a.prompts,
        "best_us_per_prompt": min(passes),
        "passes_us_per_prompt": passes,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(["python bench/prompt_bench.py", *sys.argv[1:]]),
    }
    shown = ", ".join(f"{p:.2f}" for p in passes)
    print(f"build_prompt: {min(passes):.2f} us per prompt (best of {a.repeats}; passes {shown})")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prompt.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
