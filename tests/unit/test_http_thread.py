"""The worker's HTTP endpoints answer while its event loop is busy with a batch."""

import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.http import make_app, serve_in_thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_probes_and_scrapes_answer_while_the_main_thread_computes() -> None:
    metrics = Metrics(CollectorRegistry())
    port = _free_port()
    serve_in_thread(make_app(metrics.registry, lambda: True), "127.0.0.1", port)
    answers: list[tuple[str, int, bytes]] = []

    def client() -> None:
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                answers.append((path, r.status, r.read()))

    c = threading.Thread(target=client)
    c.start()
    # A synchronous batch: pure Python work holding the GIL, as the worker's apply loop does, and
    # counting into the registry meanwhile. The answers must come before it ends.
    deadline = time.monotonic() + 5
    n = 0
    while len(answers) < 3 and time.monotonic() < deadline:
        metrics.events.inc("usage")
        n += 1
    busy_until_answered = len(answers) == 3
    c.join()
    assert busy_until_answered, "the endpoints waited for the main thread's work"
    assert [(p, s) for p, s, _ in answers] == [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)]
    assert b"upsell_events_consumed_total" in answers[2][2]
    assert n > 0


def test_a_taken_port_is_an_error_at_start() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError):
            serve_in_thread(make_app(CollectorRegistry(), lambda: True), "127.0.0.1", port)
