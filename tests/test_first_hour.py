"""The first hour of a new user: each typical mistake stops early with its cause on the terminal.

Preflight (a wrong key, a model the server does not know), provider typos and hidden edits
caught by ``validate`` without a call, the error digest when errors exceed
``max_error_rate``, and the progress line's ETA.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.support.openai_server import OpenAIServer, Reply

from evalrun.cli import main
from evalrun.execution.progress import Progress, format_eta
from evalrun.project.loader import load_project, shard_cases
from evalrun.providers.model_strings import check_model_string
from evalrun.records import CallResult
from projectkit import case, variant, write_project

KEY_ENV = "EVALRUN_FIRST_HOUR_KEY"
KEY = "sk-first-hour-secret-0123456789"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _project(tmp_path: Path, server: OpenAIServer | None, *, n: int = 8, base_model: str = "openai/fh-base",
             cand_model: str = "openai/fh-cand", suite: dict[str, Any] | None = None,
             cand_extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    api_base = server.base_url if server is not None else "http://127.0.0.1:9/v1"
    common = {"api_base": api_base, "api_key_env": KEY_ENV, "timeout_s": 5, "params": {"max_tokens": 20}}
    base = variant("baseline", model=base_model, **common)
    cand = variant("candidate", model=cand_model, **common, **(cand_extra or {}))
    cand["versions"]["model_version"] = "m2"
    cases = [case(f"c{i:02d}") for i in range(n)]
    return write_project(tmp_path, cases=cases, baseline=base, candidate=cand, suite=suite)


def _candidate_fails_after_its_preflight(failure: Reply) -> Any:
    """A server behaviour: each model's first call (its side's preflight) answers, then every
    later candidate call gets ``failure``."""
    seen: set[str] = set()

    def behaviour(req: dict[str, Any], n: int) -> Reply:
        first = req["model"] not in seen
        seen.add(req["model"])
        if req["model"] == "fh-cand" and not first:
            return failure
        return Reply(content="fine")

    return behaviour


def _compare(b: Path, c: Path, tmp_path: Path) -> Any:
    return CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "run"), "--no-cache"])


def _by_model(server: OpenAIServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in server.requests:
        counts[r["model"]] = counts.get(r["model"], 0) + 1
    return counts


@pytest.mark.network
def test_wrong_key_stops_at_the_preflight_with_the_providers_message(tmp_path: Path, openai_server: OpenAIServer) -> None:
    def behaviour(req: dict[str, Any], n: int) -> Reply:
        if req["model"] == "fh-cand":  # the server echoes the key, as OpenAI's does (masked there)
            return Reply(status=401, error_message=f"Incorrect API key provided: {KEY}.", error_type="invalid_request_error")
        return Reply(content="fine")

    openai_server.behaviour = behaviour
    b, c = _project(tmp_path, openai_server)
    result = _compare(b, c, tmp_path)
    assert result.exit_code == 4, result.output
    assert "preflight: the first candidate call to openai/fh-cand" in result.stderr
    assert "(auth)" in result.stderr and "Incorrect API key provided" in result.stderr
    assert "check the key in the variable the config's api_key_env names" in result.stderr
    assert KEY not in result.output + result.stderr
    counts = _by_model(openai_server)
    assert counts.get("fh-cand") == 1  # one attempt: a 401 is never retried
    assert counts.get("fh-base", 0) <= 1  # at most the baseline's own preflight: its other 7 calls never made


@pytest.mark.network
def test_model_not_found_stops_at_the_preflight(tmp_path: Path, openai_server: OpenAIServer) -> None:
    def behaviour(req: dict[str, Any], n: int) -> Reply:
        if req["model"] == "fh-base":
            return Reply(status=404, error_message="The model `fh-base` does not exist", error_type="invalid_request_error",
                         error_code="model_not_found")
        return Reply(content="fine")

    openai_server.behaviour = behaviour
    b, c = _project(tmp_path, openai_server)
    result = _compare(b, c, tmp_path)
    assert result.exit_code == 4, result.output
    assert "preflight: the first baseline call to openai/fh-base" in result.stderr
    assert "does not exist" in result.stderr and "(bad_request)" in result.stderr
    assert _by_model(openai_server).get("fh-cand", 0) <= 1
    assert openai_server.count <= 2


@pytest.mark.network
def test_a_healthy_run_is_not_stopped_and_shows_no_digest(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path, openai_server)
    result = _compare(b, c, tmp_path)
    assert result.exit_code in (0, 3), result.output
    assert openai_server.count == 16
    assert "preflight" not in result.stderr and "failed calls by kind" not in result.stderr


def test_provider_typo_is_a_config_error_before_any_call(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path, openai_server, cand_model="opneai/fh-cand")
    for command in ("validate", "compare"):
        result = CliRunner().invoke(main, [command, str(b), str(c)])
        assert result.exit_code == 2, (command, result.output)
        assert "field model: unknown provider prefix 'opneai/' in 'opneai/fh-cand' (did you mean 'openai/'?)" in result.stderr
    assert openai_server.count == 0


@pytest.mark.parametrize(("model", "problem"), [
    ("openai/gpt-4o-mini", None),
    ("gpt-4o-mini", None),  # litellm infers the provider from its model map
    ("hosted_vllm/my-model", None),
    ("local/smollm2", None),  # an evalrun provider's string: its own business
    ("opneai/gpt-4o-mini", "did you mean 'openai/'?"),
    ("antrhopic/claude", "did you mean 'anthropic/'?"),
    ("my-own-model", "has no provider prefix"),
], ids=lambda v: str(v))
def test_model_strings_are_checked_offline(model: str, problem: str | None) -> None:
    found = check_model_string(model)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_validate_checks_without_litellm(tmp_path: Path) -> None:
    import subprocess
    import sys

    b, c = _project(tmp_path, None, cand_model="opneai/x")
    code = ("import sys; from click.testing import CliRunner; from evalrun.cli import main; "
            f"r = CliRunner().invoke(main, ['validate', {str(b)!r}, {str(c)!r}]); "
            "assert r.exit_code == 2, r.output; assert 'litellm' not in sys.modules, 'litellm imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_validate_names_an_unset_key_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b, c = _project(tmp_path, None)
    monkeypatch.delenv(KEY_ENV)
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 4, result.output
    assert f"field api_key_env: environment variable {KEY_ENV} is not set" in result.stderr
    assert "ok:" not in result.output


def test_validate_catches_a_hidden_retrieval_edit(tmp_path: Path) -> None:
    b, c = _project(tmp_path, None, cand_extra={"retrieval": {"top_k": 8}})
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 2, result.output
    assert "field versions.retrieval_version: hidden edit: retrieval" in result.stderr
    assert "bump versions.retrieval_version" in result.stderr


def test_validate_says_ok_to_a_clean_project(tmp_path: Path) -> None:
    b, c = _project(tmp_path, None)
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 8 cases") and result.stderr == ""


@pytest.mark.network
def test_errors_above_tolerance_show_their_kinds_and_a_message(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _candidate_fails_after_its_preflight(Reply(status=503, error_message="upstream overloaded, try later"))
    b, c = _project(tmp_path, openai_server)
    result = _compare(b, c, tmp_path)
    assert result.exit_code == 4, result.output
    assert "COULD_NOT_MEASURE" in result.stdout
    lines = result.stderr.splitlines()
    head = lines.index("failed calls by kind (after retries):")
    assert lines[head + 1].split() == ["server_error", "7", "(baseline", "0,", "candidate", "7)"]
    assert "e.g. candidate case" in lines[head + 2] and "upstream overloaded" in lines[head + 2]


def test_progress_line_shows_an_eta_from_fresh_calls() -> None:
    import io

    now = [100.0]
    stream = io.StringIO()
    progress = Progress(10, stream=stream, interval_s=0.0, clock=lambda: now[0])
    progress(CallResult(case_id="c0", side="baseline", sample=0, model="m", cached=True))
    assert "ETA" not in progress.line()  # cache hits say nothing about the rate
    for i in range(1, 5):
        now[0] += 2.0
        progress(CallResult(case_id=f"c{i}", side="candidate", sample=0, model="m"))
    # 4 fresh calls over 6 s since the first: 2 s each; 5 calls left -> 10 s
    assert progress.line().endswith("ETA 10s")
    assert [format_eta(s) for s in (42, 185, 3720)] == ["42s", "3m05s", "1h02m"]


def test_the_error_alarm_fires_once_when_failures_pass_max_error_rate_mid_run() -> None:
    import io

    fired: list[tuple[int, float]] = []
    progress = Progress(100, stream=io.StringIO(), max_error_rate=0.05,
                        error_alarm=lambda failed, rate: fired.append((len(failed), rate)))

    def call(i: int, ok: bool) -> CallResult:
        return CallResult(case_id=f"c{i:03d}", side="candidate", sample=0, model="m",
                          error_kind=None if ok else "server_error", error_message=None if ok else "503 upstream")

    progress(call(0, False))  # one early failure is not a rate
    for i in range(1, 19):
        progress(call(i, True))
    assert fired == []  # 19 calls: too few to judge
    progress(call(19, True))
    assert fired == []  # 1 of 20 = 5.0 %: not above the limit
    progress(call(20, False))
    assert fired == [(2, 2 / 21)]  # 2 of 21 = 9.5 % > 5 %: the failures so far
    for i in range(21, 40):
        progress(call(i, False))
    assert len(fired) == 1  # once per run


@pytest.mark.network
def test_the_error_alarm_reaches_the_terminal_before_the_run_ends(tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.behaviour = _candidate_fails_after_its_preflight(Reply(status=400, error_message="bad candidate param"))
    b, c = _project(tmp_path, openai_server, n=30, suite={"concurrency": 2})
    result = _compare(b, c, tmp_path)
    assert result.exit_code == 4, result.output
    lines = result.stderr.splitlines()
    alarm = next(i for i, line in enumerate(lines) if "calls failed so far" in line)
    assert "above max_error_rate 1.0%: unless that falls, the verdict will be COULD NOT MEASURE" in lines[alarm]
    assert lines[alarm + 1] == "failed calls by kind (after retries):"
    assert lines[alarm + 2].split()[0] == "bad_request" and "bad candidate param" in lines[alarm + 3]
    # The run went on: every call was made, and the final digest counts all of the failures.
    final = max(i for i, line in enumerate(lines) if line == "failed calls by kind (after retries):")
    assert final > alarm + 1
    assert lines[final + 1].split() == ["bad_request", "29", "(baseline", "0,", "candidate", "29)"]
    assert openai_server.count == 60


def _template_project(tmp_path: Path, *, user: str = "{{ question }}", system: str = "Be brief.",
                      policy: dict[str, Any] | None = None, second_case_vars: dict[str, Any] | None = None) -> tuple[Path, Path]:
    cand = variant("candidate", prompt={"system": system, "user": user}, policy=policy or {"refuse_harmful": True})
    base = variant("baseline", policy=policy or {"refuse_harmful": True})
    cases = [case("c00"), case("c01", vars=second_case_vars or {"question": "q"})]
    return write_project(tmp_path, cases=cases, baseline=base, candidate=cand)


@pytest.mark.parametrize(("kw", "line"), [
    ({"user": "{{ questoin }}"},
     "evals/candidate.yaml: field prompt.user: 'questoin' is undefined (rendering case c00): did you mean 'question'? (fix the template)"),
    ({"system": "Tone: {{ policy.tone }}"},
     "evals/candidate.yaml: field prompt.system: policy.tone is undefined: policy: in this file has refuse_harmful; "
     "add tone: under policy: (and bump versions.policy_version), or fix the template"),
    ({"system": "{% if policy.refuse_harmfull %}Refuse harm.{% endif %}"},
     "did you mean 'refuse_harmful'?"),
    ({"user": "{{ question }} {{ context }}"},
     "evals/candidate.yaml: field prompt.user: 'context' is undefined (rendering case c00): no case defines it: "
     "add context to the cases' vars, or remove it from the template"),
    ({"user": "{{ question }} {{ context }}", "second_case_vars": {"question": "q", "context": "ctx"}},
     "cases/cases.yaml: case c00: field vars: 'context' is undefined: template prompt.user of "),
], ids=["typo", "policy-key-missing", "policy-key-typo", "no-case-has-it", "this-case-lacks-it"])
def test_template_errors_blame_where_the_fix_belongs(tmp_path: Path, kw: dict[str, Any], line: str) -> None:
    b, c = _template_project(tmp_path, **kw)
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert line in result.stderr.replace(str(tmp_path) + "/", "")


def _subset_project(tmp_path: Path, server: OpenAIServer) -> tuple[Path, Path]:
    common = {"api_base": server.base_url, "api_key_env": KEY_ENV, "timeout_s": 5}
    base = variant("baseline", model="openai/fh-base", **common)
    cand = variant("candidate", model="openai/fh-cand", **common)
    cand["versions"]["model_version"] = "m2"
    cases = ([case(f"rep-{i}", cohort="fashion" if i % 2 else "travel", tags=["faq"], expect=[{"contains": {"value": "ok"}}])
              for i in range(6)]
             + [case(f"bad-{i}", kind="known_bad", cohort="fashion", tags=["safety"]) for i in range(2)])
    return write_project(tmp_path, cases=cases, baseline=base, candidate=cand)


@pytest.mark.network
def test_subset_runs_only_the_chosen_cases_and_says_so(tmp_path: Path, openai_server: OpenAIServer) -> None:
    import json

    openai_server.behaviour = lambda req, n: Reply(content="ok")
    b, c = _subset_project(tmp_path, openai_server)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(run), "--no-cache",
                                       "--cohort", "fash*", "--kind", "representative", "--tag", "faq"])
    assert result.exit_code in (0, 3), result.output
    asked = sorted({(r["messages"][-1]["content"]) for r in openai_server.requests})
    assert asked == ["q rep-1", "q rep-3", "q rep-5"] and openai_server.count == 6
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["run"]["subset"] == "--cohort 'fash*' --kind representative --tag faq"
    assert summary["run"]["n_cases"] == 3 and summary["run"]["n_suite_cases"] == 8
    warning = summary["verdict"]["warnings"][0]
    assert warning.startswith("subset run: 3 of 8 cases (--cohort 'fash*' --kind representative --tag faq)")
    assert "not the suite" in warning
    assert "! subset run: 3 of 8 cases" in result.stdout
    md = (run / "summary.md").read_text(encoding="utf-8")
    assert "**subset run: 3 of 8 cases (--cohort 'fash\\*' --kind representative --tag faq)" in md  # md_cell escapes the glob's star
    assert 'class="subset"><strong>subset run: 3 of 8 cases' in (run / "report.html").read_text(encoding="utf-8")
    rescored = CliRunner().invoke(main, ["rescore", str(run)])  # the run folder remembers its subset
    assert "! subset run: 3 of 8 cases" in rescored.stdout
    again = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "run2"), "--case", "rep-*"])
    assert json.loads((tmp_path / "run2" / "summary.json").read_text())["run"]["n_cases"] == 6, again.output


def test_a_filter_that_matches_nothing_is_a_usage_error(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _subset_project(tmp_path, openai_server)
    result = CliRunner().invoke(main, ["compare", str(b), str(c), "--cohort", "fasion"])
    assert result.exit_code == 2
    assert "no case of the suite is selected by --cohort fasion: --cohort 'fasion' matches nothing (did you mean 'fashion'?)" in result.stderr
    assert openai_server.count == 0


def test_an_empty_shard_is_a_usage_error_before_any_call(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Shards split by a hash of the case ids: 8 cases over 50 shards leave most shards empty."""
    b, c = _subset_project(tmp_path, openai_server)
    empty = next(i for i in range(1, 51) if not shard_cases(load_project(b, c).cases, i, 50))
    result = CliRunner().invoke(main, ["compare", str(b), str(c), "--shard", f"{empty}/50"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert f"--shard {empty}/50: no case of the 8 falls in this shard; use fewer shards" in result.stderr
    assert openai_server.count == 0


@pytest.mark.network
def test_rerun_failed_makes_only_the_failed_and_regressed_cases(tmp_path: Path, openai_server: OpenAIServer) -> None:
    import json

    broken = {"q rep-2", "q rep-4"}
    openai_server.behaviour = lambda req, n: Reply(
        content="nope" if req["model"] == "fh-cand" and req["messages"][-1]["content"] in broken else "ok")
    b, c = _subset_project(tmp_path, openai_server)
    first = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "r1"), "--no-cache"])
    assert first.exit_code in (1, 3), first.output
    openai_server.reset()
    openai_server.behaviour = lambda req, n: Reply(content="ok")  # the fix
    second = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "r2"), "--no-cache",
                                       "--rerun-failed", str(tmp_path / "r1")])
    assert second.exit_code in (0, 3), second.output
    # rep-2 and rep-4 regressed; the known-bad cases "failed" too (the server never refuses)
    assert sorted({r["messages"][-1]["content"] for r in openai_server.requests}) == ["q bad-0", "q bad-1", "q rep-2", "q rep-4"]
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text(encoding="utf-8"))
    assert summary["run"]["subset"] == f"--rerun-failed {tmp_path / 'r1'}: 4 failed"


def test_estimate_of_an_embedded_model_project_imports_no_litellm(tmp_path: Path) -> None:
    """`estimate` on local/ models counts with the model's own tokenizer: no litellm import (seconds)."""
    import subprocess
    import sys

    from evalrun.project.scaffold import init_project
    from evalrun.providers.local import local_extra_available

    if not local_extra_available():
        pytest.skip("the [local] extra is not installed")
    init_project(tmp_path / "p")
    code = ("import sys; from click.testing import CliRunner; from evalrun.cli import main; "
            "r = CliRunner().invoke(main, ['estimate', 'evals/baseline.yaml', 'evals/candidate.yaml']); "
            "assert r.exit_code == 0, r.output; print(r.output); "
            "assert 'litellm' not in sys.modules, 'litellm imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "p", capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["side", "calls", "cached", "prompt", "tokens", "completion", "max", "cost", "expected", "time"]
    assert lines[2].startswith("baseline") and "free (local)" in lines[2] and "unknown (no history)" in lines[2]
    assert any(line.startswith("power (before any call") for line in lines)
    assert "llama_context" not in proc.stderr


@pytest.mark.slow
@pytest.mark.local_model
def test_embedded_prompt_tokens_are_counted_as_the_model_counts_them(tmp_path: Path) -> None:
    """The estimate's count equals the usage the embedded model reports (was 8 % under with litellm's counter)."""
    import asyncio

    from evalrun.project.loader import load_project
    from evalrun.project.scaffold import init_project
    from evalrun.providers.base import ProviderRequest
    from evalrun.providers.local import LocalProvider, count_prompt_tokens, local_extra_available

    if not local_extra_available():
        pytest.skip("the [local] extra is not installed")
    init_project(tmp_path / "p")
    project = load_project(tmp_path / "p" / "evals" / "baseline.yaml", tmp_path / "p" / "evals" / "candidate.yaml")
    provider = LocalProvider()
    for c in project.cases[:2]:
        messages = project.renderers["candidate"].render(c)
        counted = count_prompt_tokens("local/smollm2", None, messages)
        answer = asyncio.run(provider.complete(ProviderRequest("local/smollm2", messages, params={"max_tokens": 1})))
        assert counted == answer.prompt_tokens, c.id


def test_expected_time_comes_from_the_caches_history() -> None:
    from evalrun.execution.expected_time import SideTiming, TimeEstimate

    hosted = TimeEstimate({"baseline": SideTiming(100, 40, 0.5, 200, False),
                           "candidate": SideTiming(100, 0, 1.0, 200, False)}, concurrency=8)
    assert hosted.sides["baseline"].work_s == 30.0 and hosted.sides["candidate"].work_s == 100.0
    assert hosted.total_s == pytest.approx(130.0 / 8)  # both sides' calls share the 8 slots
    serial = TimeEstimate({"baseline": SideTiming(64, 0, 0.7, 64, True), "candidate": SideTiming(64, 64, 0.7, 64, True)},
                          concurrency=4)
    assert serial.total_s == pytest.approx(64 * 0.7)  # the embedded model answers one at a time; cached calls are free
    unknown = TimeEstimate({"baseline": SideTiming(10, 0, None, 0, False), "candidate": SideTiming(10, 10, None, 0, False)},
                           concurrency=4)
    assert unknown.total_s is None and unknown.sides["candidate"].work_s == 0.0


@pytest.mark.network
def test_estimate_after_a_run_knows_the_time_and_the_cache(tmp_path: Path, openai_server: OpenAIServer) -> None:
    b, c = _project(tmp_path, openai_server)
    first = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "run")])
    assert first.exit_code in (0, 3), first.output
    est = CliRunner().invoke(main, ["estimate", str(b), str(c)])
    assert est.exit_code == 0, est.output
    rows = {line.split()[0]: line for line in est.stdout.splitlines()[2:4]}
    assert rows["baseline"].split()[1:3] == ["8", "8"] and "0 s (all cached)" in rows["baseline"]
    assert "expected time about 0 s" in est.stdout


@pytest.mark.network
def test_an_endpoint_failing_call_after_call_opens_its_circuit_and_the_terminal_says_so(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.behaviour = _candidate_fails_after_its_preflight(Reply(status=500, error_message="database is on fire"))
    b, c = _project(tmp_path, openai_server, n=40)
    result = _compare(b, c, tmp_path)
    assert result.exit_code == 4, result.output
    cand_requests = _by_model(openai_server)["fh-cand"]
    assert cand_requests < 40 * 2  # 39 failing calls x 2 attempts without the breaker
    lines = result.stderr.splitlines()
    head = lines.index("failed calls by kind (after retries):")
    digest = "\n".join(lines[head:])
    assert "circuit_open" in digest and "server_error" in digest
    # The breaker opens after 10 failures in a row; calls already in flight may add to the
    # count before a case is turned away (more of them with a faster client), so >= 10.
    found = re.search(r"not attempted: the last (\d+) calls to openai/fh-cand", digest)
    assert found is not None and int(found.group(1)) >= 10, digest
    assert "database is on fire" in digest
