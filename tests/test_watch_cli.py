"""`evalrun watch`, `evalrun plan` and `evalrun traffic` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from evalrun.cli import main
from evalrun.watch.serve import VerdictCache, make_server
from watchkit import AT, base_plan, make_log, write_plan

AT_ARG = AT.isoformat().replace("+00:00", "Z")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three generated logs: a regression, an A/A, and one with the regression elsewhere."""
    out = {}
    for name, spec in {
        "regressed": {"regression": {"parse_fail": 0.10}},
        "aa": {"regression": {}},
    }.items():
        d = tmp_path_factory.mktemp(name)
        log, _, _ = make_log(d, requests=60_000, seed=31, **spec)
        out[name] = write_plan(d / "rollout.yaml", base_plan(log.name))
    return out


@pytest.mark.parametrize(("log", "stage_patch", "code"), [
    ("aa", {}, 0),
    ("regressed", {}, 1),
    ("aa", {"min_samples": 10**6}, 3),
    ("aa", {"cohort": "tenant = 'nobody'"}, 4),
], ids=["continue", "rollback", "hold", "no-data"])
@pytest.mark.slow
def test_exit_codes(logs: dict[str, Path], tmp_path: Path, log: str, stage_patch: dict[str, Any], code: int) -> None:
    plan = yaml.safe_load(logs[log].read_text())
    plan["stages"][0].update(stage_patch)
    plan["source"]["path"] = str(logs[log].parent / plan["source"]["path"])
    path = write_plan(tmp_path / "rollout.yaml", plan)
    result = run("watch", str(path), "--stage", "canary", "--at", AT_ARG, "--out", str(tmp_path / "out"))
    assert result.exit_code == code, result.output
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["exit_code"] == code
    assert verdict["verdict"] == {0: "continue", 1: "rollback", 3: "hold", 4: "no_data"}[code]
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!doctype html>")
    assert "STAGE canary:" in result.output


@pytest.mark.parametrize(("patch", "field", "words"), [
    ({"alpha": 2}, "alpha", "less than 0.5"),
    ({"stages": [{"name": "c", "owner": "o", "cohort": "tenant = "}]}, "stages.0.cohort", "cannot parse"),
    ({"stages": [{"name": "c", "owner": "o", "cohort": "secret_col = 'x'"}]}, "stages.0.cohort", "unknown field 'secret_col'"),
    ({"stages": [{"name": "c", "owner": "o", "cohort": "tenant = 'a'; DROP TABLE x"}]}, "stages.0.cohort", "not supported"),
    ({"triggers": [{"metric": "parse_rate", "kind": "absolute", "min": 0.9}]}, "triggers.0.metric", "unknown metric 'parse_rate'"),
    ({"triggers": [{"metric": "parse_strict", "kind": "absolute", "min": 0.9, "max": 0.99}]}, "triggers.0", "exactly one of max or min"),
    ({"triggers": [{"metric": "cost_ratio", "kind": "ratio", "margin": 0.1}]}, "triggers.0", "margin does not apply to kind ratio"),
    ({"triggers": [{"metric": "parse_strict", "kind": "absolute", "min": 0.9, "fail_margin": 0}]}, "triggers.0",
     "fail_margin does not apply to kind absolute"),
    ({"triggers": [{"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03, "fail_margin": -0.01}]},
     "triggers.0.fail_margin", "greater than or equal to 0"),
    ({"triggers": [{"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 1.5}]}, "triggers.0",
     "fail_margin is a change in rate units"),
    ({"triggers": [{"metric": "latency_p95_ratio", "kind": "ratio", "max_increase": 0.3, "fail_margin": 0.1}]},
     "triggers.0", "fail_margin does not apply"),
    ({"triggers": [{"metric": "cost_ratio", "kind": "ratio", "max_decrease": 0.3, "fail_margin": 1}]}, "triggers.0",
     "fraction of the baseline below 1"),
    ({"labels": {"baseline": {"model_version": "m"}, "candidate": {"prompt_version": "p"}}}, "labels.baseline", "missing"),
    ({"labels": {"baseline": {"model_version": "m", "prompt_version": "p", "retrieval_version": "r", "policy_version": "v"},
                 "candidate": {"prompt_version": "p"}}}, "labels", "cannot be told apart"),
    ({"bucket": "fortnight"}, "bucket", "duration"),
    ({"surprise": 1}, "surprise", "unknown key"),
    ({"stages": [{"name": "c", "owner": "o", "min_duration": "3h", "max_duration": "2h"}]}, "stages.0", "max_duration"),
], ids=lambda v: str(v)[:30])
def test_plan_errors_are_one_line_naming_file_and_field(tmp_path: Path, patch: dict[str, Any], field: str, words: str) -> None:
    plan = base_plan("traffic.jsonl")
    plan.update(patch)
    path = write_plan(tmp_path / "rollout.yaml", plan)
    result = run("watch", str(path), "--stage", "canary")
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and f"field {field}" in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_unknown_stage_is_a_usage_error(logs: dict[str, Path]) -> None:
    result = run("watch", str(logs["aa"]), "--stage", "canry")
    assert result.exit_code == 2
    assert "no stage 'canry'" in result.stderr and "canary" in result.stderr


def test_bad_at_is_a_usage_error(logs: dict[str, Path]) -> None:
    result = run("watch", str(logs["aa"]), "--stage", "canary", "--at", "yesterday")
    assert result.exit_code == 2 and "--at" in result.stderr


@pytest.mark.slow
def test_json_format_prints_verdict_json(logs: dict[str, Path], tmp_path: Path) -> None:
    result = run("watch", str(logs["regressed"]), "--stage", "canary", "--at", AT_ARG, "--format", "json",
                 "--out", str(tmp_path))
    data = json.loads(result.stdout)
    assert data["verdict"] == "rollback" and data["owner"] == "dana"
    assert data == json.loads((tmp_path / "verdict.json").read_text())


@pytest.mark.slow
def test_traffic_then_watch_is_the_readme_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run("traffic", str(out), "--requests", "60000")
    assert result.exit_code == 0, result.output
    truth = json.loads((out / "truth.json").read_text())
    assert truth["candidate"]["parse_fail"] == 0.05 and truth["candidate"]["cohort"] == "staff"
    watched = run("watch", str(out / "rollout.yaml"), "--stage", "canary", "--at", "2026-11-30T12:00:00Z")
    assert watched.exit_code in (1, 3)
    assert "parse_strict" in watched.stdout


@pytest.mark.slow
def test_untrusted_text_is_inert_in_every_output(tmp_path: Path) -> None:
    log, _cols, _ = make_log(tmp_path, requests=20_000, seed=33, regression={"parse_fail": 0.3})
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>\x1b[31m\u202e'
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    with log.open("w") as fh:
        for r in rows:
            if r["tenant"] == "staff" and r.get("output"):
                r["output"] = evil + r["output"]
            fh.write(json.dumps(r) + "\n")
    plan = base_plan(log.name)
    plan["stages"][0]["owner"] = "<b>owner</b>"
    path = write_plan(tmp_path / "rollout.yaml", plan)
    result = run("watch", str(path), "--stage", "canary", "--at", AT_ARG, "--out", str(tmp_path / "o"))
    html = (tmp_path / "o" / "report.html").read_text()
    assert "<script>" not in html and "<img" not in html and "<b>owner" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\u202e" not in html and "\x1b" not in html
    import html as html_lib

    csp = html_lib.unescape(html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0])
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "script-src" not in csp
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "<b>owner" not in md
    assert "\x1b" not in result.stdout


def test_serve_answers_argo_and_flagger(tmp_path: Path) -> None:
    verdicts = {"canary": "rollback", "wider": "continue"}
    calls: list[str] = []

    def compute(stage: str) -> dict[str, Any]:
        calls.append(stage)
        return {"stage": stage, "verdict": verdicts[stage], "exit_code": 0, "reasons": [], "at": "t", "owner": "o"}

    server = make_server("127.0.0.1", 0, VerdictCache(compute, refresh_s=3600), set(verdicts))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(base + path, method=method, data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        assert get("/verdict/canary") == (200, compute("canary"))
        assert get("/gate/canary", "POST")[0] == 409
        assert get("/rollback/canary", "POST")[0] == 200
        assert get("/gate/wider")[0] == 200
        assert get("/rollback/wider")[0] == 409
        assert get("/verdict/nope")[0] == 404
        assert get("/healthz") == (200, {"ok": True})
        assert calls.count("canary") == 2  # one for the server (cached after), one direct above
    finally:
        server.shutdown()
        server.server_close()


def test_plan_from_a_stage1_run_maps_gate_rules_to_triggers(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_rollout_note import FULL_ROLLOUT, build  # a real Stage-1 summary, built offline

    summary, _, project = build(tmp_path / "proj", candidate_extra=FULL_ROLLOUT)
    for r in summary["verdict"]["rules"]:  # a floor the team set (no rule has one by default)
        if r["rule"] == "parse_strict" and r["scope"] == "overall":
            r["floor"] = 0.99
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(summary))
    manifest = {"candidate": {"config": project.candidate.config.model_dump(mode="json")}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    result = run("plan", str(run_dir), "--out", str(tmp_path / "rollout.yaml"))
    assert result.exit_code == 0, result.output
    plan = yaml.safe_load((tmp_path / "rollout.yaml").read_text())
    assert plan["labels"]["candidate"] == {"prompt_version": "shop-v2"}
    assert plan["labels"]["baseline"]["prompt_version"] == "shop-v1"
    overall = [r for r in summary["verdict"]["rules"] if r.get("scope") == "overall" and not r["rule"].startswith("label_")]
    unmeasured = {r["rule"] for r in overall if r["status"] == "not_applicable"}
    assert unmeasured == {"schema_valid", "tool_valid"}  # this suite has no schema or tool-call case
    assert {t["metric"] for t in plan["triggers"]} == {r["rule"] for r in overall} - unmeasured
    text = (tmp_path / "rollout.yaml").read_text()
    assert "# Not watched: schema_valid, tool_valid" in text
    # Both Stage-1 boundaries: roll back on any evident drop (fail_margin 0), safe within the
    # 3-point PASS margin; a floor stays an absolute trigger.
    assert {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.0} in plan["triggers"]
    assert {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.0} in plan["triggers"]
    assert {"metric": "parse_strict", "kind": "absolute", "min": 0.99} in plan["triggers"]
    # Ratio rules whose FAIL boundary is their margin keep one boundary.
    assert {"metric": "cost_ratio", "kind": "ratio", "max_increase": pytest.approx(0.1)} in plan["triggers"]
    # Errors: a comparative rollback trigger, and Stage 1's tolerance as a hold.
    assert {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0, "fail_margin": 0.0} in plan["triggers"]
    assert {"metric": "error_rate", "kind": "absolute", "max": 0.01, "severity": "hold"} in plan["triggers"]
    assert plan["stages"][0]["owner"] == "Dana (shop-assistant on-call)"
    assert plan["stages"][0]["cohort"] == "cohort IN ('north')"
    again = run("plan", str(run_dir), "--out", str(tmp_path / "rollout.yaml"))
    assert again.exit_code == 2 and "--force" in again.stderr


def test_help_and_validate_do_not_import_the_watch_engine() -> None:
    code = ("import sys; from click.testing import CliRunner; from evalrun.cli import main; "
            "CliRunner().invoke(main, ['--help']); "
            "print(sorted(m for m in ('ibis', 'duckdb', 'pyarrow', 'sqlglot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_both_boundaries_are_shown_in_every_output(tmp_path: Path) -> None:
    """A trigger with fail_margin shows its harm and its safe boundary in the terminal table,
    the reasons, summary.md, verdict.json and the report (a second line in its chart)."""
    log, _, _ = make_log(tmp_path, requests=8_000, seed=12, regression={"parse_fail": 0.3})
    plan = base_plan(log.name, triggers=[
        {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.02, "fail_margin": 0.0},
        {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1},
    ])
    path = write_plan(tmp_path / "rollout.yaml", plan)
    result = run("watch", str(path), "--stage", "canary", "--at", AT.isoformat(), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    header = next(ln for ln in result.stdout.splitlines() if ln.startswith("trigger"))
    assert header.split() == ["trigger", "severity", "status", "estimate", "[sequence]", "harm", "safe", "n", "cand/base"]
    parse_row = next(ln for ln in result.stdout.splitlines() if ln.startswith("parse_strict (vs_baseline)"))
    assert "< +0.00 pts  ≥ -2.00 pts" in parse_row
    cost_row = next(ln for ln in result.stdout.splitlines() if ln.startswith("cost_ratio (ratio)"))
    assert "> 1.100x     ≤ 1.100x" in cost_row  # one boundary does both jobs
    assert "strict parse rate drops measurably vs baseline (safe: within 2 pts)" in result.stdout
    assert "(harm: < +0.00 pts; safe: ≥ -2.00 pts;" in result.stdout
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| harm | safe |" in md and "| &lt; +0.00 pts | ≥ -2.00 pts |" in md
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    parse = next(t for t in verdict["triggers"] if t["metric"] == "parse_strict")
    assert parse["boundary"] == 0.0 and parse["safe_boundary"] == pytest.approx(-0.02)
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count('stroke="#067647"') >= 1  # the safe line, in the parse chart only
    assert "safe on the other side of the green dotted one" in html
