"""Nothing lost: SIGKILL `evalrun compare` mid-run, again and again, and resume.

`python -m evalrun compare ... --out RUN` runs in a subprocess against the 127.0.0.1
server (40 ms per request, 30 cases, 60 calls). It is SIGKILLed at seeded random points
while calls are in flight, three times in a row on the same run folder (resuming each
time with `--resume RUN`), then interrupted once with SIGINT (Ctrl-C: exit 130, the resume
command printed), then the last resume runs to the end. Checked:

* after every kill the journal is sound: every line but possibly the last is complete
  JSON; a torn last line (one is also planted on purpose) is dropped on resume, not fatal;
* the final journal and results.jsonl hold every call exactly once;
* the server saw every call exactly once, except calls in flight at a kill (requested but
  not journaled when the process died), which may be — and are — made exactly once more;
* the final summary.json's metrics (latency aside) equal an uninterrupted run's.

Run twice: with `--no-cache` (the journal alone must account for every call, so the
server counts are exact) and with the response cache on (the default; a call in flight at
a kill may then be answered by the cache instead of the server, never twice by either).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer, last_user_text

from evalrun import api
from projectkit import LABELS, case, variant, write_project

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "EVALRUN_KILL_TEST_KEY"
N_CASES = 30
N_CALLS = 2 * N_CASES
KILLS = 3
SEED = 20240601
SIDE_OF = {"kill-base": "baseline", "kill-cand": "candidate"}
CASE_RE = re.compile(r"case=(k\d+)")

Identity = tuple[str, str]  # (side, case id)


def _project(root: Path, base_url: str) -> tuple[Path, Path]:
    common: dict[str, Any] = {"api_base": base_url, "api_key_env": KEY_ENV, "timeout_s": 10}
    cases = [
        case(f"k{i:02d}", kind="format_sensitive" if i % 3 == 0 else "representative",
             cohort=f"co{i % 4}",
             # The server echoes: format cases ask in JSON, so their answers parse.
             vars={"question": json.dumps({"case": f"case=k{i:02d}", "n": i}) if i % 3 == 0 else f"case=k{i:02d} hello"},
             expect=["json"] if i % 3 == 0 else [{"contains": {"value": "case="}}])
        for i in range(N_CASES)
    ]
    return write_project(
        root,
        cases=cases,
        baseline=variant("baseline", model="openai/kill-base", versions={**LABELS, "model_version": "kill-base"}, **common),
        candidate=variant("candidate", model="openai/kill-cand", versions={**LABELS, "model_version": "kill-cand"}, **common),
        suite={"concurrency": 3, "max_attempts": 2, "backoff": {"initial_s": 0.01, "max_s": 0.05},
               # Latency differs between runs by nature (and can crash the gate: see test_faults).
               "gate": {"rules": {"latency_p50_ratio": {"enabled": False}, "latency_p95_ratio": {"enabled": False}}}},
    )


def _identity(body: dict[str, Any]) -> Identity:
    match = CASE_RE.search(last_user_text(body))
    assert match is not None, body
    return SIDE_OF[str(body.get("model"))], match.group(1)


def _journal_state(path: Path) -> tuple[set[Identity], bool]:
    """Journaled (side, case) pairs from complete lines; whether the last line is torn.

    Fails the test if any line other than the last is not complete, valid JSON.
    """
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    done: set[Identity] = set()
    for i, line in enumerate(lines):
        row = json.loads(line)  # a complete line must be valid JSON: the journal is never corrupt
        ident = (row["side"], row["case_id"])
        assert ident not in done, f"line {i + 1}: {ident} journaled twice"
        done.add(ident)
    return done, tail != b""


def _cli(cache: list[str], *args: str) -> list[str]:
    return [sys.executable, "-m", "evalrun", "compare", *args, *cache, "--quiet"]


def _run_until(
    cmd: list[str], env: dict[str, str], server: OpenAIServer, target: int, pause_s: float, sig: signal.Signals
) -> tuple[int, str]:
    """Start ``cmd``; send ``sig`` once the server has seen ``target`` requests. (rc, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while server.count < target:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"run ended (rc {proc.returncode}) before the kill point {target}: {err.decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no progress within 120 s")
            time.sleep(0.002)
        time.sleep(pause_s)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode(errors="replace")


def _stable_metrics(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in summary["metrics"] if not str(m["metric"]).startswith("latency")]


@pytest.mark.parametrize("with_cache", [False, True], ids=["no-cache", "cache"])
def test_sigkill_three_times_then_resume_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_cache: bool
) -> None:
    rng = random.Random(SEED + with_cache)
    monkeypatch.delenv("EVALRUN_CACHE_DIR", raising=False)
    cache = ["--cache-dir", str(tmp_path / "cache")] if with_cache else ["--no-cache"]
    monkeypatch.setenv(KEY_ENV, "sk-kill-test-0000000000")
    env = dict(os.environ)
    with OpenAIServer(latency_s=0.04) as server:
        b, c = _project(tmp_path / "proj", server.base_url)
        run = tmp_path / "run"
        journal = run / "journal.jsonl"
        allowed: Counter[Identity] = Counter()  # in flight at a kill: may be made once more
        log: list[str] = []
        torn_seen = 0
        # Three SIGKILLs in a row; without the cache, then a Ctrl-C (SIGINT) as well.
        signals = [signal.SIGKILL] * KILLS + ([] if with_cache else [signal.SIGINT])
        for k, sig in enumerate(signals):
            start = server.count
            target = start + rng.randint(4, 11)
            cmd = _cli(cache, str(b), str(c), "--out", str(run)) if k == 0 else _cli(cache, str(b), str(c), "--resume", str(run))
            rc, err = _run_until(cmd, env, server, target, rng.uniform(0.0, 0.03), sig)
            if sig == signal.SIGKILL:
                assert rc == -signal.SIGKILL, f"the process was not killed (rc {rc}): {err[-2000:]}"
            else:  # interrupted: exit 130, finished calls saved, the way to resume printed
                assert rc == 130, f"rc {rc}: {err[-2000:]}"
                assert "Traceback" not in err and f"--resume {run}" in err, err[-2000:]
            time.sleep(0.25)  # let requests already on the wire reach the server's log
            requested = {_identity(body) for body in server.requests[start:]}
            done, torn = _journal_state(journal)
            torn_seen += torn
            in_flight = requested - done
            allowed.update(in_flight)
            log.append(f"{sig.name} {k + 1}: server at {server.count}/{N_CALLS} requests, {len(done)} journaled, "
                       f"{len(in_flight)} in flight, torn tail: {torn}")
            assert len(done) < N_CALLS, "killed too late: nothing left to resume"
            if k == 1 and not torn:
                # Plant a torn last line, as a kill in the middle of a write leaves it.
                lines = journal.read_bytes().splitlines(keepends=True)
                with open(journal, "ab") as fh:
                    fh.write(lines[-1][: len(lines[-1]) // 2])
                log.append("planted a torn last line")
        proc = subprocess.run(_cli(cache, str(b), str(c), "--resume", str(run)), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # identical answers: no regression

        # The journal and results.jsonl: every call exactly once.
        done, torn = _journal_state(journal)
        assert not torn and len(done) == N_CALLS
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text(encoding="utf-8").splitlines()]
        keys = Counter((r["case_id"], r["side"], r["sample"]) for r in rows)
        assert len(keys) == N_CALLS and set(keys.values()) == {1}
        assert all(r["error_kind"] is None and r["attempts"] <= 1 for r in rows)
        cached = sum(1 for r in rows if r["cached"])
        if not with_cache:
            assert cached == 0

        # The server: each call once, plus exactly one repeat per kill it was in flight at
        # (with the cache, such a call may instead be answered from the cache).
        seen = Counter(_identity(body) for body in server.requests)
        assert set(seen) == done
        if with_cache:
            unexpected = {i: n for i, n in seen.items() if not 1 <= n <= 1 + allowed[i]}
        else:
            unexpected = {i: n for i, n in seen.items() if n != 1 + allowed[i]}
        assert not unexpected, f"calls repeated beyond those in flight at a kill: {unexpected}"
        repeats = server.count - N_CALLS
        assert repeats <= sum(allowed.values())
        if not with_cache:
            assert repeats == sum(allowed.values())
        resumed = json.loads((run / "summary.json").read_text(encoding="utf-8"))

        # An uninterrupted run of the same suite gives the same numbers.
        server.reset()
        project = api.load_project(b, c)
        clean = api.compare(project, run_dir=tmp_path / "clean", cache="off")
        assert server.count == N_CALLS

    assert _stable_metrics(resumed) == _stable_metrics(clean.summary)
    def calls(summary: dict[str, Any]) -> dict[str, Any]:
        return {side: {k: v for k, v in c.items() if k != "cached"} for side, c in summary["calls"].items()}

    assert calls(resumed) == calls(clean.summary)
    assert resumed["flips"] == clean.summary["flips"]
    log.append(f"final resume ({'cache' if with_cache else 'no cache'}): exit {proc.returncode}; {N_CALLS} calls, "
               f"{repeats} repeated (in flight at a kill), {cached} answered from the cache, "
               f"torn tails seen after kills: {torn_seen}")
    print("\n".join(log))


def test_sigkill_the_moment_summary_json_appears_leaves_a_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json is written last: a kill right after it finds every other output written,
    and the same command again is a no-op (it used to find summary.json without report.html,
    start over, and journal every call a second time)."""
    monkeypatch.setenv(KEY_ENV, "sk-kill-test-0000000000")
    env = dict(os.environ)
    with OpenAIServer() as server:
        b, c = _project(tmp_path / "proj", server.base_url)
        run = tmp_path / "run"
        cmd = _cli(["--no-cache"], str(b), str(c), "--out", str(run))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        summary = run / "summary.json"
        deadline = time.monotonic() + 120
        try:
            while not summary.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            proc.kill()
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert summary.exists(), "the run ended without a summary.json"
        for name in ("results.jsonl", "summary.md", "report.html", "junit.xml", "rollout_note.md"):
            assert (run / name).exists(), f"summary.json was there before {name}"
        assert server.count == N_CALLS
        lines = (run / "journal.jsonl").read_bytes()
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
        assert again.returncode in (0, 3), again.stderr
        assert server.count == N_CALLS and (run / "journal.jsonl").read_bytes() == lines
