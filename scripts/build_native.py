#!/usr/bin/env python3
"""Compiles the hot path with mypyc into extension modules beside their sources (src/), or says why not.

    python scripts/build_native.py            build unless the build on disk is up to date
    python scripts/build_native.py --force    build anyway (and retry a build that failed)
    python scripts/build_native.py --clean    remove the compiled modules (pure Python from then on)
    python scripts/build_native.py --require  exit 1 unless it ends up compiled (CI: scripts/test.sh)

The modules are listed in src/upsell_triggers/native.py; the build records the SHA-256 of every source
mypyc reads (those modules and the package's modules they import), the Python and the mypy, in
src/upsell_triggers/native-build.json, which the package checks when it is imported (a build that does
not match is set aside, not run). Both commands of the README run this after installing, so a checkout
is built on first use and rebuilt after an edit; a build that is up to date costs the hash of the
sources. Without a C compiler, Python's headers or mypy it says so in one line before touching
anything; a compile that fails leaves no compiled module behind, prints one line, and is not retried
until the sources or the toolchain change (build/native-failed.json; --force retries). Either way the
service then runs as pure Python, with the same results. Ctrl-C stops it the same way (exit 130). The
compiler's output goes to build/native.log. Needs mypy (which ships mypyc) and setuptools: the `native`
extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ["UPSELL_NATIVE"] = "0"  # the package's own import check stays silent: this replaces the build
sys.path.insert(0, str(ROOT / "src"))

from upsell_triggers import native  # noqa: E402

LOG = ROOT / "build" / "native.log"
FAILED = ROOT / "build" / "native-failed.json"  # the toolchain and sources of the last failed compile


class Failed(Exception):
    """A build that cannot or did not succeed: its message is the one line printed."""


def say(msg: str) -> None:
    print(f"== native build: {msg}", file=sys.stderr, flush=True)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def clean() -> None:
    """Removes every compiled file (stale shims and other Pythons' too) and the record: pure Python."""
    for f in native.compiled_files():
        f.unlink(missing_ok=True)
    native.BUILD_RECORD.unlink(missing_ok=True)


def up_to_date() -> bool:
    files = native.compiled_files()
    return bool(files) and not native.why_stale(files)


def toolchain() -> str:
    """Why this machine cannot compile ('' if it can): checked before anything is removed, and cheap,
    so that a machine without a compiler says so in one line instead of attempting the build."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc_argv = shlex.split(cc)
    if not cc_argv or shutil.which(cc_argv[0]) is None:
        return f"no C compiler ({cc_argv[0] if cc_argv else 'CC is empty'} not found)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers} not found; the python3-dev package)"
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"mypyc not importable ({one_line(e)}; the native extra: pip install -e '.[native]')"
    return ""


def failure_key(record: dict[str, Any]) -> dict[str, Any]:
    """What a failed compile depends on: retried when any of it changes."""
    return {
        **record,
        "cc": os.environ.get("CC") or sysconfig.get_config_var("CC"),
        "executable": sys.executable,
    }


def build(tmp: Path) -> None:
    """mypyc's setuptools build, in place, from src/ (so each extension lands beside its .py)."""
    from mypyc.build import mypycify
    from setuptools import setup

    sources = [native.rel(native.source_of(m)) for m in native.NATIVE_MODULES]
    with contextlib.chdir(native.SRC):
        setup(
            name="upsell-triggers-native",
            ext_modules=mypycify(
                ["--cache-dir", str(tmp / "mypy-cache"), *sources],
                opt_level="3",
                group_name=native.GROUP,
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


def compile_logged(tmp: Path) -> None:
    """build() with everything it and the compiler print in LOG (the compiler writes to the file
    descriptors, so those are redirected too, and restored whatever happens)."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        fd_out, fd_err = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            build(tmp)
        except SystemExit as e:  # setuptools exits on a compiler error
            raise Failed(f"failed ({one_line(e)}; see {LOG})") from None
        except Exception as e:
            raise Failed(f"failed ({one_line(e)}; see {LOG})") from None
        finally:
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            os.close(fd_out)
            os.close(fd_err)


def write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.replace(path)


def run(force: bool) -> None:
    """Builds, or raises Failed with the line to print; the package is compiled and up to date after
    it returns, and pure Python (nothing compiled on disk) after it raises once the build began."""
    if not force and up_to_date():
        return
    if why := toolchain():
        raise Failed(f"compiled modules skipped: {why}")
    record = native.record()  # before: an edit during the build shows
    key = failure_key(record)
    if not force and FAILED.is_file():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(FAILED.read_text()) == key:
                raise Failed(
                    "compiled modules skipped: the last build of these sources failed "
                    f"(see {LOG}; retry: {native.REBUILD} --force)"
                )
    n = len(native.NATIVE_MODULES)
    say(f"compiling {n} modules with mypyc (about a minute; log: {LOG.relative_to(ROOT)})")
    t = time.monotonic()
    clean()
    with tempfile.TemporaryDirectory(prefix="upsell-native-") as tmp:
        try:
            compile_logged(Path(tmp))
        except Failed:
            clean()
            with contextlib.suppress(OSError):
                write_atomically(FAILED, json.dumps(key, indent=1))
            raise
    write_atomically(native.BUILD_RECORD, json.dumps(record, indent=1))
    FAILED.unlink(missing_ok=True)
    if not up_to_date():  # a source edited while it compiled: the record says so, the import check too
        why = native.why_stale(native.compiled_files())
        raise Failed(f"built, but not usable ({why}; a source edited during the build?): run it again")
    say(f"done in {time.monotonic() - t:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="build even if up to date or failed before")
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    ap.add_argument("--require", action="store_true", help="exit 1 if the result is not compiled (CI)")
    a = ap.parse_args()
    try:
        if a.clean:
            clean()
            say("compiled modules removed: pure Python")
            return 0
        run(a.force)
        return 0
    except KeyboardInterrupt:
        clean()
        say("interrupted: compiled modules removed; running pure Python")
        return 130
    except Failed as e:
        msg = str(e)
    except Exception as e:  # the filesystem (a read-only tree, a full disk): still one line
        with contextlib.suppress(Exception):
            clean()
        msg = f"failed ({one_line(e)})"
    kept = False  # --force without a toolchain leaves an up-to-date build as it was
    with contextlib.suppress(Exception):
        kept = up_to_date()
    say(f"{msg}; {'the compiled build on disk is up to date and stays' if kept else 'running pure Python'}")
    return 1 if a.require and not kept else 0


if __name__ == "__main__":
    raise SystemExit(main())
