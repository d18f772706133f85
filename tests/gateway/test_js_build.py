"""The JS client the gateway serves is the build of clients/js/src (never edited by hand), stays a few
KB, and its type declarations name every export."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
STATIC = ROOT / "src" / "upsell_triggers" / "gateway" / "static"


def test_served_client_is_the_fresh_build() -> None:
    r = subprocess.run([sys.executable, str(JS / "build.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_small_and_typed() -> None:
    script = (STATIC / "upsell.js").read_bytes()
    assert len(script) < 12_000 and len(gzip.compress(script)) < 5_000
    exports = set(re.findall(r"^export function (\w+)", (JS / "src" / "upsell.mjs").read_text(), re.M))
    declared = set(re.findall(r"^export function (\w+)", (JS / "upsell.d.ts").read_text(), re.M))
    assert exports == declared == {"connect", "renderDefault", "sseParser"}
    assert b"UpsellPrompts = { renderDefault, sseParser, connect }" in script
