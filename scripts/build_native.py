#!/usr/bin/env python3
"""Compiles the hot path with mypyc into extension modules beside their sources (src/), or says why not.

    python scripts/build_native.py            build if any listed source changed since the last build
    python scripts/build_native.py --force    build anyway
    python scripts/build_native.py --clean    remove the compiled modules (pure Python from then on)

The modules are listed in src/upsell_triggers/native.py; the build records their sources' SHA-256 in
src/upsell_triggers/native-build.json, which the package checks when it is imported (a compiled module
older than its source is set aside, not run). Both commands of the README run this after installing, so
a checkout is built on first use and rebuilt after an edit; a build that is up to date costs the hash
of the sources. A failed build (no C compiler, no Python headers, no mypy) leaves no compiled module
behind and prints one line; the service then runs as pure Python, with the same results. The compiler's
output goes to build/native.log. Needs mypy (which ships mypyc) and setuptools: the `native` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["UPSELL_NATIVE"] = "0"  # the package's own import check stays silent: this replaces the build
sys.path.insert(0, str(ROOT / "src"))

from upsell_triggers import native  # noqa: E402

GROUP = "upsell_triggers_native"  # the shared library of the group: src/upsell_triggers_native__mypyc.*.so
LOG = ROOT / "build" / "native.log"


def say(msg: str) -> None:
    print(f"== native build: {msg}", file=sys.stderr, flush=True)


def clean() -> None:
    for f in native.compiled_files():
        f.unlink()
    for f in native.SRC.glob(f"{GROUP}__mypyc.*"):
        f.unlink()
    native.BUILD_RECORD.unlink(missing_ok=True)


def up_to_date() -> bool:
    files = native.compiled_files()
    return {native.module_of(f) for f in files} == set(native.NATIVE_MODULES) and not native.stale(files)


def build() -> None:
    """mypyc's setuptools build, in place, from src/ (so each extension lands beside its .py)."""
    from mypyc.build import mypycify
    from setuptools import setup

    sources = [str(native.source_of(m).relative_to(native.SRC)) for m in native.NATIVE_MODULES]
    tmp = ROOT / "build" / "native"
    with contextlib.chdir(native.SRC):
        setup(
            name="upsell-triggers-native",
            ext_modules=mypycify(
                ["--cache-dir", str(tmp / "mypy-cache"), *sources],
                opt_level="3",
                group_name=GROUP,
                target_dir=str(tmp / "c"),
            ),
            script_args=[
                "--quiet",
                "build_ext",
                "--inplace",
                "--build-temp",
                str(tmp / "o"),
                "--build-lib",
                str(tmp / "lib"),
            ],
            packages=[],
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--clean", action="store_true")
    a = ap.parse_args()
    if a.clean:
        clean()
        say("compiled modules removed: pure Python")
        return 0
    if not a.force and up_to_date():
        return 0
    clean()
    sources = {
        native.source_of(m).relative_to(native.SRC).as_posix(): native.source_of(m)
        for m in native.NATIVE_MODULES
    }
    record = {rel: native.digest(p) for rel, p in sources.items()}  # before: an edit during the build shows
    say(f"compiling {len(sources)} modules with mypyc (about a minute; log: {LOG.relative_to(ROOT)})")
    t = time.monotonic()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(LOG, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            fd_out, fd_err = os.dup(1), os.dup(2)  # the compiler writes to the file descriptors
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                build()
            finally:
                os.dup2(fd_out, 1)
                os.dup2(fd_err, 2)
                os.close(fd_out)
                os.close(fd_err)
    except (Exception, SystemExit) as e:  # setuptools exits on a compiler error
        clean()
        say(f"failed ({type(e).__name__}: {str(e).strip()[:120]}); running pure Python (see {LOG})")
        return 0
    native.BUILD_RECORD.write_text(
        json.dumps({"sources": record, "python": sys.version.split()[0]}, indent=1)
    )
    if not up_to_date():  # a source edited while it compiled: the record says so, the import check too
        say("a source changed during the build: run it again")
        return 0
    shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)
    say(f"done in {time.monotonic() - t:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
