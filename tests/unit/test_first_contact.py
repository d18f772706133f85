"""First contact: each start-up mistake is one line saying what is wrong and how to fix it (exit 2 for
usage, 1 for an environment that refuses), never a traceback; the embedded run's terminal output."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest

from devkit.worker import free_port
from upsell_triggers.cli import build_parser

from ..schemacheck import errors
from .helpers import RULES, T0

pytestmark = pytest.mark.timeout(60)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("UPSELL_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    return subprocess.run(
        [sys.executable, "-m", "upsell_triggers", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=45,
    )


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("upsell-triggers: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_missing_rules_directory_names_the_path(tmp_path: Path):
    p = cli("run", "--embedded", cwd=tmp_path)
    one_line_error(p, 2, str(tmp_path / "rules"), "does not exist", "--rules DIR or set UPSELL_RULES_DIR")
    # Each command says how it takes another directory: only `run` reads UPSELL_RULES_DIR.
    p = cli("replay", "-", "--rules", "nowhere", cwd=tmp_path)
    err = one_line_error(p, 2, str(tmp_path / "nowhere"), "pass --rules DIR")
    assert "UPSELL_RULES_DIR" not in err, err
    p = cli("rules", "check", "nowhere", cwd=tmp_path)
    err = one_line_error(p, 2, str(tmp_path / "nowhere"), "upsell-triggers rules check DIR")
    assert "--rules" not in err, err


def test_rules_that_do_not_load_are_listed_without_a_traceback(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("groups:\n  - id: g\n    rules: []\n")
    p = cli("run", "--embedded", "--rules", str(tmp_path), "--port", "0")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    first, *rest = p.stderr.strip().splitlines()
    assert first.startswith("upsell-triggers: error: rules in") and "rules check" in first
    assert rest and all("bad.yaml:" in r for r in rest), rest


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"UPSELL_HTTP_PORT": "eighty"}, ["UPSELL_HTTP_PORT='eighty'", "valid integer", ".env"]),
        ({"UPSELL_LOG_LEVEL": "verbose"}, ["UPSELL_LOG_LEVEL='verbose'", "'debug'"]),
        ({"UPSELL_STATE_WRITE_VERSION": "9"}, ["UPSELL_STATE_WRITE_VERSION='9'", "less than or equal to 6"]),
    ],
)
def test_bad_setting_value_names_the_variable(env: dict[str, str], words: list[str]):
    p = cli("run", "--embedded", "--rules", str(RULES), env=env)
    one_line_error(p, 2, *words)


def test_bad_option_value_names_the_option():
    p = cli("run", "--embedded", "--rules", str(RULES), "--port", "99999")
    one_line_error(p, 2, "--port 99999", "65535")
    p = cli("run", "--port", "eighty")  # argparse's own usage error: exit 2, no traceback
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--port" in p.stderr


def test_unreadable_input_file(tmp_path: Path):
    p = cli("run", "--embedded", "--rules", str(RULES), "--input", str(tmp_path / "events.jsonl"))
    one_line_error(p, 2, "cannot read events file", str(tmp_path / "events.jsonl"), "No such file")
    p = cli("replay", str(tmp_path), "--rules", str(RULES))
    one_line_error(p, 2, "is a directory")
    secret = tmp_path / "secret.jsonl"
    secret.write_text("{}\n")
    secret.chmod(0)
    if os.access(secret, os.R_OK):
        return  # root reads anything: the permission case cannot be made here
    p = cli("replay", str(secret), "--rules", str(RULES))
    one_line_error(p, 2, "Permission denied")


def test_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = cli("run", "--embedded", "--rules", str(RULES), "--port", str(port))
        one_line_error(p, 1, f"port {port}", "in use", "pass --port N or set UPSELL_HTTP_PORT")
        # The gateway's port: the gateway's own flag and setting; `run --demo`'s, its setting only
        # (its --port is the service's).
        gateway = {"UPSELL_GATEWAY_SECRET": "s" * 40, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
        p = cli("gateway", "--port", str(port), env=gateway)
        one_line_error(p, 1, f"port {port}", "in use", "pass --port N or set UPSELL_GATEWAY_PORT")
        demo = ("run", "--embedded", "--demo", "--rules", str(RULES), "--port", "0")
        p = cli(*demo, env={"UPSELL_GATEWAY_PORT": str(port)})
        err = one_line_error(p, 1, f"port {port}", "in use", "set UPSELL_GATEWAY_PORT")
        assert "--port" not in err, err


def test_broker_that_refuses():
    port = free_port()
    p = cli("run", "--rules", str(RULES), "--port", "0", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    one_line_error(p, 1, f"127.0.0.1:{port}", "KAFKA_BOOTSTRAP_SERVERS", "--embedded")


def test_broker_that_never_answers_is_reported_within_the_timeout():
    with socket.socket() as s:  # accepts connections (the kernel's backlog), never replies
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        p = cli(
            "run",
            "--rules",
            str(RULES),
            "--port",
            "0",
            env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "UPSELL_KAFKA_CONNECT_TIMEOUT_S": "2"},
        )
        took = time.monotonic() - t0
    one_line_error(p, 1, "did not answer within 2s")
    assert took < 20


def test_version_comes_from_the_package_metadata():
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"upsell-triggers {version('upsell-triggers')}"


def _parsers(p=None):  # type: ignore[no-untyped-def]
    p = p or build_parser()
    yield p
    for action in p._actions:
        if action.choices and isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_and_every_command_an_example():
    for p in _parsers():
        for action in p._actions:
            assert action.help, (p.prog, action.dest)
        assert p.epilog and "example" in p.epilog, p.prog
        assert "Traceback" not in p.format_help()


def _events(path: Path, n: int) -> None:
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "account_id": f"a{i % 7}",
                    "type": "usage",
                    "metric": "seats",
                    "value": 1 + i % 5,
                    "ts": T0 + i,
                }
            )
            + b"\n"
            for i in range(n)
        )
        + b"not json\n"
    )


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            body = r.read().decode()
    except OSError:
        return -1
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m.group(1)) if m else -1


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("UPSELL_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "run",
            "--embedded",
            "--rules",
            str(RULES),
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, port


def _until(pred, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_accounts_gauge_is_current_while_the_simulator_runs_and_ctrl_c_prints_a_summary():
    proc, port = _start("--rate", "200", "--accounts", "50", "--format", "json")
    try:
        assert _until(lambda: _metric(port, "upsell_accounts_in_memory") >= 50), proc.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = err.strip().splitlines()[-1]
    assert re.match(
        r"stopped: [\d,]+ events in [\d.]+s \([\d,]+/s\), 0 rejected, 50 accounts in memory; ", summary
    )
    assert all(orjson.loads(line)["schema_version"] == 1 for line in out.splitlines())


def test_end_of_input_prints_a_summary_and_pretty_lines(tmp_path: Path):
    f = tmp_path / "events.jsonl"
    _events(f, 40)
    proc, port = _start("--input", str(f), "--format", "pretty")
    try:
        assert _until(lambda: _metric(port, "upsell_accounts_in_memory") == 7)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert any(
        ln.startswith("end of input: 41 events") and "1 rejected, 7 accounts" in ln for ln in err.splitlines()
    ), err
    # The start-up line says which code runs: compiled, or pure Python and why (native.describe()).
    code = [ln.split("per-event code: ", 1)[1] for ln in err.splitlines() if "per-event code: " in ln]
    assert len(code) == 1 and (code[0] == "compiled (mypyc)" or code[0].startswith("pure Python (")), err
    dead = [orjson.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    assert [d["reason"] for d in dead] == ["not_json"]
    assert not errors("dead-letters", dead[0]), errors("dead-letters", dead[0])
    lines = out.splitlines()
    assert lines and not any(ln.startswith("{") for ln in lines)
    assert re.match(r"2026-11-22 10:00  a\d +seats-(80|100) +(banner|modal) +free -> team +\S", lines[0]), (
        lines[0]
    )


def test_gateway_settings_mistakes_are_one_line_too():
    p = cli("gateway", env={"UPSELL_GATEWAY_PORT": "abc"})
    one_line_error(p, 2, "UPSELL_GATEWAY_PORT='abc'", "valid integer")
    p = cli("gateway", "--port", "999999")
    one_line_error(p, 2, "--port 999999", "65535")
    p = cli("run", "--embedded", "--demo", "--rules", str(RULES), env={"UPSELL_GATEWAY_MAX_STREAMS": "0"})
    one_line_error(p, 2, "UPSELL_GATEWAY_MAX_STREAMS='0'")


def test_gateway_with_a_broker_that_refuses():
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "UPSELL_GATEWAY_SECRET": "s" * 40,
        "UPSELL_GATEWAY_PORT": "0",
    }
    one_line_error(cli("gateway", env=env), 1, f"cannot connect to Kafka at 127.0.0.1:{port}")


def test_embedded_run_piped_into_a_reader_that_leaves_ends_quietly():
    """`upsell-triggers run --embedded | head -1`: the prompt reaches the reader, and the run ends with
    exit 0 and no BrokenPipeError traceback when the reader goes away."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("UPSELL_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "upsell_triggers", "run", "--embedded", "--rules", str(RULES), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base,
    )
    assert run.stdout is not None and run.stderr is not None
    first = run.stdout.readline()
    run.stdout.close()  # the reader leaves, as `head -1` does
    assert orjson.loads(first)["schema_version"] == 1
    code = run.wait(30)
    err = run.stderr.read().decode()
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize(("value", "level"), [("DEBUG", "debug"), (" Warning ", "warning")])
def test_the_log_level_reads_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str, level: str) -> None:
    from upsell_triggers.settings import Settings
    from upsell_triggers.startup import validated_settings

    monkeypatch.setenv("UPSELL_LOG_LEVEL", value)
    assert validated_settings(Settings).log_level == level


def test_options_that_would_do_nothing_or_read_no_time_are_usage_errors(tmp_path: Path) -> None:
    events = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "events.jsonl")
    p = cli("replay", events, "--rules", str(RULES), "--csv", str(tmp_path / "t.csv"))
    one_line_error(p, 2, "--csv and --html write the table of --compare or --sweep")
    assert not (tmp_path / "t.csv").exists()
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("")
    p = cli("report", events, "--prompts", str(empty), "--rules", str(RULES), "--since", "yesterday")
    one_line_error(p, 2, "--since 'yesterday'", "RFC 3339")


def test_a_store_that_does_not_exist_is_one_line() -> None:
    p = cli("replay", "-", "--rules", str(RULES), env={"UPSELL_STORE": "redis://cache:6379"})
    one_line_error(p, 2, "UPSELL_STORE='redis://cache:6379'", "use memory:// or rocksdb://")


@pytest.mark.parametrize(
    ("value", "hint"), [("2", "did you mean 0.02"), ("0", "between 0 and 1"), ("x", "not a number")]
)
def test_a_min_lift_that_is_not_a_fraction_is_a_usage_error(value: str, hint: str) -> None:
    p = cli("report", "--kafka", "--rules", str(RULES), "--min-lift", value)
    assert p.returncode == 2 and "argument --min-lift: " in p.stderr and hint in p.stderr, p.stderr
