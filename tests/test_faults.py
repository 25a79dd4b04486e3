"""Hostile providers: scripted faults through litellm against the 127.0.0.1 server.

Every test runs a real ``api.compare`` (or the CLI in a subprocess) against
``tests.support.openai_server`` with faults scripted per (side, case, attempt), then checks
the same invariants:

* every (case, side, sample) is in results.jsonl exactly once, as a result or as an error
  of a named kind (``evalrun.records.ERROR_KINDS``) with a message;
* the server's request count equals the attempts recorded (per call and in
  ``summary.json``'s ``calls.*.attempts``): the harness owns every retry, none are hidden;
* the verdict is COULD_NOT_MEASURE (exit 4) exactly when errors after retries exceed
  ``max_error_rate`` on a side — never a misleading PASS.

A table of faults injected → outcomes is printed at the end of the module (for the
README's Reliability section).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import (
    OpenAIServer,
    Reply,
    completion_body,
    gzip_bomb,
    last_user_text,
)

from evalrun import api
from evalrun.providers.litellm.provider import import_litellm
from evalrun.records import ERROR_KINDS
from projectkit import LABELS, case, variant, write_project

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "EVALRUN_FAULTS_TEST_KEY"
BASE_MODEL = "openai/fault-base"  # unpriced in litellm's map: cost never enters the picture
CAND_MODEL = "openai/fault-cand"
SIDE_OF = {"fault-base": "baseline", "fault-cand": "candidate"}
CASE_RE = re.compile(r"case=(\S+)")
FAST_BACKOFF = {"initial_s": 0.01, "max_s": 0.05}
# Latency under injected faults is noise, and a latency ratio whose interval ends at its own
# estimate crashes the gate (test_gate_survives_an_interval_ending_at_its_estimate).
NO_LATENCY_RULES = {"latency_p50_ratio": {"enabled": False}, "latency_p95_ratio": {"enabled": False}}

Plan = Callable[[str, str, int], Reply | None]
"""(side, case_id, attempt number from 1) -> the server's reply (None: a normal answer)."""

TABLE: list[tuple[str, str, str]] = []


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Hit:
    side: str
    case_id: str
    attempt: int
    at: float  # time.monotonic() when the request arrived


class Faults:
    """A server behaviour that scripts a reply per (side, case, attempt) and records hits."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.hits: list[Hit] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self.faulted = 0

    def __call__(self, body: dict[str, Any], number: int) -> Reply:
        side = SIDE_OF.get(str(body.get("model")), "unknown")
        match = CASE_RE.search(last_user_text(body))
        cid = match.group(1) if match else "?"
        with self._lock:
            self._seen[(side, cid)] += 1
            attempt = self._seen[(side, cid)]
            self.hits.append(Hit(side, cid, attempt, time.monotonic()))
        reply = self.plan(side, cid, attempt)
        if reply is None:
            return Reply(content=f"answer for {cid}")
        with self._lock:
            self.faulted += 1
        return reply

    def attempts(self, side: str, cid: str) -> list[Hit]:
        return sorted((h for h in self.hits if h.side == side and h.case_id == cid), key=lambda h: h.attempt)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()  # nothing listens here now: connect() is refused
    return port


def fault_project(
    root: Path,
    api_base: str,
    *,
    n_cases: int = 4,
    suite: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
    params: dict[str, Any] | None = None,
    expect: list[Any] | None = None,
) -> tuple[Path, Path]:
    """A project whose two sides reach ``api_base`` with distinguishable model names."""
    common: dict[str, Any] = {"api_base": api_base, "api_key_env": KEY_ENV, "timeout_s": timeout_s}
    if params is not None:
        common["params"] = params
    cases = [case(f"c{i:02d}", vars={"question": f"case=c{i:02d} what is the answer?"}) for i in range(n_cases)]
    if expect:
        for c in cases:
            c["expect"] = expect
    suite_cfg: dict[str, Any] = {"concurrency": 4, "max_attempts": 3, "backoff": FAST_BACKOFF}
    gate = {"rules": NO_LATENCY_RULES, **(suite or {}).get("gate", {})}
    suite_cfg.update(suite or {})
    suite_cfg["gate"] = gate
    return write_project(
        root,
        cases=cases,
        # Distinct model names tell the sides apart at the server; labels say so too.
        baseline=variant("baseline", model=BASE_MODEL, versions={**LABELS, "model_version": "fault-base"}, **common),
        candidate=variant("candidate", model=CAND_MODEL, versions={**LABELS, "model_version": "fault-cand"}, **common),
        suite=suite_cfg,
    )


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def check_accounting(
    project: api.Project, run_dir: Path, summary: dict[str, Any], exit_code: int, server_count: int | None
) -> list[dict[str, Any]]:
    """The invariants every fault must keep (see the module docstring); returns the rows."""
    rows = read_rows(run_dir)
    samples = project.suite.config.samples
    expected = {(c.id, side, s) for c in project.cases for side in ("baseline", "candidate") for s in range(samples)}
    keys = [(r["case_id"], r["side"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)), "a call is recorded twice in results.jsonl"
    assert set(keys) == expected, "a call is missing from results.jsonl"
    for r in rows:
        # A call an open circuit breaker did not make is recorded with zero attempts.
        assert (r["attempts"] >= 1) != (r["error_kind"] == "circuit_open"), r
        assert len(r["attempt_latencies_s"]) == r["attempts"], r
        assert r["attempts"] <= project.suite.config.max_attempts
        if r["error_kind"] is not None:
            assert r["error_kind"] in ERROR_KINDS, r["error_kind"]
            assert r["error_message"], r
            assert "Traceback" not in r["error_message"]
    attempts = sum(r["attempts"] for r in rows)
    calls = summary["calls"]
    assert calls["baseline"]["attempts"] + calls["candidate"]["attempts"] == attempts
    for side in ("baseline", "candidate"):
        side_rows = [r for r in rows if r["side"] == side]
        assert calls[side]["total"] == len(side_rows)
        assert calls[side]["errors"] == sum(1 for r in side_rows if r["error_kind"] not in (None, "content_policy"))
    if server_count is not None:
        assert server_count == attempts, f"server saw {server_count} requests, harness recorded {attempts} attempts"
    # COULD_NOT_MEASURE exactly when errors exceed the tolerance on a side.
    n_cases = len(project.cases)
    worst = max(calls[s]["errors"] for s in ("baseline", "candidate")) / (n_cases * samples)
    status = summary["verdict"]["status"]
    if worst > project.suite.config.gate.max_error_rate:
        assert (status, exit_code) == ("COULD_NOT_MEASURE", 4), summary["verdict"]["reasons"]
    else:
        assert status != "COULD_NOT_MEASURE", summary["verdict"]["reasons"]
    assert summary["verdict"]["exit_code"] == exit_code
    return rows


def outcome_text(rows: list[dict[str, Any]], status: str, exit_code: int) -> str:
    kinds = Counter(r["error_kind"] for r in rows if r["error_kind"])
    errs = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
    attempts = sum(r["attempts"] for r in rows)
    return f"{len(rows)} calls, {attempts} attempts, errors: {errs}; {status} (exit {exit_code})"


def record(fault: str, injected: int, rows: list[dict[str, Any]], status: str, exit_code: int) -> None:
    TABLE.append((fault, str(injected), outcome_text(rows, status, exit_code)))


def run_compare(
    tmp_path: Path, server: OpenAIServer | None, plan: Plan | None, **project_kw: Any
) -> tuple[api.Project, api.CompareOutcome, list[dict[str, Any]], Faults | None]:
    faults = Faults(plan) if plan is not None else None
    if server is not None and faults is not None:
        server.behaviour = faults
    base = server.base_url if server is not None else f"http://127.0.0.1:{closed_port()}/v1"
    b, c = fault_project(tmp_path / "proj", base, **project_kw)
    project = api.load_project(b, c)
    outcome = api.compare(project, run_dir=tmp_path / "run")
    rows = check_accounting(
        project, outcome.run_dir, outcome.summary, outcome.exit_code, server.count if server is not None else None
    )
    return project, outcome, rows, faults


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _litellm_and_table(request: pytest.FixtureRequest) -> Iterator[None]:
    import_litellm()  # once, outside any timed region
    yield
    if not TABLE:
        return
    width = max(len(f) for f, _, _ in TABLE)
    lines = ["", "Faults injected -> outcomes (evalrun through litellm, 127.0.0.1 server):",
             f"{'fault'.ljust(width)}  injected  outcome"]
    lines += [f"{f.ljust(width)}  {n.rjust(8)}  {o}" for f, n, o in TABLE]
    lines.append(f"total faults injected: {sum(int(n) for _, n, _ in TABLE)}")
    show(request, "\n".join(lines))


def show(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's capture (the numbers are meant to be read in the log)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print(text, flush=True)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-faults-test-000000000")
    # Each test's project has its own (empty) response cache: a shared one would answer
    # requests another test already made, and the server counts would not add up.
    monkeypatch.delenv("EVALRUN_CACHE_DIR", raising=False)


# --------------------------------------------------------------------------- rate limits


@pytest.mark.slow
def test_429_burst_with_retry_after_is_honoured(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Attempt 1: 429 Retry-After: 1; attempt 2: 429 retry-after-ms: 400; then an answer."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if attempt == 1:
            return Reply(status=429, headers={"Retry-After": "1"}, error_message="rate limited")
        if attempt == 2:
            return Reply(status=429, headers={"retry-after-ms": "400"}, error_message="rate limited")
        return None

    project, outcome, rows, faults = run_compare(
        tmp_path, openai_server, plan, n_cases=3, suite={"concurrency": 6, "max_attempts": 4}
    )
    assert faults is not None
    assert all(r["error_kind"] is None and r["attempts"] == 3 for r in rows)
    assert openai_server.count == 18
    for side in ("baseline", "candidate"):
        for c in project.cases:
            hits = faults.attempts(side, c.id)
            assert [h.attempt for h in hits] == [1, 2, 3]
            # The retried request arrives no earlier than the server asked.
            assert hits[1].at - hits[0].at >= 1.0, (side, c.id, hits[1].at - hits[0].at)
            assert hits[2].at - hits[1].at >= 0.4, (side, c.id, hits[2].at - hits[1].at)
    assert outcome.summary["calls"]["baseline"]["retried"] == 3
    record("429 burst with Retry-After (1 s, then 400 ms)", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


def test_429_without_retry_after_backs_off_then_gives_up(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Two bare 429s then an answer; candidate c00 stays limited past max_attempts."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if (side, cid) == ("candidate", "c00") or attempt <= 2:
            return Reply(status=429, error_message="too many requests")
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, suite={"max_attempts": 4})
    assert faults is not None
    limited = [r for r in rows if r["error_kind"]]
    assert [(r["case_id"], r["side"], r["error_kind"], r["attempts"]) for r in limited] == [
        ("c00", "candidate", "rate_limited", 4)
    ]
    assert all(r["attempts"] == 3 for r in rows if r["error_kind"] is None)
    assert outcome.verdict_status == "COULD_NOT_MEASURE" and outcome.exit_code == 4
    record("429 burst without Retry-After; one call limited throughout", faults.faulted, rows,
           outcome.verdict_status, outcome.exit_code)


@pytest.mark.slow
def test_429_on_one_side_pauses_that_endpoint_not_the_run(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The baseline's endpoint answers 429 (Retry-After 2 s) to each call's first attempt:
    the candidate's calls (another endpoint) go on meanwhile instead of waiting it out."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if side == "baseline" and attempt == 1:
            return Reply(status=429, headers={"Retry-After": "2"}, error_message="rate limited")
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, n_cases=8, suite={"concurrency": 4})
    assert faults is not None
    assert all(r["error_kind"] is None for r in rows)
    first_429 = min(h.at for h in faults.hits if h.side == "baseline")
    candidate = [h.at for h in faults.hits if h.side == "candidate"]
    # Every candidate request arrived inside the baseline's first 2 s pause...
    assert len(candidate) == 8 and max(candidate) < first_429 + 2.0, [round(t - first_429, 2) for t in candidate]
    # ... and no baseline call came back before its Retry-After had passed.
    for c in {h.case_id for h in faults.hits if h.side == "baseline"}:
        hits = faults.attempts("baseline", c)
        assert hits[1].at - hits[0].at >= 2.0
    record("429 (Retry-After 2 s) on every baseline call's first attempt", faults.faulted, rows,
           outcome.verdict_status, outcome.exit_code)


@pytest.mark.slow
def test_an_always_429_endpoint_opens_the_circuit(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The baseline's endpoint answers 429 to everything: after 10 calls failed in a row (all
    their attempts) its remaining calls are recorded as circuit_open without being made; the
    candidate is unaffected; the run says COULD_NOT_MEASURE instead of retrying for minutes."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if side == "baseline":
            return Reply(status=429, headers={"retry-after-ms": "200"}, error_message="rate limited")
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, n_cases=30,
                                           suite={"concurrency": 4, "max_attempts": 3})
    assert faults is not None
    base = [r for r in rows if r["side"] == "baseline"]
    limited = [r for r in base if r["error_kind"] == "rate_limited"]
    opened = [r for r in base if r["error_kind"] == "circuit_open"]
    assert len(limited) + len(opened) == 30
    # Opened after 10 failed calls; calls already on their way when it opened still finished.
    assert 10 <= len(limited) <= 10 + 4 and len(opened) >= 16
    assert all(r["attempts"] == 3 for r in limited) and all(r["attempts"] == 0 for r in opened)
    assert "rate_limited" in opened[0]["error_message"] and "run again" in opened[0]["error_message"]
    assert sum(1 for h in faults.hits if h.side == "baseline") == 3 * len(limited) < 3 * 30
    assert all(r["error_kind"] is None for r in rows if r["side"] == "candidate")
    assert outcome.verdict_status == "COULD_NOT_MEASURE" and outcome.exit_code == 4
    record("429 on every baseline request (circuit opens)", faults.faulted, rows, outcome.verdict_status,
           outcome.exit_code)


def test_a_retry_after_longer_than_evalrun_waits_is_not_retried_early(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    """Retry-After: 3600 on candidate c00: honoured by not coming back at all (one attempt, a
    message saying why), never by retrying after the 60 s cap."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if (side, cid) == ("candidate", "c00"):
            return Reply(status=429, headers={"Retry-After": "3600"}, error_message="daily quota exhausted")
        return None

    started = time.monotonic()
    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, suite={"max_attempts": 4})
    assert faults is not None and time.monotonic() - started < 30
    row = next(r for r in rows if (r["case_id"], r["side"]) == ("c00", "candidate"))
    assert (row["error_kind"], row["attempts"]) == ("rate_limited", 1)
    assert "Retry-After 3600 s" in row["error_message"] and "not retried" in row["error_message"]
    assert outcome.exit_code == 4
    record("429 with Retry-After 3600 s on one call", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


# --------------------------------------------------------------------------- server errors


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_and_counted(tmp_path: Path, openai_server: OpenAIServer, status: int) -> None:
    """Every call fails once with ``status``; candidate c01 fails on every attempt."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if attempt == 1 or (side, cid) == ("candidate", "c01"):
            return Reply(status=status, error_message=f"upstream said {status}")
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan)
    assert faults is not None
    failed = [(r["case_id"], r["side"], r["error_kind"], r["attempts"]) for r in rows if r["error_kind"]]
    assert failed == [("c01", "candidate", "server_error", 3)]
    assert outcome.exit_code == 4
    record(f"HTTP {status} once per call; one call always", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


def test_errors_within_tolerance_still_give_a_verdict(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """1 of 10 candidate calls down with max_error_rate 0.1: measured (10 % is not above 10 %)."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(status=500) if (side, cid) == ("candidate", "c03") else None

    _, outcome, rows, faults = run_compare(
        tmp_path, openai_server, plan, n_cases=10, suite={"max_attempts": 2, "gate": {"max_error_rate": 0.1}}
    )
    assert faults is not None and faults.faulted == 2
    assert outcome.verdict_status != "COULD_NOT_MEASURE"
    record("HTTP 500 on 1 of 10 calls, max_error_rate 0.1", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


# --------------------------------------------------------------------------- timeouts and connections


@pytest.mark.slow
def test_timeouts_past_timeout_s(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The server sleeps 2 s against timeout_s 0.3: candidate c00 always, c01 on attempt 1."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if side == "candidate" and (cid == "c00" or (cid == "c01" and attempt == 1)):
            return Reply(content="too late", delay_s=2.0)
        return None

    started = time.monotonic()
    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, timeout_s=0.3, suite={"max_attempts": 2})
    assert faults is not None
    by = {(r["case_id"], r["side"]): r for r in rows}
    assert (by["c00", "candidate"]["error_kind"], by["c00", "candidate"]["attempts"]) == ("timeout", 2)
    assert (by["c01", "candidate"]["error_kind"], by["c01", "candidate"]["attempts"]) == (None, 2)
    # Each timed-out attempt gave up near timeout_s, not at the server's 2 s.
    assert all(t < 1.5 for t in by["c00", "candidate"]["attempt_latencies_s"])
    assert time.monotonic() - started < 20
    assert outcome.exit_code == 4
    record("server sleeps 2 s past timeout_s 0.3", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


@pytest.mark.parametrize("mode", ["drop_mid_response", "drop_connection"])
def test_connection_resets(tmp_path: Path, openai_server: OpenAIServer, mode: str) -> None:
    """Reset on attempt 1 of every call, and on every attempt of candidate c02."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if attempt == 1 or (side, cid) == ("candidate", "c02"):
            return Reply(content="partial " * 100, drop_mid_response=mode == "drop_mid_response",
                         drop_connection=mode == "drop_connection")
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan)
    assert faults is not None
    failed = [(r["case_id"], r["side"], r["error_kind"], r["attempts"]) for r in rows if r["error_kind"]]
    assert failed == [("c02", "candidate", "connection", 3)]
    assert outcome.exit_code == 4
    label = "connection reset mid-response" if mode == "drop_mid_response" else "connection reset before a byte"
    record(label, faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


@pytest.mark.slow
def test_connection_refused_via_cli(tmp_path: Path) -> None:
    """Nothing listens: the first call's attempts are refused, and the preflight stops the run
    there (exit 4, the cause on stderr) instead of retrying every call of both sides."""
    b, c = fault_project(tmp_path / "proj", f"http://127.0.0.1:{closed_port()}/v1", n_cases=3)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run_dir), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, KEY_ENV: "sk-faults-test-000000000"}, check=False,
    )
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "preflight: the first" in proc.stderr and "ConnectionRefusedError" in proc.stderr
    assert "is the server running and api_base right?" in proc.stderr
    rows = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1 and rows[0]["error_kind"] == "connection" and rows[0]["attempts"] == 3
    assert not (run_dir / "summary.json").exists()  # nothing was measured
    record("connection refused (closed port), CLI", 3, rows, "preflight stop", proc.returncode)
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_server_error_burst_via_cli(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The first 6 requests get 503; the CLI's summary.json counts the retries the server saw."""
    lock = threading.Lock()
    served = Counter[str]()

    def behaviour(body: dict[str, Any], number: int) -> Reply:
        with lock:
            served["n"] += 1
            if served["n"] <= 6:
                return Reply(status=503, error_message="overloaded")
        return Reply(content="fine")

    openai_server.behaviour = behaviour
    b, c = fault_project(tmp_path / "proj", openai_server.base_url, n_cases=4, suite={"concurrency": 2, "max_attempts": 4})
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run_dir), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, KEY_ENV: "sk-faults-test-000000000"}, check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    project = api.load_project(b, c)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = check_accounting(project, run_dir, summary, proc.returncode, openai_server.count)
    assert openai_server.count == 8 + 6 and all(r["error_kind"] is None for r in rows)
    record("HTTP 503 burst (first 6 requests), CLI", 6, rows, summary["verdict"]["status"], proc.returncode)


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("label", "reply"),
    [
        ("malformed JSON body", Reply(raw_body=b'{"id": "x", "choices": [')),
        ("HTML error page with status 200", Reply(raw_body=b"<html><body>Bad gateway</body></html>")),
        ("empty choices", Reply(content="x", empty_choices=True)),
    ],
    ids=["bad-json", "html", "empty-choices"],
)
def test_malformed_bodies(tmp_path: Path, openai_server: OpenAIServer, label: str, reply: Reply) -> None:
    """Malformed on attempt 1 of every call and on every attempt of baseline c03."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return reply if attempt == 1 or (side, cid) == ("baseline", "c03") else None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan)
    assert faults is not None
    failed = [(r["case_id"], r["side"], r["error_kind"], r["attempts"]) for r in rows if r["error_kind"]]
    assert failed == [("c03", "baseline", "malformed_response", 3)]
    assert outcome.exit_code == 4
    record(label, faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


def _surrogate_body(body: dict[str, Any], number: int, tools: bool) -> Reply:
    """A completion whose content, refusal and tool arguments carry a lone surrogate as a
    JSON escape: valid JSON, but no UTF-8 file can hold the decoded text."""
    cid = CASE_RE.search(last_user_text(body))
    message: dict[str, Any] = {"role": "assistant", "content": f"abc\ud800def {cid.group(1) if cid else '?'}"}
    if tools:
        message["tool_calls"] = [{"id": "call_\udfff", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Par\ud83dis"}'}}]
    data = {"id": f"x{number}", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
    return Reply(raw_body=json.dumps(data))  # ensure_ascii: the surrogates travel as \ud800 escapes


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_lone_surrogates_from_a_provider_are_stored_safely(
    tmp_path: Path, openai_server: OpenAIServer, workers: int
) -> None:
    """Content "abc\\ud800def" used to crash journaling for good (traceback; resuming called
    again and crashed again). Now every text is stored with U+FFFD in its place, the run ends
    with a verdict, and running the same command again calls nothing."""
    openai_server.behaviour = lambda body, n: _surrogate_body(body, n, tools=True)
    b, c = fault_project(tmp_path / "proj", openai_server.base_url, n_cases=4, params={"tools": [WEATHER_TOOL]},
                         suite={"workers": workers})
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run_dir), "--quiet"]
    env = {**os.environ, KEY_ENV: "sk-faults-test-000000000"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = check_accounting(api.load_project(b, c), run_dir, summary, proc.returncode, openai_server.count)
    assert openai_server.count == 8
    for r in rows:
        assert r["error_kind"] is None and r["output"].startswith("abc\ufffddef ")
        assert r["tool_calls"] == [{"name": "get_weather", "arguments": '{"city": "Par\ufffdis"}', "id": "call_\ufffd"}]
    # Every file is valid UTF-8, the report included.
    for f in run_dir.iterdir():
        f.read_bytes().decode("utf-8")
    # The same command again: nothing to call (the run is finished), same exit code.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env, check=False)
    assert again.returncode == proc.returncode and openai_server.count == 8, again.stderr
    # An interrupted run (no summary yet) resumes from the journal without calling again.
    (run_dir / "summary.json").unlink()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env, check=False)
    assert resumed.returncode == proc.returncode and openai_server.count == 8, resumed.stderr
    assert (run_dir / "summary.json").exists()
    record(f"lone surrogates in content, tool call and id ({workers} worker(s)), CLI", 8, rows,
           summary["verdict"]["status"], proc.returncode)


def test_missing_usage_is_estimated(tmp_path: Path, openai_server: OpenAIServer) -> None:
    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(content=f"answer for {cid}, without any usage object", usage=None)

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan)
    assert faults is not None
    assert all(r["error_kind"] is None and r["tokens_estimated"] for r in rows)
    assert all(r["completion_tokens"] and r["prompt_tokens"] for r in rows)
    calls = outcome.summary["calls"]
    assert calls["baseline"]["tokens_estimated"] == calls["candidate"]["tokens_estimated"] == 4
    assert outcome.verdict_status != "COULD_NOT_MEASURE"
    record("missing usage object", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


def test_null_and_empty_content_are_answers_not_crashes(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """content: null (no tool call) on the candidate, "" on the baseline: scored, not errors."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(content=None, usage=None) if side == "candidate" else Reply(content="", finish_reason="length")

    _, outcome, rows, faults = run_compare(
        tmp_path, openai_server, plan, expect=["json", {"contains": {"value": "x"}}, {"max_chars": {"limit": 5}}]
    )
    assert faults is not None
    assert all(r["error_kind"] is None and not r["output"] and not r["score"]["passed"] for r in rows)
    assert outcome.verdict_status != "COULD_NOT_MEASURE"
    record("null / empty message content", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tool_call_with_unparsable_arguments(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The candidate's tool-call arguments are cut off mid-JSON: a failed check, not a crash."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        args = '{"city": "Par' if side == "candidate" else '{"city": "Paris"}'
        return Reply(content=None, tool_calls=[{"name": "get_weather", "arguments": args, "id": f"call_{cid}"}])

    _, outcome, rows, faults = run_compare(
        tmp_path, openai_server, plan, n_cases=6,
        params={"tools": [WEATHER_TOOL]}, expect=[{"tool_call": {"name": "get_weather"}}],
    )
    assert faults is not None
    for r in rows:
        assert r["error_kind"] is None and r["tool_calls"][0]["name"] == "get_weather"
        check = next(ch for ch in r["score"]["checks"] if ch["check"] == "tool_call")
        if r["side"] == "candidate":
            assert r["score"]["tool_valid"] is False and not check["passed"]
            assert "not JSON" in check["detail"]
        else:
            assert r["score"]["tool_valid"] is True and check["passed"]
    tool = next(m for m in outcome.summary["metrics"] if m["metric"] == "tool_valid")
    assert tool["baseline"]["value"] == 1.0 and tool["candidate"]["value"] == 0.0
    assert outcome.verdict_status == "FAIL" and outcome.exit_code == 1
    record("tool call with unparsable arguments (candidate)", 6, rows, outcome.verdict_status, outcome.exit_code)


# --------------------------------------------------------------------------- found on the way


def test_gate_survives_an_interval_ending_at_its_estimate() -> None:
    from evalrun.analysis.gate import evaluate_rules
    from evalrun.project.config import GateConfig

    metric = {"metric": "latency_p50", "type": "quantile", "ratio": 1.3, "ratio_ci": [1.1, 1.3 * (1 - 1e-15)],
              "paired_n": 3}
    rules = evaluate_rules([metric], GateConfig(), "overall")
    assert next(r for r in rules if r.rule == "latency_p50_ratio").status == "inconclusive"


class TrickleServer:
    """A raw HTTP server on 127.0.0.1 that sends a valid completion one small chunk at a
    time, 0.1 s apart (~3 s in all): every read finishes within any sane read timeout."""

    def __init__(self, chunks: int = 30, gap_s: float = 0.1) -> None:
        self.chunks, self.gap_s = chunks, gap_s
        self.count = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await reader.read(65536)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += await reader.read(65536)
        self.count += 1
        body = json.dumps({
            "id": "trickle", "object": "chat.completion", "created": 0, "model": "trickle",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 300}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        step = len(body) // self.chunks + 1
        try:
            for i in range(0, len(body), step):
                writer.write(body[i : i + step])
                await writer.drain()
                await asyncio.sleep(self.gap_s)
        except (ConnectionError, OSError):
            pass
        writer.close()

    def __enter__(self) -> TrickleServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


@pytest.mark.slow
def test_timeout_s_bounds_a_trickling_answer(tmp_path: Path) -> None:
    with TrickleServer() as server:
        b, c = fault_project(tmp_path / "proj", f"http://127.0.0.1:{server.port}/v1", n_cases=1, timeout_s=0.3,
                             suite={"max_attempts": 1})
        project = api.load_project(b, c)
        started = time.monotonic()
        outcome = api.compare(project, run_dir=tmp_path / "run", cache="off")
        elapsed = time.monotonic() - started
    rows = read_rows(outcome.run_dir)
    assert [r["error_kind"] for r in rows] == ["timeout", "timeout"], [r["attempt_latencies_s"] for r in rows]
    assert elapsed < 2.5


# --------------------------------------------------------------------------- hostile bodies (issue 16)


def _run_measured(args: list[str], env: dict[str, str], out_dir: Path) -> tuple[int, str, str, float]:
    """Run a child; (exit code, stdout, stderr, its own peak RSS in MB, via wait4)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "stdout", "w+b") as out, open(out_dir / "stderr", "w+b") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), usage.ru_maxrss / 1024


@pytest.mark.slow
def test_gzip_bomb_is_cut_at_the_cap_in_bounded_memory(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """~130 KB on the wire that expands to 128 MiB, on every candidate call; the default cap (4 MiB).

    Before: each call held the whole expanded body (several copies), the run folder got every
    byte. Now the transport decodes 64 KiB at a time, stops at the cap, and marks the call.
    """
    bomb = gzip_bomb(128 * 1024 * 1024, model=CAND_MODEL)
    assert len(bomb) < 200_000

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(raw_body=bomb, headers={"Content-Encoding": "gzip"}) if side == "candidate" else None

    faults = Faults(plan)
    openai_server.behaviour = faults
    b, c = fault_project(tmp_path / "proj", openai_server.base_url, n_cases=3, suite={"concurrency": 3})
    run_dir = tmp_path / "run"
    # A separate process, so its peak memory is its own.
    code, stdout, stderr, peak_mb = _run_measured(
        [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run_dir), "--quiet", "--no-cache"],
        {**os.environ, KEY_ENV: "sk-faults-test-000000000"}, tmp_path / "child",
    )
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert code in (0, 1, 3), stdout + stderr
    project = api.load_project(b, c)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = check_accounting(project, run_dir, summary, code, openai_server.count)
    for r in rows:
        if r["side"] == "candidate":
            assert r["error_kind"] is None and r["response_truncated"] is True
            assert 4_000_000 <= len(r["output"]) <= 4 * 1024 * 1024 and set(r["output"]) == {"x"}
            assert r["finish_reason"] is None and r["tokens_estimated"] is True
        else:
            assert r["response_truncated"] is False
    assert summary["calls"]["candidate"]["responses_truncated"] == 3
    folder_mb = sum(p.stat().st_size for p in run_dir.iterdir()) / 1e6
    assert folder_mb < 60, f"run folder {folder_mb:.0f} MB"
    assert peak_mb < 900, f"peak RSS {peak_mb:.0f} MB for 3 bombs of 128 MiB"
    record(f"gzip bomb 128 MiB ({len(bomb) // 1024} KB on the wire), default cap; peak {peak_mb:.0f} MB",
           faults.faulted, rows, summary["verdict"]["status"], code)


def test_huge_plain_body_is_cut_at_the_cap(tmp_path: Path, openai_server: OpenAIServer) -> None:
    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(content="y" * (6 * 1024 * 1024)) if (side, cid) == ("candidate", "c01") else None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, suite={"max_response_mb": 0.5})
    assert faults is not None
    cut = [r for r in rows if r["response_truncated"]]
    assert [(r["case_id"], r["side"]) for r in cut] == [("c01", "candidate")]
    assert 500_000 < len(cut[0]["output"]) < 512 * 1024
    assert cut[0]["output"].startswith("yyyy") and cut[0]["error_kind"] is None
    assert outcome.summary["calls"]["candidate"]["responses_truncated"] == 1
    record("6 MB plain body, cap 0.5 MB", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


MESSAGE = {"role": "assistant", "content": "answer"}


@pytest.mark.parametrize(
    ("label", "body", "expected"),
    [
        ("content as a list of parts",
         completion_body({"role": "assistant", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}),
         ("ok", "hello world", "stop")),
        ("finish_reason as an object", completion_body(MESSAGE, finish_reason={"type": "stop"}), ("ok", "answer", "stop")),
        ("null message", completion_body(None), ("malformed_response", "choice has no message", None)),
        ("message as a string", completion_body("answer"), ("malformed_response", "message is a str", None)),
        ("content as a number", completion_body({"role": "assistant", "content": 12}),
         ("malformed_response", "content is an int", None)),
        ("choices as an object", json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                             "choices": {"0": MESSAGE}}).encode(),
         ("malformed_response", "no choices", None)),
    ],
    ids=["parts", "dict-finish", "null-message", "str-message", "int-content", "dict-choices"],
)
def test_odd_message_shapes_one_outcome_per_class(
    tmp_path: Path, openai_server: OpenAIServer, label: str, body: bytes, expected: tuple[str, str, str | None]
) -> None:
    """Before: some were server_error, others malformed_response, messages held tracebacks,
    and content parts were refused. Now: parts are joined; a broken message is malformed."""

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(raw_body=body) if (side, cid) == ("candidate", "c00") else None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, suite={"max_attempts": 2})
    assert faults is not None
    row = next(r for r in rows if (r["side"], r["case_id"]) == ("candidate", "c00"))
    kind, text, finish = expected
    if kind == "ok":
        assert row["error_kind"] is None, row["error_message"]
        assert (row["output"], row["finish_reason"], row["attempts"]) == (text, finish, 1)
    else:
        assert (row["error_kind"], row["attempts"]) == (kind, 2)
        assert text in row["error_message"]
    assert all(r["error_kind"] is None for r in rows if r is not row)
    record(label, faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


def test_impossible_usage_is_counted_not_trusted(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """The candidate answers at length but reports usage -1000/-5000 (the issue: PASS, exit 0,
    the token rule silently not applicable). Now its tokens are counted and marked estimated,
    and the completion-token rule sees the growth."""
    long_answer = " ".join(["word"] * 60)

    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        if side == "candidate":
            return Reply(content=long_answer, usage={"prompt_tokens": -1000, "completion_tokens": -5000,
                                                     "total_tokens": -6000})
        return None

    _, outcome, rows, faults = run_compare(tmp_path, openai_server, plan, n_cases=12)
    assert faults is not None
    cand = [r for r in rows if r["side"] == "candidate"]
    assert all(r["tokens_estimated"] and r["completion_tokens"] >= 60 and r["prompt_tokens"] > 0 for r in cand)
    assert outcome.summary["calls"]["candidate"]["tokens_estimated"] == 12
    rule = next(r for r in outcome.summary["verdict"]["rules"] if r["rule"] == "completion_tokens_ratio")
    assert rule["status"] == "fail", rule
    assert outcome.verdict_status == "FAIL" and outcome.exit_code == 1
    record("usage -1000/-5000 on the candidate", faults.faulted, rows, outcome.verdict_status, outcome.exit_code)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 3.5, "completion_tokens": "7"}, {"prompt_tokens": 10**30, "completion_tokens": True}],
    ids=["fractional-and-text", "absurd-and-bool"],
)
def test_non_integer_or_absurd_usage_is_missing(tmp_path: Path, openai_server: OpenAIServer, usage: dict[str, Any]) -> None:
    def plan(side: str, cid: str, attempt: int) -> Reply | None:
        return Reply(content="four words of answer", usage=usage) if side == "candidate" else None

    _, _, rows, _ = run_compare(tmp_path, openai_server, plan, n_cases=2)
    for r in rows:
        if r["side"] == "candidate":
            assert r["error_kind"] is None and r["tokens_estimated"]
            assert 0 < r["prompt_tokens"] < 1000 and 0 < r["completion_tokens"] < 100
