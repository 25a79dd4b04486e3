"""`evalrun compare` end to end through litellm over real HTTP to a 127.0.0.1 server.

The server's answers are scripted, so the numbers in summary.json have a known truth.
Also: the response cache, replay, the spend guard, shards + merge, JUnit and CI outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml
from tests.support.openai_server import OpenAIServer, Reply, last_user_text

from evalrun import api
from projectkit import case, variant, write_project

pytestmark = pytest.mark.network

KEY_ENV = "EVALRUN_TEST_HTTP_KEY"


def _system(req: dict[str, Any]) -> str:
    return next((m["content"] for m in req["messages"] if m["role"] == "system"), "")


def _project(tmp_path: Path, server: OpenAIServer, *, n: int = 10, suite: dict[str, Any] | None = None,
             model: str = "openai/evalrun-http-test", pricing: dict[str, float] | None = None) -> tuple[Path, Path]:
    common = {"model": model, "api_base": server.base_url, "api_key_env": KEY_ENV,
              "params": {"max_tokens": 50, "temperature": 0}, "timeout_s": 5}
    if pricing:
        common["pricing"] = pricing
    base = variant("baseline", **common, prompt={"system": "SIDE=baseline", "user": "{{ question }}"})
    cand = variant("candidate", **common, prompt={"system": "SIDE=candidate", "user": "{{ question }}"})
    cand["versions"]["prompt_version"] = "p2"
    cases = [case(f"f{i:02d}", kind="format_sensitive", expect=["json"], vars={"question": f"CASE=f{i:02d}"}) for i in range(n)]
    return write_project(tmp_path, cases=cases, baseline=base, candidate=cand, suite=suite)


FENCED = {"f01", "f04", "f07"}


def _fenced_for_three(req: dict[str, Any], n: int) -> Reply:
    cid = last_user_text(req).removeprefix("CASE=")
    if "candidate" in _system(req) and cid in FENCED:
        return Reply(content='```json\n{"ok": true}\n```', prompt_tokens=30, completion_tokens=9)
    return Reply(content='{"ok": true}', prompt_tokens=30, completion_tokens=5)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-evalrun-http-test-000000")


def _metric(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in summary["metrics"] if m["metric"] == name)


@pytest.mark.slow
def test_known_truth_through_litellm(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _fenced_for_three
    b, c = _project(tmp_path, openai_server)
    outcome = api.compare(api.load_project(b, c), run_dir=tmp_path / "run", cache="off")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert openai_server.count == 20
    strict = _metric(s, "parse_strict")
    assert strict["baseline"]["value"] == 1.0 and strict["candidate"]["value"] == pytest.approx(0.7)
    assert strict["delta"] == pytest.approx(-0.30)
    assert _metric(s, "parse_lenient")["delta"] == 0.0
    tokens = _metric(s, "completion_tokens")
    assert tokens["baseline"]["total"] == 50 and tokens["candidate"]["total"] == 7 * 5 + 3 * 9
    assert _metric(s, "prompt_tokens")["baseline"]["total"] == 300
    # 3 of 10 cases regress: not family-wise evidence of a drop, so INCONCLUSIVE (exit 3), and
    # the JUnit rule is a failure because on_inconclusive is "fail".
    assert s["verdict"]["status"] == "INCONCLUSIVE" and outcome.exit_code == 3
    assert [f["case_id"] for f in s["flips"]["regressions"]] == sorted(FENCED)
    for name in ("report.html", "summary.md", "summary.json", "junit.xml", "results.jsonl", "journal.jsonl", "manifest.json"):
        assert (tmp_path / "run" / name).exists(), name
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().split("\n") if x]
    assert len(rows) == 20 and all(r["prompt_version"] in ("p1", "p2") for r in rows)

    # JUnit: read by a real JUnit consumer; one test per rule plus one per regressed case.
    xml = JUnitXml.fromfile(str(tmp_path / "run" / "junit.xml"))
    cases = [tc for suite in xml for tc in suite]
    rules = [tc for tc in cases if tc.classname == "evalrun.gate"]
    regressed = [tc for tc in cases if tc.classname == "evalrun.cases"]
    assert len(rules) == len(s["verdict"]["rules"])
    assert sorted(tc.name for tc in regressed) == sorted(FENCED) or len(regressed) == 3
    failed_rules = {tc.name for tc in rules if any(isinstance(r, Failure) for r in tc.result)}
    assert any(name.startswith("parse_strict") for name in failed_rules)


@pytest.mark.slow
def test_second_compare_is_served_from_cache(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _fenced_for_three
    b, c = _project(tmp_path, openai_server)
    project = api.load_project(b, c)
    first = api.compare(project, run_dir=tmp_path / "run1")
    assert openai_server.count == 20
    second = api.compare(project, run_dir=tmp_path / "run2")
    assert openai_server.count == 20  # zero new provider calls
    assert second.summary["calls"]["baseline"]["cached"] == 10 and second.summary["calls"]["candidate"]["cached"] == 10
    rows = [json.loads(x) for x in (tmp_path / "run2" / "results.jsonl").read_text().split("\n") if x]
    assert all(r["cached"] for r in rows)

    def stable(summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [m for m in summary["metrics"] if not m["metric"].startswith("latency")]

    assert stable(first.summary) == stable(second.summary)
    # A cached latency is the recorded one, and the report says it is cached.
    lat = _metric(second.summary, "latency_p50")
    assert lat["cached_calls"] == {"baseline": 10, "candidate": 10}
    html = (tmp_path / "run2" / "report.html").read_text()
    assert "cached" in html
    # --refresh calls again.
    api.compare(project, run_dir=tmp_path / "run3", cache="refresh")
    assert openai_server.count == 40


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "evalrun", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=180)


def test_replay_with_empty_cache_fails_with_code_4(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path, openai_server, n=3)
    env = {"EVALRUN_CACHE_DIR": str(tmp_path / "empty-cache")}
    (tmp_path / "empty-cache").mkdir()
    proc = _cli("compare", str(b), str(c), "--replay", "--out", str(tmp_path / "run"), "-q", env=env)
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert openai_server.count == 0


@pytest.mark.slow
def test_replay_after_a_run_needs_no_key_and_no_server(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _fenced_for_three
    b, c = _project(tmp_path, openai_server, n=4)
    api.compare(api.load_project(b, c), run_dir=tmp_path / "run1")
    calls = openai_server.count
    env = {KEY_ENV: ""}
    proc = _cli("compare", str(b), str(c), "--replay", "--out", str(tmp_path / "run2"), "-q", "--format", "github", env=env)
    assert openai_server.count == calls
    assert proc.returncode == 3, proc.stderr  # the same answers, the same (inconclusive) verdict
    assert "::error title=evalrun parse_strict::" in proc.stdout  # on_inconclusive: fail
    assert "VERDICT: INCONCLUSIVE" in proc.stdout


def test_max_cost_stops_spending(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda req, n: Reply(content="{}", prompt_tokens=12, completion_tokens=50)
    # $100 per million tokens: one call costs ~$0.0062; the guard reserves its worst case.
    b, c = _project(tmp_path, openai_server, n=20, pricing={"input_per_mtok": 100.0, "output_per_mtok": 100.0},
                    suite={"concurrency": 2})
    project = api.load_project(b, c)
    from evalrun.errors import CouldNotMeasureError

    with pytest.raises(CouldNotMeasureError) as info:
        api.compare(project, run_dir=tmp_path / "run", cache="off", max_cost=0.15)
    assert "budget reached" in str(info.value)
    assert 0 < openai_server.count < 40
    journal = (tmp_path / "run" / "journal.jsonl").read_text().splitlines()
    spent = sum(json.loads(x)["cost_usd"] for x in journal)
    assert 0.10 < spent <= 0.15
    # Refused before any call when the prompts alone cost more than the budget.
    before = openai_server.count
    with pytest.raises(CouldNotMeasureError) as info2:
        api.compare(project, run_dir=tmp_path / "run2", cache="off", max_cost=0.0000001)
    assert "refused before any call" in str(info2.value)
    assert openai_server.count == before


# A realistic tool declaration (~1,800 tokens): every request carries it, every provider bills it.
BIG_TOOL = {
    "type": "function",
    "function": {
        "name": "search_catalog",
        "description": "Search the shop's catalogue. " + "Use filters to narrow results by brand and price. " * 60,
        "parameters": {
            "type": "object",
            "properties": {f"filter_{i}": {"type": "string", "description": f"optional filter number {i} " * 8}
                           for i in range(24)},
            "required": ["filter_0"],
        },
    },
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string", "description": "the answer " * 20}}}}}


def _billed_prompt_tokens(body: dict[str, Any]) -> int:
    """What a provider bills: the messages with the tools, plus the response_format schema."""
    from evalrun.providers.litellm.provider import import_litellm

    litellm = import_litellm()
    n = litellm.token_counter(model=body["model"], messages=body["messages"], tools=body.get("tools"))
    if body.get("response_format"):
        n += litellm.token_counter(model=body["model"], text=json.dumps(body["response_format"]))
    return int(n) + 3


def _tool_project(tmp_path: Path, server: OpenAIServer, *, n: int, concurrency: int = 8) -> api.Project:
    b, c = _project(tmp_path, server, n=n, suite={"concurrency": concurrency},
                    pricing={"input_per_mtok": 5.0, "output_per_mtok": 15.0})
    for path in (b, c):
        import yaml

        data = yaml.safe_load(path.read_text())
        data["params"].update({"tools": [BIG_TOOL], "response_format": SCHEMA_FORMAT, "max_tokens": 20})
        path.write_text(yaml.safe_dump(data))
    return api.load_project(b, c)


def test_estimate_counts_everything_the_request_carries(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from evalrun.analysis.estimate import estimate

    project = _tool_project(tmp_path, openai_server, n=4)
    plan = api.plan_calls(project, with_keys=False)
    body = {"model": "evalrun-http-test", "messages": plan[0].request.messages, "tools": [BIG_TOOL],
            "response_format": SCHEMA_FORMAT}
    billed = _billed_prompt_tokens(body)
    assert billed > 1500  # the tool declaration dominates the prompt
    est = estimate(project)
    per_call = est.sides["baseline"].prompt_tokens / est.sides["baseline"].calls
    assert billed - 10 <= per_call <= billed + 10, (per_call, billed)


def test_max_cost_is_never_passed_with_tools_and_concurrency(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Requests dominated by a tool declaration, 8 calls in flight. A cap at the true cost of
    5 calls used to let 11 through (2.2x over); now the prompts alone are seen to exceed it.
    A cap just above the prompts of all 40 calls stops the run short of the cap."""
    openai_server.behaviour = lambda body, n: Reply(content='{"answer": "ok"}', prompt_tokens=_billed_prompt_tokens(body),
                                                    completion_tokens=12)
    project = _tool_project(tmp_path, openai_server, n=20)
    plan = api.plan_calls(project, with_keys=False)
    body = {"model": "evalrun-http-test", "messages": plan[0].request.messages, "tools": [BIG_TOOL],
            "response_format": SCHEMA_FORMAT}
    prompt_cost = _billed_prompt_tokens(body) * 5.0 / 1e6
    one_call = prompt_cost + 12 * 15.0 / 1e6
    from evalrun.errors import CouldNotMeasureError

    with pytest.raises(CouldNotMeasureError, match="refused before any call"):
        api.compare(project, run_dir=tmp_path / "five", cache="off", max_cost=5 * one_call)
    assert openai_server.count == 0
    cap = 40 * prompt_cost + 20 * (one_call - prompt_cost)  # every prompt, half the completions
    with pytest.raises(CouldNotMeasureError, match="budget reached"):
        api.compare(project, run_dir=tmp_path / "run", cache="off", max_cost=cap)
    rows = [json.loads(x) for x in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    spent = sum(r["cost_usd"] for r in rows)
    assert spent <= cap, f"spent ${spent:.5f} of a ${cap:.5f} cap over {len(rows)} calls"
    assert openai_server.count == len(rows) >= 30  # it holds calls back near the cap, it does not starve the run


def test_a_missing_usage_is_counted_with_the_tools(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(content='{"answer": "ok"}', usage=None)
    project = _tool_project(tmp_path, openai_server, n=2)
    api.compare(project, run_dir=tmp_path / "run", cache="off")
    bodies = openai_server.requests
    rows = [json.loads(x) for x in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    assert all(r["tokens_estimated"] for r in rows)
    billed = _billed_prompt_tokens(bodies[0])
    assert all(billed - 10 <= r["prompt_tokens"] <= billed + 10 for r in rows), [r["prompt_tokens"] for r in rows]


def test_shards_merged_equal_the_unsharded_run(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _fenced_for_three
    b, c = _project(tmp_path, openai_server, n=10)
    full = api.compare(api.load_project(b, c), run_dir=tmp_path / "full")
    s1 = api.compare(api.load_project(b, c, shard=(1, 2)), run_dir=tmp_path / "s1")
    s2 = api.compare(api.load_project(b, c, shard=(2, 2)), run_dir=tmp_path / "s2")
    n1 = s1.summary["run"]["n_cases"]
    assert 0 < n1 < 10 and n1 + s2.summary["run"]["n_cases"] == 10
    merged = api.merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    # The shards were answered from the cache the full run filled: same responses, same
    # recorded latencies — only the "cached" counters differ.
    def comparable(summary: dict[str, Any]) -> str:
        metrics = [{k: v for k, v in m.items() if k != "cached_calls"} for m in summary["metrics"]]
        return json.dumps({"metrics": metrics, "flips": summary["flips"]}, sort_keys=True)

    assert comparable(full.summary) == comparable(merged.summary)
    assert merged.summary["calls"]["baseline"]["total"] == 10
    assert merged.verdict_status == full.verdict_status


def test_merge_refuses_different_configs(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path / "a", openai_server, n=2)
    api.compare(api.load_project(b, c), run_dir=tmp_path / "ra")
    b2, c2 = _project(tmp_path / "b", openai_server, n=2, suite={"seed": 99})
    api.compare(api.load_project(b2, c2), run_dir=tmp_path / "rb")
    from evalrun.errors import UserInputError

    with pytest.raises(UserInputError) as info:
        api.merge([tmp_path / "ra", tmp_path / "rb"], tmp_path / "m")
    assert "refusing to merge" in str(info.value)


@pytest.mark.slow
def test_step_summary_is_appended(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path, openai_server, n=2)
    target = tmp_path / "step.md"
    target.write_text("previous\n")
    proc = _cli("compare", str(b), str(c), "--out", str(tmp_path / "run"), "-q", env={"GITHUB_STEP_SUMMARY": str(target)})
    assert proc.returncode == 3, proc.stderr  # 2 cases decide nothing: inconclusive
    text = target.read_text()
    assert text.startswith("previous\n") and "evalrun" in text
    assert proc.stderr == ""  # --quiet: nothing on stderr


@pytest.mark.slow
def test_ctrl_c_saves_finished_calls_and_exits_130(tmp_path: Path, openai_server: OpenAIServer) -> None:
    import signal
    import time

    # Slow enough that the interrupt lands mid-run even on a loaded machine (60 calls, 2 at a
    # time: ~15 s); the resume below runs at full speed.
    openai_server.behaviour = lambda req, n: Reply(content="{}", delay_s=0.5)
    b, c = _project(tmp_path, openai_server, n=30, suite={"concurrency": 2})
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run), "--no-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    journal = run / "journal.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    done = len(journal.read_text().splitlines())
    assert 4 <= done < 60
    openai_server.behaviour = lambda req, n: Reply(content="{}")
    before = openai_server.count
    proc2 = _cli("compare", str(b), str(c), "--resume", str(run), "--no-cache", "-q")
    assert proc2.returncode in (0, 1, 3), proc2.stderr
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().split("\n") if x]
    assert len(rows) == 60
    # Only the missing calls were made (calls in flight at the interrupt are not in the journal).
    assert openai_server.count - before == 60 - done


@pytest.mark.slow
def test_starting_the_same_run_again_resumes_it(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _fenced_for_three
    b, c = _project(tmp_path, openai_server, n=6)
    run = tmp_path / "run"
    project = api.load_project(b, c)
    api.run(project, run_dir=run, cache="off")  # calls made, journal written, no summary yet
    journal = run / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:5]))  # as if killed after 5 of 12 calls
    before = openai_server.count
    proc = _cli("compare", str(b), str(c), "--out", str(run), "--no-cache")
    assert proc.returncode == 3, proc.stderr  # 2 of 6 cases regress: inconclusive
    assert "resuming" in proc.stderr
    assert openai_server.count - before == 7
