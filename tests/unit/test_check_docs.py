"""scripts/check_docs.py flags development-history words and commit hashes, and nothing else."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts" / "check_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()


def _repo_with(tmp_path: Path, files: dict[str, str]) -> Path:
    _git(tmp_path, "init", "-q")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    return tmp_path


# Built from parts, so that this file does not itself carry the words it tests for.
SESSION = "Ses" + "sion 7"
CONTRACT = "contract " + "\u00a7" + "4"
SHARED = ".." + "/shared/spec/contract.md"


def test_planted_history_words_are_flagged_with_file_and_line(tmp_path: Path):
    check = _checker()
    repo = _repo_with(
        tmp_path,
        {
            "README.md": f"# Tool\n\nFine text.\n{SESSION} made it faster.\n",
            "docs/a.md": f"See {CONTRACT}.\nAnd {SHARED}\n",
            "src/m.py": '"""Nothing wrong here."""\n',
        },
    )
    problems = check.scan(check.tracked_files(repo), repo)
    assert [p.split(": ")[0] for p in problems] == ["README.md:4", "docs/a.md:1", "docs/a.md:2"]


def test_a_hash_that_names_a_commit_is_flagged_and_other_hex_is_not(tmp_path: Path):
    check = _checker()
    repo = _repo_with(tmp_path, {"README.md": "# Tool\n"})
    head = _git(repo, "rev-parse", "--short=7", "HEAD")
    while head.isdigit() or not any(c.isdigit() for c in head):  # all digits reads as a number: not checked
        _git(repo, "commit", "-q", "--allow-empty", "-m", "again")
        head = _git(repo, "rev-parse", "--short=7", "HEAD")
    (repo / "CHANGELOG.md").write_text(
        f"Fixed up to {head}.\n"
        "A prompt id pr_6d90af001466b475e9dc0fa3, a colour #a1b2c3, the number 1234567,\n"
        "a digest deadbeef0123 that is no commit.\n"
    )
    problems = check.scan([repo / "CHANGELOG.md"], repo)
    assert problems == [f"CHANGELOG.md:1: commit hash in prose: {head!r}"]


def test_commit_followed_by_hex_is_flagged_without_git(tmp_path: Path):
    check = _checker()
    (tmp_path / "notes.md").write_text("measured at com" + "mit feed5e1\n")
    problems = check.scan([tmp_path / "notes.md"], tmp_path, is_commit=lambda tokens: set())
    assert problems and problems[0].startswith("notes.md:1: commit hash in prose")


def test_the_command_exits_1_on_a_planted_line_and_0_on_a_clean_file(tmp_path: Path):
    bad, good = tmp_path / "bad.md", tmp_path / "good.md"
    bad.write_text(f"# Notes\n{SESSION}: faster.\n")
    good.write_text("# Notes\nA Kafka session timeout of 15 s.\n")
    run = [sys.executable, str(ROOT / "scripts" / "check_docs.py")]
    assert subprocess.run([*run, str(bad)], capture_output=True).returncode == 1
    assert subprocess.run([*run, str(good)], capture_output=True).returncode == 0


def test_the_repository_has_no_development_history_words():
    check = _checker()
    assert check.scan(check.tracked_files(ROOT), ROOT) == []
