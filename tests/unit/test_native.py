"""The compiled-modules guard (upsell_triggers/native.py) and the build's fallback
(scripts/build_native.py), on a copy of the source tree, so the checkout's own build is never touched.

A compiled module is stood in for by a file that is not a loadable extension: importing it fails, so an
import that succeeds proves the guard set it aside, and one that fails proves it did not. A stand-in
for mypyc (on PYTHONPATH ahead of the real one) lets the build script fail, succeed or be interrupted
without a compiler's minute.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest

from upsell_triggers import native

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = native.EXT_SUFFIX
ENGINE = "upsell_triggers/engine/engine.py"
RECORD = "upsell_triggers/native-build.json"
PROBE = "import upsell_triggers, upsell_triggers.engine.engine as e; print(upsell_triggers.MODE, e.__file__)"


def _expected(tree: Path) -> list[Path]:
    return [tree / "src" / p.relative_to(native.SRC) for p in native.expected_files()]


def _fake_build(tree: Path, **record: Any) -> None:
    """Stand-ins for every file of a complete build, and its record (as the build writes it for these
    sources, this interpreter and this mypy; `record` overrides fields)."""
    for f in _expected(tree):
        f.write_bytes(b"not an extension module")
    (tree / "src" / RECORD).write_text(json.dumps(native.record() | record))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of src/ and scripts/ with no compiled module and no build record."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(
        ROOT / "src",
        tmp_path / "src",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.json"),
    )
    return tmp_path


def _run(tree: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = (
        {k: v for k, v in os.environ.items() if k != "UPSELL_NATIVE"}
        | {"PYTHONPATH": str(tree / "src")}
        | env
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=tree)


def _stale(tree: Path) -> str:
    """Asserts the compiled modules were set aside with one line, and returns that line."""
    r = _run(tree, PROBE)
    assert r.returncode == 0, r.stderr
    mode, loaded = r.stdout.split()
    assert mode == "stale" and loaded.endswith("engine.py")
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "out of date" in lines[0] and "running pure Python" in lines[0]
    assert lines[0].endswith(f"Rebuild them: {shlex.quote(sys.executable)} scripts/build_native.py")
    return lines[0]


def test_an_up_to_date_build_is_the_one_imported(tree: Path) -> None:
    _fake_build(tree)
    r = _run(tree, PROBE)
    # The stand-in is imported, and fails to load: the guard let the recorded build through.
    assert r.returncode != 0 and "ImportError" in r.stderr and "out of date" not in r.stderr


def test_a_compiled_module_no_build_recorded_is_set_aside_with_one_line(tree: Path) -> None:
    (tree / "src" / ENGINE).with_suffix(SUFFIX).write_bytes(b"not an extension module")
    assert "no build record" in _stale(tree)


def test_a_compiled_module_whose_source_changed_is_set_aside(tree: Path) -> None:
    _fake_build(tree)
    with (tree / "src" / ENGINE).open("a") as f:
        f.write("# edited after the build\n")
    assert ENGINE in _stale(tree)


@pytest.mark.parametrize(
    "module",
    [
        "upsell_triggers/engine/state.py",  # structs the compiled engine reads
        "upsell_triggers/engine/outcomes.py",  # Final constants mypyc inlines
        "upsell_triggers/runtime/table_state.py",  # imported by the processor, two steps down
    ],
)
def test_a_pure_module_the_build_was_compiled_against_changed_is_set_aside(tree: Path, module: str) -> None:
    _fake_build(tree)
    with (tree / "src" / module).open("a") as f:
        f.write("# edited after the build\n")
    assert module in _stale(tree)


def test_the_record_covers_every_package_module_the_compiled_ones_import() -> None:
    sources = set(native.record()["sources"])
    for m in native.NATIVE_MODULES:
        assert native.rel(native.source_of(m)) in sources
    for pure in (
        "engine/state.py",
        "engine/outcomes.py",
        "engine/events.py",
        "engine/trigger.py",
        "recordsource.py",
        "engine/leadstate.py",
        "engine/recentprompts.py",
        "runtime/table_state.py",
        "deadletter.py",
        "__init__.py",
        "native.py",
    ):
        assert f"upsell_triggers/{pure}" in sources
    # Nothing off the hot path: the CLI and the Kafka runtime are not what mypyc compiles against.
    assert "upsell_triggers/cli.py" not in sources
    assert "upsell_triggers/runtime/faust_app.py" not in sources


@pytest.mark.parametrize(
    ("record", "said"),
    [
        ({"python": "3.10.0"}, "built for Python 3.10.0"),
        ({"ext_suffix": ".cpython-310-x86_64-linux-gnu.so"}, "cpython-310"),
        ({"mypy": "0.1"}, "built with mypy 0.1"),
        ({"modules": ["upsell_triggers.engine.engine"]}, "another list of modules"),
    ],
)
def test_a_build_by_another_interpreter_or_mypy_is_set_aside(
    tree: Path, record: dict[str, Any], said: str
) -> None:
    _fake_build(tree, **record)
    assert said in _stale(tree)


def test_a_missing_group_library_is_set_aside(tree: Path) -> None:
    _fake_build(tree)
    (tree / "src" / f"{native.GROUP}__mypyc{SUFFIX}").unlink()
    assert f"compiled files missing: {native.GROUP}__mypyc{SUFFIX}" in _stale(tree)


def test_a_build_with_only_some_shims_is_set_aside(tree: Path) -> None:
    _fake_build(tree)
    (tree / "src" / "upsell_triggers" / "metrics.py").with_suffix(SUFFIX).unlink()
    assert f"compiled files missing: upsell_triggers/metrics{SUFFIX}" in _stale(tree)


@pytest.mark.parametrize(
    "leftover",
    [
        "upsell_triggers/engine/oldmodule{suffix}",  # a module no longer listed (or no longer there)
        "upsell_triggers/engine/state{suffix}",  # a module that is not compiled any more
        "upsell_triggers/engine/engine.cpython-399-x86_64-linux-gnu.so",  # another Python's
        "upsell_triggers_native__mypyc.cpython-399-x86_64-linux-gnu.so",
    ],
)
def test_a_leftover_compiled_file_is_set_aside(tree: Path, leftover: str) -> None:
    _fake_build(tree)
    (tree / "src" / leftover.format(suffix=SUFFIX)).write_bytes(b"not an extension module")
    line = _stale(tree)
    assert "compiled files not of this build" in line and leftover.format(suffix=SUFFIX) in line
    # Set aside, the leftover's own source (a pure module) is what runs.
    r = _run(tree, "import upsell_triggers.engine.state as s; print(s.__file__)")
    assert r.returncode == 0 and r.stdout.strip().endswith("state.py"), r.stderr


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF", " off "])
def test_upsell_native_off_sets_compiled_modules_aside_silently(tree: Path, value: str) -> None:
    _fake_build(tree)
    r = _run(tree, PROBE, UPSELL_NATIVE=value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "pure" and r.stdout.split()[1].endswith("engine.py")
    assert r.stderr == ""
    r = _run(tree, "import upsell_triggers.native as n; print(n.describe())", UPSELL_NATIVE=value)
    assert r.stdout.strip() == f"pure Python (UPSELL_NATIVE={value})"


def test_the_start_up_phrase_says_why_pure(tree: Path) -> None:
    r = _run(tree, "import upsell_triggers.native as n; print(n.describe())")
    assert r.stdout.strip() == "pure Python (no compiled modules built: scripts/build_native.py)"
    (tree / "src" / ENGINE).with_suffix(SUFFIX).write_bytes(b"not an extension module")
    r = _run(tree, "import upsell_triggers.native as n; print(n.describe())")
    assert r.stdout.startswith("pure Python (compiled modules out of date: no build record")


# The build script, with mypyc stood in for: `mypycify` below is what each test makes it do.
FAKE_MYPYC = """
import os, signal, sys, time
from pathlib import Path

def mypycify(args, target_dir, **kw):
    Path(os.environ["SEEN_TMP"]).write_text(target_dir)
    Path(target_dir).mkdir(parents=True, exist_ok=True)
    {body}
    return []
"""
BUILDS = {  # writes what a build would write, in place (the build runs in src/)
    "ok": "for f in os.environ['EXPECTED'].split(os.pathsep): Path(f).write_bytes(b'x')",
    "error": "raise RuntimeError('mypyc: error: something\\nwent wrong')",
    "compiler": "sys.exit('error: command gcc failed with exit code 1')",
    "ctrl-c": "Path(os.environ['EXPECTED'].split(os.pathsep)[0]).write_bytes(b'x'); "
    "os.kill(os.getpid(), signal.SIGINT); time.sleep(5)",
}


def _build(tree: Path, mypyc: str | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers here: the build stops before mypyc")
    fake = tree / "fake" / "mypyc"
    fake.mkdir(parents=True, exist_ok=True)
    if mypyc is None:
        (fake / "__init__.py").write_text("raise ImportError('mypyc is not installed')\n")
    else:
        (fake / "__init__.py").write_text("")
        (fake / "build.py").write_text(textwrap.dedent(FAKE_MYPYC).format(body=BUILDS[mypyc]))
    e = os.environ | {
        "PYTHONPATH": str(tree / "fake"),
        "SEEN_TMP": str(tree / "seen-tmp"),
        "EXPECTED": os.pathsep.join(map(str, _expected(tree))),
        "CC": sys.executable,  # a compiler that exists: the check looks for one, the stand-in needs none
    }
    return subprocess.run(
        [sys.executable, str(tree / "scripts" / "build_native.py"), *args],
        capture_output=True,
        text=True,
        env=e | env,
    )


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if not x.startswith("== native build: compiling")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _compiled(tree: Path) -> list[Path]:
    return sorted(p for p in (tree / "src").rglob("*") if p.name.endswith((".so", ".pyd")))


def test_a_build_replaces_leftovers_and_records_the_whole_closure(tree: Path) -> None:
    leftover = tree / "src" / "upsell_triggers" / "engine" / "engine.cpython-399-x86_64-linux-gnu.so"
    leftover.write_bytes(b"x")
    r = _build(tree, "ok")
    assert r.returncode == 0 and "done" in _one_line(r)
    assert not leftover.exists() and _compiled(tree) == sorted(_expected(tree))
    rec = json.loads((tree / "src" / RECORD).read_text())
    assert rec == native.record()
    assert not Path((tree / "seen-tmp").read_text()).exists()  # the temporary build directory is gone
    r = _run(tree, PROBE)
    assert r.returncode != 0 and "ImportError" in r.stderr and "out of date" not in r.stderr
    # Up to date: nothing to do, nothing said.
    r = _build(tree, "error")
    assert r.returncode == 0 and r.stderr == ""


@pytest.mark.parametrize("how", ["error", "compiler"])
def test_a_failed_build_says_so_in_one_line_leaves_pure_python_and_is_not_retried(
    tree: Path, how: str
) -> None:
    _fake_build(tree, python="3.10.0")  # a stale build, to be replaced
    r = _build(tree, how)
    assert r.returncode == 0
    line = _one_line(r)
    assert line.startswith("== native build: failed (") and line.endswith("; running pure Python")
    assert "native.log" in line
    assert _compiled(tree) == [] and not (tree / "src" / RECORD).exists()
    assert not Path((tree / "seen-tmp").read_text()).exists()
    r = _run(tree, PROBE)
    assert r.returncode == 0 and r.stdout.split()[0] == "pure" and r.stderr == ""
    # The same sources and toolchain again: not retried (the stand-in would leave its mark).
    (tree / "seen-tmp").unlink()
    r = _build(tree, how)
    line = _one_line(r)
    assert r.returncode == 0 and "compiled modules skipped: the last build of these sources failed" in line
    assert not (tree / "seen-tmp").exists()
    # Under --require (CI) that fails; and a changed source, or --force, tries again.
    assert _build(tree, how, "--require").returncode == 1
    with (tree / "src" / "upsell_triggers" / "engine" / "state.py").open("a") as f:
        f.write("# edited\n")
    r = _build(tree, "ok")
    assert r.returncode == 0 and "done" in _one_line(r) and (tree / "seen-tmp").exists()


def test_without_a_c_compiler_the_build_says_so_before_touching_anything(tree: Path) -> None:
    _fake_build(tree, python="3.10.0")
    before = _compiled(tree)
    r = _build(tree, "ok", CC="/nonexistent/cc -pthread")
    assert r.returncode == 0
    assert _one_line(r) == (
        "== native build: compiled modules skipped: no C compiler (/nonexistent/cc not found); "
        "running pure Python"
    )
    assert _compiled(tree) == before and not (tree / "seen-tmp").exists()
    assert _build(tree, "ok", "--require", CC="/nonexistent/cc").returncode == 1


def test_without_mypyc_the_old_build_is_left_alone(tree: Path) -> None:
    _fake_build(tree)
    before = _compiled(tree)
    r = _build(tree, None, "--force")
    assert r.returncode == 0
    line = _one_line(r)
    assert line.startswith("== native build: compiled modules skipped: mypyc not importable (ImportError")
    assert _compiled(tree) == before and (tree / "src" / RECORD).exists()


def test_ctrl_c_exits_130_and_leaves_pure_python(tree: Path) -> None:
    _fake_build(tree, python="3.10.0")
    r = _build(tree, "ctrl-c")
    assert r.returncode == 130
    assert _one_line(r) == "== native build: interrupted: compiled modules removed; running pure Python"
    assert _compiled(tree) == [] and not (tree / "src" / RECORD).exists()
    assert not Path((tree / "seen-tmp").read_text()).exists()
    r = _run(tree, PROBE)
    assert r.returncode == 0 and r.stdout.split()[0] == "pure" and r.stderr == ""


def test_an_unwritable_tree_fails_in_one_line(tree: Path) -> None:
    (tree / "build").write_text("a file where the log's directory goes")
    r = _build(tree, "ok", "--force")
    assert r.returncode == 0
    line = _one_line(r)
    assert line.startswith("== native build: failed (") and line.endswith("; running pure Python")
    assert _compiled(tree) == []
