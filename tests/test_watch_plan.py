"""The rollout plan: overrides, durations, label inheritance, cohort rules, stage start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest

from evalrun.errors import UserInputError
from evalrun.watch.cohort import cohort_filter
from evalrun.watch.plan import format_duration, parse_duration, validate_plan
from evalrun.watch.run import evaluate
from watchkit import AT, base_plan, make_log, write_plan


def plan(**patch: Any) -> Any:
    data = base_plan("x.jsonl")
    data.update(patch)
    return validate_plan(data, Path("rollout.yaml"))


def test_stage_triggers_override_by_metric_and_kind_and_can_be_removed() -> None:
    p = plan(stages=[{"name": "canary", "owner": "o", "triggers": [
        {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.5, "severity": "hold"},
        {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.03, "enabled": False},
        {"metric": "error_rate", "kind": "absolute", "max": 0.02},
    ]}])
    got = {(t.metric, t.kind): t for t in p.stage_triggers("canary")}
    assert set(got) == {("parse_strict", "absolute"), ("cost_ratio", "ratio"), ("error_rate", "absolute")}
    assert got[("cost_ratio", "ratio")].limit == pytest.approx(1.5)
    assert got[("cost_ratio", "ratio")].severity == "hold"


def test_candidate_inherits_unspecified_labels() -> None:
    p = plan()
    assert p.labels.resolved("candidate") == {**p.labels.resolved("baseline"), "prompt_version": "shop-v2"}


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("1w", 604800), (30, 30)])
def test_durations_round_trip(text: Any, seconds: int) -> None:
    td = parse_duration(text)
    assert td == timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


def test_trigger_limits_and_harm_directions() -> None:
    p = plan(triggers=[
        {"metric": "parse_strict", "kind": "absolute", "min": 0.98},
        {"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.02},
        {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.02},
        {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1},
        {"metric": "latency_p95_ratio", "kind": "absolute", "max": 2000},
    ])
    t = {x.metric: x for x in p.triggers}
    assert (t["parse_strict"].harm_direction, t["parse_strict"].limit) == ("decrease", 0.98)
    assert (t["pass_rate"].harm_direction, t["pass_rate"].limit) == ("decrease", -0.02)
    assert (t["over_refusal"].harm_direction, t["over_refusal"].limit) == ("increase", 0.02)
    assert t["cost_ratio"].limit == pytest.approx(1.1)
    assert t["latency_p95_ratio"].title == "p95 latency above 2000 ms"


def test_fail_margin_sets_the_harm_boundary_and_the_margin_stays_the_safe_one() -> None:
    p = plan(triggers=[
        {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.0},
        {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.01},
        {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0, "fail_margin": 0.0},
        {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.2, "fail_margin": 0.1},
        {"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.02},  # a plan from before: one boundary
    ])
    t = {x.metric: x for x in p.triggers}
    assert (t["parse_strict"].harm_limit, t["parse_strict"].limit) == (0.0, -0.03)
    assert (t["over_refusal"].harm_limit, t["over_refusal"].limit) == (0.01, 0.03)
    assert (t["error_rate"].harm_limit, t["error_rate"].limit) == (1.0, 2.0)
    assert t["cost_ratio"].harm_limit == pytest.approx(1.1) and t["cost_ratio"].limit == pytest.approx(1.2)
    assert t["pass_rate"].harm_limit == t["pass_rate"].limit == -0.02
    assert t["parse_strict"].title == "strict parse rate drops measurably vs baseline (safe: within 3 pts)"
    assert t["over_refusal"].title == "over-refusal rate rises more than 1 pts vs baseline (safe: within 3 pts)"
    assert t["cost_ratio"].title == "cost per unit up more than 10% vs baseline (safe: up at most 20%)"
    assert t["pass_rate"].title == "task success rate drops more than 2 pts vs baseline"


def test_a_stage_without_triggers_is_refused() -> None:
    with pytest.raises(UserInputError, match="no enabled trigger"):
        plan(triggers=[], stages=[{"name": "canary", "owner": "o"}])


def test_cohort_rule_translates_to_a_filter() -> None:
    t = ibis.memtable(pa.table({"tenant": ["a", "b", "c", None], "region": ["eu", "eu", "us", "us"],
                                "cohort": ["x"] * 4}))
    p = plan()
    expr = cohort_filter("tenant IN ('a', 'c') AND NOT region = 'us' OR tenant IS NULL", p.source, t)
    assert t.filter(expr).tenant.to_pyarrow().to_pylist() == ["a", None]


@pytest.mark.slow
def test_stage_start_bounds_the_window(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=10_000, seed=41)
    data = base_plan(log.name)
    full = evaluate(write_plan(tmp_path / "a.yaml", data), "canary", at=AT)
    data["stages"][0]["start"] = (AT - timedelta(hours=6)).isoformat()
    late = evaluate(write_plan(tmp_path / "b.yaml", data), "canary", at=AT)
    assert late.summary["start"] == (AT - timedelta(hours=6)).isoformat(timespec="seconds")
    assert 0 < late.summary["units"]["candidate"] < full.summary["units"]["candidate"] / 2
