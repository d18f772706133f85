#!/usr/bin/env bash
# Command 2: install everything into .venv, start the local Kafka broker (deploy/kafka-local), and run
# the whole suite: ruff (lint + format), mypy, the rule unit tests, and pytest (unit + real-broker
# integration, deploy kit, browser). Needs Python 3.11+, a JDK 17+, Maven, and apt (for promtool,
# chromium and chromium-driver) or those on PATH; kubectl (for the Kubernetes manifests test) when
# present. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
t0=$SECONDS
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,rocksdb,native]'
# The hot path compiled with mypyc (docs/architecture.md#compiled-modules), rebuilt when a source it is
# compiled from changed; the suite then runs against it. A failed build says so in one line: pure Python,
# except under CI (CI=true), where the compiled build is required and its failure fails the run.
if [ "${CI:-}" = true ]; then
  "$VENV/bin/python" scripts/build_native.py --require
else
  "$VENV/bin/python" scripts/build_native.py
fi
# promtool checks and unit-tests the Prometheus alert rules (Debian's prometheus package ships it).
if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
    $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true  # only the tool is wanted
  fi
  command -v promtool >/dev/null 2>&1 || echo "!! promtool not installable here: alert-rule tests will be skipped (failed under CI=true)"
fi
# The browser tests (tests/browser) drive Debian's headless chromium through chromedriver.
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
  fi
  [ -x /usr/bin/chromedriver ] || echo "!! chromium/chromedriver not installable here: browser tests will be skipped (failed under CI=true)"
fi
echo "== install: $((SECONDS - t0))s"

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  t1=$SECONDS
  started_here=0
  bash deploy/kafka-local/kafka-local.sh status >/dev/null 2>&1 || started_here=1
  line=$(bash deploy/kafka-local/kafka-local.sh start | grep '^KAFKA_BOOTSTRAP_SERVERS=')
  export KAFKA_BOOTSTRAP_SERVERS=${line#KAFKA_BOOTSTRAP_SERVERS=}
  echo "== local Kafka broker on $KAFKA_BOOTSTRAP_SERVERS ($((SECONDS - t1))s)"
  if [ "$started_here" = 1 ] && [ -z "${KEEP_KAFKA:-}" ]; then
    trap 'bash deploy/kafka-local/kafka-local.sh stop' EXIT
  fi
fi

echo "== ruff"
"$VENV/bin/ruff" check src tests bench devkit
"$VENV/bin/ruff" format --check src tests bench devkit
echo "== mypy"
"$VENV/bin/mypy" src devkit
echo "== docs: no development-history words in tracked files"
"$VENV/bin/python" scripts/check_docs.py
echo "== rules check + rule unit tests"
"$VENV/bin/upsell-triggers" rules check rules
"$VENV/bin/upsell-triggers" rules test rules/tests
echo "== pytest"
echo "== suite so far: $((SECONDS - t0))s"
"$VENV/bin/python" -m pytest -q "$@"  # unit, integration, reliability (select with -m)
echo "== pytest, pure Python: the tests that replace a compiled method (skipped above when compiled)"
# The same selection as above (tests/unit when none was given), only its `interpreted` tests: a selection
# with none of them (pytest's exit 5) is not a failure.
rc=0
UPSELL_NATIVE=0 "$VENV/bin/python" -m pytest -q "${@:-tests/unit}" -m interpreted || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 5 ] || exit "$rc"
echo "== suite took $((SECONDS - t0))s" >&2
