"""The whole path in a real browser (Debian's headless chromium through chromedriver): a usage event into
a running worker -> the prompt on the gateway's demo page -> shown on sight, clicked on the CTA -> feedback
events on the topic and the worker's funnel metric; a gateway restart resumes the stream without loss or
repeat; another account's token sees nothing. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from devkit.gateway import SECRET, GatewayProc
from devkit.kafka_io import collect, event, produce
from devkit.worker import ROOT, Worker
from upsell_triggers.gateway.tokens import sign

pytestmark = pytest.mark.kafka
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(what: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def feedback_metric(w: Worker, action: str) -> float:
    body = w.get("/metrics")[1]
    return sum(
        float(v)
        for v in re.findall(rf'^upsell_feedback_total{{[^}}]*action="{action}"[^}}]*}} (\S+)$', body, re.M)
    )


def open_demo(d: Any, g: GatewayProc, account: str, user: str) -> None:
    tok = sign(SECRET.encode(), account, user, int(time.time()) + 600)
    d.get(f"{g.url}/demo?token={tok}&account={account}")
    wait_for(lambda: d.find_element("id", "status").text == "live")


def events(d: Any) -> list[list[Any]]:
    return list(d.execute_script("return window.upsellEvents"))


def test_prompt_to_browser_and_back(
    worker_factory: Any, kafka_bootstrap: str, tmp_path: Path, browser: Any
) -> None:
    d = browser
    ARTIFACTS.mkdir(exist_ok=True)
    w: Worker = worker_factory().start()
    w.wait_ready()
    g = GatewayProc(kafka_bootstrap, w.topics, tmp_path / "gateway.log").start()
    g.wait_ready()
    account, now = f"acct-{uuid.uuid4().hex[:6]}", int(time.time() * 1000)
    clicked_before = feedback_metric(w, "clicked")
    try:
        open_demo(d, g, account, "alice")
        asyncio.run(
            produce(
                kafka_bootstrap,
                w.topics["events"],
                [event(account, "e1", now, type="usage", metric="seats", value=4, user_id="alice")],
            )
        )
        banner = wait_for(lambda: d.find_elements("css selector", ".upsell--banner"))[0]
        pid = banner.get_attribute("data-prompt-id")
        assert banner.get_attribute("role") == "region"
        assert "4 of 5 seats" in banner.text
        wait_for(lambda: ["shown", pid, 202] in events(d))  # reported once on screen
        d.save_screenshot(str(ARTIFACTS / "gateway-demo-banner.png"))
        banner.find_element("css selector", ".upsell-cta").click()
        wait_for(lambda: ["clicked", pid, 202] in events(d))
        recs = asyncio.run(collect(kafka_bootstrap, [w.topics["feedback"]], 2, timeout=20))
        got = sorted((orjson.loads(r.value)["type"], orjson.loads(r.value)["prompt_id"]) for r in recs)
        assert got == [("prompt_clicked", pid), ("prompt_shown", pid)]
        wait_for(lambda: feedback_metric(w, "clicked") >= clicked_before + 1)

        # The gateway goes away; a prompt arrives meanwhile; the page resumes from its last event id.
        g.stop()
        wait_for(lambda: d.find_element("id", "status").text == "reconnecting…")
        asyncio.run(
            produce(
                kafka_bootstrap,
                w.topics["events"],
                [event(account, "e2", now + 1000, type="usage", metric="seats", value=5, user_id="alice")],
            )
        )
        time.sleep(1)
        g2 = GatewayProc(kafka_bootstrap, w.topics, tmp_path / "gateway2.log", port=g.port).start()
        try:
            g2.wait_ready()
            modal = wait_for(lambda: d.find_elements("css selector", ".upsell--modal"), timeout=40)[0]
            assert modal.get_attribute("role") == "dialog" and modal.get_attribute("aria-modal") == "true"
            prompts = [e[1] for e in events(d) if e[0] == "prompt"]
            assert (
                len(prompts) == 2 and prompts[0] == pid and len(set(prompts)) == 2
            )  # nothing lost, none twice
            # the resumed stream carried only what was missed: the banner was not sent again
            assert re.search(r"^upsell_gateway_frames_sent_total 1\.0$", g2.get("/metrics")[1], re.M)
            assert (
                d.execute_script("return document.activeElement.className") == "upsell-cta"
            )  # focus moved in
            wait_for(lambda: any(e[0] == "shown" and e[1] == prompts[1] for e in events(d)))
            d.save_screenshot(str(ARTIFACTS / "gateway-demo-modal.png"))
            d.switch_to.active_element.send_keys("\ue00c")  # Escape closes it and reports the dismissal
            wait_for(lambda: ["dismissed", prompts[1], 202] in events(d))
            assert d.find_elements("css selector", ".upsell--modal") == []

            # Another account's token: a live stream that shows nothing of this account's.
            open_demo(d, g2, f"acct-{uuid.uuid4().hex[:6]}", "alice")
            time.sleep(1.5)
            assert d.find_elements("css selector", ".upsell") == []
            assert [e for e in events(d) if e[0] == "prompt"] == []
            tok = sign(SECRET.encode(), "acct-other", "alice", int(time.time()) + 600)
            d.get(
                f"{g2.url}/demo?token={tok}&account={account}"
            )  # a token for another account than the page's
            wait_for(lambda: "403" in d.find_element("id", "log").text)
            assert d.find_elements("css selector", ".upsell") == []
        finally:
            g2.stop()
    finally:
        g.stop()
