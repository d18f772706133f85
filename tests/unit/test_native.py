"""The compiled-modules guard (upsell_triggers/native.py) and the build's fallback
(scripts/build_native.py), on a copy of the source tree, so the checkout's own build is never touched;
then the checkout's own build against pure Python, byte for byte, and the rule that keeps mypyc from
dropping a class statement's keywords.

A compiled module is stood in for by a file that is not a loadable extension: importing it fails, so an
import that succeeds proves the guard set it aside, and one that fails proves it did not. A stand-in
for mypyc (on PYTHONPATH ahead of the real one) lets the build script fail, succeed or be interrupted
without a compiler's minute.
"""

from __future__ import annotations

import ast
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

import orjson
import pytest

from upsell_triggers import native
from upsell_triggers.simulate import Simulator

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
    # Nothing off the hot path: the CLI and the Faust app are not what mypyc compiles against (of the
    # Kafka runtime, only the partitioner is compiled).
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
    # Python's own SIGINT handler first: a shell that starts the suite in the background (nohup ... &)
    # has it ignored, and the interrupt would then never come.
    "ctrl-c": "Path(os.environ['EXPECTED'].split(os.pathsep)[0]).write_bytes(b'x'); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
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
    assert line.endswith("; the compiled build on disk is up to date and stays")
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


# scripts/test.sh's parts about the build, run as written with the virtualenv's python stood in for.
STUB_PYTHON = """#!/bin/sh
printf '%s|' "UPSELL_NATIVE=${UPSELL_NATIVE-}" "$@" >> "$CALLS"; echo >> "$CALLS"
case "$*" in *build_native*) exit "${BUILD_RC:-0}";; *interpreted*) exit "${INTERPRETED_RC:-0}";; esac
"""


def _test_sh(tmp_path: Path, first: str, last: str | None, *args: str, **env: str) -> tuple[int, list[str]]:
    """Runs the lines of scripts/test.sh from the one starting with `first` up to the one starting
    with `last` (to the end: None); returns the exit status and the stub's calls."""
    lines = (ROOT / "scripts" / "test.sh").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(first))
    end = next((i for i, ln in enumerate(lines) if last and i > start and ln.startswith(last)), len(lines))
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(STUB_PYTHON)
    (venv / "python").chmod(0o755)
    calls = tmp_path / "calls"
    script = "set -euo pipefail\nt0=0\n" + "\n".join(lines[start:end]) + "\n"
    base = {k: v for k, v in os.environ.items() if k not in ("UPSELL_NATIVE", "CI")}
    r = subprocess.run(
        ["bash", "-c", script, "test.sh", *args],
        env=base | {"VENV": str(tmp_path / "venv"), "CALLS": str(calls)} | env,
        capture_output=True,
        text=True,
    )
    return r.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_test_sh_reruns_the_same_selection_as_pure_python(tmp_path: Path) -> None:
    rc, calls = _test_sh(tmp_path, 'echo "== pytest"', None, "-k", "a b", "tests/unit/test_x.py")
    assert rc == 0
    assert calls == [
        "UPSELL_NATIVE=|-m|pytest|-q|-k|a b|tests/unit/test_x.py|",
        "UPSELL_NATIVE=0|-m|pytest|-q|-k|a b|tests/unit/test_x.py|-m|interpreted|",
    ]


def test_test_sh_reruns_tests_unit_by_default_and_no_interpreted_test_is_no_failure(tmp_path: Path) -> None:
    rc, calls = _test_sh(tmp_path, 'echo "== pytest"', None, INTERPRETED_RC="5")
    assert rc == 0 and calls[1] == "UPSELL_NATIVE=0|-m|pytest|-q|tests/unit|-m|interpreted|"
    rc, _ = _test_sh(tmp_path / "failing", 'echo "== pytest"', None, INTERPRETED_RC="1")
    assert rc == 1


def test_test_sh_under_ci_fails_when_the_build_does(tmp_path: Path) -> None:
    part = ("# The hot path compiled with mypyc", "# promtool")
    rc, calls = _test_sh(tmp_path / "ci", *part, CI="true", BUILD_RC="1")
    assert rc == 1 and calls == ["UPSELL_NATIVE=|scripts/build_native.py|--require|"]
    rc, calls = _test_sh(tmp_path / "local", *part, BUILD_RC="0")
    assert rc == 0 and calls == ["UPSELL_NATIVE=|scripts/build_native.py|"]


# The checkout's own build against pure Python.


def _replay(events: Path, leads: Path, native_env: str) -> tuple[bytes, bytes, bytes]:
    code = "import sys, upsell_triggers; from upsell_triggers.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "replay",
            str(events),
            "--rules",
            "rules",
            "--explain",
            "--leads",
            str(leads),
        ],
        capture_output=True,
        env=os.environ | {"UPSELL_NATIVE": native_env},
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr, leads.read_bytes()


def test_compiled_and_pure_replay_write_the_same_bytes(tmp_path: Path) -> None:
    files = native.compiled_files()
    why = native.why_stale(files) if files else "no compiled build"
    if why:
        msg = f"compiled build not usable here ({why}): {native.REBUILD}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the compiled build is required: {msg}")
        pytest.skip(msg)
    probe = "import upsell_triggers; print(upsell_triggers.MODE)"
    for env, mode in (("1", "native"), ("0", "pure")):
        r = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=os.environ | {"UPSELL_NATIVE": env},
        )
        assert r.stdout.strip() == mode, r.stderr
    events = tmp_path / "events.jsonl"
    with events.open("wb") as f:
        for near_limits, seed in ((True, 3), (False, 5)):
            sim = Simulator(accounts=40, seed=seed, near_limits=near_limits, high_touch_every=7)
            for ev in sim.events(limit=6000):
                f.write(orjson.dumps(ev) + b"\n")
    compiled = _replay(events, tmp_path / "leads-native.jsonl", "1")
    pure = _replay(events, tmp_path / "leads-pure.jsonl", "0")
    assert compiled[0].count(b"\n") > 50 and compiled[1].count(b"\n") > 500  # prompts; decisions
    assert compiled[2]  # leads
    assert compiled == pure


def test_no_compiled_class_uses_class_statement_keywords() -> None:
    """mypyc compiles `class S(msgspec.Struct, array_like=True)` without its keywords, silently: such a
    class belongs in a pure module (native.py says which)."""
    found = []
    for m in native.NATIVE_MODULES:
        path = native.source_of(m)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.keywords:
                kws = ", ".join(f"{k.arg}=" if k.arg else "**" for k in node.keywords)
                found.append(f"{native.rel(path)}:{node.lineno} class {node.name}({kws})")
    assert found == []
