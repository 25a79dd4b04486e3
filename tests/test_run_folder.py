"""The run folder: nothing lost, nothing mixed up, whatever is already in ``--out``.

* re-using ``--out``: a run of other inputs is started over (never appended to: ``report``,
  ``rescore`` and ``note`` would rebuild the old run); the finished run of the same inputs
  is a no-op (``--refresh`` starts it over); a run that could not measure
  makes only its failed calls again; ``--resume`` of changed inputs keeps only the calls
  whose request is unchanged;
* a folder of someone's files is refused and left untouched (hidden files aside);
* two compares on one folder: the second stops at once (exit 4), the first is unharmed;
* a write failure (a full disk, simulated with RLIMIT_FSIZE) is one line and exit 4, leaves
  no summary.json, and the same command afterwards finishes the run without repeating a
  call or a journal line.

In-process tests use the shipped FakeProvider; CLI tests run ``python -m evalrun`` against
the 127.0.0.1 OpenAI-compatible server.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer

from evalrun import api
from evalrun.errors import CouldNotMeasureError, UserInputError
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.testing import FakeProvider, fake_response
from projectkit import LABELS, case, variant, write_project

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "EVALRUN_RUN_FOLDER_TEST_KEY"
N_CASES = 6
NO_LATENCY_RULES = {"latency_p50_ratio": {"enabled": False}, "latency_p95_ratio": {"enabled": False}}


def _project(root: Path, *, expect_word: str = "q", candidate_system: str = "You are terse.") -> api.Project:
    cases = [case(f"c{i:02d}", expect=[{"contains": {"value": expect_word}}]) for i in range(N_CASES)]
    cand = variant("candidate", prompt={"system": candidate_system, "user": "{{ question }}"},
                   versions={**LABELS, "prompt_version": "p2" if candidate_system != "You are terse." else "p1"})
    b, c = write_project(root, cases=cases, candidate=cand, suite={"gate": {"rules": NO_LATENCY_RULES}})
    return api.load_project(b, c)


def _candidate_says(text: str) -> FakeProvider:
    """Baseline echoes the question (passes "contains q"); the candidate answers ``text``."""

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["side"] == "candidate":
            return fake_response(text)
        return fake_response(str(req.messages[-1]["content"]))

    return FakeProvider(script)


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


class _Refuse(FakeProvider):
    def __init__(self) -> None:
        super().__init__(lambda req: AssertionError(f"no call expected, got {req.metadata}"))


# --------------------------------------------------------------------------- re-using --out


def test_a_finished_run_redone_with_refresh_replaces_the_old_one(tmp_path: Path) -> None:
    """FAIL; fix what the candidate talks to (the inputs stay the same); the same command with
    --refresh: not FAIL; `evalrun report` must then show the new run, not rebuild the old."""
    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "ci"
    cache = tmp_path / "cache"
    first = api.compare(project, provider=_candidate_says("nothing useful"), run_dir=run_dir, cache_path=cache)
    assert first.verdict_status == "FAIL"
    second = api.compare(project, provider=_candidate_says("q fixed"), run_dir=run_dir, cache="refresh",
                         cache_path=cache)
    assert second.verdict_status != "FAIL"
    assert _lines(run_dir / "journal.jsonl") == 2 * N_CASES
    again = api.rescore(run_dir)  # what `evalrun report ci` does
    assert again.verdict_status == second.verdict_status
    assert json.loads((run_dir / "summary.json").read_text())["verdict"]["status"] == second.verdict_status


def test_a_run_folder_of_other_inputs_is_started_over(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "run"
    api.compare(project, provider=_candidate_says("q"), run_dir=run_dir, cache="off")
    old_fingerprint = json.loads((run_dir / "manifest.json").read_text())["fingerprint"]
    changed = _project(tmp_path / "proj", expect_word="answer")  # cases changed: other inputs
    provider = _candidate_says("the answer")
    outcome = api.compare(changed, provider=provider, run_dir=run_dir, cache="off")
    assert provider.count == 2 * N_CASES
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == changed.fingerprint() != old_fingerprint
    assert _lines(run_dir / "journal.jsonl") == 2 * N_CASES
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["output"] for r in rows if r["side"] == "candidate"} == {"the answer"}
    assert api.rescore(run_dir).verdict_status == outcome.verdict_status


def test_the_same_finished_run_again_is_a_no_op(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "run"
    first = api.compare(project, provider=_candidate_says("q"), run_dir=run_dir)
    stamps = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if not p.name.startswith(".")}
    folder = api.open_run_folder(project, run_dir)
    assert folder.mode == "finished" and "nothing to call" in folder.note
    folder.close()
    again = api.compare(project, provider=_Refuse(), run_dir=run_dir)
    assert (again.verdict_status, again.exit_code) == (first.verdict_status, first.exit_code)
    assert again.summary == first.summary
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if not p.name.startswith(".")} == stamps
    # Fresh answers asked for: started over.
    provider = _candidate_says("q")
    api.compare(project, provider=provider, run_dir=run_dir, cache="refresh", cache_path=tmp_path / "cache")
    assert provider.count == 2 * N_CASES and _lines(run_dir / "journal.jsonl") == 2 * N_CASES


def test_a_run_that_could_not_measure_makes_only_its_failed_calls_again(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj", candidate_system="You are kind.")  # the sides' requests differ
    run_dir = tmp_path / "run"
    down = {"c01", "c04"}

    def outage(req: ProviderRequest) -> ProviderResponse | ProviderError:
        if req.metadata["side"] == "candidate" and req.metadata["case_id"] in down:
            return ProviderError("server_error", "503 upstream down", retryable=False)
        return fake_response(str(req.messages[-1]["content"]))

    cache = tmp_path / "cache"  # (with --no-cache, which asks for fresh answers, the run starts over)
    first = api.compare(project, provider=FakeProvider(outage), run_dir=run_dir, cache_path=cache)
    assert first.verdict_status == "COULD_NOT_MEASURE"
    healthy = FakeProvider()
    second = api.compare(project, provider=healthy, run_dir=run_dir, cache_path=cache)
    assert sorted(r.metadata["case_id"] for r in healthy.calls) == sorted(down)
    assert second.verdict_status != "COULD_NOT_MEASURE"
    assert _lines(run_dir / "journal.jsonl") == 2 * N_CASES + len(down)  # the retried calls' new rows
    assert second.summary["calls"]["candidate"]["errors"] == 0
    assert api.rescore(run_dir).verdict_status == second.verdict_status  # the answers win over the errors


def test_resume_of_changed_inputs_keeps_only_calls_whose_request_is_unchanged(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "run"
    api.compare(project, provider=_candidate_says("q"), run_dir=run_dir, cache="off")
    (run_dir / "summary.json").unlink()  # as if interrupted before the outputs
    changed = _project(tmp_path / "proj", candidate_system="You are kind.")  # the candidate's requests change
    provider = _candidate_says("q again")
    outcome = api.compare(changed, provider=provider, run_dir=run_dir, resume=True, cache="off")
    assert sorted(r.metadata["side"] for r in provider.calls) == ["candidate"] * N_CASES
    assert json.loads((run_dir / "manifest.json").read_text())["fingerprint"] == changed.fingerprint()
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["output"] for r in rows if r["side"] == "candidate"} == {"q again"} and len(rows) == 2 * N_CASES
    assert api.rescore(run_dir).summary["metrics"] == outcome.summary["metrics"]


# --------------------------------------------------------------------------- someone else's folder


def test_a_folder_of_other_files_is_refused_and_left_untouched(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"journal.jsonl": "my own journal, not evalrun's\n", "summary.md": "# my notes\n", "data.csv": "a,b\n"}
    for name, text in mine.items():
        (out / name).write_text(text)
    with pytest.raises(UserInputError, match="not an evalrun run folder and not empty"):
        api.compare(project, provider=_Refuse(), run_dir=out)
    assert {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")} == mine
    # Hidden files only (a .gitkeep): fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    api.compare(project, provider=_candidate_says("q"), run_dir=empty, cache="off")
    assert (empty / "summary.json").exists() and (empty / ".gitkeep").exists()


def test_a_run_started_over_keeps_the_users_other_files(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "run"
    api.compare(project, provider=_candidate_says("q"), run_dir=run_dir, cache="off")
    (run_dir / "reviewer-notes.txt").write_text("keep me")
    changed = _project(tmp_path / "proj", expect_word="answer")
    api.compare(changed, provider=_candidate_says("q"), run_dir=run_dir, cache="off")
    assert (run_dir / "reviewer-notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- the CLI


def _http_project(root: Path, server: OpenAIServer, *, n: int = N_CASES, words: int = 30) -> tuple[Path, Path]:
    common: dict[str, Any] = {"api_base": server.base_url, "api_key_env": KEY_ENV, "timeout_s": 10}
    cases = [case(f"h{i:02d}", vars={"question": f"case=h{i:02d} " + "words " * words},
                  expect=[{"contains": {"value": "case="}}]) for i in range(n)]
    return write_project(
        root, cases=cases,
        baseline=variant("baseline", model="openai/folder-base", versions={**LABELS, "model_version": "b"}, **common),
        candidate=variant("candidate", model="openai/folder-cand", versions={**LABELS, "model_version": "c"}, **common),
        suite={"concurrency": 2, "max_attempts": 2, "backoff": {"initial_s": 0.01, "max_s": 0.05},
               "gate": {"rules": NO_LATENCY_RULES}},
    )


def _cli(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # in the child: files larger than this fail to grow (EFBIG), like a full disk
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {k: v for k, v in os.environ.items() if k != "EVALRUN_CACHE_DIR"}
    env[KEY_ENV] = "sk-run-folder-test-0000"
    return subprocess.run([sys.executable, "-m", "evalrun", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=180, preexec_fn=limit, check=False)


@pytest.mark.network
def test_cli_refuses_a_folder_of_other_files_with_one_line(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _http_project(tmp_path / "proj", openai_server)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "journal.jsonl").write_text("precious\n")
    proc = _cli("compare", str(b), str(c), "--out", str(out))
    assert proc.returncode == 2 and openai_server.count == 0
    assert proc.stderr.count("\n") == 1 and "not an evalrun run folder" in proc.stderr and str(out) in proc.stderr
    assert (out / "journal.jsonl").read_text() == "precious\n" and not (out / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.network
def test_cli_says_what_it_does_with_a_finished_folder(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _http_project(tmp_path / "proj", openai_server)
    out = tmp_path / "run"
    first = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache")
    assert first.returncode in (0, 3), first.stderr
    again = _cli("compare", str(b), str(c), "--out", str(out))
    assert again.returncode == first.returncode and openai_server.count == 2 * N_CASES
    assert "already holds the finished run of these inputs" in again.stderr
    assert again.stdout.splitlines()[0] == first.stdout.splitlines()[0]  # the same verdict line
    fresh = _cli("compare", str(b), str(c), "--out", str(out), "--refresh", "--cache-dir", str(tmp_path / "cache"))
    assert "starting it over" in fresh.stderr and openai_server.count == 4 * N_CASES
    assert _lines(out / "journal.jsonl") == 2 * N_CASES


@pytest.mark.slow
@pytest.mark.network
def test_two_compares_on_one_folder_the_second_stops_at_once(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Both used to make every call (and 1 in 12 crashed on manifest.json.tmp)."""
    openai_server.latency_s = 0.1
    b, c = _http_project(tmp_path / "proj", openai_server, n=10)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(out), "--no-cache", "-q"]
    env = {**os.environ, KEY_ENV: "sk-run-folder-test-0000"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while openai_server.count == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first one holds the folder once its calls have started
    second = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache", "-q")
    _, err1 = first.communicate(timeout=180)
    assert second.returncode == 4, second.stderr
    assert second.stderr.count("\n") == 1 and "in use by another evalrun" in second.stderr
    assert "Traceback" not in second.stderr + err1
    assert first.returncode in (0, 3), err1
    assert openai_server.count == 20  # one run's calls, not two
    assert _lines(out / "journal.jsonl") == 20


@pytest.mark.slow
@pytest.mark.network
def test_a_full_disk_while_writing_the_reports_is_one_line_and_the_rerun_finishes(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    b, c = _http_project(tmp_path / "proj", openai_server)
    out = tmp_path / "run"
    # Journal (~9 KB), results and summary.md fit; report.html (~50 KB) does not.
    proc = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache", "-q", fsize=30_000)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "cannot write" in proc.stderr and "report.html" in proc.stderr and "File too large" in proc.stderr
    assert not (out / "summary.json").exists()  # not a finished run: it says so by its absence
    assert openai_server.count == 2 * N_CASES and _lines(out / "journal.jsonl") == 2 * N_CASES
    # With room again, the same command finishes the run: no call, no journal line repeated.
    again = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache")
    assert again.returncode in (0, 3), again.stderr
    assert "unfinished run of these inputs: resuming it" in again.stderr
    assert openai_server.count == 2 * N_CASES and _lines(out / "journal.jsonl") == 2 * N_CASES
    assert all((out / f).exists() for f in ("report.html", "junit.xml", "rollout_note.md", "summary.json"))


@pytest.mark.slow
@pytest.mark.network
def test_a_full_disk_while_journaling_stops_the_run_and_resume_makes_only_the_rest(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    b, c = _http_project(tmp_path / "proj", openai_server, words=300)  # journal lines of ~4 KB
    out = tmp_path / "run"
    # The manifest (~5 KB) fits; the journal fills up after a few calls.
    proc = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache", "-q", fsize=20_000)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "cannot write" in proc.stderr and "journal.jsonl" in proc.stderr
    made = openai_server.count
    assert made < 2 * N_CASES  # it stopped instead of making calls it could not save
    again = _cli("compare", str(b), str(c), "--out", str(out), "--no-cache", "-q")
    assert again.returncode in (0, 3), again.stderr
    journal = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    assert sorted((r["case_id"], r["side"]) for r in journal) == sorted(
        (f"h{i:02d}", s) for i in range(N_CASES) for s in ("baseline", "candidate"))
    # Only calls whose line never reached the disk were made twice (at most the two in flight).
    assert 2 * N_CASES <= openai_server.count <= 2 * N_CASES + 2


@pytest.mark.slow
def test_report_and_compare_refuse_a_folder_another_evalrun_holds(tmp_path: Path) -> None:
    """A lock held by another process (as a running compare holds it) stops `evalrun report`
    and a compare; within one process the lock is re-entrant."""
    from evalrun.execution.store import RunLock

    project = _project(tmp_path / "proj")
    run_dir = tmp_path / "run"
    api.compare(project, provider=_candidate_says("q"), run_dir=run_dir, cache="off")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from evalrun.execution.store import RunLock; "
         "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = _cli("report", str(run_dir))
        assert proc.returncode == 4 and f"pid {holder.pid}" in proc.stderr and "in use by another evalrun" in proc.stderr
        with pytest.raises(CouldNotMeasureError, match="in use"):
            api.compare(project, provider=_Refuse(), run_dir=run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert _cli("report", str(run_dir)).returncode in (0, 1, 3)
    with RunLock(run_dir):  # re-entrant here: a command holding the folder may call the library on it
        assert api.rescore(run_dir).verdict_status
