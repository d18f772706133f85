"""Kafka TLS and SASL/SCRAM against a second local broker configured with them (deploy/kafka-local with
extra listeners): the worker runs end to end over SASL_SSL (SCRAM-SHA-512) and over SSL, verifying the
broker's certificate; a wrong password is a clear start-up error, not a silent hang."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from devkit.kafka_io import collect, event, produce
from devkit.worker import KAFKA_LOCAL, ROOT, Worker, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.reliability, pytest.mark.timeout(600)]
USER, PASSWORD = "upsell", "s3cret-scram-pw"


def _certs(d: Path) -> tuple[Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=upsell-test-ca")  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=localhost",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    keystore = d / "broker-keystore.pem"  # Kafka's PEM keystore: private key, then the certificate chain
    keystore.write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())
    return d / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed for the TLS tests")
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore = _certs(d)
    ssl_port, sasl_port = free_port(), free_port()
    state = d / "state"
    env = {
        **os.environ,
        "UPSELL_KAFKA_STATE": str(state),
        "UPSELL_KAFKA_HEAP": "512m",
        "UPSELL_KAFKA_FORMAT_ARGS": f"--add-scram SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
    }
    # A first plain start picks the plaintext/controller ports; then the secure listeners are added.
    subprocess.run(["bash", str(KAFKA_LOCAL), "start"], env={**env, "UPSELL_KAFKA_EXTRA_PROPS": ""},
                   capture_output=True, check=True)  # fmt: skip
    subprocess.run(["bash", str(KAFKA_LOCAL), "stop"], env=env, capture_output=True, check=True)
    port, cport = (state / "port").read_text().strip(), (state / "cport").read_text().strip()
    env["UPSELL_KAFKA_EXTRA_PROPS"] = "\n".join(
        [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport},"
            f"SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port},"
            f"SASL_SSL://127.0.0.1:{sasl_port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    )
    (state / "data" / "meta.properties").unlink()  # re-format: the SCRAM user is written at format time
    for p in (state / "data").iterdir():
        subprocess.run(["rm", "-rf", str(p)], check=True)
    start = subprocess.run(["bash", str(KAFKA_LOCAL), "start"], env=env, capture_output=True, text=True)
    if start.returncode != 0:
        pytest.fail(f"secure broker did not start:\n{start.stderr[-3000:]}", pytrace=False)
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        yield {"ca": ca, "ssl": f"127.0.0.1:{ssl_port}", "sasl": f"127.0.0.1:{sasl_port}", "ctx": ctx}
    finally:
        subprocess.run(["bash", str(KAFKA_LOCAL), "stop"], env=env, capture_output=True)


def _worker(tmp_path: Path, bootstrap: str, env: dict[str, str]) -> Worker:
    w = Worker(bootstrap, f"sec{free_port()}", tmp_path, ROOT / "rules", extra_env=env)
    return w.start()


async def _end_to_end(w: Worker, bootstrap: str, client: dict[str, Any]) -> None:
    try:
        w.wait_ready(120)
        now = int(time.time() * 1000)
        await produce(
            bootstrap,
            w.topics["events"],
            [
                event("acme", "e-1", now - 2000, type="plan_changed", plan="free"),
                event("acme", "e-2", now - 1000, type="usage", metric="seats", value=4),
            ],
            **client,
        )
        recs = await collect(bootstrap, [w.topics["prompts"]], want=1, settle=0.5, **client)
        assert [orjson.loads(r.value)["rule_id"] for r in recs] == ["seats-80"]
    finally:
        w.stop()


async def test_worker_over_sasl_ssl_scram(secure_broker: dict[str, Any], tmp_path: Path) -> None:
    env = {
        "UPSELL_SECURITY_PROTOCOL": "SASL_SSL",
        "UPSELL_SASL_MECHANISM": "SCRAM-SHA-512",
        "UPSELL_SASL_USERNAME": USER,
        "UPSELL_SASL_PASSWORD": PASSWORD,
        "UPSELL_SSL_CAFILE": str(secure_broker["ca"]),
    }
    client = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
        "ssl_context": secure_broker["ctx"],
    }
    await _end_to_end(_worker(tmp_path, secure_broker["sasl"], env), secure_broker["sasl"], client)


async def test_worker_over_tls(secure_broker: dict[str, Any], tmp_path: Path) -> None:
    env = {"UPSELL_SECURITY_PROTOCOL": "SSL", "UPSELL_SSL_CAFILE": str(secure_broker["ca"])}
    client = {"security_protocol": "SSL", "ssl_context": secure_broker["ctx"]}
    await _end_to_end(_worker(tmp_path, secure_broker["ssl"], env), secure_broker["ssl"], client)


async def test_wrong_password_is_a_clear_startup_error(secure_broker: dict[str, Any], tmp_path: Path) -> None:
    env = {
        "UPSELL_SECURITY_PROTOCOL": "SASL_SSL",
        "UPSELL_SASL_MECHANISM": "SCRAM-SHA-512",
        "UPSELL_SASL_USERNAME": USER,
        "UPSELL_SASL_PASSWORD": "wrong",
        "UPSELL_SSL_CAFILE": str(secure_broker["ca"]),
    }
    w = _worker(tmp_path, secure_broker["sasl"], env)
    try:
        assert w.proc is not None
        code = w.proc.wait(90)
        assert code != 0
        log = w.log.read_text()
        assert "uthentication" in log, log[-2000:]
        assert "wrong" not in log  # the password is never logged
    finally:
        w.stop()
