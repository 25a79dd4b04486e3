"""The bad-input corpus: every broken project gets exit 2 and one line naming the file.

Each folder of ``tests/bad_inputs/`` (see its README) is the valid project ``_base`` with
some files replaced; a few more entries are generated here (a > 20 MiB file, a suite and a
symlink outside the project). Each is run through ``evalrun validate`` and ``evalrun
compare``, in this process through click's runner (the same ``main`` the installed command
runs); a few entries also run as real ``python -m evalrun`` subprocesses, so what the
process prints and exits with is pinned too. Expected of both:

* exit code 2, nothing on stdout;
* stderr is exactly one line, starting ``evalrun: error:``, naming the file (and the case
  id / field where the entry says so);
* no "Traceback" anywhere.

Known bugs are strict xfails, with the reason in the entry's ``expect.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "bad_inputs"
BASE = CORPUS / "_base"
COMMANDS = ("validate", "compare")
TIMEOUT_S = 60.0
LITERAL_KEY = "sk-proj-EvalrunFakeLiteral0123456789abcdef"


@dataclass(frozen=True)
class Entry:
    name: str
    file: str  # the file the error line must name, relative to the project
    mentions: tuple[str, ...]  # further text the line must contain (case id, field...)
    xfail: str | None = None
    overlay: Path | None = None  # files replacing those of _base
    prepare: Callable[[Path], None] | None = None  # generated entries
    timeout_s: float = TIMEOUT_S
    absent: tuple[str, ...] = ()  # text that must appear nowhere in the output (a pasted key)


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    project: Path = field(default_factory=Path)


# --------------------------------------------------------------------------- generated entries


def _huge_case_file(project: Path) -> None:
    """A 21 MiB case file (valid YAML: one case and a long comment), over the 20 MiB limit."""
    with open(project / "cases" / "huge.yaml", "w", encoding="utf-8") as fh:
        fh.write("- {id: huge, kind: representative, cohort: c, vars: {question: q}}\n")
        line = "# " + "x" * 1021 + "\n"
        for _ in range(21 * 1024):
            fh.write(line)


def _suite_outside(project: Path) -> None:
    """`suite:` walks out of the project with ../.. to a valid suite elsewhere."""
    outside = project.parent / f"{project.name}-outside"
    shutil.copytree(project / "cases", outside / "cases")
    (outside / "evals").mkdir()
    suite = (project / "evals" / "suite.yaml").read_text(encoding="utf-8")
    (outside / "evals" / "suite.yaml").write_text(suite, encoding="utf-8")
    rel = f"../../{outside.name}/evals/suite.yaml"
    for side in ("baseline", "candidate"):
        p = project / "evals" / f"{side}.yaml"
        p.write_text(p.read_text(encoding="utf-8").replace("suite: suite.yaml", f"suite: {rel}"), encoding="utf-8")


def _symlinked_case_file(project: Path) -> None:
    """cases/linked.yaml is a symlink to a case file outside the project."""
    outside = project.parent / f"{project.name}-outside"
    outside.mkdir()
    target = outside / "secret-cases.yaml"
    target.write_text("- {id: from-outside, kind: representative, cohort: c, vars: {question: q}}\n", encoding="utf-8")
    (project / "cases" / "linked.yaml").symlink_to(target)


def _long_case_id(project: Path) -> None:
    """A 10,000-character case id (invalid: over 200): the error line must stay short."""
    (project / "cases" / "long.yaml").write_text(
        f"- {{id: {'x' * 10_000}, kind: representative, cohort: c, vars: {{question: q}}}}\n", encoding="utf-8"
    )


# Credentials that are also valid variable names (so only their shape gives them away).
PASTED_KEYS = {
    "groq": "gsk_8Xq2LmN4pR7sT1vW3yZ5aB6cD9eF0gH2jK4lM6nP8qR1sT3uV5wX7",
    "huggingface": "hf_QwErTyUiOpAsDfGhJkLzXcVbNm0123456789",
    "github": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "high-entropy": "Zx9vQ2mL7pR4tY8wK3nB6hJ1a8f5f167f44f4964",
}


def _key_in_api_key_env(key: str) -> Callable[[Path], None]:
    def prepare(project: Path) -> None:
        p = project / "evals" / "candidate.yaml"
        p.write_text(p.read_text(encoding="utf-8") + f"api_key_env: {key}\n", encoding="utf-8")

    return prepare


GENERATED = [
    Entry("huge-case-file", "cases/huge.yaml", ("MiB", "limit"), prepare=_huge_case_file),
    Entry("escape-suite-file-via-dotdot", "evals/baseline.yaml", ("field suite", "outside"), prepare=_suite_outside),
    Entry("escape-symlinked-case-file", "cases/linked.yaml", ("outside",), prepare=_symlinked_case_file),
    Entry("case-id-10000-chars", "cases/long.yaml", ("field id", "…"), prepare=_long_case_id),
    *(
        Entry(f"api-key-{kind}-in-api-key-env", "evals/candidate.yaml", ("field api_key_env", "looks like a key"),
              prepare=_key_in_api_key_env(key), absent=(key, key[:10]))
        for kind, key in PASTED_KEYS.items()
    ),
]


def corpus() -> list[Entry]:
    entries = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_")):
        meta = json.loads((folder / "expect.json").read_text(encoding="utf-8"))
        entries.append(
            Entry(
                folder.name, meta["file"], tuple(meta["mentions"]), meta.get("xfail"), overlay=folder / "project",
                timeout_s=float(meta.get("timeout_s", TIMEOUT_S)), absent=tuple(meta.get("absent", ())),
            )
        )
    return entries + GENERATED


ENTRIES = corpus()


# --------------------------------------------------------------------------- running


def _lay_out(entry: Entry, root: Path) -> Path:
    project = root / entry.name
    shutil.copytree(BASE, project)
    if entry.overlay is not None:
        shutil.copytree(entry.overlay, project, dirs_exist_ok=True)
    if entry.prepare is not None:
        entry.prepare(project)
    return project


def _run(command: str, project: Path, timeout_s: float) -> Outcome:
    args = [sys.executable, "-m", "evalrun", command,
            str(project / "evals" / "baseline.yaml"), str(project / "evals" / "candidate.yaml")]
    if command == "compare":
        args += ["--out", str(project / "run"), "--no-cache", "--quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALRUN_")}
    try:
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              cwd=project, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Outcome(None, out, err, timed_out=True, project=project)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, project=project)


def _run_in_process(command: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``evalrun COMMAND`` through click's runner, in the project folder, without EVALRUN_* settings."""
    from click.testing import CliRunner

    from evalrun.cli import main

    args = [command, str(project / "evals" / "baseline.yaml"), str(project / "evals" / "candidate.yaml")]
    if command == "compare":
        args += ["--out", str(project / "run"), "--no-cache", "--quiet"]
    for name in [k for k in os.environ if k.startswith("EVALRUN_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, args)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        # An escaped exception is what a user would see as a traceback.
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, result.stdout, stderr, project=project)


def _params() -> list[object]:
    out: list[object] = []
    for e in ENTRIES:
        for cmd in COMMANDS:
            marks = [pytest.mark.xfail(reason=e.xfail, strict=True)] if e.xfail else []
            out.append(pytest.param(e, cmd, id=f"{e.name}-{cmd}", marks=marks))
    return out


def _check(entry: Entry, out: Outcome) -> None:
    everything = out.stdout + out.stderr
    assert not out.timed_out, f"no answer within {entry.timeout_s:g} s"
    assert "Traceback" not in everything, out.stderr[-3000:]
    assert out.returncode == 2, f"exit {out.returncode}: {everything[-2000:]}"
    assert out.stdout == ""
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1, f"not one line: {out.stderr!r}"
    line = out.stderr.rstrip("\n")
    assert line.startswith("evalrun: error: ")
    assert len(line) <= 1500, f"a {len(line):,}-character error line"
    named = out.project / entry.file
    assert str(named) in line or str(named.resolve()) in line, f"{entry.file} not named in: {line}"
    for text in entry.mentions:
        assert text in line, f"{text!r} not in: {line}"
    assert LITERAL_KEY not in everything
    for text in entry.absent:
        assert text not in everything, "a pasted key was echoed"


@pytest.mark.parametrize(("entry", "command"), _params())
def test_bad_input_is_one_line_exit_2(entry: Entry, command: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    project = _lay_out(entry, tmp_path)
    started = time.monotonic()
    out = _run_in_process(command, project, monkeypatch)
    out.timed_out = time.monotonic() - started > entry.timeout_s
    _check(entry, out)


SUBPROCESS_ENTRIES = ("yaml-syntax-suite", "yaml-alias-bomb", "api-key-groq-in-api-key-env")
"""Entries also run as real processes: a plain user error, the slowest input, a pasted key."""


def test_subprocess_entries_exist() -> None:
    assert set(SUBPROCESS_ENTRIES) <= {e.name for e in ENTRIES}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", SUBPROCESS_ENTRIES)
def test_bad_input_as_a_process_is_one_line_exit_2(name: str, command: str, tmp_path: Path) -> None:
    entry = next(e for e in ENTRIES if e.name == name)
    _check(entry, _run(command, _lay_out(entry, tmp_path), entry.timeout_s))


def test_base_project_is_valid(tmp_path: Path) -> None:
    """The control: without an entry's changes the project validates."""
    project = tmp_path / "base"
    shutil.copytree(BASE, project)
    out = _run("validate", project, TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: 3 cases")


def test_corpus_size(request: pytest.FixtureRequest) -> None:
    known_bugs = sum(1 for e in ENTRIES if e.xfail)
    text = (f"\nbad-input corpus: {len(ENTRIES)} broken projects x {len(COMMANDS)} commands = "
            f"{len(ENTRIES) * len(COMMANDS)} runs ({known_bugs} entries are known bugs, xfail)")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(text, flush=True)
    else:
        print(text)
    assert len(ENTRIES) >= 40


def test_a_pasted_key_is_written_nowhere_by_replay(tmp_path: Path) -> None:
    """The issue: --replay wrote a key pasted into api_key_env into manifest.json and report.html."""
    key = PASTED_KEYS["groq"]
    project = tmp_path / "replay"
    shutil.copytree(BASE, project)
    _key_in_api_key_env(key)(project)
    args = [sys.executable, "-m", "evalrun", "compare", str(project / "evals" / "baseline.yaml"),
            str(project / "evals" / "candidate.yaml"), "--replay", "--out", str(project / "run"), "--quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALRUN_")}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=project, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert key not in proc.stdout + proc.stderr
    holders = [p for p in project.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert holders == [project / "evals" / "candidate.yaml"]
