"""Which modules run compiled, and the guard that keeps a stale compiled module from running.

The hot path (the engine's per-event modules, the processor, metrics, the batch apply) can be compiled
to C extensions with mypyc (`scripts/build_native.py`; docs/architecture.md, "Compiled modules").
An extension module beside its .py is imported instead of it, so after an edit of the .py the old
compiled code would keep running, silently. The build therefore records the SHA-256 of every source it
compiled (BUILD_RECORD), and check() (run when the package is first imported) compares them with the
sources as they are now: if any compiled module is out of date, or was built by hand without a record,
every compiled module is set aside and the package runs as pure Python, with one line on stderr saying
how to rebuild. UPSELL_NATIVE=0 sets them aside on purpose (no line): the pure-Python path on a machine
that has a build.

Kept apart from the compiled modules and free of their imports: it decides how they are imported.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
SRC = PACKAGE.parent
BUILD_RECORD = PACKAGE / "native-build.json"
REBUILD = "python scripts/build_native.py"

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
)


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_files() -> list[Path]:
    """Every extension module in the package's directories (mypyc's output, whatever built it)."""
    found: list[Path] = []
    for d in {source_of(m).parent for m in NATIVE_MODULES}:
        found += (p for p in d.iterdir() if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
    return sorted(found)


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return ".".join((*rel.parent.parts, rel.name.split(".", 1)[0]))


def stale(files: Sequence[Path]) -> list[str]:
    """The compiled modules among `files` whose source differs from the one the build recorded (or
    that no build recorded), as paths relative to src/."""
    try:
        recorded: dict[str, str] = json.loads(BUILD_RECORD.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    out = []
    for f in files:
        src = source_of(module_of(f))
        rel = src.relative_to(SRC).as_posix()
        if not src.exists() or recorded.get(rel) != digest(src):
            out.append(rel)
    return out


class _PureSource(importlib.abc.MetaPathFinder):
    """Finds the listed modules' .py sources, ahead of the extension modules beside them."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def set_aside(modules: set[str]) -> None:
    if not any(isinstance(f, _PureSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureSource(modules))


def check() -> str:
    """'native', 'pure' (nothing compiled, or UPSELL_NATIVE=0) or 'stale' (compiled modules set aside,
    one line said so)."""
    files = compiled_files()
    if not files:
        return "pure"
    modules = {module_of(f) for f in files}
    if os.environ.get("UPSELL_NATIVE", "1") == "0":
        set_aside(modules)
        return "pure"
    out = stale(files)
    if not out:
        return "native"
    set_aside(modules)
    more = f" and {len(out) - 1} more" if len(out) > 1 else ""
    print(
        f"upsell-triggers: compiled modules out of date with their sources ({out[0]}{more}); running pure "
        f"Python. Rebuild them: {REBUILD}",
        file=sys.stderr,
    )
    return "stale"


def mode() -> str:
    """How this process imported the compiled modules: 'native' if the engine is an extension module."""
    import upsell_triggers.engine.engine as eng

    return "pure" if (eng.__file__ or "").endswith(".py") else "native"
