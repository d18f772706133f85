from __future__ import annotations

import asyncio

import orjson

from tests.gateway.helpers import Clock, prompt
from upsell_triggers.gateway.hub import Hub


def ids(entries: list) -> list[str]:  # type: ignore[type-arg]
    return [e.prompt_id for e in entries]


def frame_ids(frames: list[bytes]) -> list[str]:
    out = []
    for f in frames:
        data = f.split(b"\ndata: ", 1)[1].rstrip(b"\n")
        out.append(orjson.loads(data)["prompt_id"])
    return out


def test_user_and_account_wide_routing_and_no_account_id_in_frames() -> None:
    hub = Hub(Clock())
    a, _ = hub.subscribe("acct-1", "alice")
    b, _ = hub.subscribe("acct-1", "bob")
    other, _ = hub.subscribe("acct-2", "alice")
    assert hub.publish(prompt("p1")) == "delivered"  # account-wide
    assert hub.publish(prompt("p2", user="alice")) == "delivered"
    assert frame_ids(a.frames) == ["p1", "p2"]
    assert frame_ids(b.frames) == ["p1"]
    assert other.frames == []
    assert all(b"acct-1" not in f for f in a.frames)
    assert ids(hub.visible("acct-1", "bob")) == ["p1"]
    assert ids(hub.visible("acct-2", "alice")) == []


def test_redelivered_prompt_reaches_streams_once() -> None:
    hub = Hub(Clock())
    s, _ = hub.subscribe("acct-1", "alice")
    assert hub.publish_raw(orjson.dumps(prompt("p1")), seq=10) == "delivered"
    assert hub.publish_raw(orjson.dumps(prompt("p1")), seq=17) == "duplicate"
    assert frame_ids(s.frames) == ["p1"]
    assert hub.total == 1


def test_resume_after_seq_gives_exactly_the_missed() -> None:
    hub = Hub(Clock())
    for i, seq in enumerate((3, 5, 9)):
        hub.publish(prompt(f"p{i}"), seq=seq)
    _, first = hub.subscribe("acct-1", "u")
    assert [e.seq for e in first] == [3, 5, 9]
    _, resumed = hub.subscribe("acct-1", "u", after_seq=5)
    assert ids(resumed) == ["p2"]
    _, none = hub.subscribe("acct-1", "u", after_seq=9)
    assert none == []


def test_dismissed_not_delivered_again_to_that_user_and_other_tabs_told() -> None:
    hub = Hub(Clock())
    hub.publish(prompt("p1"))
    tab2, _ = hub.subscribe("acct-1", "alice")
    assert hub.mark("acct-1", "alice", "p1", "dismissed")
    assert not hub.mark("acct-1", "alice", "p1", "dismissed")  # idempotent
    assert tab2.frames == [b'event: dismissed\ndata: {"prompt_id":"p1"}\n\n']
    assert ids(hub.visible("acct-1", "alice")) == []
    assert ids(hub.visible("acct-1", "bob")) == ["p1"]
    _, snap = hub.subscribe("acct-1", "alice")
    assert snap == []


def test_feedback_only_on_prompts_addressed_to_the_user() -> None:
    hub = Hub(Clock())
    hub.publish(prompt("p1", user="alice"))
    assert hub.find("acct-1", "bob", "p1") is None
    assert hub.find("acct-2", "alice", "p1") is None
    assert not hub.mark("acct-1", "bob", "p1", "clicked")
    assert hub.mark("acct-1", "alice", "p1", "clicked")


def test_bounds_per_account_total_and_expiry() -> None:
    clock = Clock()
    hub = Hub(clock, max_per_account=3, max_total=5)
    for i in range(4):  # p0 expires first: it goes at the per-account bound
        hub.publish(prompt(f"a{i}", ttl_s=100 + i))
    assert sorted(hub.pending["acct-1"]) == ["a1", "a2", "a3"]
    for i in range(3):
        hub.publish(prompt(f"b{i}", account="acct-2", ttl_s=50 + i))
    assert hub.total == 5
    assert "b0" not in hub.pending["acct-2"]  # soonest to expire of all
    assert hub.evicted == 2
    assert hub.publish(prompt("old", ttl_s=-1)) == "expired"
    clock.t += 101.5
    assert hub.expire() == 3  # b1, b2 (50-51 s), a1 (101 s)
    assert hub.total == 2
    assert sorted(hub.pending) == ["acct-1"]


def test_slow_stream_overflows_instead_of_growing() -> None:
    hub = Hub(Clock(), max_frames_per_stream=2)
    s, _ = hub.subscribe("acct-1", "u")
    for i in range(3):
        hub.publish(prompt(f"p{i}"))
    assert len(s.frames) == 2 and s.overflowed


async def test_subscriber_wakes_and_times_out() -> None:
    hub = Hub(Clock())
    s, _ = hub.subscribe("acct-1", "u")
    assert await s.next(0.01) == []
    asyncio.get_running_loop().call_later(0.01, hub.publish, prompt("p1"))
    assert frame_ids(await s.next(5)) == ["p1"]
    hub.unsubscribe(s)
    assert hub.streams == 0 and hub.subs == {}


def test_a_resumed_stream_never_receives_what_it_had() -> None:
    hub = Hub(Clock())
    s, snap = hub.subscribe("acct-1", "u", after_seq=5)
    assert snap == []
    hub.publish(prompt("old"), seq=5)  # e.g. read while the topic is read again
    hub.publish(prompt("new"), seq=6)
    assert frame_ids(s.frames) == ["new"]


def test_expiry_index_stays_bounded_under_per_account_eviction() -> None:
    hub = Hub(Clock(), max_per_account=3)
    for i in range(5000):  # one hot account: every publish evicts one
        hub.publish(prompt(f"p{i}"))
    assert hub.total == 3
    assert len(hub._expiry) <= 2 * hub.total + 1025
    assert sorted(hub.pending["acct-1"]) == ["p4997", "p4998", "p4999"]
