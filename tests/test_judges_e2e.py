"""Judge checks end to end: `compare` with rubric and pairwise checks, judged over real HTTP by
the scripted judge on 127.0.0.1 (tests/support/judge_script.py), so every judge number is
known in advance and asserted exactly: rates, corrected differences, calibration agreement,
position bias, judge errors and their retries, judge calls apart from the variants', the
gate's decisions, rescoring with stored judge answers, and the report's judge section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.judge_script import judge_behaviour, marker, quality
from tests.support.openai_server import OpenAIServer, Reply, last_user_text

from evalrun import api
from evalrun.errors import UserInputError
from evalrun.judging import binary_agreement, corrected_difference, net_preference
from projectkit import case, variant, write_project

pytestmark = pytest.mark.network

KEY_ENV = "EVALRUN_TEST_JUDGE_KEY"
KEY = "sk-evalrun-judge-test-0000000000"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _side(req: dict[str, Any]) -> str:
    system = next((m["content"] for m in req["messages"] if m["role"] == "system"), "")
    return "candidate" if "SIDE=candidate" in system else "baseline"


def _variants(outputs: dict[str, dict[str, str]]) -> Any:
    """Variant answers by (side, case id) from the question ``q <id>``; default: a passing answer
    naming its side (two equal outputs would make both pairwise orders one identical request)."""
    def reply(req: dict[str, Any], n: int) -> Reply:
        cid = last_user_text(req).split()[-1]
        side = _side(req)
        text = outputs.get(side, {}).get(cid, f"{side} answer {cid} {marker('pass')} {quality(2)}")
        return Reply(content=text)
    return reply


def _project(tmp_path: Path, server: OpenAIServer, *, n: int, expect: list[Any], judge: dict[str, Any] | None = None,
             rules: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> tuple[Path, Path]:
    common = {"model": "openai/judged-model", "api_base": server.base_url, "api_key_env": KEY_ENV,
              "params": {"max_tokens": 50, "temperature": 0}, "timeout_s": 5}
    base = variant("baseline", **common, prompt={"system": "SIDE=baseline", "user": "{{ question }}"})
    cand = variant("candidate", **common, prompt={"system": "SIDE=candidate", "user": "{{ question }}"})
    cand["versions"]["prompt_version"] = "p2"
    cases = [case(f"c{i:02d}", expect=expect) for i in range(n)]
    suite: dict[str, Any] = {"judge": {"model": "openai/judge-model", "api_base": server.base_url,
                                       "api_key_env": KEY_ENV, **(judge or {})}}
    if rules:
        suite["gate"] = {"rules": rules}
    return write_project(tmp_path, cases=cases, baseline=base, candidate=cand, suite=suite, files=files)


def _metric(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in summary["metrics"] if m["metric"] == name)


def _rule(summary: dict[str, Any], name: str, scope: str = "overall") -> dict[str, Any]:
    return next(r for r in summary["verdict"]["rules"] if r["rule"] == name and r["scope"] == scope)


def _compare(b: Path, c: Path, run: Path) -> dict[str, Any]:
    api.compare(api.load_project(b, c), run_dir=run, cache="off")
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


REGRESSED = {"c01", "c04", "c07"}


def _regressed_candidate() -> dict[str, dict[str, str]]:
    return {"candidate": {cid: f"answer {cid} {marker('fail')} {quality(1)}" for cid in REGRESSED}}


def test_uncalibrated_rubric_and_pairwise_numbers_through_the_gate(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants(_regressed_candidate()))
    b, c = _project(tmp_path, openai_server, n=10,
                    expect=[{"rubric": {"criteria": "answers the question asked, correctly"}},
                            {"pairwise": {"criteria": "which reply helps more"}}])
    s = _compare(b, c, tmp_path / "run")
    # 20 variant calls, 20 rubric calls (one per output), 20 pairwise calls (10 pairs × 2 orders).
    assert openai_server.count == 60
    assert s["calls"]["baseline"]["total"] == s["calls"]["candidate"]["total"] == 10
    judge_rate = _metric(s, "judge_pass_rate")
    assert judge_rate["baseline"]["value"] == 1.0 and judge_rate["candidate"]["value"] == 0.7
    assert judge_rate["delta"] == pytest.approx(-0.3)
    assert judge_rate["table"] == {"n11": 7, "n10": 3, "n01": 0, "n00": 0}
    expected = corrected_difference([1.0] * 10, [0.0 if f"c{i:02d}" in REGRESSED else 1.0 for i in range(10)], None,
                                    confidence=0.9)
    assert judge_rate["judge"]["corrected"] is False and judge_rate["judge"]["method"] == "uncorrected"
    assert judge_rate["centre"] == pytest.approx(-0.25)  # Agresti–Min: −3 / (10 + 2)
    assert judge_rate["judge"]["p_value"] == pytest.approx(expected.p_value(0.0))
    assert judge_rate["judge"]["p_value"] == pytest.approx(0.0480461647)
    pair = _metric(s, "pairwise_net")
    assert (pair["wins"], pair["ties"], pair["losses"], pair["paired_n"]) == (0, 7, 3, 10)
    assert pair["delta"] == pytest.approx(-0.3)
    assert pair["centre"] == pytest.approx(net_preference([0.0] * 7 + [-1.0] * 3).centre)
    assert pair["centre"] == pytest.approx(-0.25)
    judges = s["judges"]
    assert judges["calibration"]["source"] is None
    assert judges["rubric"]["judgments"] == 20 and judges["rubric"]["errors"] == 0
    assert judges["pairwise"]["position_bias"]["rate"] == 0.0
    assert judges["usage"]["run"]["calls"] == 40 and judges["usage"]["calibration"]["calls"] == 0
    for name in ("judge_pass_rate", "pairwise_net_loss"):
        rule = _rule(s, name)
        # Uncalibrated: may FAIL on family-wise evidence, never PASS; p 0.048 alone is not enough here.
        assert rule["status"] == "inconclusive"
        assert "not calibrated" in rule["reason"]
        assert rule["p_value"] == pytest.approx(0.0480461647)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["case_id"] == "c01" and r["side"] == "candidate")
    assert row["score"]["passed"] is True  # judge checks never enter the deterministic pass
    assert row["score"]["judge_pass"] == 0.0 and row["score"]["pairwise"] == -1.0
    assert [(j["check"], j["verdict"], j["reason"]) for j in row["score"]["judges"]] == [
        ("rubric", "fail", "scripted fail"), ("pairwise", "loss", "scripted winner A | scripted winner B")]
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert 'id="judges"' in html and "Uncalibrated" in html
    md = (tmp_path / "run" / "summary.md").read_text(encoding="utf-8")
    assert "| INCONCLUSIVE | Judge pass rate | 100.0% → 70.0% |" in md and "| INCONCLUSIVE | Pairwise net |" in md
    assert "**Judges** (openai/judge-model; uncalibrated" in md
    note = (tmp_path / "run" / "rollout_note.md").read_text(encoding="utf-8")
    assert "judge pass rate (live traffic is not judged" in note


def _calibration(n: int) -> str:
    """n human-passed and n human-failed items; the scripted judge gets one of each wrong."""
    items = []
    for i in range(n):
        wrong = i == 0
        items.append({"id": f"p{i}", "input": "q", "output": f"good {marker('fail' if wrong else 'pass')}",
                      "human": "pass"})
        items.append({"id": f"f{i}", "input": "q", "output": f"bad {marker('pass' if wrong else 'fail')}",
                      "human": "fail"})
    return yaml.safe_dump({"defaults": {"criteria": "answers correctly"}, "items": items})


@pytest.mark.slow
def test_calibrated_judge_corrects_the_rates_and_may_pass_or_fail(tmp_path: Path, openai_server: OpenAIServer) -> None:
    expect = [{"rubric": {"criteria": "answers the question asked, correctly"}}]
    files = {"evals/calibration.yaml": _calibration(12)}
    agreement = binary_agreement([True] * 12 + [False] * 12, [1.0] * 11 + [0.0] + [0.0] * 11 + [1.0], confidence=0.9)
    rates = agreement.error_rates()
    assert rates is not None

    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path / "same", openai_server, n=60, expect=expect, judge={"calibration": "calibration.yaml"},
                    files=files)
    s = _compare(b, c, tmp_path / "same" / "run")
    assert openai_server.count == 120 + 120 + 24
    cal = s["judges"]["calibration"]["rubric"]["agreement"]
    assert cal["n"] == 24 and cal["sensitivity"]["value"] == pytest.approx(11 / 12)
    assert cal["youden"]["value"] == pytest.approx(agreement.youden.value)
    assert cal["youden"]["ci_low"] == pytest.approx(agreement.youden.ci_low)
    m = _metric(s, "judge_pass_rate")
    same = corrected_difference([1.0] * 60, [1.0] * 60, rates, confidence=0.9)
    assert m["judge"]["corrected"] is True and m["judge"]["status"] == "reliable"
    assert m["delta_ci"] == pytest.approx([same.ci_low, same.ci_high])
    assert m["delta_ci"] == pytest.approx([-0.038994, 0.038994], abs=1e-6)
    assert m["judge"]["baseline_corrected"]["value"] == pytest.approx(1.0)
    assert _rule(s, "judge_pass_rate")["status"] == "pass"

    openai_server.reset()
    worse = {"candidate": {f"c{i:02d}": f"answer {marker('fail')}" for i in range(8)}}
    openai_server.behaviour = judge_behaviour(fallback=_variants(worse))
    b, c = _project(tmp_path / "worse", openai_server, n=60, expect=expect, judge={"calibration": "calibration.yaml"},
                    files=files)
    s = _compare(b, c, tmp_path / "worse" / "run")
    m = _metric(s, "judge_pass_rate")
    reg = corrected_difference([1.0] * 60, [0.0] * 8 + [1.0] * 52, rates, confidence=0.9)
    # Observed −8/60; the judge's errors shrink a true change by J, so the corrected drop is larger.
    assert m["judge"]["observed_delta"] == pytest.approx(-8 / 60)
    assert m["delta"] == pytest.approx(reg.estimate)
    assert m["delta"] == pytest.approx(-0.16)
    assert m["delta_ci"] == pytest.approx([reg.ci_low, reg.ci_high])
    rule = _rule(s, "judge_pass_rate")
    assert rule["p_value"] == pytest.approx(reg.p_value(0.0))
    assert rule["status"] == "fail"


def test_unreliable_judge_decides_nothing_whatever_it_sees(tmp_path: Path, openai_server: OpenAIServer) -> None:
    # The judge answers "pass" on every calibration item (an over-generous judge): J = 0.
    items = [{"id": f"i{i}", "input": "q", "output": f"x {marker('pass')}", "human": "pass" if i % 2 else "fail"}
             for i in range(24)]
    files = {"evals/cal.yaml": yaml.safe_dump({"defaults": {"criteria": "c"}, "items": items})}
    openai_server.behaviour = judge_behaviour(fallback=_variants(_regressed_candidate()))
    b, c = _project(tmp_path, openai_server, n=10, expect=[{"rubric": {"criteria": "correct"}}],
                    judge={"calibration": "cal.yaml"}, files=files)
    s = _compare(b, c, tmp_path / "run")
    rule = _rule(s, "judge_pass_rate")
    assert rule["status"] == "inconclusive"
    assert rule["reason"].startswith("the judge may not decide this rule: the judge is too unreliable: Youden's J")
    assert s["judges"]["calibration"]["rubric"]["agreement"]["specificity"]["value"] == 0.0


def test_unusable_answers_are_asked_again_then_counted_as_judge_errors(tmp_path: Path,
                                                                       openai_server: OpenAIServer) -> None:
    outputs = {"candidate": {"c00": f"answer {marker('garbage')}", "c01": f"answer {marker('invalid')}",
                             "c02": f"answer {marker('fenced')} {marker('fail')}"}}
    openai_server.behaviour = judge_behaviour(fallback=_variants(outputs))
    b, c = _project(tmp_path, openai_server, n=6, expect=[{"rubric": {"criteria": "correct"}}])
    s = _compare(b, c, tmp_path / "run")
    # 12 variant calls; 12 rubric judgments, two of them asked 3 times (1 + 2 retries).
    assert openai_server.count == 12 + 12 + 2 * 2
    assert s["judges"]["usage"]["answer_retries"] == 4
    assert s["judges"]["rubric"]["errors"] == 2 and s["judges"]["rubric"]["judgments"] == 12
    m = _metric(s, "judge_pass_rate")
    # The two judge errors are left out (not failures of the candidate): 4 candidate outputs judged, 1 fails.
    assert m["candidate"]["n"] == 4 and m["candidate"]["value"] == 0.75
    assert m["paired_n"] == 4
    # 2 errors in 12 judgments is over the 10 % the reliability policy allows: the judge decides nothing.
    assert "no usable answer to 2 of 12" in _rule(s, "judge_pass_rate")["reason"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["case_id"] == "c00" and r["side"] == "candidate")
    assert row["score"]["judge_pass"] is None
    assert row["score"]["judges"][0]["verdict"] == "judge error" and row["score"]["judges"][0]["errors"] == 1


def test_position_biased_pairwise_judge_may_not_pass(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path, openai_server, n=8, expect=[{"pairwise": {"criteria": f"better {marker('first')}"}}])
    s = _compare(b, c, tmp_path / "run")
    bias = s["judges"]["pairwise"]["position_bias"]
    assert (bias["pairs"], bias["inconsistent"], bias["contradictory"], bias["prefers_first"]) == (8, 8, 8, 8)
    pair = _metric(s, "pairwise_net")
    assert (pair["wins"], pair["ties"], pair["losses"]) == (0, 8, 0)  # every contradictory pair is a tie
    assert "position decides too many" in _rule(s, "pairwise_net_loss")["reason"]
    assert _rule(s, "pairwise_net_loss")["status"] == "inconclusive"


def test_resume_and_rescore_reuse_stored_judge_answers(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants(_regressed_candidate()))
    expect = [{"rubric": {"criteria": "answers correctly"}}, {"pairwise": {"criteria": "which is better"}}]
    b, c = _project(tmp_path, openai_server, n=5, expect=expect)
    run = tmp_path / "run"
    api.compare(api.load_project(b, c), run_dir=run, cache="off")
    assert openai_server.count == 10 + 10 + 10
    before = json.loads((run / "summary.json").read_text())
    api.rescore(run)
    assert openai_server.count == 30  # nothing changed: every judge answer re-used
    assert json.loads((run / "summary.json").read_text())["metrics"] == before["metrics"]
    cases_file = tmp_path / "cases" / "cases.yaml"
    cases = yaml.safe_load(cases_file.read_text())
    for cs in cases:
        cs["expect"][0]["rubric"]["criteria"] = "answers correctly and briefly"
    cases_file.write_text(yaml.safe_dump(cases, sort_keys=False))
    api.rescore(run)
    # New criteria: only the 10 rubric judgments are asked again; pairwise answers stand.
    assert openai_server.count == 40
    prompts = [last_user_text(r) for r in openai_server.requests[30:]]
    assert all("answers correctly and briefly" in p for p in prompts)


@pytest.mark.parametrize(("expect", "suite_judge", "field", "words"), [
    ([{"rubric": {"criteria": "c"}}], False, "expect[0].rubric", "needs a judge"),
    (["json", {"rubric": {"criteria": "c", "scale": 5}}], True, "expect[1].rubric", "needs pass_threshold"),
    ([{"pairwise": {"criteria": "c", "colour": "red"}}], True, "expect[0].pairwise.colour", "unknown key"),
    ([{"rubric": {"criteria_file": "missing.txt"}}], True, "expect[0].rubric.criteria_file", "not found"),
    ([{"similar": {"reference": "Paris"}}], True, "expect[0].similar", "embedding model"),
], ids=["no-judge", "scale-without-threshold", "unknown-key", "criteria-file-missing", "similar-no-model"])
def test_judge_check_errors_name_file_case_and_field(tmp_path: Path, expect: list[Any], suite_judge: bool,
                                                     field: str, words: str) -> None:
    suite = {"judge": {"model": "openai/judge"}} if suite_judge else {}
    b, c = write_project(tmp_path, cases=[case("c-one", expect=expect)], suite=suite)
    with pytest.raises(UserInputError) as info:
        api.load_project(b, c)
    message = str(info.value)
    assert "cases.yaml" in message and "c-one" in message and field in message and words in message


def test_suite_judge_block_errors_before_any_call(tmp_path: Path) -> None:
    expect = [{"rubric": {"criteria": "c"}}]
    b, c = write_project(tmp_path, cases=[case("c1", expect=expect)],
                         suite={"judge": {"model": "openai/judge", "samples": 3}})
    with pytest.raises(UserInputError, match="temperature"):
        api.load_project(b, c)
    b, c = write_project(tmp_path, cases=[case("c1", expect=expect)],
                         suite={"judge": {"model": "openai/judge", "calibration": "nope.yaml"}})
    with pytest.raises(UserInputError, match=r"calibration file 'nope\.yaml' not found"):
        api.load_project(b, c)


def test_similar_embeds_through_litellm_and_counts_as_a_check(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from tests.support.judge_script import scripted_embedding

    from evalrun.judging import cosine_similarity

    reference = "Paris is the capital of France"
    off = "The capital is Lyon, I believe"
    outputs = {"baseline": {f"c{i:02d}": reference for i in range(4)},
               "candidate": {"c00": reference, "c01": off, "c02": reference, "c03": "[[embed:http500]]"}}
    openai_server.behaviour = judge_behaviour(fallback=_variants(outputs))
    b, c = _project(tmp_path, openai_server, n=4, expect=[{"similar": {"reference": reference, "threshold": 0.8}}],
                    judge={"embedding_model": "openai/text-embedding-test"})
    s = _compare(b, c, tmp_path / "run")
    embeds = [r for r in openai_server.requests if "input" in r]
    # One embedding per distinct output text and one for the reference (equal texts share a request).
    assert sorted({tuple(r["input"]) for r in embeds}) == sorted({(reference,), (off,), ("[[embed:http500]]",)})
    assert all(r["model"] == "text-embedding-test" for r in embeds)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    by = {(r["case_id"], r["side"]): r["score"] for r in rows}
    expected = cosine_similarity(scripted_embedding(off), scripted_embedding(reference))
    assert expected < 0.8
    assert by[("c01", "candidate")]["passed"] is False
    check = next(ch for ch in by[("c01", "candidate")]["checks"] if ch["check"] == "similar")
    assert check["facts"]["similarity"] == pytest.approx(expected)
    assert check["detail"] == f"similarity {expected:.3f} (threshold 0.8)"
    assert by[("c00", "candidate")]["passed"] is True and by[("c00", "baseline")]["passed"] is True
    # A failed embedding call is a judge error: the check is left out, not failed.
    assert by[("c03", "candidate")]["passed"] is True
    assert by[("c03", "candidate")]["judges"][0]["verdict"] == "judge error"
    assert _metric(s, "pass_rate")["candidate"]["value"] == 0.75


def test_max_cost_covers_the_judge_calls(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from evalrun.errors import CouldNotMeasureError

    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path / "unpriced", openai_server, n=4, expect=[{"rubric": {"criteria": "correct"}}])
    with pytest.raises(CouldNotMeasureError, match="judge model openai/judge-model has no known price"):
        api.compare(api.load_project(b, c), run_dir=tmp_path / "unpriced" / "run", cache="off", max_cost=1.0)

    # gpt-4o-mini pointed at the local server is priced as gpt-4o-mini (litellm prices by name).
    b, c = _project(tmp_path / "priced", openai_server, n=10, expect=[{"rubric": {"criteria": "correct"}}],
                    judge={"model": "openai/gpt-4o-mini"})
    for path in (b, c):
        cfg = yaml.safe_load(path.read_text())
        cfg["pricing"] = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
        path.write_text(yaml.safe_dump(cfg))
    openai_server.reset()
    cap = 0.00045  # the 20 variant calls cost $0.00016; a judge call costs ~$0.000016 but may cost ~$0.00024
    with pytest.raises(CouldNotMeasureError, match="budget reached during the judge calls"):
        api.compare(api.load_project(b, c), run_dir=tmp_path / "priced" / "run", cache="off", max_cost=cap)
    rows = [json.loads(x) for x in (tmp_path / "priced" / "run" / "journal.jsonl").read_text().splitlines()]
    judged = [json.loads(x) for x in (tmp_path / "priced" / "run" / "judge" / "journal.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and 0 < len(judged) < 20
    assert sum(r["cost_usd"] for r in rows + judged) <= cap


def test_judge_rules_gate_critical_cohorts_and_slice_by_kind_and_cohort(tmp_path: Path,
                                                                      openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants(_regressed_candidate()))
    b, c = _project(tmp_path, openai_server, n=10, expect=[{"rubric": {"criteria": "correct"}}])
    suite_file = tmp_path / "evals" / "suite.yaml"
    suite = yaml.safe_load(suite_file.read_text())
    suite["gate"] = {"critical_cohorts": ["c1"]}
    suite_file.write_text(yaml.safe_dump(suite))
    s = _compare(b, c, tmp_path / "run")
    cohort_rule = _rule(s, "judge_pass_rate", "cohort:c1")
    assert cohort_rule["observed"] == pytest.approx(-0.3) and cohort_rule["paired_n"] == 10
    by_kind = next(m for m in s["slices"]["kind"]["representative"]["metrics"] if m["metric"] == "judge_pass_rate")
    assert by_kind["candidate"]["value"] == 0.7 and by_kind["judge"]["status"] == "uncalibrated"
    # The cohort's FAIL test joins the family: every judge hypothesis is counted by Holm.
    assert s["verdict"]["familywise"]["hypotheses"] >= 2
    assert not any(r["rule"] == "pairwise_net_loss" for r in s["verdict"]["rules"])  # no pairwise check


def test_a_resumed_compare_reuses_journaled_judge_answers(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path, openai_server, n=4, expect=[{"rubric": {"criteria": "correct"}}])
    run = tmp_path / "run"
    api.compare(api.load_project(b, c), run_dir=run, cache="off")
    assert openai_server.count == 16
    (run / "summary.json").unlink()  # an interrupted run: every call journaled, no outputs
    api.compare(api.load_project(b, c), run_dir=run, cache="off", resume=True)
    assert openai_server.count == 16
    assert json.loads((run / "summary.json").read_text())["judges"]["rubric"]["judgments"] == 8


def test_judge_reasons_are_untrusted_text_in_every_report(tmp_path: Path, openai_server: OpenAIServer) -> None:
    evil = "<script>alert('judge')</script> | **bold** & </td>"
    fallback = _variants({})

    def behave(req: dict[str, Any], n: int) -> Reply:
        if "<reply>" in last_user_text(req):
            return Reply(content=json.dumps({"reason": evil, "verdict": "fail"}))
        return fallback(req, n)

    openai_server.behaviour = behave
    b, c = _project(tmp_path, openai_server, n=2, expect=[{"rubric": {"criteria": "correct"}}])
    _compare(b, c, tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "</td>\"" not in html
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["score"]["judges"][0]["reason"] == evil  # stored as said, escaped where shown


def test_shards_judge_their_own_cases_and_merge_equals_the_whole_run(tmp_path: Path,
                                                                     openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants(_regressed_candidate()))
    expect = [{"rubric": {"criteria": "correct"}}, {"pairwise": {"criteria": "better"}}]
    b, c = _project(tmp_path, openai_server, n=10, expect=expect)
    full = api.compare(api.load_project(b, c), run_dir=tmp_path / "full", cache="off")
    shards = [tmp_path / f"s{i}" for i in (1, 2, 3)]  # c00..c09 hash into 2, 2 and 6 cases
    for i, shard in enumerate(shards, start=1):
        api.compare(api.load_project(b, c, shard=(i, 3)), run_dir=shard, cache="off")
    calls = openai_server.count
    merged = api.merge(shards, tmp_path / "merged")
    assert openai_server.count == calls  # merging judges nothing again
    for name in ("judge_pass_rate", "pairwise_net"):
        a, m = _metric(full.summary, name), _metric(merged.summary, name)
        assert (a["delta"], a["delta_ci"], a["judge"]["p_value"]) == (m["delta"], m["delta_ci"], m["judge"]["p_value"])
    assert merged.summary["judges"]["rubric"] == full.summary["judges"]["rubric"]
    assert (tmp_path / "merged" / "judge" / "journal.jsonl").exists()


def test_responses_cache_answers_repeated_judge_requests(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path, openai_server, n=3, expect=[{"rubric": {"criteria": "correct"}}])
    cache = tmp_path / "cache"
    api.compare(api.load_project(b, c), run_dir=tmp_path / "one", cache_path=cache)
    assert openai_server.count == 12
    again = api.compare(api.load_project(b, c), run_dir=tmp_path / "two", cache_path=cache)
    assert openai_server.count == 12  # variant and judge answers all from the cache
    assert again.summary["judges"]["usage"]["run"]["cached"] == 6


def test_estimate_counts_the_judge_calls(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from evalrun.analysis.estimate import estimate

    files = {"evals/calibration.yaml": _calibration(10)}
    b, c = _project(tmp_path, openai_server, n=5, expect=[{"rubric": {"criteria": "c"}}, {"pairwise": {"criteria": "c"}}],
                    judge={"calibration": "calibration.yaml", "params": {"temperature": 0, "max_tokens": 100}},
                    files=files)
    est = estimate(api.load_project(b, c))
    assert est.judge is not None
    # 10 rubric judgments, 10 pairwise calls (both orders), 20 calibration rubric items.
    assert est.judge.calls == 10 + 10 + 20
    assert est.judge.max_completion_tokens == 40 * 100
    assert est.judge.cost_status == "unpriced"
    assert "judges: 40 calls" in est.text()
    assert openai_server.count == 0


def test_a_replaced_judge_template_is_used_and_checked_at_load(tmp_path: Path, openai_server: OpenAIServer) -> None:
    template = ("{% block user %}Grade this. Criteria: {{ criteria }}\n<reply>\n{{ output }}\n</reply>\n"
                "Answer JSON.{% endblock %}")
    broken = "{% block user %}{{ criteria }{% endblock %}"
    b, c = _project(tmp_path / "bad", openai_server, n=1, expect=[{"rubric": {"criteria": "c"}}],
                    judge={"rubric_template": "prompts/rubric.j2"}, files={"evals/prompts/rubric.j2": broken})
    with pytest.raises(UserInputError, match=r"judge\.rubric_template"):
        api.load_project(b, c)
    openai_server.behaviour = judge_behaviour(fallback=_variants({}))
    b, c = _project(tmp_path / "ok", openai_server, n=2, expect=[{"rubric": {"criteria": "the criteria"}}],
                    judge={"rubric_template": "prompts/rubric.j2"}, files={"evals/prompts/rubric.j2": template})
    s = _compare(b, c, tmp_path / "ok" / "run")
    judge_prompts = [last_user_text(r) for r in openai_server.requests if "<reply>" in last_user_text(r)]
    assert len(judge_prompts) == 4 and all(p.startswith("Grade this. Criteria: the criteria") for p in judge_prompts)
    assert _metric(s, "judge_pass_rate")["candidate"]["value"] == 1.0


def test_judge_samples_and_a_scaled_rubric(tmp_path: Path, openai_server: OpenAIServer) -> None:
    outputs = {"candidate": {"c00": f"answer {marker('score=3')}", "c01": f"answer {marker('score=4')}"}}
    openai_server.behaviour = judge_behaviour(fallback=_variants(outputs))
    b, c = _project(tmp_path, openai_server, n=3,
                    expect=[{"rubric": {"criteria": "helpful", "scale": 5, "pass_threshold": 4, "samples": 3,
                                        "judge": {"params": {"temperature": 0.7}}}}])
    s = _compare(b, c, tmp_path / "run")
    # 6 variant calls; each output judged 3 times (distinct requests: the sample salt differs).
    assert openai_server.count == 6 + 6 * 3
    assert s["judges"]["rubric"]["judgments"] == 18
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    by = {(r["case_id"], r["side"]): r["score"] for r in rows}
    assert by[("c00", "candidate")]["judge_pass"] == 0.0  # score 3 < threshold 4
    assert by[("c01", "candidate")]["judge_pass"] == 1.0  # score 4 passes
    entry = by[("c00", "candidate")]["judges"][0]
    assert (entry["verdict"], entry["score"], entry["judgments"], entry["passed"]) == ("fail", 3, 3, 0)
    assert by[("c02", "baseline")]["judges"][0]["score"] == 5  # a pass marker on a scale: the top score


def test_validate_says_judge_calls_come_on_top_of_the_variant_calls(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from click.testing import CliRunner

    from evalrun.cli import main

    b, c = _project(tmp_path, openai_server, n=3, expect=[{"rubric": {"criteria": "answers the question"}},
                                                           {"pairwise": {"criteria": "more helpful"}}])
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 0, result.output
    assert "6 calls planned (+ judge calls for 6 judge checks: `evalrun estimate` counts them)" in result.stdout
    assert openai_server.count == 0
