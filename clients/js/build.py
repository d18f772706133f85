"""Builds the JS client without a network or a bundler: src/upsell.mjs -> dist/upsell.mjs (ES module)
and dist/upsell.js (script tag, global `UpsellPrompts`), comment lines and indentation stripped. The
gateway serves the same two files from its package (src/upsell_triggers/gateway/static/), written here
too. `python3 clients/js/build.py --check` fails if any output is stale (the unit tests run it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src" / "upsell.mjs"
OUTS = [HERE / "dist", HERE.parents[1] / "src" / "upsell_triggers" / "gateway" / "static"]
BANNER = "/* upsell-triggers browser client, Apache-2.0; built by clients/js/build.py */\n"


def compact(js: str) -> str:
    lines = []
    for line in js.splitlines():
        s = line.strip()
        if s and not s.startswith("//"):
            lines.append(s)
    return "\n".join(lines) + "\n"


def build() -> dict[str, str]:
    module = compact(SRC.read_text())
    names = re.findall(r"^export function (\w+)", module, re.M)
    body = re.sub(r"^export function ", "function ", module, flags=re.M)
    script = (
        '(function (g) {\n"use strict";\n'
        + body
        + "g.UpsellPrompts = { "
        + ", ".join(names)
        + ' };\n})(typeof window !== "undefined" ? window : globalThis);\n'
    )
    return {"upsell.mjs": BANNER + module, "upsell.js": BANNER + script}


def main(argv: list[str]) -> int:
    built = build()
    stale = []
    for out in OUTS:
        for name, text in built.items():
            path = out / name
            if "--check" in argv:
                if out.name == "static" and (not path.exists() or path.read_text() != text):
                    stale.append(str(path))
            else:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("stale build output (run python3 clients/js/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
