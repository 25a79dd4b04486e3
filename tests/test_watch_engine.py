"""`evalrun watch` on DuckDB: generated logs with known truths through the real engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from evalrun.errors import CouldNotMeasureError
from evalrun.watch.data import StageData
from evalrun.watch.engine import measure_stage, open_engine
from evalrun.watch.plan import validate_plan
from evalrun.watch.run import evaluate
from watchkit import AT, base_plan, make_log, write_plan


def pooled(data: StageData) -> dict[str, Any]:
    """Per arm: units, and (n, Σx) per measure, summed over cohorts and buckets."""
    out: dict[str, Any] = {"units": [int(x) for x in data.units.sum(axis=(1, 2))]}
    for m in sorted(data.n):
        out[m] = [(int(data.n[m][a].sum()), round(float(data.total[m][a].sum()), 6)) for a in (0, 1)]
    return out


def stage_stats(plan_path: Path, at: datetime = AT, stage: str = "canary") -> StageData:
    plan = validate_plan(yaml.safe_load(plan_path.read_text()), plan_path)
    engine = open_engine(plan, plan_path)
    try:
        return measure_stage(engine, plan, stage, at)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    d = tmp_path_factory.mktemp("regressed")
    log, cols, truth = make_log(d, requests=40_000, seed=3, regression={"parse_fail": 0.08, "cost_scale": 1.0})
    plan = write_plan(d / "rollout.yaml", base_plan(log.name))
    return plan, cols, truth


def test_stage_statistics_equal_a_direct_count_of_the_log(regressed: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    plan_path, cols, _ = regressed
    data = stage_stats(plan_path)
    staff = cols["tenant"] == "staff"
    cand = staff & (cols["prompt_version"] == "shop-v2")
    base = staff & (cols["prompt_version"] == "shop-v1") & (cols["ts"] < AT.timestamp())
    ok = np.array([e is None for e in cols["error_type"]])
    parse = np.array([p is not None for p in cols["parse_ok"]])
    parsed = np.array([bool(p) for p in cols["parse_ok"]])
    assert int(data.units[1].sum()) == int(cand.sum())
    assert int(data.units[0].sum()) == int(base.sum())
    assert int(data.n["parse_ok"][1].sum()) == int((cand & ok & parse).sum())
    assert int(data.total["parse_ok"][1].sum()) == int((cand & ok & parsed).sum())
    assert float(data.total["cost_usd"][1].sum()) == pytest.approx(float(cols["cost_usd"][cand].sum()), rel=1e-9)
    assert data.cohorts == ["staff"]


@pytest.mark.slow
def test_regression_in_the_canary_cohort_is_rolled_back(regressed: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    plan_path, _, truth = regressed
    outcome = evaluate(plan_path, "canary", at=AT)
    assert outcome.verdict.status == "rollback"
    assert outcome.exit_code == 1
    fired = [t["metric"] for t in outcome.summary["triggers"] if t["status"] == "harm"]
    assert fired == ["parse_strict"]
    assert truth["candidate"]["parse_fail"] == 0.08
    # The worst cohort's sample outputs start with the bad ones, and are the real text.
    assert outcome.samples and "parse failed" in outcome.samples[0].outcome


@pytest.mark.slow
def test_the_same_log_without_a_regression_is_not_rolled_back(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=60_000, seed=4, regression={})
    plan = write_plan(tmp_path / "rollout.yaml", base_plan(log.name))
    outcome = evaluate(plan, "canary", at=AT)
    assert outcome.verdict.status == "continue", outcome.verdict.reasons
    assert outcome.exit_code == 0


@pytest.mark.slow
def test_a_past_decision_replays_from_the_full_log(tmp_path: Path) -> None:
    """--at T on today's log gives exactly the verdict that a log cut at T gives."""
    log, cols, _ = make_log(tmp_path, requests=30_000, seed=5, regression={"parse_fail": 0.08})
    at = AT - timedelta(hours=9)
    cut = tmp_path / "cut"
    cut.mkdir()
    keep = cols["ts"] < at.timestamp()
    from evalrun.watch.traffic import write_log

    write_log({k: v[keep] for k, v in cols.items()}, cut / log.name, "jsonl")
    full = evaluate(write_plan(tmp_path / "rollout.yaml", base_plan(log.name)), "canary", at=at)
    past = evaluate(write_plan(cut / "rollout.yaml", base_plan(log.name)), "canary", at=at)
    strip = {"queries", "source"}
    assert {k: v for k, v in full.summary.items() if k not in strip} == \
        {k: v for k, v in past.summary.items() if k not in strip}


def test_parquet_and_jsonl_give_the_same_statistics(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    la, _, _ = make_log(tmp_path / "a", requests=8000, seed=6, fmt="jsonl")
    lb, _, _ = make_log(tmp_path / "b", requests=8000, seed=6, fmt="parquet")
    a = stage_stats(write_plan(tmp_path / "a" / "p.yaml", base_plan(la.name)))
    b = stage_stats(write_plan(tmp_path / "b" / "p.yaml", base_plan(lb.name)))
    assert pooled(a) == pooled(b)


@pytest.mark.slow
def test_content_checks_recompute_parse_and_refusal_with_the_stage1_checks(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=12_000, seed=7, regression={"parse_fail": 0.05, "over_refusal": 0.04})
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    bare = tmp_path / "bare.jsonl"
    with bare.open("w") as fh:
        for r in rows:
            r.pop("parse_ok")
            r.pop("refused")
            fh.write(json.dumps(r) + "\n")
    with_flags = stage_stats(write_plan(tmp_path / "a.yaml", base_plan(log.name)))
    plan = base_plan(bare.name)
    plan["source"]["content_checks"] = {"refusal": True, "parse_json": True}
    from_content = stage_stats(write_plan(tmp_path / "b.yaml", plan))
    assert pooled(from_content) == pooled(with_flags)
    assert pooled(with_flags)["parse_ok"][1][0] > 50


def _otlp(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def attr(k: str, v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"key": k, "value": {"boolValue": v}}
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        if isinstance(v, float):
            return {"key": k, "value": {"doubleValue": v}}
        return {"key": k, "value": {"stringValue": str(v)}}

    spans = []
    for r in rows:
        start = int(datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() * 1e6) * 1000
        attrs = [attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", r["model_version"])]
        for k in ("prompt_version", "retrieval_version", "policy_version"):
            attrs.append(attr(f"app.{k}", r[k]))
        for k in ("cohort", "tenant", "response_format", "parse_ok", "refused", "should_refuse", "task_success"):
            if r.get(k) is not None:
                attrs.append(attr(k, r[k]))
        attrs.append(attr("gen_ai.usage.input_tokens", int(r["input_tokens"])))
        if r.get("output_tokens") is not None:
            attrs.append(attr("gen_ai.usage.output_tokens", int(r["output_tokens"])))
        attrs.append(attr("cost_usd", r["cost_usd"]))
        if r.get("error_type"):
            attrs.append(attr("error.type", r["error_type"]))
        span = {"traceId": r["trace_id"], "spanId": r["unit_id"], "name": "chat shop",
                "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + int(r["latency_ms"] * 1e6)),
                "attributes": attrs, "status": {"code": 2 if r.get("error_type") else 1}}
        spans.append(span)
        for j in range(int(r["tool_calls"])):
            tool_attrs = [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", "lookup")]
            if j < int(r["tool_errors"]):
                tool_attrs.append(attr("error.type", "tool_error"))
            spans.append({"traceId": r["trace_id"], "spanId": r["unit_id"] + f"-t{j}", "parentSpanId": r["unit_id"],
                          "startTimeUnixNano": str(start), "endTimeUnixNano": str(start), "attributes": tool_attrs})
    return {"resourceSpans": [{"resource": {"attributes": [attr("service.name", "shop")]},
                               "scopeSpans": [{"scope": {"name": "app"}, "spans": spans}]}]}


@pytest.mark.slow
def test_otel_genai_spans_give_the_same_statistics(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=6000, seed=8, regression={"tool_fail": 0.2})
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    (tmp_path / "spans.json").write_text(json.dumps(_otlp(rows)))
    plan = base_plan("spans.json")
    plan["source"] = {"kind": "otel", "path": "spans.json", "cohort_fields": ["tenant"]}
    plan["triggers"].append({"metric": "tool_valid", "kind": "vs_baseline", "margin": 0.02})
    otel = pooled(stage_stats(write_plan(tmp_path / "otel.yaml", plan)))
    native_plan = base_plan(log.name)
    native_plan["triggers"] = plan["triggers"]
    native = pooled(stage_stats(write_plan(tmp_path / "native.yaml", native_plan)))
    assert otel["units"] == native["units"]
    for m in ("parse_ok", "over_refused", "tool_ok"):
        assert otel[m] == native[m], m
    assert otel["cost_usd"][1][1] == pytest.approx(native["cost_usd"][1][1])


def test_langfuse_export_gives_the_same_statistics(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=6000, seed=9)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    with (tmp_path / "observations.jsonl").open("w") as fh:
        for r in rows:
            start = r["ts"]
            end = (datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(milliseconds=r["latency_ms"])).isoformat()
            meta = {k: r[k] for k in ("prompt_version", "retrieval_version", "policy_version", "cohort", "tenant",
                                      "parse_ok", "refused", "should_refuse", "task_success") if r.get(k) is not None}
            fh.write(json.dumps({"id": r["unit_id"], "traceId": r["trace_id"], "type": "GENERATION",
                                 "startTime": start, "endTime": end, "model": r["model_version"],
                                 "usageDetails": {"input": r["input_tokens"], "output": r["output_tokens"]},
                                 "costDetails": {"total": r["cost_usd"]}, "metadata": meta,
                                 "level": "ERROR" if r.get("error_type") else "DEFAULT",
                                 "output": r.get("output")}) + "\n")
    plan = base_plan("observations.jsonl")
    plan["source"] = {"kind": "langfuse", "path": "observations.jsonl", "cohort_fields": ["tenant"]}
    lf = pooled(stage_stats(write_plan(tmp_path / "lf.yaml", plan)))
    native = pooled(stage_stats(write_plan(tmp_path / "native.yaml", base_plan(log.name))))
    assert lf["units"] == native["units"]
    assert lf["parse_ok"] == native["parse_ok"]
    assert lf["over_refused"] == native["over_refused"]


def test_trace_unit_aggregates_the_requests_of_a_trace(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=4000, seed=10)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    doubled = tmp_path / "doubled.jsonl"
    with doubled.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
            fh.write(json.dumps({**r, "unit_id": r["unit_id"] + "-b", "cost_usd": r["cost_usd"]}) + "\n")
    per_request = pooled(stage_stats(write_plan(tmp_path / "a.yaml", base_plan(doubled.name))))
    per_trace = pooled(stage_stats(write_plan(tmp_path / "b.yaml", base_plan(doubled.name, unit="trace"))))
    assert [u // 2 for u in per_request["units"]] == per_trace["units"]
    assert per_trace["cost_usd"][1][1] == pytest.approx(per_request["cost_usd"][1][1])


def test_a_cohort_rule_that_matches_nothing_cannot_measure(tmp_path: Path) -> None:
    log, _, _ = make_log(tmp_path, requests=2000, seed=11)
    plan = base_plan(log.name)
    plan["stages"][0]["cohort"] = "tenant = 'nobody'"
    outcome = evaluate(write_plan(tmp_path / "p.yaml", plan), "canary", at=AT)
    assert outcome.verdict.status == "no_data"
    assert outcome.exit_code == 4


def test_a_missing_log_file_cannot_measure(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.yaml", base_plan("missing.jsonl"))
    with pytest.raises(CouldNotMeasureError, match="no log file matches"):
        evaluate(plan, "canary", at=AT)


@pytest.mark.slow
def test_window_starts_when_the_candidate_went_live(tmp_path: Path) -> None:
    """Baseline traffic from before the candidate's first unit is not compared (it is not concurrent)."""
    log, cols, truth = make_log(tmp_path, requests=20_000, seed=12)
    outcome = evaluate(write_plan(tmp_path / "p.yaml", base_plan(log.name)), "canary", at=AT)
    start = datetime.fromisoformat(outcome.summary["start"])
    since = datetime.fromisoformat(truth["candidate_since"])
    assert since <= start < since + timedelta(minutes=15)
    staff = cols["tenant"] == "staff"
    bucket0 = (start.timestamp() // 900) * 900
    base = staff & (cols["prompt_version"] == "shop-v1") & (cols["ts"] >= bucket0)
    assert outcome.summary["units"]["baseline"] == int(base.sum())
    assert outcome.summary["srm"]["mismatch"] is False
    assert start.tzinfo == UTC
