"""run → score → compare → gate with the shipped FakeProvider: the numbers a user reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalrun import api
from evalrun.errors import CouldNotMeasureError
from evalrun.execution.store import read_journal
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.testing import FakeProvider, fake_response
from projectkit import case, variant, write_project


def _summary(project: api.Project, outcome: api.RunOutcome) -> dict[str, Any]:
    results = api.sort_results(outcome.results)
    return api.summarize(project, results, api.score(project, results), created="t").to_json()


def _metric(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in summary["metrics"] if m["metric"] == name)


def _fmt_project(tmp_path: Path, n: int = 10) -> api.Project:
    cases = [case(f"f{i:02d}", kind="format_sensitive", expect=["json"]) for i in range(n)]
    b, c = write_project(tmp_path, cases=cases)
    return api.load_project(b, c)


def test_fenced_json_on_three_of_ten_is_minus_30_points(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path)
    fenced = {"f01", "f04", "f07"}

    def script(req: ProviderRequest) -> ProviderResponse:
        cid = req.metadata["case_id"]
        if req.metadata["side"] == "candidate" and cid in fenced:
            return fake_response('```json\n{"a": 1}\n```', prompt_tokens=20, completion_tokens=8)
        return fake_response('{"a": 1}', prompt_tokens=20, completion_tokens=4)

    outcome = api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run")
    s = _summary(project, outcome)
    strict = _metric(s, "parse_strict")
    assert strict["baseline"]["value"] == 1.0
    assert strict["candidate"]["value"] == pytest.approx(0.7)
    assert strict["delta"] == pytest.approx(-0.3)
    assert strict["table"] == {"n11": 7, "n10": 3, "n01": 0, "n00": 0}
    assert _metric(s, "parse_lenient")["delta"] == 0.0
    tokens = _metric(s, "completion_tokens")
    assert tokens["baseline"]["total"] == 40 and tokens["candidate"]["total"] == 4 * 7 + 8 * 3
    assert [f["case_id"] for f in s["flips"]["regressions"]] == ["f01", "f04", "f07"]
    # 3 of 10 cases is a drop, but not family-wise evidence of one: the gate says so rather
    # than crying wolf (nor passing it).
    rule = next(r for r in s["verdict"]["rules"] if r["rule"] == "parse_strict")
    assert rule["status"] == "inconclusive" and "not on family-wise evidence" in rule["reason"]
    assert rule["p_value"] < 0.05 < rule["p_adjusted"]
    assert s["verdict"]["status"] == "INCONCLUSIVE"


def test_fenced_json_on_a_quarter_of_sixty_cases_fails(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=60)

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["side"] == "candidate" and int(req.metadata["case_id"][1:]) % 4 == 0:
            return fake_response('```json\n{"a": 1}\n```')
        return fake_response('{"a": 1}')

    s = _summary(project, api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run"))
    rule = next(r for r in s["verdict"]["rules"] if r["rule"] == "parse_strict")
    assert rule["status"] == "fail" and "evident regression" in rule["reason"]
    assert rule["p_adjusted"] <= 0.05
    assert s["verdict"]["status"] == "FAIL"


def test_identical_sides_never_fail(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=6)
    outcome = api.run(project, provider=FakeProvider(lambda r: fake_response('{"x": 2}')), run_dir=tmp_path / "run")
    s = _summary(project, outcome)
    assert s["verdict"]["status"] != "FAIL"
    for m in s["metrics"]:
        if m["type"] == "rate" and m.get("delta") is not None:
            assert m["delta"] == 0.0


def test_every_result_is_journaled(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=5)
    provider = FakeProvider(lambda r: fake_response("{}"))
    outcome = api.run(project, provider=provider, run_dir=tmp_path / "run")
    rows = read_journal(tmp_path / "run" / "journal.jsonl")
    assert len(rows) == len(outcome.results) == 10 == provider.count
    assert provider.closed
    assert {(r.case_id, r.side) for r in rows} == {(c.id, s) for c in project.cases for s in ("baseline", "candidate")}


def test_retries_then_success_are_counted(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=2)
    seen: dict[str, int] = {}

    def script(req: ProviderRequest) -> ProviderResponse | ProviderError:
        k = f"{req.metadata['case_id']}:{req.metadata['side']}"
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == 1:
            return ProviderError("rate_limited", "slow down", retryable=True, retry_after_s=0.01)
        return fake_response("{}")

    outcome = api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run")
    assert all(r.ok and r.attempts == 2 and len(r.attempt_latencies_s) == 2 for r in outcome.results)
    s = _summary(project, outcome)
    assert s["calls"]["baseline"]["retried"] == 2 and s["calls"]["baseline"]["attempts"] == 4


def test_non_retryable_error_is_recorded_not_raised(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=4)

    def script(req: ProviderRequest) -> ProviderResponse | ProviderError:
        if req.metadata["side"] == "candidate" and req.metadata["case_id"] == "f00":
            return ProviderError("context_window", "too long", retryable=False)
        return fake_response("{}")

    provider = FakeProvider(script)
    outcome = api.run(project, provider=provider, run_dir=tmp_path / "run")
    failed = [r for r in outcome.results if not r.ok]
    assert len(failed) == 1 and failed[0].error_kind == "context_window" and failed[0].attempts == 1
    s = _summary(project, outcome)
    assert s["calls"]["candidate"]["errors_by_kind"] == {"context_window": 1}
    # 1 of 4 candidate calls failed: 25 % > 1 % tolerance → could not measure, not PASS.
    assert s["verdict"]["status"] == "COULD_NOT_MEASURE"
    assert s["verdict"]["exit_code"] == 4


def test_retryable_error_exhausts_attempts(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=1)
    provider = FakeProvider(lambda r: ProviderError("server_error", "boom 500", retryable=True))
    outcome = api.run(project, provider=provider, run_dir=tmp_path / "run")
    assert provider.count == 2 * project.suite.config.max_attempts
    assert all(r.error_kind == "server_error" and r.attempts == project.suite.config.max_attempts for r in outcome.results)


@pytest.mark.parametrize("any_flip", [False, True], ids=["default", "any_flip"])
def test_known_bad_that_stops_refusing_is_listed_and_fails_only_under_any_flip(tmp_path: Path, any_flip: bool) -> None:
    cases = [case(f"b{i}", kind="known_bad") for i in range(5)] + [case(f"r{i}") for i in range(5)]
    gate = {"rules": {"known_bad_refusal": {"any_flip": True}}} if any_flip else {}
    b, c = write_project(tmp_path, cases=cases, suite={"gate": gate})
    project = api.load_project(b, c)

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["kind"] == "known_bad" and not (req.metadata["side"] == "candidate" and req.metadata["case_id"] == "b3"):
            return fake_response("I can't help with that.")
        return fake_response("Sure, here you go.")

    s = _summary(project, api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run"))
    rule = next(r for r in s["verdict"]["rules"] if r["rule"] == "known_bad_refusal")
    # The flipped case is named in every run, whatever the policy.
    assert "known-bad case refused less often in the candidate: b3" in rule["warnings"]
    assert any(w.endswith("refused less often in the candidate: b3") for w in s["verdict"]["warnings"])
    if any_flip:
        assert rule["status"] == "fail" and "1 known-bad case" in rule["reason"]
        assert s["verdict"]["status"] == "FAIL"
    else:
        # One flip of five is no evidence of a drop: a warning, not a FAIL.
        assert rule["status"] == "inconclusive"
        assert s["verdict"]["status"] == "INCONCLUSIVE"


def test_over_refusal_metric(tmp_path: Path) -> None:
    b, c = write_project(tmp_path, cases=[case(f"r{i}") for i in range(4)])
    project = api.load_project(b, c)

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["side"] == "candidate" and req.metadata["case_id"] in {"r0", "r1"}:
            return fake_response("I'm sorry, but I can't help with that request.")
        return fake_response("The answer is 4.")

    s = _summary(project, api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run"))
    m = _metric(s, "over_refusal")
    assert m["baseline"]["value"] == 0.0 and m["candidate"]["value"] == 0.5 and m["delta"] == 0.5


def test_samples_are_averaged_within_case(tmp_path: Path) -> None:
    cases = [case(f"k{i}", kind="format_sensitive", expect=["json"]) for i in range(4)]
    b, c = write_project(tmp_path, cases=cases, suite={"samples": 3})
    project = api.load_project(b, c)

    def script(req: ProviderRequest) -> ProviderResponse:
        # candidate: case k0 passes only on sample 0 → flaky
        if req.metadata["side"] == "candidate" and req.metadata["case_id"] == "k0" and req.metadata["sample"] > 0:
            return fake_response("not json")
        return fake_response("{}")

    provider = FakeProvider(script)
    s = _summary(project, api.run(project, provider=provider, run_dir=tmp_path / "run"))
    assert provider.count == 4 * 3 * 2
    m = _metric(s, "parse_strict")
    assert m["paired_n"] == 4  # cases, not 12 calls
    assert m["candidate"]["value"] == pytest.approx((1 / 3 + 3) / 4)
    assert [f["case_id"] for f in s["flaky"]] == ["k0"]
    assert s["consistency"]["candidate"]["pass_at_k"] == 1.0
    assert s["consistency"]["candidate"]["pass_hat_k"] == 0.75


def test_missing_api_key_could_not_measure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALRUN_TEST_NO_SUCH_KEY", raising=False)
    b, c = write_project(tmp_path, baseline=variant("baseline", api_key_env="EVALRUN_TEST_NO_SUCH_KEY"))
    project = api.load_project(b, c)
    with pytest.raises(CouldNotMeasureError) as info:
        api.run(project, provider=FakeProvider(), run_dir=tmp_path / "run")
    assert "EVALRUN_TEST_NO_SUCH_KEY" in str(info.value)


def test_resume_makes_only_missing_calls(tmp_path: Path) -> None:
    project = _fmt_project(tmp_path, n=6)
    first = FakeProvider(lambda r: fake_response("{}"))
    outcome = api.run(project, provider=first, run_dir=tmp_path / "run", cache="off")
    journal = tmp_path / "run" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    # Keep 7 complete rows and a torn 8th, as a kill -9 mid-write would leave.
    journal.write_text("".join(lines[:7]) + lines[7][: len(lines[7]) // 2])
    second = FakeProvider(lambda r: fake_response("{}"))
    resumed = api.run(project, provider=second, run_dir=tmp_path / "run", resume=True, cache="off")
    assert second.count == 12 - 7
    assert len(resumed.results) == 12
    assert len(read_journal(journal)) == 12
    s1 = _summary(project, outcome)
    s2 = _summary(project, resumed)
    # Latency is measured afresh for the re-made calls; every other metric is identical.
    def stable(s: dict[str, Any]) -> str:
        return json.dumps([m for m in s["metrics"] if not m["metric"].startswith("latency")], sort_keys=True)

    assert stable(s1) == stable(s2)


def test_hidden_prompt_edit_fails_the_gate_and_note_is_written(tmp_path: Path) -> None:
    cand = variant("candidate", prompt={"system": "You are terse. Always answer in French.", "user": "{{ question }}"})
    b, c = write_project(tmp_path, candidate=cand)  # same prompt_version "p1" on both sides
    project = api.load_project(b, c)
    outcome = api.compare(project, provider=FakeProvider(lambda r: fake_response("fine")), run_dir=tmp_path / "run", cache="off")
    rule = next(r for r in outcome.summary["verdict"]["rules"] if r["rule"] == "label_prompt_version")
    assert rule["status"] == "fail" and "prompt.system" in rule["reason"]
    assert outcome.verdict_status == "FAIL" and outcome.exit_code == 1
    note = (tmp_path / "run" / "rollout_note.md").read_text()
    assert "prompt_version = 'p1'" in note  # the monitoring query is filled from the labels
    assert "TODO" in note  # owner / dashboard are not invented


def test_critical_cohort_is_gated_on_its_own(tmp_path: Path) -> None:
    # 100 "bulk" cases hold steady; the 12-case critical cohort "vip" loses 10. Overall the
    # drop (9 points) is not shown to exceed the 5-point fail margin; in "vip" it is.
    cases = [case(f"a{i:03d}", cohort="bulk", kind="format_sensitive", expect=["json"]) for i in range(100)]
    cases += [case(f"v{i:02d}", cohort="vip", kind="format_sensitive", expect=["json"]) for i in range(12)]
    tolerant = {"margin": -0.05, "fail_margin": -0.05}
    b, c = write_project(tmp_path, cases=cases, suite={"gate": {
        "critical_cohorts": ["vip"], "rules": {"parse_strict": tolerant, "pass_rate": tolerant}}})
    project = api.load_project(b, c)

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["side"] == "candidate" and req.metadata["case_id"].startswith("v") and \
                int(req.metadata["case_id"][1:]) < 10:
            return fake_response("not json")
        return fake_response("{}")

    s = _summary(project, api.run(project, provider=FakeProvider(script), run_dir=tmp_path / "run", cache="off"))
    vip = [r for r in s["verdict"]["rules"] if r["scope"] == "cohort:vip"]
    assert {r["rule"] for r in vip} >= {"pass_rate", "parse_strict"}
    assert next(r for r in vip if r["rule"] == "parse_strict")["status"] == "fail"
    overall = next(r for r in s["verdict"]["rules"] if r["rule"] == "parse_strict" and r["scope"] == "overall")
    assert overall["status"] != "fail"
    assert s["verdict"]["status"] == "FAIL"
    assert s["slices"]["cohort"]["vip"]["critical"] is True
    # Exploratory (non-critical) slices carry BH q-values; the critical one is gated instead.
    bulk = next(m for m in s["slices"]["cohort"]["bulk"]["metrics"] if m["metric"] == "parse_strict")
    assert "q_value" in bulk


def test_validate_does_not_import_litellm(tmp_path: Path) -> None:
    import subprocess
    import sys

    b, c = write_project(tmp_path)
    code = ("import sys; from evalrun.cli import main\n"
            "try:\n    main(['validate', sys.argv[1], sys.argv[2]])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('litellm' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(b), str(c)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr


def test_cases_with_the_same_prompt_are_kept_apart_on_resume(tmp_path: Path) -> None:
    # Two cases render the same request (same question, different expectations): resuming
    # must keep both, not let one stand for the other.
    same = {"question": "What is 2+2?"}
    b, c = write_project(tmp_path, cases=[case("twin-a", vars=same, expect=[{"contains": {"value": "4"}}]),
                                          case("twin-b", vars=same, expect=[{"contains": {"value": "four"}}])])
    project = api.load_project(b, c)
    api.run(project, provider=FakeProvider(lambda r: fake_response("4")), run_dir=tmp_path / "run", cache="off")
    journal = tmp_path / "run" / "journal.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:2]))
    second = FakeProvider(lambda r: fake_response("4"))
    resumed = api.run(project, provider=second, run_dir=tmp_path / "run", resume=True, cache="off")
    assert second.count == 2
    assert sorted((r.case_id, r.side) for r in resumed.results) == [
        ("twin-a", "baseline"), ("twin-a", "candidate"), ("twin-b", "baseline"), ("twin-b", "candidate")]
