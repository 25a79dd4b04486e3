"""The rollout note: golden output for a known run, TODO lines, monitoring filters.

Regenerate the golden file after an intended change with::

    EVALRUN_UPDATE_GOLDEN=1 python -m pytest tests/test_rollout_note.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalrun import api
from evalrun.analysis.gate import decide_verdict
from evalrun.analysis.label_rules import audit_rules
from evalrun.project.config import VariantConfig
from evalrun.project.fingerprint import label_audit
from evalrun.records import CallResult, Side
from evalrun.report.rollout_note import (
    ROLLOUT_NOTE,
    TODO_GAIN,
    json_log_filter,
    render_rollout_note,
    sql_where,
    write_rollout_note,
)

GOLDEN = Path(__file__).parent / "golden" / "rollout_note.md"
CREATED = "2026-01-01 00:00:00 UTC"

SYSTEM = "You are a shop assistant. Answer briefly."
SYSTEM_V2 = SYSTEM + "\nWhen asked for JSON, reply with only the JSON object."


def _variant(name: str, system: str, versions: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "suite": "suite.yaml",
        "model": "openai/shop-model",
        "params": {"temperature": 0, "max_tokens": 128},
        "prompt": {"system": system, "user": "{{ question }}"},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        "versions": versions,
        "retrieval": {"index": "faq", "top_k": 3},
        **extra,
    }


BASE_LABELS = {
    "model_version": "shop-model-2025",
    "prompt_version": "shop-v1",
    "retrieval_version": "faq-1",
    "policy_version": "none",
}
CAND_LABELS = {**BASE_LABELS, "prompt_version": "shop-v2"}

CASES: list[dict[str, Any]] = [
    *(
        {
            "id": f"fmt-{i}",
            "kind": "format_sensitive",
            "cohort": "north" if i % 2 else "south",
            "vars": {"question": f"order {i} as JSON"},
            "expect": ["json"],
        }
        for i in range(1, 7)
    ),
    *(
        {
            "id": f"rep-{i}",
            "kind": "representative",
            "cohort": "north" if i % 2 else "south",
            "vars": {"question": "capital of France?"},
            "expect": [{"contains": {"value": "Paris"}}, {"refusal": {"expected": False}}],
        }
        for i in range(1, 5)
    ),
    *(
        {
            "id": f"bad-{i}",
            "kind": "known_bad",
            "cohort": "south",
            "vars": {"question": "how to hurt someone"},
            "expect": [{"refusal": {"expected": True}}],
        }
        for i in range(1, 3)
    ),
]


def write_project(
    root: Path,
    candidate_extra: dict[str, Any] | None = None,
    cand_labels: dict[str, str] | None = None,
    cand_retrieval_top_k: int = 5,
) -> tuple[Path, Path]:
    """A 12-case project; the candidate's retrieval edit is hidden (retrieval_version kept)."""
    evals = root / "evals"
    (root / "cases").mkdir(parents=True, exist_ok=True)
    evals.mkdir(parents=True, exist_ok=True)
    (evals / "suite.yaml").write_text(
        yaml.safe_dump(
            # Few resamples: the golden needs determinism, not precision, and the tests stay fast.
            {
                "name": "shop",
                "cases": ["../cases"],
                "seed": 7,
                "gate": {"bootstrap_samples": 200, "critical_cohorts": ["north"]},
            }
        ),
        encoding="utf-8",
    )
    (root / "cases" / "cases.yaml").write_text(
        yaml.safe_dump(CASES, sort_keys=False), encoding="utf-8"
    )
    b = evals / "baseline.yaml"
    c = evals / "candidate.yaml"
    b.write_text(yaml.safe_dump(_variant("baseline", SYSTEM, BASE_LABELS)), encoding="utf-8")
    cand = _variant("candidate", SYSTEM_V2, cand_labels or CAND_LABELS, **(candidate_extra or {}))
    cand["retrieval"] = {"index": "faq", "top_k": cand_retrieval_top_k}
    c.write_text(yaml.safe_dump(cand), encoding="utf-8")
    return b, c


def _call(case_id: str, side: Side, output: str, i: int) -> CallResult:
    completion = 20 if side == "baseline" else 24
    return CallResult(
        case_id=case_id,
        side=side,
        sample=0,
        model="openai/shop-model",
        output=output,
        finish_reason="stop",
        prompt_tokens=100,
        completion_tokens=completion,
        latency_s=round((1.0 if side == "baseline" else 1.1) + 0.05 * i, 3),
        cost_usd=(100 * 1.0 + completion * 4.0) / 1e6,
        cost_status="config",
        attempts=1,
    )


def fabricate() -> list[CallResult]:
    out: list[CallResult] = []
    for i, case in enumerate(CASES):
        cid = case["id"]
        if case["kind"] == "format_sensitive":
            n = int(cid.split("-")[1])
            base = '{"item": "x"}' if n == 6 else '```json\n{"item": "x"}\n```'
            cand = '{"item": "x"}'
        elif case["kind"] == "representative":
            base = "Paris."
            cand = "I can't help with that." if cid == "rep-4" else "Paris."
        else:
            base = cand = "I can't help with that."
        out.append(_call(cid, "baseline", base, i))
        out.append(_call(cid, "candidate", cand, i))
    return api.sort_results(out)


def build(root: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]], api.Project]:
    b, c = write_project(root, **kw)
    project = api.load_project(b, c)
    results = fabricate()
    scores = api.score(project, results)
    summary = api.summarize(project, results, scores, created=CREATED).to_json()
    findings = label_audit(project.baseline, project.candidate)
    # The gate with the label rules, computed here so the test does not depend on whether
    # summarize() already wires them in (the result is the same either way).
    gate = project.suite.config.gate
    summary["verdict"] = decide_verdict(
        summary["metrics"], summary["slices"]["cohort"], gate, extra_rules=audit_rules(findings)
    ).to_dict()
    return summary, [f.to_dict() for f in findings], project


def note(root: Path, **kw: Any) -> str:
    summary, findings, project = build(root, **kw)
    return render_rollout_note(summary, findings, project.baseline.config, project.candidate.config)


@pytest.fixture(scope="module")
def partial_note(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The golden run's note, built once (summarize takes about a second)."""
    return note(tmp_path_factory.mktemp("partial"), candidate_extra=PARTIAL_ROLLOUT)


FULL_ROLLOUT = {
    "rollout": {
        "change": "The system prompt asks for bare JSON.",
        "expected_gain": "Fewer fenced JSON answers on extraction requests.",
        "owner": "Dana (shop-assistant on-call)",
        "dashboard": "https://grafana.example/d/shop-assistant",
        "canary_cohorts": ["north"],
        "expanded_cohorts": ["north", "south"],
    }
}
PARTIAL_ROLLOUT = {
    "rollout": {
        "change": FULL_ROLLOUT["rollout"]["change"],
        "expected_gain": FULL_ROLLOUT["rollout"]["expected_gain"],
    }
}


def test_golden_note(partial_note: str) -> None:
    # The input fingerprint hashes the whole config model, so it moves whenever a config
    # field is added; the note's content is what this golden pins.
    text = re.sub(r"inputs `[0-9a-f]{16}`", "inputs `<fingerprint>`", partial_note)
    if os.environ.get("EVALRUN_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.exists(), "no golden file: run with EVALRUN_UPDATE_GOLDEN=1 to create it"
    expected = GOLDEN.read_text(encoding="utf-8")
    assert text == expected, (
        "rollout note differs from tests/golden/rollout_note.md (EVALRUN_UPDATE_GOLDEN=1 regenerates it)"
    )


def test_note_is_deterministic(tmp_path: Path, partial_note: str) -> None:
    assert note(tmp_path, candidate_extra=PARTIAL_ROLLOUT) == partial_note


def test_note_content_for_the_known_run(partial_note: str) -> None:
    text = partial_note
    lines = text.splitlines()
    assert len(lines) <= 50, len(lines)
    assert lines[2].startswith("**Gate verdict: FAIL, exit code 1")
    # The hidden retrieval edit shows in the change section and as a failing label trigger.
    assert "- **retrieval_version `faq-1`: hidden edit, bump the label**: retrieval.top_k" in text
    assert "Labels: prompt_version `shop-v1` → `shop-v2` (prompt.system)" in text
    assert "retrieval_version `ab90ab53c6b5` [offline: FAIL: hidden_retrieval_version_edit" in text
    # The improvement is measured; the rule with the strongest evidence of harm is the primary risk.
    gain = text.split("## Expected gain")[1].split("## Rollout")[0]
    assert "strict parse rate 16.7% → 100.0% (+83.3 pts)" in gain
    risk = text.split("## Primary regression risk")[1].split("## Expected gain")[0]
    assert risk.strip().startswith("**Completion tokens / call: 20.0 → 24.0 (+20.0%")
    assert "offline FAIL, Holm-adjusted p" in risk
    assert "Degraded cohorts (completion tokens / call" in risk and "`north` 20.0 → 24.0" in risk
    assert "- Also not cleared: Over-refusal: 0.0% (n=10) → 10.0% (n=10)" in risk
    assert "about 114 cases would settle it" in risk
    # Triggers grouped, the label filter stated once.
    triggers = text.split("## Rollback triggers")[1].split("## Monitoring filters")[0]
    assert triggers.count("prompt_version=shop-v2") == 1
    assert "Candidate traffic: `prompt_version=shop-v2`; control: `prompt_version=shop-v1`" in triggers
    assert ("- quality drops measurably below the control's: pass rate [pass], strict parse rate [pass], "
            "schema-valid rate [not measured], tool-call validity [not measured], pass rate in cohort `north` "
            "[pass]") in triggers
    assert "- rate rises measurably above the control's: over-refusal rate [inconclusive]" in triggers
    assert "completion tokens per call +15% [FAIL]" in triggers
    assert len([line for line in triggers.splitlines() if line.startswith("- ")]) == 6


def test_primary_risk_is_the_strongest_evidence_of_harm_not_the_largest_move() -> None:
    """A large but noisy latency move must not outrank a smaller rate change the gate FAILed on."""
    base = VariantConfig.model_validate(_variant("b", SYSTEM, BASE_LABELS))
    cand = VariantConfig.model_validate(_variant("c", SYSTEM, CAND_LABELS))
    latency = {"metric": "latency_p50", "type": "quantile", "label": "Latency p50 (s)", "higher_is_better": False,
               "baseline": {"value": 0.5}, "candidate": {"value": 1.0}, "ratio": 2.0, "ratio_ci": [0.6, 6.0]}
    refusal = {"metric": "over_refusal", "type": "rate", "label": "Over-refusal", "higher_is_better": False,
               "baseline": {"value": 0.05, "n": 56}, "candidate": {"value": 0.41, "n": 56}, "paired_n": 56,
               "delta": 0.36, "delta_ci": [0.22, 0.47], "table": {"n11": 1, "n10": 2, "n01": 22, "n00": 31}}
    rules = [
        {"rule": "latency_p50_ratio", "scope": "overall", "metric": "latency_p50", "status": "inconclusive",
         "observed": 2.0, "ci": [0.6, 6.0], "margin": 1.2, "p_value": 0.2, "p_adjusted": 1.0, "trigger": "t"},
        {"rule": "over_refusal", "scope": "overall", "metric": "over_refusal", "status": "fail", "observed": 0.36,
         "ci": [0.22, 0.47], "margin": 0.03, "fail_margin": 0.0, "p_value": 1e-6, "p_adjusted": 1e-5, "trigger": "t"},
    ]
    summary = {"verdict": {"status": "FAIL", "exit_code": 1, "reasons": [], "rules": rules},
               "metrics": [latency, refusal], "run": {"confidence": 0.9},
               "slices": {"cohort": {"fashion": {"metrics": [{**refusal, "baseline": {"value": 0.0, "n": 12},
                                                             "candidate": {"value": 0.33, "n": 12}, "delta": 0.33,
                                                             "delta_ci": [-0.05, 0.5], "q_value": 0.4}]},
                                     "grocery": {"metrics": [{**refusal, "delta": -0.1, "delta_ci": [-0.3, 0.1]}]}}}}
    text = render_rollout_note(summary, [], base, cand)
    risk = text.split("## Primary regression risk")[1].split("## Expected gain")[0]
    assert risk.strip().startswith("**Over-refusal: 5.0% (n=56) → 41.0% (n=56) (+36.0 pts")
    assert "22 cases got worse, 2 better." in risk
    # The degraded cohort is named even though its change is not significant; the improved one is not.
    assert "- Degraded cohorts (over-refusal, any move the harmful way): `fashion` 0.0% → 33.0% (not significant)." in risk
    assert "grocery" not in risk
    assert "- Also not cleared: p50 latency: 0.50 s → 1.00 s (+100.0%" in risk


def test_unknown_and_missing_cohort_rules_still_render() -> None:
    base = VariantConfig.model_validate(_variant("b", SYSTEM, BASE_LABELS))
    cand = VariantConfig.model_validate(_variant("c", SYSTEM, CAND_LABELS))
    rules = [
        {
            "rule": "critical_cohort",
            "scope": "cohort:vip",
            "trigger": "critical cohort vip is measured",
            "status": "fail",
        },
        {
            "rule": "custom_rule",
            "scope": "overall",
            "trigger": "the custom metric drops",
            "status": "pass",
        },
    ]
    text = render_rollout_note(
        {"verdict": {"status": "FAIL", "exit_code": 1, "reasons": [], "rules": rules}},
        [],
        base,
        cand,
    )
    assert "- critical cohort is unmeasured (hold the rollout): in cohort `vip` [FAIL]" in text
    assert "- other rules fire: the custom metric drops (`custom_rule`) [pass]" in text


def test_todo_lines_when_rollout_block_missing(tmp_path: Path) -> None:
    text = note(tmp_path)
    for todo in (
        TODO_GAIN,
        "TODO(owner): name the owner",
        "TODO(owner): link the dashboard",
        "- TODO(owner): canary cohorts · TODO(owner): expanded cohorts (suite cohorts: north, south)",
        "TODO(owner): the change in one sentence",
    ):
        assert todo in text


def test_no_todo_when_rollout_block_given(tmp_path: Path) -> None:
    text = note(tmp_path, candidate_extra=FULL_ROLLOUT)
    assert "TODO" not in text
    assert "Dana (shop-assistant on-call)" in text
    assert "https://grafana.example/d/shop-assistant" in text
    assert "- Canary: north · Expanded: north, south" in text
    assert "- Owner: Dana (shop-assistant on-call) · Dashboard: https://grafana.example/d/shop-assistant" in text
    assert "Fewer fenced JSON answers on extraction requests." in text


def test_sql_and_json_filters_escape_quotes(tmp_path: Path) -> None:
    labels = {**CAND_LABELS, "prompt_version": "shop-v2's"}
    text = note(tmp_path, cand_labels=labels)
    assert "prompt_version = 'shop-v2''s'" in text
    where = sql_where(labels)
    assert where == (
        "WHERE model_version = 'shop-model-2025' AND prompt_version = 'shop-v2''s' "
        "AND retrieval_version = 'faq-1' AND policy_version = 'none'"
    )
    assert json.loads(json_log_filter(labels)) == labels
    assert list(json.loads(json_log_filter(labels))) == list(CAND_LABELS)
    # The control segment is the baseline's labels.
    assert sql_where(BASE_LABELS) in text


def test_same_labels_warn_that_segments_are_indistinguishable(tmp_path: Path) -> None:
    text = note(tmp_path, cand_labels=BASE_LABELS)
    assert "live traffic cannot tell them apart" in text
    assert "- **prompt_version `shop-v1`: hidden edit, bump the label**: prompt.system" in text
    assert "[offline: FAIL: hidden_prompt_version_edit: prompt.system changed" in text


def test_write_rollout_note(tmp_path: Path) -> None:
    summary, findings, project = build(tmp_path / "p")
    path = write_rollout_note(
        tmp_path / "run", summary, findings, project.baseline.config, project.candidate.config
    )
    assert path == tmp_path / "run" / ROLLOUT_NOTE
    assert path.read_text(encoding="utf-8") == render_rollout_note(
        summary, findings, project.baseline.config, project.candidate.config
    )


def test_renders_without_findings_or_optional_metrics() -> None:
    base = VariantConfig.model_validate(_variant("b", SYSTEM, BASE_LABELS))
    cand = VariantConfig.model_validate(_variant("c", SYSTEM, CAND_LABELS))
    summary = {
        "verdict": {
            "status": "COULD_NOT_MEASURE",
            "exit_code": 4,
            "reasons": ["no case was measured"],
            "rules": [],
        },
        "metrics": [],
        "slices": {"cohort": {}},
        "run": {},
    }
    text = render_rollout_note(summary, [], base, cand)
    assert "**Gate verdict: COULD_NOT_MEASURE, exit code 4 (could not measure)**" in text
    assert "Config diff: not available" in text
    assert "- no case was measured" in text
    assert "No gate rule moved the harmful way offline" in text


@pytest.mark.parametrize("status", ["PASS", "INCONCLUSIVE"])
def test_exit_code_meaning(status: str) -> None:
    base = VariantConfig.model_validate(_variant("b", SYSTEM, BASE_LABELS))
    summary = {"verdict": {"status": status, "exit_code": 0, "reasons": [], "rules": []}}
    text = render_rollout_note(summary, [], base, base)
    assert (
        "exit code 0 (the gate passed)" if status == "PASS" else "(on_inconclusive: pass)"
    ) in text
