#!/usr/bin/env bash
# Command 1: install into .venv and run the service on its embedded default (no Kafka):
# a built-in simulated workload, prompts printed as JSON lines, metrics on http://127.0.0.1:8080/metrics.
# Extra arguments go to `upsell-triggers run` (e.g. --port 9000, --input events.jsonl, --rate 2000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . >&2
exec "$VENV/bin/upsell-triggers" run --embedded "$@"
