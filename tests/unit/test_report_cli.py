"""`replay --holdout` then `report`: the whole path from an events log with known outcome rates to the
table, CSV and HTML, and the HTML as Chromium draws it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devkit.funnel_sim import Rates, funnel_events
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.report.outcomes import parse_time

from ..schemacheck import errors
from .helpers import RULES

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "upsell_triggers", *args], capture_output=True, check=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An events log with a 20% holdout where prompted accounts upgrade at 30% and held-out ones at 2%,
    replayed: events.jsonl, prompts.jsonl, holdout.jsonl."""
    d = tmp_path_factory.mktemp("run")
    rules = d / "rules"
    shutil.copytree(RULES, rules)
    policy = rules / "policy.yaml"
    policy.write_text(policy.read_text().replace("fraction: 0.0 ", "fraction: 0.2 "))
    rs = load_ruleset(rules)
    assert rs.policy.holdout_fraction == 0.2
    rates = Rates(upgrade_treatment=0.3, upgrade_holdout=0.02)
    with (d / "events.jsonl").open("wb") as f:
        for ev in funnel_events(rs, accounts=1500, events=60_000, rates=rates, seed=9):
            f.write(orjson.dumps(ev) + b"\n")
    p = cli("replay", str(d / "events.jsonl"), "--rules", str(rules), "--holdout", str(d / "holdout.jsonl"))
    (d / "prompts.jsonl").write_bytes(p.stdout)
    return d


def test_replay_holdout_file_matches_the_summary(run: Path) -> None:
    p = cli("replay", str(run / "events.jsonl"), "--rules", str(run / "rules"))
    row = next(ln for ln in p.stderr.decode().splitlines() if ln.startswith("seats-80 "))
    held = [orjson.loads(x) for x in (run / "holdout.jsonl").read_bytes().splitlines()]
    assert set(held[0]) == {"account_id", "rule_id", "rule_group", "feature", "ts"}
    assert not [e for h in held for e in errors("holdout", h)]  # schemas/holdout.schema.json
    assert sum(1 for h in held if h["rule_id"] == "seats-80") == int(row.split()[5])  # the holdout column
    assert p.stdout == (run / "prompts.jsonl").read_bytes()  # --holdout changes nothing else


def test_report_shows_the_lift_it_was_given(run: Path, tmp_path: Path) -> None:
    csv_path, html_path = tmp_path / "r.csv", tmp_path / "r.html"
    p = cli(
        "report", str(run / "events.jsonl"), "--prompts", str(run / "prompts.jsonl"),
        "--holdout", str(run / "holdout.jsonl"), "--rules", str(run / "rules"),
        "--csv", str(csv_path), "--html", str(html_path),
    )  # fmt: skip
    text = p.stdout.decode()
    rows = {(r["rule"], r["group"]): r for r in csv.DictReader(csv_path.open())}
    t, h = rows[("seats-100", "treatment")], rows[("seats-100", "holdout")]
    # The counts are those of the inputs: prompted accounts are the distinct accounts of the prompts.
    prompts = [orjson.loads(x) for x in (run / "prompts.jsonl").read_bytes().splitlines()]
    assert int(t["accounts"]) == len({x["account_id"] for x in prompts if x["rule_id"] == "seats-100"})
    held = [orjson.loads(x) for x in (run / "holdout.jsonl").read_bytes().splitlines()]
    assert int(h["accounts"]) == len({x["account_id"] for x in held if x["rule_id"] == "seats-100"})
    # Shown at 85%: the interval holds it. A 30% vs 2% world: the lift is clear and positive.
    assert float(t["shown_low"]) < 0.85 < float(t["shown_high"])
    assert float(t["lift_low"]) > 0.1
    assert t["verdict"].startswith("prompts raise upgrades")
    assert h["shown"] == "" and h["upgraded_rate"] != ""
    assert "seats-100\n  group      variant" in text and "verdict: prompts raise upgrades" in text
    # Unbounded, the header gives the range the report covers: the first and last exposure counted.
    times = [x["created_at"] for x in prompts] + [x["ts"] for x in held]
    first, last = min(times, key=parse_time), max(times, key=parse_time)
    assert text.startswith(f"report: exposures {to_iso(parse_time(first))} .. {to_iso(parse_time(last))};"), (
        text
    )
    # Without --holdout the report finds the same holdout by running the rules again.
    again = cli(
        "report",
        str(run / "events.jsonl"),
        "--prompts",
        str(run / "prompts.jsonl"),
        "--rules",
        str(run / "rules"),
    )
    assert again.stdout.decode().split("\n", 1)[1] == text.split("\n", 1)[1]
    html = html_path.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    assert "<svg" in html and "Verdict: prompts raise upgrades" in html


def test_report_reports_bad_lines_and_goes_on(run: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"not json\n" + (run / "prompts.jsonl").read_bytes())
    p = cli(
        "report",
        str(run / "events.jsonl"),
        "--prompts",
        str(prompts),
        "--holdout",
        str(run / "holdout.jsonl"),
        "--rules",
        str(run / "rules"),
    )
    assert f"{prompts}:1: not a prompt event" in p.stderr.decode()
    assert b"seats-100" in p.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "report", str(run / "events.jsonl")], capture_output=True
    )
    assert missing.returncode == 2 and b"--prompts FILE" in missing.stderr


@pytest.mark.parametrize(
    ("servers", "code", "line"),
    [
        ("127.0.0.1:1", 1, "cannot connect to Kafka at 127.0.0.1:1: check KAFKA_BOOTSTRAP_SERVERS"),
        ("", 2, "report --kafka: set KAFKA_BOOTSTRAP_SERVERS to the service's brokers"),
    ],
    ids=["unreachable", "unset"],
)
def test_report_kafka_without_a_broker_is_one_line(servers: str, code: int, line: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers, "UPSELL_KAFKA_CONNECT_TIMEOUT_S": "3"}
    p = subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "report", "--kafka"], capture_output=True, env=env
    )
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert line in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (scripts/test.sh installs it)")
    pytest.skip("chromium not installed")


def screenshot(html: Path, png: Path, height: int) -> None:
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
         f"--window-size=1100,{height}", f"--screenshot={png}", html.as_uri()],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # A drawn page, not a blank one: the PNG of a blank white page of this size is a few kB.
    assert len(data) > 30_000, f"{png}: {len(data)} bytes"


def test_pages_render_in_chromium(run: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pages = {
        "report": [
            "report",
            str(run / "events.jsonl"),
            "--prompts",
            str(run / "prompts.jsonl"),
            "--holdout",
            str(run / "holdout.jsonl"),
            "--rules",
            str(run / "rules"),
        ],
        "sweep": [
            "replay",
            str(run / "events.jsonl"),
            "--rules",
            str(RULES),
            "--sweep",
            "seats-80.ratio=0.7:0.9:0.05",
        ],
        "compare": [
            "replay",
            str(run / "events.jsonl"),
            "--rules",
            str(RULES),
            "--compare",
            str(run / "rules"),
        ],
    }
    for name, args in pages.items():
        html = ARTIFACTS / f"{name}.html"
        cli(*args, "--html", str(html))
        screenshot(html, ARTIFACTS / f"{name}.png", 2000 if name == "report" else 1100)
