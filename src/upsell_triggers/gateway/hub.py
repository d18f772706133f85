"""Pending prompts per account and the open streams they go to. Transport-free: the HTTP layer turns
what it returns into Server-Sent Events, the Kafka feed and the embedded runner call `publish`.

Resume: every prompt gets a sequence number, its SSE event id. Fed from Kafka it is the record's offset:
the worker keys prompts by account, so one account's prompts are all on one partition, in the same order
for every gateway replica and after a restart, and `Last-Event-ID: N` means "everything of mine after
offset N" on any replica. Fed in-process it is a counter.

Bounds: at most `max_per_account` pending prompts per account (the soonest to expire goes first), at most
`max_total` in all (the same, across accounts), each dropped at its `expires_at`; at most
`max_marks_per_prompt` users' feedback marks per prompt; a subscriber's undelivered frames are bounded
(a stream that cannot keep up is closed, and resumes from its last event id)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from upsell_triggers.engine.timeutil import datetime_to_ms

ACTIONS = ("shown", "clicked", "dismissed")


@dataclass(slots=True)
class Pending:
    seq: int
    prompt_id: str
    user_id: str | None
    expires_ms: int
    frame: bytes  # the SSE frame, formatted once for every stream it goes to
    marks: set[tuple[str, str]] = field(default_factory=set)  # (user, action) feedback seen

    def visible_to(self, user_id: str) -> bool:
        return (self.user_id is None or self.user_id == user_id) and (user_id, "dismissed") not in self.marks


class Subscriber:
    """One open stream of one user. `frames` collects what the hub publishes until the stream writes it."""

    __slots__ = ("account_id", "after", "frames", "overflowed", "user_id", "wake")

    def __init__(self, account_id: str, user_id: str, after: int | None = None) -> None:
        self.account_id = account_id
        self.user_id = user_id
        self.after = after  # the stream resumed after this event id: nothing at or below it is sent
        self.frames: list[bytes] = []
        self.wake = asyncio.Event()
        self.overflowed = False

    async def next(self, timeout: float) -> list[bytes]:
        """Frames published since the last call, or [] after `timeout` seconds without any."""
        if not self.frames:
            self.wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                return []
        out, self.frames = self.frames, []
        return out


def parse_prompt(raw: bytes) -> tuple[dict[str, Any], str, str, str | None, int] | None:
    """(prompt, prompt_id, account_id, user_id, expires_ms) of a prompt record, or None if it is not one."""
    try:
        p = orjson.loads(raw)
        pid, acct, uid, exp = p["prompt_id"], p["account_id"], p.get("user_id"), p["expires_at"]
        if type(pid) is not str or type(acct) is not str or not pid or not acct:
            return None
        if uid is not None and type(uid) is not str:
            return None
        return p, pid, acct, uid or None, datetime_to_ms(datetime.fromisoformat(exp))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def prompt_frame(seq: int, prompt: dict[str, Any]) -> bytes:
    """The browser's view of a prompt: the prompt as the worker produced it, minus the account id (the
    browser knows its account; the frame never names one, so a misrouted frame could not leak it)."""
    view = {k: v for k, v in prompt.items() if k != "account_id"}
    return b"id: %d\nevent: prompt\ndata: %s\n\n" % (seq, orjson.dumps(view))


def dismissed_frame(prompt_id: str) -> bytes:
    return b"event: dismissed\ndata: %s\n\n" % orjson.dumps({"prompt_id": prompt_id})


class Hub:
    def __init__(
        self,
        clock: Callable[[], float],
        max_per_account: int = 50,
        max_total: int = 1_000_000,
        max_marks_per_prompt: int = 1_000,
        max_frames_per_stream: int = 256,
    ) -> None:
        self.clock = clock  # seconds since the epoch
        self.max_per_account = max_per_account
        self.max_total = max_total
        self.max_marks_per_prompt = max_marks_per_prompt
        self.max_frames_per_stream = max_frames_per_stream
        self.pending: dict[str, dict[str, Pending]] = {}
        self.total = 0
        self.subs: dict[str, set[Subscriber]] = {}
        self.streams = 0
        self._expiry: list[tuple[int, str, str, int]] = []  # (expires_ms, account, prompt_id, seq)
        self._seq = 0
        self.evicted = 0

    # ---- prompts in --------------------------------------------------------------------------------

    def publish_raw(self, raw: bytes, seq: int | None = None) -> str:
        """A prompt record (bytes as on the topic): 'delivered' | 'duplicate' | 'expired' | 'invalid'."""
        parsed = parse_prompt(raw)
        if parsed is None:
            return "invalid"
        return self._publish(*parsed, seq=seq)

    def publish(self, prompt: dict[str, Any], seq: int | None = None) -> str:
        """An already decoded prompt (the embedded runner's); outcomes as publish_raw."""
        parsed = parse_prompt(orjson.dumps(prompt))
        if parsed is None:
            return "invalid"
        return self._publish(*parsed, seq=seq)

    def _publish(
        self,
        prompt: dict[str, Any],
        pid: str,
        acct: str,
        uid: str | None,
        expires_ms: int,
        seq: int | None,
    ) -> str:
        if expires_ms <= self.clock() * 1000:
            return "expired"
        prompts = self.pending.get(acct)
        if prompts is not None and pid in prompts:
            return "duplicate"  # the worker re-sent it after a crash: the browser has it already
        if seq is None:
            self._seq += 1
            seq = self._seq
        if prompts is None:
            prompts = self.pending[acct] = {}
        if len(prompts) >= self.max_per_account:
            victim = min(prompts.values(), key=lambda p: p.expires_ms)
            self._drop(acct, victim.prompt_id)
            self.evicted += 1
            prompts = self.pending.setdefault(acct, {})
        while self.total >= self.max_total and self._expiry:
            if self._pop_expiry():
                self.evicted += 1
        entry = Pending(seq, pid, uid, expires_ms, prompt_frame(seq, prompt))
        prompts[pid] = entry
        self.total += 1
        heapq.heappush(self._expiry, (expires_ms, acct, pid, seq))
        if len(self._expiry) > 2 * self.total + 1024:
            self._compact()
        for sub in self.subs.get(acct, ()):
            if (uid is None or uid == sub.user_id) and (sub.after is None or seq > sub.after):
                self._push(sub, entry.frame)
        return "delivered"

    def _push(self, sub: Subscriber, frame: bytes) -> None:
        if len(sub.frames) >= self.max_frames_per_stream:
            sub.overflowed = True  # the stream closes; the browser resumes from its last event id
        else:
            sub.frames.append(frame)
        sub.wake.set()

    def _drop(self, acct: str, pid: str) -> None:
        prompts = self.pending[acct]
        del prompts[pid]
        self.total -= 1
        if not prompts:
            del self.pending[acct]

    def _pop_expiry(self) -> bool:
        """Pops the soonest-expiring heap entry; True if it was still pending (and is dropped now)."""
        _, acct, pid, seq = heapq.heappop(self._expiry)
        entry = self.pending.get(acct, {}).get(pid)
        if entry is None or entry.seq != seq:
            return False  # already evicted by the per-account bound
        self._drop(acct, pid)
        return True

    def _compact(self) -> None:
        """Rebuilds the expiry heap from what is pending: entries of prompts evicted by the per-account
        bound stay in the heap until their expiry otherwise, so a hot account could grow it past the
        bound on pending prompts."""
        self._expiry = [
            (p.expires_ms, a, p.prompt_id, p.seq) for a, ps in self.pending.items() for p in ps.values()
        ]
        heapq.heapify(self._expiry)

    def expire(self) -> int:
        """Drops prompts past their expires_at; returns how many."""
        now_ms = self.clock() * 1000
        n = 0
        while self._expiry and self._expiry[0][0] <= now_ms:
            n += self._pop_expiry()
        return n

    # ---- feedback ----------------------------------------------------------------------------------

    def find(self, account_id: str, user_id: str, prompt_id: str) -> Pending | None:
        """The pending prompt if this user may give feedback on it (it is addressed to them)."""
        entry = self.pending.get(account_id, {}).get(prompt_id)
        if entry is None or (entry.user_id is not None and entry.user_id != user_id):
            return None
        return entry

    def mark(self, account_id: str, user_id: str, prompt_id: str, action: str) -> bool:
        """Records feedback (from this replica's endpoint or the feedback topic). False if this user's
        action on the prompt is already recorded (or the prompt is not pending): nothing to send again."""
        entry = self.find(account_id, user_id, prompt_id)
        if entry is None or (user_id, action) in entry.marks:
            return False
        if len(entry.marks) >= self.max_marks_per_prompt:
            return False
        entry.marks.add((user_id, action))
        if action == "dismissed":  # the user's other tabs take it down too
            frame = dismissed_frame(prompt_id)
            for sub in self.subs.get(account_id, ()):
                if sub.user_id == user_id:
                    self._push(sub, frame)
        return True

    # ---- streams -----------------------------------------------------------------------------------

    def visible(self, account_id: str, user_id: str, after_seq: int | None = None) -> list[Pending]:
        """What this user has pending, in event-id order: all of it, or only what follows `after_seq`."""
        now_ms = self.clock() * 1000
        out = [
            p
            for p in self.pending.get(account_id, {}).values()
            if p.expires_ms > now_ms and p.visible_to(user_id) and (after_seq is None or p.seq > after_seq)
        ]
        out.sort(key=lambda p: p.seq)
        return out

    def subscribe(
        self, account_id: str, user_id: str, after_seq: int | None = None
    ) -> tuple[Subscriber, list[Pending]]:
        """A new stream and what it must send first. Both in one step of the event loop, so nothing
        published between the snapshot and the subscription is lost or sent twice."""
        sub = Subscriber(account_id, user_id, after_seq)
        self.subs.setdefault(account_id, set()).add(sub)
        self.streams += 1
        return sub, self.visible(account_id, user_id, after_seq)

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self.subs.get(sub.account_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            self.streams -= 1
            if not subs:
                del self.subs[sub.account_id]
