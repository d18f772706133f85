"""`upsell-triggers run --embedded --demo` (what scripts/run.sh starts): the simulator's prompts reach the
demo gateway, and feedback from the page reaches the embedded processor's funnel metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devkit.worker import free_port


def get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if body.startswith("{") else body
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def test_embedded_demo_round_trip(tmp_path: Path) -> None:
    http, gw = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(UPSELL_GATEWAY_PORT=str(gw), UPSELL_WATCH_RULES="false")
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "run",
            "--embedded",
            "--demo",
            "--port",
            str(http),
            "--rate",
            "400",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
    )
    try:
        deadline = time.monotonic() + 30
        code, tok = 0, None
        while code != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
            code, tok = get(f"http://127.0.0.1:{gw}/demo/token")
        assert code == 200, log.read_text()
        h = {"Authorization": "Bearer " + tok["token"], "Content-Type": "application/json"}
        code, body = get(f"http://127.0.0.1:{gw}/v1/prompts", headers=h)
        assert code == 200 and body["prompts"], body
        pid = body["prompts"][0]["prompt_id"]
        assert "account_id" not in body["prompts"][0]
        page = get(f"http://127.0.0.1:{gw}/demo")
        assert page[0] == 200 and "/client/upsell.js" in page[1]
        fb = json.dumps({"prompt_id": pid, "action": "clicked"}).encode()
        assert get(f"http://127.0.0.1:{gw}/v1/feedback", fb, h)[0] == 202
        metrics = get(f"http://127.0.0.1:{http}/metrics")[1]
        assert 'upsell_feedback_total{action="clicked"' in metrics
    finally:
        proc.terminate()
        proc.wait(15)
