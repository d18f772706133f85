"""A built-in workload: accounts on different plans growing seats, storage and API calls, hitting paywalls.

Deterministic for a seed. Simulated event time advances `step_ms` per round, so a few seconds of wall
time cover weeks of account life and prompts fire quickly.

Two account shapes: by default most accounts are far from their plan limits (the common case of a
product's account base); `near_limits=True` is a launch week, every account close to its limits: seats
and storage drifting across 80% and 100% and back, API quotas spent within the month, bursts of paywall
hits, upgrades. `bench/workloads.py` adds what producers send on top (timestamp formats, optional
user ids, duplicates, prompt feedback).

`expansion=True` adds what distinct counts, growth and forecast conditions read (rules/examples/expansion
and rules/examples/pace): each account has people (about one per seat, a few more on a full plan) and
teams (one or two, and now and then a new one), and every event names its user and, as the attribute
`team_id`, that user's team. A share of the accounts have a shape of their own (`SHAPES`), the cases a
forecast must get right and a growth rule must see:

- `burst`: an import of half the API quota or more on the first day of each billing period, little
  use after it. A trap: a forecast from the first days' mean would say the quota runs out; it does not.
- `month_end`: almost all of the month's API calls in its last ten days, about 80% of the quota by the
  period's end, little at the start of the next. A trap: the rate of the last days, carried past the
  reset, would project beyond the quota.
- `cleanup`: seats grow by about one a day towards the plan's limit, then a cleanup removes a third of
  them or more and the count stays flat for two weeks before growing again. A trap: the trend from
  before the fall does not hold after it.
- `topup`: API calls at a pace that spends the quota within the month; at 80% of it the account buys
  a top-up (a `plan_changed` to its own plan with a per-account `api_calls` limit twice as high).
- `ramp`: with `api_requests` among `metrics` (a rolling counter, as rules/examples/expansion declares
  it), the account's API requests quadruple from a day in its second to fifth week (an integration
  launched); every account sends them, at a steady rate otherwise.

Each trap's quiet spans (`Simulator.quiet`: account, rule kind, from, to) are where a forecast must not
fire, which the tests check against a replay. Off by default, so the default workload's events stay as
they are.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator
from typing import Any

from upsell_triggers.engine.timeutil import DAY, HOUR, billing_period

PLANS = (
    ("free", 5, 2 * 2**30, 10_000),
    ("team", 25, 100 * 2**30, 1_000_000),
    ("business", 200, 2**40, 10_000_000),
)
FEATURES = ("sso", "audit_log", "scim")
START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
# Expansion mode: the share of accounts with each shape ("": the default walk).
SHAPES = {"": 64, "burst": 6, "month_end": 6, "cleanup": 8, "topup": 6, "ramp": 10}
API_REQUESTS = "api_requests"


class Simulator:
    def __init__(
        self,
        accounts: int = 300,
        seed: int = 7,
        step_ms: int = HOUR,
        start_ms: int = START_MS,
        near_limits: bool = False,
        expansion: bool = False,
        high_touch_every: int = 0,
        metrics: Collection[str] = (),
    ) -> None:
        """`high_touch_every` N > 0: every Nth account is marked `segment: high_touch` by an
        account_updated event in its first round (the shipped rules send such accounts leads, not
        prompts); 0 sends no traits, and the events are what they are without the option. `metrics`:
        the rule set's metric names; with expansion, `api_requests` is sent only if it is one of them
        (another catalog rejects it)."""
        self.high_touch_every = high_touch_every
        self.api_requests = expansion and API_REQUESTS in metrics
        # (account id, "period_forecast" | "gauge_forecast", from ms, to ms): spans of trap accounts
        # where a forecast of that kind must not fire (to None: until the end).
        self.quiet: list[tuple[str, str, int, int | None]] = []
        self.rng = random.Random(seed)
        self.expansion = expansion
        self.step_ms = step_ms
        self.now = start_ms
        self.seq = 0
        self.near_limits = near_limits
        self.accounts: list[dict[str, Any]] = []
        for i in range(accounts):
            tier = self.rng.choices(range(3), weights=(6, 3, 1))[0]
            _, seats, storage, api = PLANS[tier]
            if near_limits:  # a launch week: everyone close to a limit, half of them paywall users
                acct = {
                    "seats": max(1, round(seats * self.rng.uniform(0.6, 1.0))),
                    "storage": storage * self.rng.uniform(0.65, 0.98),
                    "growth": self.rng.uniform(0.005, 0.03),
                    "api_rate": api * self.rng.uniform(0.05, 0.2),
                    "paywall": self.rng.random() < 0.5,
                }
            else:
                acct = {
                    "seats": max(1, int(seats * self.rng.uniform(0.2, 0.7))),
                    "storage": storage * self.rng.uniform(0.1, 0.6),
                    "growth": self.rng.uniform(0.002, 0.02),
                    "api_rate": api * self.rng.uniform(0.0005, 0.004),
                    "paywall": self.rng.random() < 0.3,
                }
            self.accounts.append({"id": f"acct-{i:05d}", "tier": tier, **acct, "new": True})
            if expansion:
                a = self.accounts[-1]
                a["teams"] = self.rng.choice((1, 1, 2))
                a["shape"] = self.rng.choices(tuple(SHAPES), weights=tuple(SHAPES.values()))[0]
                a["requests"] = self.rng.uniform(20, 200)  # API requests per hour
                a["launch"] = start_ms + self.rng.randrange(8, 35) * DAY  # a ramp account's launch
                if a["shape"] in ("burst", "month_end"):
                    self.quiet.append((a["id"], "period_forecast", start_ms, None))

    def _people(self, acct: dict[str, Any]) -> dict[str, Any]:
        """The user (one of about a seat's worth of people, more when the plan is full) and their team."""
        rng = self.rng
        cap = PLANS[acct["tier"]][1]
        people = acct["seats"] + (rng.randrange(1, 6) if acct["seats"] >= cap else rng.randrange(0, 2))
        if rng.random() < 0.002:  # a new team (department) starts using the product
            acct["teams"] += 1
        user = rng.randrange(people)
        return {"user_id": f"u-{user}", "attributes": {"team_id": f"t-{user % acct['teams']}"}}

    def _ev(self, acct: dict[str, Any], etype: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": f"sim-{self.seq}",
            "account_id": acct["id"],
            "type": etype,
            "ts": self.now + self.rng.randrange(self.step_ms),
            "user_id": f"u-{self.rng.randrange(50)}",
            **fields,
            **(self._people(acct) if self.expansion else {}),
        }

    def round(self) -> Iterator[dict[str, Any]]:
        """One step of simulated time: a few events per account."""
        self.now += self.step_ms
        if self.near_limits:
            yield from self._round_near_limits()
            return
        for a in self.accounts:
            if a["new"]:
                a["new"] = False
                yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0])
                if self.high_touch_every and int(a["id"][5:]) % self.high_touch_every == 0:
                    yield self._ev(a, "account_updated", traits={"segment": "high_touch"})
            if self.expansion:
                yield from self._expansion(a)
            r = self.rng.random()
            if self.expansion and a["shape"] in ("burst", "month_end", "topup") and 0.30 <= r < 0.85:
                yield from self._shaped_api(a)
            elif self.expansion and a["shape"] == "cleanup" and r < 0.15:
                yield self._cleanup_seats(a)
            elif r < 0.15:
                cap = PLANS[a["tier"]][1]
                a["seats"] = max(1, min(int(cap * 1.1), a["seats"] + self.rng.choice((-1, 1, 1, 1))))
                yield self._ev(a, "usage", metric="seats", value=a["seats"])
            elif r < 0.30:
                a["storage"] *= 1 + a["growth"]
                yield self._ev(a, "usage", metric="storage_bytes", value=int(a["storage"]))
            elif r < 0.85:
                yield self._ev(
                    a, "usage", metric="api_calls", delta=int(a["api_rate"] * self.rng.uniform(0.5, 1.5))
                )
            elif a["paywall"] and r < 0.95:
                yield self._ev(a, "paywall_hit", feature=self.rng.choice(FEATURES))
            elif r > 0.999 and a["tier"] < 2:
                a["tier"] += 1
                a.pop("api_limit", None)  # a plan change ends a top-up: the new plan's limits apply
                yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0])

    def _quota(self, a: dict[str, Any]) -> float:
        return float(a.get("api_limit") or PLANS[a["tier"]][3])

    def _expansion(self, a: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """An account's API requests (a rolling counter), when the rule set declares them: a steady
        rate, quadrupled from a ramp account's launch on."""
        if self.api_requests and self.rng.random() < 0.3:
            rate = a["requests"] * (4 if a["shape"] == "ramp" and self.now >= a["launch"] else 1)
            yield self._ev(a, "usage", metric=API_REQUESTS, delta=int(rate * self.rng.uniform(0.7, 1.3)))

    def _shaped_api(self, a: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """API calls (a period counter) of the burst, month-end and top-up shapes."""
        quota = self._quota(a)
        start, end = billing_period(self.now, None)
        if a.get("period") != start:  # a new billing period: its count starts again
            a["period"], a["used"] = start, 0.0
            if a["shape"] == "topup" and a.get("api_limit"):
                a["api_limit"] = None  # the top-up was for one period
                yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0])
                quota = self._quota(a)
        hours = (end - start) / HOUR
        shape = a["shape"]
        if shape == "burst" and a["used"] == 0:
            delta = quota * self.rng.uniform(0.5, 0.6)  # the import
        elif shape == "burst":
            delta = quota * 0.15 / (hours * 0.55) * self.rng.uniform(0.5, 1.5)
        elif shape == "month_end":
            late = end - self.now <= 10 * DAY
            delta = quota * (0.7 / (240 * 0.55) if late else 0.05 / ((hours - 240) * 0.55))
            delta *= self.rng.uniform(0.8, 1.0)
        else:  # topup: the quota spent in about three weeks
            delta = quota * 1.4 / (hours * 0.55) * self.rng.uniform(0.5, 1.5)
        a["used"] += int(delta)
        yield self._ev(a, "usage", metric="api_calls", delta=int(delta))
        if shape == "topup" and not a.get("api_limit") and a["used"] >= 0.8 * quota:
            a["api_limit"] = 2 * PLANS[a["tier"]][3]
            yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0], limits={"api_calls": a["api_limit"]})

    def _cleanup_seats(self, a: dict[str, Any]) -> dict[str, Any]:
        """A cleanup account's seats: about one more a day up to 80-95% of the plan's limit, then a
        cleanup down to 40-60% of it, flat for two weeks (a quiet span for gauge forecasts)."""
        cap = PLANS[a["tier"]][1]
        if self.now < a.get("flat_until", 0):
            pass
        elif a["seats"] >= cap * a.setdefault("peak", self.rng.uniform(0.8, 0.95)):
            a["seats"] = max(1, int(cap * self.rng.uniform(0.4, 0.6)))
            a["flat_until"] = self.now + 14 * DAY
            a["peak"] = self.rng.uniform(0.8, 0.95)
            self.quiet.append((a["id"], "gauge_forecast", self.now, a["flat_until"]))
        elif self.rng.random() < 0.28:
            a["seats"] += max(1, cap // 50)
        return self._ev(a, "usage", metric="seats", value=a["seats"])

    def _round_near_limits(self) -> Iterator[dict[str, Any]]:
        """Seats walk up and down across 80% and 100% of the plan's limit (so rules re-arm and fire
        again), storage grows and is cleaned up, API quotas run out within the month, paywall users hit
        a feature several times in a row, and upgrades are frequent."""
        rng = self.rng
        for a in self.accounts:
            if a["new"]:
                a["new"] = False
                yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0])
                if self.high_touch_every and int(a["id"][5:]) % self.high_touch_every == 0:
                    yield self._ev(a, "account_updated", traits={"segment": "high_touch"})
            _, cap, storage_limit, _ = PLANS[a["tier"]]
            r = rng.random()
            if r < 0.25:
                step = rng.choice((-2, -1, -1, 1, 1, 2)) * max(1, cap // 25)
                a["seats"] = max(1, min(round(cap * 1.15), a["seats"] + step))
                if a["seats"] < cap * 0.6:  # drift back towards the limit
                    a["seats"] += max(1, cap // 10)
                yield self._ev(a, "usage", metric="seats", value=a["seats"])
            elif r < 0.45:
                if a["storage"] > storage_limit * 1.05 or rng.random() < 0.1:
                    a["storage"] *= rng.uniform(0.6, 0.85)  # a clean-up
                else:
                    a["storage"] *= 1 + a["growth"]
                yield self._ev(a, "usage", metric="storage_bytes", value=int(a["storage"]))
            elif r < 0.80:
                yield self._ev(
                    a, "usage", metric="api_calls", delta=int(a["api_rate"] * rng.uniform(0.5, 1.5))
                )
            elif a["paywall"] and r < 0.95:
                feature = rng.choice(FEATURES)
                for _ in range(rng.randrange(1, 5)):  # a burst: the user tries again
                    yield self._ev(a, "paywall_hit", feature=feature)
            elif r > 0.995 and a["tier"] < 2:
                a["tier"] += 1
                yield self._ev(a, "plan_changed", plan=PLANS[a["tier"]][0])

    def events(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        n = 0
        while limit is None or n < limit:
            for ev in self.round():
                yield ev
                n += 1
                if limit is not None and n >= limit:
                    return
