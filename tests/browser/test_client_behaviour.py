"""The JS client in headless chromium against an in-process gateway (no Kafka): placements and their
accessible markup, keyboard and focus handling, reduced motion, theming, a custom renderer, a
dismissal in one tab taking the prompt down in the other, reconnection with a fresh token after the
stream ended, and the SSE parser on awkward chunk boundaries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkit.worker import free_port
from tests.gateway.helpers import prompt
from upsell_triggers.gateway.hub import Hub
from upsell_triggers.gateway.server import Gateway, serve
from upsell_triggers.gateway.settings import GatewaySettings
from upsell_triggers.gateway.tokens import sign

SECRET = b"b" * 32


class Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append(value)


class LiveGateway:
    """The gateway's app on its own thread and loop; `publish` hands prompts to that loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub = Hub(time.time)
        self.sink = Sink()
        self.loop = asyncio.new_event_loop()
        gw = Gateway(GatewaySettings(secret=SECRET.decode(), heartbeat_s=1), self.hub, self.sink)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(serve(gw, "127.0.0.1", self.port))
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert started.wait(10)

    def publish(self, p: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(self._publish(p), self.loop).result(5)

    async def _publish(self, p: dict[str, Any]) -> None:
        self.hub.publish(p)

    def token(self, user: str, account: str = "acct-1", ttl: int = 600) -> str:
        return sign(SECRET, account, user, int(time.time()) + ttl)


@pytest.fixture(scope="module")
def gw() -> Iterator[LiveGateway]:
    g = LiveGateway()
    yield g
    g.loop.call_soon_threadsafe(g.loop.stop)


def wait_for(what: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_page(d: Any, gw: LiveGateway, user: str) -> None:
    d.get(f"{gw.url}/demo?token={gw.token(user)}")
    wait_for(lambda: d.find_element("id", "status").text == "live")


def css(d: Any, selector: str) -> list[Any]:
    return list(d.find_elements("css selector", selector))


def test_placements_keyboard_focus_motion_and_theme(browser: Any, gw: LiveGateway) -> None:
    d = browser
    d.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]}
    )
    open_page(d, gw, "ann")
    gw.publish(prompt("t1", user="ann", placement="toast"))
    toast = wait_for(lambda: css(d, ".upsell--toast"))[0]
    assert toast.get_attribute("role") == "status" and toast.get_attribute("aria-live") == "polite"
    assert d.execute_script("return getComputedStyle(arguments[0]).animationName", toast) == "none"
    gw.publish(prompt("i1", user="ann", placement="inline"))
    inline = wait_for(lambda: css(d, "[data-upsell-slot] .upsell--inline"))[0]
    assert inline.get_attribute("role") == "region"
    # theming: a CSS variable on the page reaches the call to action
    d.execute_script("document.documentElement.style.setProperty('--upsell-accent', 'rgb(1, 2, 3)')")
    cta = inline.find_element("css selector", ".upsell-cta")
    assert d.execute_script("return getComputedStyle(arguments[0]).backgroundColor", cta) == "rgb(1, 2, 3)"
    # Escape on a focused banner-like prompt dismisses it
    inline.find_element("css selector", ".upsell-close").send_keys("\ue00c")
    wait_for(lambda: not css(d, ".upsell--inline"))
    wait_for(lambda: ["dismissed", "i1", 202] in d.execute_script("return window.upsellEvents"))
    # a modal takes focus, keeps Tab inside, and gives focus back when closed
    d.execute_script(
        "document.getElementById('status').tabIndex = 0; document.getElementById('status').focus()"
    )
    gw.publish(prompt("m1", user="ann", placement="modal"))
    modal = wait_for(lambda: css(d, ".upsell--modal"))[0]
    assert modal.get_attribute("aria-labelledby") and modal.get_attribute("aria-describedby")
    active = lambda: d.execute_script("return document.activeElement.className")  # noqa: E731
    assert active() == "upsell-cta"
    d.switch_to.active_element.send_keys("\ue004")  # Tab
    assert active() == "upsell-close"
    d.switch_to.active_element.send_keys("\ue004")  # Tab wraps to the first control
    assert active() == "upsell-cta"
    d.switch_to.active_element.send_keys("\ue00c")  # Escape
    wait_for(lambda: not css(d, ".upsell-backdrop"))
    assert d.execute_script("return document.activeElement.id") == "status"


def test_dismissal_in_one_tab_takes_the_prompt_down_in_the_other(browser: Any, gw: LiveGateway) -> None:
    d = browser
    open_page(d, gw, "bob")
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    open_page(d, gw, "bob")
    gw.publish(prompt("b1", user="bob"))
    wait_for(lambda: css(d, ".upsell--banner"))
    d.switch_to.window(first)
    banner = wait_for(lambda: css(d, ".upsell--banner"))[0]
    banner.find_element("css selector", ".upsell-close").click()
    wait_for(lambda: not css(d, ".upsell--banner"))
    d.switch_to.window(next(h for h in d.window_handles if h != first))
    wait_for(lambda: not css(d, ".upsell--banner"))
    assert [v for v in gw.sink.sent if b'"prompt_dismissed"' in v and b'"b1"' in v] != []


def test_custom_renderer_and_reconnect_with_a_fresh_token(browser: Any, gw: LiveGateway) -> None:
    d = browser
    open_page(d, gw, "viewer")  # any page that has loaded the client
    short, long = gw.token("cara", ttl=2), gw.token("cara")
    d.execute_script(
        """
        const tokens = [arguments[1], arguments[2]];
        window.tokenCalls = 0;
        window.custom = UpsellPrompts.connect({
          url: arguments[0], minBackoffMs: 100,
          token: () => tokens[Math.min(window.tokenCalls++, 1)],
          render(p, api) {
            const el = document.createElement('aside');
            el.className = 'my-offer'; el.textContent = p.title;
            el.onclick = api.clicked;
            document.body.append(el);
            return { element: el, remove: () => el.remove() };
          },
        });
        """,
        gw.url,
        short,
        long,
    )
    gw.publish(prompt("c1", user="cara", title="Custom one"))
    offer = wait_for(lambda: css(d, "aside.my-offer"))[0]
    assert offer.text == "Custom one" and not css(d, ".upsell--banner")
    offer.click()
    wait_for(lambda: any(b'"prompt_clicked"' in v and b'"c1"' in v for v in gw.sink.sent))
    wait_for(lambda: any(b'"prompt_shown"' in v and b'"c1"' in v for v in gw.sink.sent))
    # the short token's stream ends after 2 s; the client reconnects with a fresh token and resumes
    wait_for(lambda: d.execute_script("return window.tokenCalls") >= 2, timeout=15)
    gw.publish(prompt("c2", user="cara", title="After the reconnect"))
    wait_for(lambda: len(css(d, "aside.my-offer")) == 2)
    assert [e.text for e in css(d, "aside.my-offer")] == ["Custom one", "After the reconnect"]
    assert d.execute_script("return window.custom.lastEventId") == str(gw.hub.pending["acct-1"]["c2"].seq)


def test_sse_parser_on_awkward_chunks(browser: Any, gw: LiveGateway) -> None:
    d = browser
    open_page(d, gw, "viewer")
    got = d.execute_script(
        """
        const out = [];
        const feed = UpsellPrompts.sseParser((e) => out.push(e));
        const text = ': ok\\r\\n\\r\\nid: 7\\r\\nevent: prompt\\r\\ndata: {"a":\\r\\ndata: 1}\\r\\n\\r\\n'
          + 'event: dismissed\\ndata: {"prompt_id":"x"}\\n\\n: hb\\n\\nid: 8\\ndata:raw\\n\\n';
        for (let i = 0; i < text.length; i += 3) feed(text.slice(i, i + 3));
        return out;
        """
    )
    assert got == [
        {"id": "7", "event": "prompt", "data": '{"a":\n1}'},
        {"id": None, "event": "dismissed", "data": '{"prompt_id":"x"}'},
        {"id": "8", "event": "message", "data": "raw"},
    ]
