"""`upsell-triggers gateway` as a subprocess on a worker's topics (tests, benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devkit.worker import free_port

SECRET = "test-secret-" + "x" * 32


class GatewayProc:
    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, str],
        log: Path,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "UPSELL_TOPIC_PROMPTS": topics["prompts"],
            "UPSELL_TOPIC_FEEDBACK": topics["feedback"],
            "UPSELL_GATEWAY_SECRET": SECRET,
            "UPSELL_GATEWAY_PORT": str(self.port),
            "UPSELL_GATEWAY_HEARTBEAT_S": "2",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProc:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "upsell_triggers", "gateway"],
            env=self.env,
            stdout=open(self.log, "ab"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until /readyz said ready."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            if self.get("/readyz")[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
