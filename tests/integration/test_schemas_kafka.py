"""The worker's prompts, read from the prompts topic, against the shipped prompt schema."""

from __future__ import annotations

import io

import orjson
import pytest

from devkit.kafka_io import collect, produce, sim_records
from devkit.worker import ROOT
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.replay import replay

from ..schemacheck import assert_valid_prompts, errors

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def test_worker_prompts_match_the_prompt_schema(worker_factory, kafka_bootstrap):
    records = list(sim_records(6_000, 300, seed=8))
    for _, value in records:
        assert not errors("events", orjson.loads(value))
    # How many prompts the worker must emit: replay decides alike (same engine, event time as clock).
    out = io.BytesIO()
    replay(load_ruleset(ROOT / "rules"), io.BytesIO(b"\n".join(v for _, v in records)), out, io.StringIO())
    want = len(out.getvalue().splitlines())
    assert want > 20

    w = worker_factory().start()
    w.wait_ready()
    await produce(kafka_bootstrap, w.topics["events"], records)
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=want, timeout=60)
    prompts = [orjson.loads(r.value) for r in recs]
    assert len(prompts) >= want
    assert_valid_prompts(prompts)
    assert all(r.key == p["account_id"].encode() for r, p in zip(recs, prompts, strict=True))
    # Every account of the workload is held (memory store: all of them, decoded or as bytes).
    accounts = len({k for k, _ in records})
    assert w.metric("upsell_accounts_in_memory") == accounts
