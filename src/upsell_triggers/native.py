"""Which modules run compiled, and the guard that keeps a stale compiled module from running.

The hot path (the engine's per-event modules, the processor, metrics, the batch apply) can be compiled
to C extensions with mypyc (`scripts/build_native.py`; docs/architecture.md, "Compiled modules").
An extension module beside its .py is imported instead of it, so after an edit of the .py the old
compiled code would keep running, silently. The build therefore records (BUILD_RECORD) the SHA-256 of
every source mypyc read to compile them: the compiled modules and every module of the package they
import, transitively (mypyc inlines a pure module's Final constants and compiles against its classes,
so an edit there makes the build stale too), with the interpreter (python version, EXT_SUFFIX) and the
mypy that built it. check() (run when the package is first imported) compares that record and the
extension files on disk with what this interpreter would import: if anything differs (a source edited,
a build for another Python, a missing shim or group library, a leftover shim of a module no longer
listed, no record at all), every compiled module is set aside and the package runs as pure Python,
with one line on stderr saying why and how to rebuild. UPSELL_NATIVE=0 (or false/no/off) sets them
aside on purpose (no line): the pure-Python path on a machine that has a build.

Kept apart from the compiled modules and free of their imports: it decides how they are imported.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

PACKAGE = Path(__file__).resolve().parent
SRC = PACKAGE.parent
BUILD_RECORD = PACKAGE / "native-build.json"
REBUILD = f"{shlex.quote(sys.executable)} scripts/build_native.py"
GROUP = "upsell_triggers_native"  # the group's shared library: src/upsell_triggers_native__mypyc<EXT_SUFFIX>
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's own (sysconfig's EXT_SUFFIX)
PYTHON = sys.version.split()[0]
OFF = ("0", "false", "no", "off")  # UPSELL_NATIVE values that mean pure Python, in any case
# What an extension module's file name ends with, on any platform and for any Python version.
_EXTENSION_NAME = re.compile(r"\.(so|pyd|dylib)$")

# Compiled together, as one mypyc group. Every msgspec Struct lives outside them: mypyc drops a class
# statement's keyword arguments (array_like=True, gc=False, tag=...), so those modules stay pure Python
# (engine/state.py, outcomes.py, recentprompts.py, leadstate.py, trigger.py, recordsource.py), as do the
# pydantic-based event and rule-file models and everything off the per-event path.
NATIVE_MODULES: tuple[str, ...] = (
    "upsell_triggers.engine.distinct",
    "upsell_triggers.engine.engine",
    "upsell_triggers.engine.erasure",
    "upsell_triggers.engine.eventtime",
    "upsell_triggers.engine.forecast",
    "upsell_triggers.engine.growth",
    "upsell_triggers.engine.keys",
    "upsell_triggers.engine.leads",
    "upsell_triggers.engine.levels",
    "upsell_triggers.engine.prompts",
    "upsell_triggers.engine.recentops",
    "upsell_triggers.engine.retention",
    "upsell_triggers.engine.ruleindex",
    "upsell_triggers.engine.rulemodel",
    "upsell_triggers.engine.ruleset",
    "upsell_triggers.engine.score",
    "upsell_triggers.engine.statecodec",
    "upsell_triggers.engine.stateops",
    "upsell_triggers.engine.timeutil",
    "upsell_triggers.engine.traits",
    "upsell_triggers.engine.windows",
    "upsell_triggers.metrics",
    "upsell_triggers.processor",
    "upsell_triggers.runtime.batch_apply",
    "upsell_triggers.runtime.kafka.partitioner",
)

MODE = ""  # what check() decided: 'native', 'pure' or 'stale'
WHY = ""  # and, unless 'native', why (for the start-up log line: describe())


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _file_of(module: str) -> Path | None:
    """The source of a module of the package, or of a package (its __init__.py); None if it is
    neither (a name imported from a module, not a module)."""
    base = SRC.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every upsell_triggers module `path` imports (at the top, in a function, under TYPE_CHECKING:
    mypy reads them all), and the packages on the way to it."""
    import ast  # only the build and the tests compute the closure: not on the package's import

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            parts = name.split(".")
            if parts[0] == "upsell_triggers":
                yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def closure() -> dict[str, Path]:
    """The sources a build reads: the compiled modules and, transitively, every module of the package
    they import (with the packages' __init__.py), by path relative to src/."""
    todo = [*NATIVE_MODULES, *(m.rpartition(".")[0] for m in NATIVE_MODULES)]
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        path = _file_of(module)
        if path is None or rel(path) in seen:
            continue
        seen[rel(path)] = path
        todo += _imports(path, module)
    return dict(sorted(seen.items()))


def mypy_version() -> str | None:
    """The installed mypy's version, read from its source without importing it or importlib.metadata
    (either would add tens of milliseconds to every start of the package); None where no mypy is
    installed (a runtime image, which carries the build but not the compiler)."""
    try:
        spec = importlib.util.find_spec("mypy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        text = Path(spec.origin).with_name("version.py").read_text()
    except OSError:
        return None
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    return m.group(1) if m else None


def record() -> dict[str, Any]:
    """The build record of the sources as they are now, with this interpreter and mypy."""
    return {
        "modules": list(NATIVE_MODULES),
        "sources": {r: digest(p) for r, p in closure().items()},
        "python": PYTHON,
        "ext_suffix": EXT_SUFFIX,
        "mypy": mypy_version(),
    }


def expected_files() -> set[Path]:
    """The extension files a complete build for this interpreter consists of."""
    return {source_of(m).with_suffix(EXT_SUFFIX) for m in NATIVE_MODULES} | {
        SRC / f"{GROUP}__mypyc{EXT_SUFFIX}"
    }


def compiled_files() -> list[Path]:
    """Every extension file in the package (for any module, any Python) and the group's library."""
    found = [
        SRC / n for n in os.listdir(SRC) if n.startswith(f"{GROUP}__mypyc") and _EXTENSION_NAME.search(n)
    ]
    for d, dirs, names in os.walk(PACKAGE):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        found += (Path(d, n) for n in names if _EXTENSION_NAME.search(n))
    return sorted(found)


def module_of(path: Path) -> str:
    r = path.relative_to(SRC)
    return ".".join((*r.parent.parts, r.name.split(".", 1)[0]))


def _listed(items: Sequence[str]) -> str:
    return items[0] + (f" and {len(items) - 1} more" if len(items) > 1 else "")


def why_stale(files: Sequence[Path]) -> str:
    """Why the build on disk (`files`: compiled_files()) must not run in this interpreter; '' if it
    can. The record is read as the build wrote it and the sources hashed as they are now."""
    try:
        rec: dict[str, Any] = json.loads(BUILD_RECORD.read_text())
        sources: dict[str, str] = dict(rec["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no build record"
    if rec.get("python") != PYTHON or rec.get("ext_suffix") != EXT_SUFFIX:
        return (
            f"built for Python {rec.get('python')} ({rec.get('ext_suffix')}), this is {PYTHON} ({EXT_SUFFIX})"
        )
    expected = expected_files()
    extra = sorted(rel(f) for f in set(files) - expected)
    if extra:
        return f"compiled files not of this build: {_listed(extra)}"
    missing = sorted(rel(f) for f in expected - set(files))
    if missing:
        return f"compiled files missing: {_listed(missing)}"
    if rec.get("modules") != list(NATIVE_MODULES):
        return "built from another list of modules"
    unrecorded = sorted(rel(source_of(m)) for m in NATIVE_MODULES if rel(source_of(m)) not in sources)
    changed = sorted(r for r in sources if not (SRC / r).is_file() or digest(SRC / r) != sources[r])
    if unrecorded or changed:
        return f"sources changed since the build: {_listed(unrecorded + changed)}"
    mypy = mypy_version()
    if mypy is not None and rec.get("mypy") != mypy:
        return f"built with mypy {rec.get('mypy')}, mypy {mypy} is installed"
    return ""


class _PureSource(importlib.abc.MetaPathFinder):
    """Finds the listed modules' .py sources, ahead of the extension modules beside them."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules or not source_of(fullname).is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def set_aside(modules: set[str]) -> None:
    if not any(isinstance(f, _PureSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureSource(modules))


def enabled() -> bool:
    """UPSELL_NATIVE: unset or anything but 0/false/no/off (any case) lets an up-to-date build run."""
    return os.environ.get("UPSELL_NATIVE", "1").strip().lower() not in OFF


def check() -> str:
    """'native', 'pure' (nothing compiled, or UPSELL_NATIVE off) or 'stale' (compiled modules set
    aside, one line said so)."""
    global MODE, WHY
    files = compiled_files()
    modules = set(NATIVE_MODULES) | {module_of(f) for f in files}
    if not files:
        MODE, WHY = "pure", "no compiled modules built: scripts/build_native.py"
    elif not enabled():
        set_aside(modules)
        MODE, WHY = "pure", f"UPSELL_NATIVE={os.environ.get('UPSELL_NATIVE', '')}"
    elif why := why_stale(files):
        set_aside(modules)
        MODE, WHY = "stale", f"compiled modules out of date: {why}"
        print(
            f"upsell-triggers: compiled modules out of date ({why}); running pure Python. "
            f"Rebuild them: {REBUILD}",
            file=sys.stderr,
        )
    else:
        MODE, WHY = "native", ""
    return MODE


def describe() -> str:
    """One phrase for the start-up log: how the per-event code runs, and why if not compiled."""
    return (
        "compiled (mypyc)" if mode() == "native" else f"pure Python ({WHY or 'compiled modules set aside'})"
    )


def log_mode(log: logging.Logger) -> None:
    """The service's start-up line saying which code runs: an operator reading a slow worker's log sees
    at once whether it fell back to pure Python, and why."""
    log.info("per-event code: %s", describe(), extra={"fields": {"code": mode()}})


def mode() -> str:
    """How this process imported the compiled modules: 'native' if the engine is an extension module."""
    import upsell_triggers.engine.engine as eng

    return "pure" if (eng.__file__ or "").endswith(".py") else "native"
