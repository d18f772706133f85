#!/usr/bin/env bash
# Command 1: install into .venv and run the service on its embedded default (no Kafka):
# a built-in simulated workload, prompts printed one per line (JSON lines when piped), metrics on
# http://127.0.0.1:8080/metrics, the prompts live in a browser on http://127.0.0.1:8090/demo (the delivery
# gateway's demo page), a summary on Ctrl-C.
# Extra arguments go to `upsell-triggers run` (e.g. --port 9000, --input events.jsonl, --rate 2000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
say() { printf '== %s\n' "$*" >&2; }
t0=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  say "creating a virtual environment in $VENV ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV"
fi
# Installed once, again when pyproject.toml changes (the install is editable: code edits need none).
stamp="$VENV/.upsell-triggers-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ ! -x "$VENV/bin/upsell-triggers" ]; then
  say "installing upsell-triggers and its dependencies into $VENV (about a minute the first time)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[native]' 2>&1 \
    | sed -un 's/^Collecting \([^ ]*\).*/   fetching \1/p' >&2
  touch "$stamp"
  say "installed in $((SECONDS - t0))s: $("$VENV/bin/upsell-triggers" --version)"
fi
# The hot path compiled with mypyc (docs/architecture.md#compiled-modules): built the first time and
# again after an edit of a source it is compiled from (about a minute; nothing when up to date). Without a
# C compiler it says so in one line, without retrying, and the service runs as pure Python, with the same
# results.
"$VENV/bin/python" scripts/build_native.py
say "starting the embedded service with a simulated workload (Ctrl-C stops it and prints a summary)"
say "prompts in a browser: http://127.0.0.1:${UPSELL_GATEWAY_PORT:-8090}/demo"
exec "$VENV/bin/upsell-triggers" run --embedded --demo "$@"
