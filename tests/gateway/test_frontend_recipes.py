"""The token recipes in docs/frontend.md sign tokens the gateway accepts (Python always; Node when
installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from upsell_triggers.gateway.tokens import verify

DOC = Path(__file__).resolve().parents[2] / "docs" / "frontend.md"
SECRET = "k" * 40


def block(lang: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)
    return next(b for b in blocks if "upsell" in b.lower() and "token" in b.lower())


def test_python_recipe() -> None:
    ns: dict[str, object] = {}
    exec(block("python"), ns)
    token = ns["upsell_token"](SECRET.encode(), "acct-1", "u-1")  # type: ignore[operator]
    p = verify(SECRET.encode(), token, time.time())
    assert (p.account_id, p.user_id) == ("acct-1", "u-1") and p.expires_s > time.time() + 3500


def test_node_recipe() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    code = block("js") + f"\nprocess.stdout.write(upsellToken({SECRET!r}, 'acct-1', 'u-1'));"
    token = subprocess.run([node, "-e", code], capture_output=True, text=True, check=True).stdout
    p = verify(SECRET.encode(), token, time.time())
    assert (p.account_id, p.user_id) == ("acct-1", "u-1")
