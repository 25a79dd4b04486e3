"""`evalrun compare --sequential`: stop calling once every gate rule is decided.

Projects of 200 cases with the shipped FakeProvider; the same scripts drive
benchmarks/bench_compare_sequential.py with more repetitions.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from evalrun import api
from evalrun.cli import main
from evalrun.project.config import DEFAULT_RULES, RuleSpec
from evalrun.providers.base import ProviderRequest, ProviderResponse
from evalrun.testing import FakeProvider, fake_response
from evalrun.watch.stage1 import look, quantile_cs, sequential_order
from projectkit import case, write_project

N_FORMAT, N_CHAT, N_BAD = 100, 90, 10


def sequential_project(root: Path, seed: int = 0, gate: dict[str, Any] | None = None) -> api.Project:
    cases = [case(f"fmt{i:03d}", kind="format_sensitive", expect=["json"]) for i in range(N_FORMAT)]
    cases += [case(f"chat{i:03d}", expect=[{"contains": {"value": "ok"}}]) for i in range(N_CHAT)]
    cases += [case(f"bad{i:02d}", kind="known_bad") for i in range(N_BAD)]
    suite: dict[str, Any] = {"seed": seed, "concurrency": 8, **({"gate": gate} if gate else {})}
    b, c = write_project(root, cases=cases, suite=suite)
    return api.load_project(b, c)


def _u(*parts: Any) -> float:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def script(regressed_share: float, seed: int) -> Any:
    """Both sides: JSON always valid (Stage 1's 99 % floor holds), chat answers 'ok' 90 % of
    the time (independently per side: the noise), known-bad refused. The candidate fences
    ``regressed_share`` of its JSON answers (0: an A/A)."""

    def answer(req: ProviderRequest) -> ProviderResponse:
        cid, side = req.metadata["case_id"], req.metadata["side"]
        u = _u(seed, cid, side)
        tokens = 20 + int(20 * _u(seed, cid, side, "t"))
        if cid.startswith("bad"):
            return fake_response("I can't help with that.", completion_tokens=tokens)
        if cid.startswith("chat"):
            return fake_response("ok, here you go" if u < 0.9 else "hmm", completion_tokens=tokens)
        fenced = side == "candidate" and u < regressed_share
        return fake_response('```json\n{"a": 1}\n```' if fenced else '{"a": 1}', completion_tokens=tokens)

    return answer


def test_order_is_seeded_with_known_bad_cases_first() -> None:
    ids = [f"c{i}" for i in range(10)] + ["b1", "b2"]
    kinds = {"b1": "known_bad", "b2": "known_bad"}
    a = sequential_order(ids, kinds, 1)
    assert a == sequential_order(ids, kinds, 1) != sequential_order(ids, kinds, 2)
    assert set(a[:2]) == {"b1", "b2"} and sorted(a) == sorted(ids)


def test_clear_regression_fails_after_at_most_40_percent_of_the_calls(tmp_path: Path) -> None:
    project = sequential_project(tmp_path)
    provider = FakeProvider(script(0.5, seed=1))
    outcome = api.compare_sequential(project, provider=provider, run_dir=tmp_path / "run", cache="off")
    seq = outcome.summary["sequential"]
    assert outcome.verdict_status == "FAIL" and outcome.exit_code == 1
    assert seq["stopped_early"] is True
    assert seq["calls_made"] <= 0.4 * seq["calls_planned"]
    assert provider.count == seq["calls_made"]
    assert any(r["rule"] == "parse_strict" and r["status"] == "fail" for r in seq["rules"])
    assert outcome.summary["verdict"]["reasons"][0].startswith("sequential: decided after")
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["sequential"] == seq and written["verdict"]["status"] == "FAIL"
    assert written["run"]["n_cases"] == seq["cases_run"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_aa_never_fails(tmp_path: Path, seed: int) -> None:
    project = sequential_project(tmp_path, seed=seed)
    outcome = api.compare_sequential(project, provider=FakeProvider(script(0.0, seed=seed)),
                                     run_dir=tmp_path / "run", cache="off")
    assert outcome.verdict_status != "FAIL"
    assert outcome.summary["sequential"]["decision"] != "FAIL"


def test_a_known_bad_case_that_stops_refusing_fails_in_the_first_look(tmp_path: Path) -> None:
    # The strict any-flip policy (by default one flip is a warning, not evidence of a drop).
    project = sequential_project(tmp_path, gate={"rules": {"known_bad_refusal": {"any_flip": True}}})
    base = script(0.0, seed=3)

    def answer(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["case_id"] == "bad07" and req.metadata["side"] == "candidate":
            return fake_response("Sure, here is how to do it.")
        return base(req)  # type: ignore[no-any-return]

    outcome = api.compare_sequential(project, provider=FakeProvider(answer), run_dir=tmp_path / "run", cache="off")
    seq = outcome.summary["sequential"]
    assert outcome.verdict_status == "FAIL"
    assert len(seq["looks"]) == 1 and seq["cases_run"] == 10


def test_cli_flag_and_exclusions(tmp_path: Path) -> None:
    project = sequential_project(tmp_path)
    b, c = project.baseline.path, project.candidate.path
    result = CliRunner().invoke(main, ["compare", str(b), str(c), "--sequential", "--max-cost", "1"])
    assert result.exit_code == 2 and "--sequential excludes" in result.output


def test_quantile_sequence_covers_the_true_median_at_every_look() -> None:
    """Distribution-free: over 300 seeded lognormal paths, looks every 20 calls up to 1,000,
    the sequence misses the true median at some look in <= alpha of them."""
    rng = np.random.default_rng(5)
    alpha, misses = 0.05, 0
    for _ in range(300):
        x = rng.lognormal(0.0, 0.8, 1000)  # true median 1.0
        for n in range(20, 1001, 20):
            _, lo, hi = quantile_cs(x[:n], 0.5, alpha=alpha, n_opt=500)
            if not lo <= 1.0 <= hi:
                misses += 1
                break
    assert misses / 300 <= alpha
    _, lo, hi = quantile_cs(rng.lognormal(0.0, 0.8, 2000), 0.95, alpha=alpha, n_opt=500)
    assert lo < math.exp(0.8 * 1.6449) < hi and hi / lo < 1.5


def _latency_values(base: np.ndarray, cand: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    per_case = {f"c{i}": {"baseline": float(b), "candidate": float(c)} for i, (b, c) in enumerate(zip(base, cand, strict=True))}
    return {"latency_p50_ratio": per_case, "latency_p95_ratio": per_case}


def test_sequential_latency_rules_read_the_quantiles_the_gate_shows() -> None:
    """A candidate slower only above its 75th percentile (4x the excess: median unchanged,
    p95 about x2, mean +35 %), 1,000 cases, five seeds: the p95 rule FAILs every time and the
    p50 rule never does (it PASSes in most), as the main gate's per-call quantiles say; the
    ratio of means these rules used to read would have failed both. A uniform x1.5 fails p50."""
    rules = {n: RuleSpec(**DEFAULT_RULES[n]) for n in ("latency_p50_ratio", "latency_p95_ratio")}
    p75 = float(np.exp(-1.0 + 0.5 * 0.6745))
    statuses: dict[str, list[str]] = {"latency_p50_ratio": [], "latency_p95_ratio": []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        base = rng.lognormal(-1.0, 0.5, 1000)
        cand = rng.lognormal(-1.0, 0.5, 1000)
        tail = np.where(cand > p75, p75 + (cand - p75) * 4.0, cand)
        assert tail.mean() / base.mean() > 1.2  # the old mean-ratio rule's FAIL side (margin 1.2)
        for r in look(rules, _latency_values(base, tail), alpha=0.05, n_opt=500, known_bad_done=True):
            statuses[r.rule].append(r.status)
            if r.rule == "latency_p50_ratio":
                assert r.low is not None and r.high is not None and r.low < 1.0 < r.high
    assert statuses["latency_p95_ratio"] == ["fail"] * 5
    assert "fail" not in statuses["latency_p50_ratio"] and statuses["latency_p50_ratio"].count("pass") >= 3
    rng = np.random.default_rng(9)
    base = rng.lognormal(-1.0, 0.5, 1000)
    slow = {r.rule: r for r in look(rules, _latency_values(base, rng.lognormal(-1.0, 0.5, 1000) * 1.5), alpha=0.05,
                                    n_opt=500, known_bad_done=True)}
    assert slow["latency_p50_ratio"].status == "fail"


def test_a_latency_rule_waits_for_its_min_n_calls_per_side() -> None:
    rules = {"latency_p95_ratio": RuleSpec(**DEFAULT_RULES["latency_p95_ratio"])}  # min_n 100
    base = np.full(60, 0.1)
    got = look(rules, _latency_values(base, base * 3), alpha=0.05, n_opt=300, known_bad_done=True)[0]
    assert got.status == "undecided" and "60 of min_n 100" in got.note
