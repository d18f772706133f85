"""`upsell-triggers run` as a subprocess on its own topics and app id, plus the local broker."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = ROOT / "deploy" / "kafka-local" / "kafka-local.sh"


def start_local_kafka() -> tuple[int, str, str]:
    """Starts deploy/kafka-local (idempotent): (exit code, bootstrap or '', stderr)."""
    proc = subprocess.run(["bash", str(KAFKA_LOCAL), "start"], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("KAFKA_BOOTSTRAP_SERVERS=")]
    bs = lines[-1].split("=", 1)[1] if lines else ""
    return proc.returncode, bs, proc.stderr


def bootstrap() -> str:
    """KAFKA_BOOTSTRAP_SERVERS, or the local broker (started if needed)."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    code, bs, err = start_local_kafka()
    if code != 0 or not bs:
        raise RuntimeError(f"local Kafka broker did not start (exit {code}):\n{err[-4000:]}")
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bs
    return bs


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Worker:
    """`upsell-triggers run` as a subprocess (the real service), on its own topics and app id."""

    def __init__(
        self,
        bootstrap: str,
        name: str,
        tmp: Path,
        rules_dir: Path,
        app_id: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.topics = {k: f"{name}-{k}" for k in ("events", "feedback", "prompts", "leads", "dlq")}
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "UPSELL_APP_ID": app_id or name,
            "UPSELL_TOPIC_EVENTS": self.topics["events"],
            "UPSELL_TOPIC_FEEDBACK": self.topics["feedback"],
            "UPSELL_TOPIC_PROMPTS": self.topics["prompts"],
            "UPSELL_TOPIC_LEADS": self.topics["leads"],
            "UPSELL_TOPIC_DLQ": self.topics["dlq"],
            "UPSELL_HTTP_PORT": str(self.port),
            "UPSELL_DATA_DIR": str(tmp / f"data-{self.port}"),
            "UPSELL_RULES_DIR": str(rules_dir),
            "UPSELL_RELOAD_DEBOUNCE_MS": "50",
        }
        self.env.update(extra_env or {})
        self.log = tmp / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.module = "upsell_triggers"  # what `python -m` runs: a test may wrap the service

    def start(self) -> Worker:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run"],
            env=self.env,
            stdout=open(self.log, "ab"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on /metrics (0 if absent or the worker is down)."""
        return self.metrics(name)[name]

    def metrics(self, *names: str) -> dict[str, float]:
        """metric() of several names from one scrape."""
        code, body = self.get("/metrics")
        if code != 200:
            return dict.fromkeys(names, 0.0)
        return {
            name: sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", body, re.M))
            for name in names
        }
