"""The compiled-modules guard (upsell_triggers/native.py) and the build's fallback
(scripts/build_native.py), on a copy of the source tree, so the checkout's own build is never touched.

A compiled module is stood in for by a file that is not a loadable extension: importing it fails, so an
import that succeeds proves the guard set it aside, and one that fails proves it did not.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
ENGINE = "upsell_triggers/engine/engine.py"
PROBE = "import upsell_triggers, upsell_triggers.engine.engine as e; print(upsell_triggers.MODE, e.__file__)"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of src/ and scripts/ with no compiled module, and a fake one beside engine.py."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(
        ROOT / "src",
        tmp_path / "src",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.json"),
    )
    (tmp_path / "src" / ENGINE).with_suffix(SUFFIX).write_bytes(b"not an extension module")
    return tmp_path


def _record(tree: Path, **sources: str) -> None:
    rec = tree / "src" / "upsell_triggers" / "native-build.json"
    rec.write_text(json.dumps({"sources": sources}))


def _run(tree: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = (
        {k: v for k, v in os.environ.items() if k != "UPSELL_NATIVE"}
        | {"PYTHONPATH": str(tree / "src")}
        | env
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=tree)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_compiled_module_no_build_recorded_is_set_aside_with_one_line(tree: Path) -> None:
    r = _run(tree, PROBE)
    assert r.returncode == 0, r.stderr
    mode, loaded = r.stdout.split()
    assert mode == "stale" and loaded.endswith("engine.py")
    lines = r.stderr.splitlines()
    assert len(lines) == 1
    assert "out of date" in lines[0] and ENGINE in lines[0] and "scripts/build_native.py" in lines[0]


def test_a_compiled_module_whose_source_changed_is_set_aside(tree: Path) -> None:
    src = tree / "src" / ENGINE
    _record(tree, **{ENGINE: _sha(src)})
    with src.open("a") as f:
        f.write("# edited after the build\n")
    r = _run(tree, PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "stale" and r.stdout.split()[1].endswith("engine.py")
    assert len(r.stderr.splitlines()) == 1 and ENGINE in r.stderr


def test_an_up_to_date_compiled_module_is_the_one_imported(tree: Path) -> None:
    _record(tree, **{ENGINE: _sha(tree / "src" / ENGINE)})
    r = _run(tree, PROBE)
    # The stand-in is imported, and fails to load: the guard let the recorded build through.
    assert r.returncode != 0 and "ImportError" in r.stderr and "out of date" not in r.stderr


def test_upsell_native_0_sets_compiled_modules_aside_silently(tree: Path) -> None:
    _record(tree, **{ENGINE: _sha(tree / "src" / ENGINE)})
    r = _run(tree, PROBE, UPSELL_NATIVE="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "pure" and r.stdout.split()[1].endswith("engine.py")
    assert r.stderr == ""


def test_a_failed_build_says_so_in_one_line_and_leaves_pure_python(tree: Path) -> None:
    # No mypyc to be found: the build fails as on a machine without it, and cleans up after itself.
    fake = tree / "nomypyc" / "mypyc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('mypyc is not installed')\n")
    (fake / "build.py").write_text("")
    r = subprocess.run(
        [sys.executable, str(tree / "scripts" / "build_native.py"), "--force"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(tree / "nomypyc")},
    )
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert lines[-1].startswith("== native build: failed") and "pure Python" in lines[-1]
    assert "Traceback" not in r.stderr
    assert not list((tree / "src").rglob(f"*{SUFFIX}"))
    assert not (tree / "src" / "upsell_triggers" / "native-build.json").exists()
    r = _run(tree, PROBE)
    assert r.returncode == 0 and r.stdout.split()[0] == "pure" and r.stderr == ""
