"""The runner's side of latency: call order, the warm-up, and which time is recorded where."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evalrun import api
from evalrun.analysis.measurement import latency_measurement
from evalrun.execution.cache import ResponseCache
from evalrun.execution.runner import PlannedCall, RetryPolicy, order_calls, run_calls, warmup_calls
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.records import CallResult, Side
from evalrun.testing import FakeProvider, fake_response
from projectkit import case, variant, write_project


def _plan(n_cases: int, samples: int = 1) -> list[PlannedCall]:
    plan = []
    for i in range(n_cases):
        for sample in range(samples):
            for side in ("baseline", "candidate"):
                req = ProviderRequest(model="fake", messages=[{"role": "user", "content": f"c{i}"}],
                                      metadata={"case_id": f"c{i:03d}", "side": side, "sample": sample})
                plan.append(PlannedCall(f"c{i:03d}", side, sample, req, f"{i}-{sample}-{side}"))
    return plan


def _keys(plan: list[PlannedCall]) -> list[str]:
    return [p.key for p in plan]


# --------------------------------------------------------------------------- order


def test_same_seed_same_order_other_seed_other_order() -> None:
    plan = _plan(50, samples=2)
    assert _keys(order_calls(plan, 7)) == _keys(order_calls(list(plan), 7))
    assert _keys(order_calls(plan, 7)) != _keys(order_calls(plan, 8))
    assert sorted(_keys(order_calls(plan, 7))) == sorted(_keys(plan))


def test_order_keeps_the_sides_level_at_every_moment() -> None:
    """Whatever prefix of the run has been made, each side has made the same number of calls ±1."""
    ordered = order_calls(_plan(200, samples=2), 3)
    made: Counter[str] = Counter()
    for p in ordered:
        made[p.side] += 1
        assert abs(made["baseline"] - made["candidate"]) <= 1
    # ...and a (case, sample)'s two calls are made one after the other.
    for first, second in zip(ordered[::2], ordered[1::2], strict=True):
        assert (first.case_id, first.sample) == (second.case_id, second.sample)
        assert first.side != second.side


def test_order_is_random_in_cases_and_in_which_side_goes_first() -> None:
    ordered = order_calls(_plan(400), 11)
    firsts = Counter(p.side for p in ordered[::2])
    # A fair coin over 400 pairs: each side goes first between 150 and 250 times (p > 0.999 under H0).
    assert 150 <= firsts["baseline"] <= 250
    case_order = [p.case_id for p in ordered[::2]]
    assert case_order != sorted(case_order)


def test_plan_calls_applies_the_suite_seed(tmp_path: Path) -> None:
    cases = [case(f"c{i:02d}") for i in range(30)]
    b, c = write_project(tmp_path / "a", cases=cases, suite={"seed": 5})
    b2, c2 = write_project(tmp_path / "b", cases=cases, suite={"seed": 6})
    one = [(p.case_id, p.side) for p in api.plan_calls(api.load_project(b, c), with_keys=False)]
    again = [(p.case_id, p.side) for p in api.plan_calls(api.load_project(b, c), with_keys=False)]
    other = [(p.case_id, p.side) for p in api.plan_calls(api.load_project(b2, c2), with_keys=False)]
    assert one == again != other
    assert sorted(one) == sorted(other)


# --------------------------------------------------------------------------- warm-up


class _Tracing(FakeProvider):
    """Records when each call started and finished, in event order."""

    def __init__(self, latency_s: float = 0.01) -> None:
        super().__init__(latency_s=latency_s)
        self.events: list[tuple[str, str]] = []

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        key = f"{request.metadata['case_id']}/{request.metadata['side']}"
        self.events.append(("start", key))
        try:
            return await super().complete(request)
        finally:
            self.events.append(("end", key))


def test_first_call_of_each_side_runs_alone_before_the_others() -> None:
    plan = order_calls(_plan(10), 1)
    provider = _Tracing()
    results = asyncio.run(run_calls(plan, provider, concurrency=8, policy=RetryPolicy(), journal=None))
    warm = warmup_calls(plan)
    assert [p.side for p in warm] == sorted({p.side for p in plan}, key=[p.side for p in plan].index)
    keys = [f"{p.case_id}/{p.side}" for p in warm]
    # start w1, end w1, start w2, end w2, then everything else.
    assert provider.events[:4] == [("start", keys[0]), ("end", keys[0]), ("start", keys[1]), ("end", keys[1])]
    flagged = {f"{r.case_id}/{r.side}" for r in results if r.warmup}
    assert flagged == set(keys)
    assert len(results) == 20


class _RetryingWarmup(FakeProvider):
    """The first warm-up call fails once (retryable); its retry waits for another call to start."""

    def __init__(self, warm: list[PlannedCall]) -> None:
        super().__init__()
        self.warm = [f"{p.case_id}/{p.side}" for p in warm]
        self.tries: Counter[str] = Counter()
        self.others_started = asyncio.Event()

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        key = f"{request.metadata['case_id']}/{request.metadata['side']}"
        self.tries[key] += 1
        if key == self.warm[0]:
            if self.tries[key] == 1:
                raise ProviderError("server_error", "busy", retryable=True)
            # Held back until the others run: a runner that kept them waiting for the whole
            # warm-up call (retries included) would never get here in time.
            await asyncio.wait_for(self.others_started.wait(), timeout=10)
        elif key not in self.warm:
            self.others_started.set()
        return fake_response("ok")


def test_a_warmup_that_must_retry_does_not_hold_back_the_others() -> None:
    """Only a warm-up's first attempt runs alone; its retries go on alongside the other calls."""
    plan = order_calls(_plan(6), 4)
    provider = _RetryingWarmup(warmup_calls(plan))
    policy = RetryPolicy(max_attempts=2, initial_s=0.01, max_s=0.01)
    results = asyncio.run(run_calls(plan, provider, concurrency=3, policy=policy, journal=None))
    assert len(results) == 12 and all(r.ok for r in results), [r.error_message for r in results]
    [retried] = [r for r in results if r.attempts == 2]
    assert retried.warmup and f"{retried.case_id}/{retried.side}" == provider.warm[0]


def test_warmup_latency_timed_only_as_a_whole_call_is_dropped() -> None:
    """FakeProvider has no transport: its latency is the whole call ("call"), which for a
    warm-up holds the process's first-call costs, so it is not recorded as provider time."""
    results = asyncio.run(run_calls(order_calls(_plan(4), 2), FakeProvider(latency_s=0.001), concurrency=2,
                                    policy=RetryPolicy(), journal=None))
    for r in results:
        assert r.latency_clock == "call"
        assert r.client_latency_s is not None and r.client_latency_s > 0
        assert r.client_overhead_s is None  # no separate provider time to subtract
        if r.warmup:
            assert r.latency_s is None
        else:
            assert r.latency_s == r.client_latency_s


def test_warmup_false_makes_no_warmup() -> None:
    results = asyncio.run(run_calls(_plan(3), FakeProvider(), concurrency=2, policy=RetryPolicy(), journal=None,
                                    warmup=False))
    assert not any(r.warmup for r in results)


class _Timed(FakeProvider):
    """A provider that reports a transport time, as LitellmProvider does."""

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        resp = await super().complete(request)
        resp.transport_s, resp.latency_clock = 0.001, "socket"
        return resp


def test_provider_time_is_the_latency_and_the_rest_is_overhead() -> None:
    results = asyncio.run(run_calls(_plan(3), _Timed(latency_s=0.01), concurrency=2, policy=RetryPolicy(),
                                    journal=None))
    for r in results:
        assert r.latency_s == 0.001 and r.latency_clock == "socket"  # kept for warm-ups too: measured at the transport
        assert r.client_latency_s is not None and r.client_latency_s >= 0.01
        assert r.client_overhead_s == pytest.approx(r.client_latency_s - 0.001)


# --------------------------------------------------------------------------- records and cache


def test_a_journal_row_from_before_transport_timing_reads_as_a_whole_call() -> None:
    old = {"case_id": "c1", "side": "baseline", "sample": 0, "model": "m", "latency_s": 0.8, "attempts": 1}
    r = CallResult.from_dict(old)
    assert (r.latency_s, r.client_latency_s, r.latency_clock) == (0.8, 0.8, "call")
    assert CallResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_a_cached_answer_keeps_its_recorded_times_and_is_no_warmup(tmp_path: Path) -> None:
    original = CallResult(case_id="c1", side="baseline", sample=0, model="m", output="x", latency_s=0.05,
                          client_latency_s=0.4, latency_clock="socket", warmup=True, attempts=1, request_key="k")
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    try:
        cache.put("k", original)
        hit = cache.get("k")
    finally:
        cache.close()
    assert hit is not None and hit.cached and not hit.warmup
    assert (hit.latency_s, hit.client_latency_s, hit.latency_clock) == (0.05, 0.4, "socket")


# --------------------------------------------------------------------------- what the outputs say


def _result(side: Side, i: int, **kw: Any) -> CallResult:
    fields: dict[str, Any] = {"case_id": f"c{i}", "side": side, "sample": 0, "model": "m", "output": "x",
                              "attempts": 1, "latency_clock": "socket"}
    fields.update(kw)
    return CallResult(**fields)


def test_overhead_counts_only_fresh_measured_calls() -> None:
    results = [
        *(_result("baseline", i, latency_s=0.04, client_latency_s=0.04 + 0.01 * i) for i in range(1, 4)),
        *(_result("candidate", i, latency_s=0.12, client_latency_s=0.12 + 0.01 * i) for i in range(1, 4)),
        _result("baseline", 9, latency_s=0.04, client_latency_s=5.0, warmup=True),  # first-call imports
        _result("candidate", 9, latency_s=0.12, client_latency_s=9.0, cached=True),  # another run's client
        _result("candidate", 8, error_kind="timeout", latency_clock=None),
    ]
    lm = latency_measurement(results)
    base, cand = lm["baseline"], lm["candidate"]
    assert base["clocks"]["socket"] == 4 and cand["clocks"]["socket"] == 4
    assert (base["warmup"], base["cached"], cand["cached"]) == (1, 0, 1)
    assert base["overhead"]["n"] == 3 and base["overhead"]["p50"] == pytest.approx(0.02)
    assert base["overhead"]["share"] == pytest.approx(0.06 / (0.12 + 0.06))
    assert cand["client"]["p50"] == pytest.approx(0.14)
    assert lm["client_ratio"]["p50"] == pytest.approx(0.14 / 0.06)
    assert lm["notes"] == []


def test_mixed_clocks_between_sides_are_called_out() -> None:
    results = [_result("baseline", 1, latency_s=0.1, client_latency_s=0.2),
               _result("candidate", 1, latency_s=0.3, client_latency_s=0.3, latency_clock="call")]
    notes = latency_measurement(results)["notes"]
    assert any("different clocks" in n for n in notes)
    assert any("whole calls" in n for n in notes)


def test_summary_results_and_reports_carry_the_client_overhead(tmp_path: Path) -> None:
    cases = [case(f"c{i:02d}") for i in range(6)]
    b, c = write_project(tmp_path, cases=cases, baseline=variant("baseline"), candidate=variant("candidate"))
    project = api.load_project(b, c)
    outcome = api.compare(project, provider=_Timed(lambda r: fake_response("ok"), latency_s=0.005),
                          run_dir=tmp_path / "run", cache="off")
    lm = outcome.summary["latency_measurement"]
    assert lm["baseline"]["clocks"]["socket"] == 6 and lm["baseline"]["warmup"] == 1
    assert lm["baseline"]["overhead"]["p50"] >= 0.004
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all(r["client_overhead_s"] == pytest.approx(r["client_latency_s"] - r["latency_s"]) for r in rows)
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "Latency measurement and client overhead" in html
    assert "transport, kernel receive timestamps 6" in html
    md = (tmp_path / "run" / "summary.md").read_text(encoding="utf-8")
    # The overhead is the report's (this machine's cost, not gated); the PR comment stays short.
    assert "overhead" not in md and "Calls: baseline 6" in md
