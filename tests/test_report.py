"""Tests for evalrun.report: every output file, untrusted-text safety, determinism, scale.

A realistic summary comes from the real pipeline (``load_project`` on a small project
written to tmp_path, fabricated ``CallResult``s, ``api.write_outputs``); no model is called.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
from collections.abc import Collection
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped

from evalrun import api
from evalrun.errors import UserInputError
from evalrun.project.loader import Project
from evalrun.records import SIDES, CallResult, ToolCall
from evalrun.report import (
    charts,
    fmt,
    md_cell,
    render_terminal,
    strip_control,
    terminal_safe,
    write_reports,
)
from evalrun.report.html import build_case_data, render_html
from evalrun.report.junit import render_junit
from evalrun.report.markdown import render_markdown
from evalrun.report.sanitize import json_for_script

CREATED = "2026-01-01 00:00:00 UTC"
FIXTURES = Path(__file__).parent / "fixtures" / "report"
PAYLOADS: list[str] = json.loads((FIXTURES / "payloads.json").read_text(encoding="utf-8"))
PAYLOAD = " ".join(PAYLOADS)
KINDS = ("representative", "known_bad", "format_sensitive")
EXPECT: dict[str, list[Any]] = {
    "representative": [{"contains": {"value": "ok"}}],
    "known_bad": [],  # known-bad cases get an implicit refusal check
    "format_sensitive": ["json"],
}

# --------------------------------------------------------------------------- project builders


def _variant(name: str, **over: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "name": name,
        "suite": "suite.yaml",
        "model": "openai/x",
        "prompt": {"system": "Answer briefly.", "user": "{{ q }}"},
        "versions": {"model_version": "m1", "prompt_version": "p1", "retrieval_version": "none", "policy_version": "none"},
    }
    for k, val in over.items():
        if isinstance(val, dict) and isinstance(v.get(k), dict):
            v[k] = {**v[k], **val}
        else:
            v[k] = val
    return v


def make_project(
    root: Path,
    cases: list[dict[str, Any]],
    *,
    baseline: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
    suite: dict[str, Any] | None = None,
    same_file: bool = False,
    jsonl: bool = False,
) -> Project:
    """Write evals/{baseline,candidate,suite}.yaml and cases/ under ``root``; load them."""
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "cases").mkdir(exist_ok=True)
    (root / "evals" / "baseline.yaml").write_text(yaml.safe_dump(_variant("base", **(baseline or {}))), encoding="utf-8")
    (root / "evals" / "candidate.yaml").write_text(
        yaml.safe_dump(_variant("cand", **(candidate or {}))), encoding="utf-8"
    )
    case_file = "cases.jsonl" if jsonl else "cases.yaml"
    if jsonl:
        text = "".join(json.dumps(c) + "\n" for c in cases)
    else:
        text = yaml.safe_dump(cases, allow_unicode=True)
    (root / "cases" / case_file).write_text(text, encoding="utf-8")
    suite_cfg = {"name": "demo", "cases": [f"../cases/{case_file}"], **(suite or {})}
    (root / "evals" / "suite.yaml").write_text(yaml.safe_dump(suite_cfg), encoding="utf-8")
    cand = root / "evals" / ("baseline.yaml" if same_file else "candidate.yaml")
    return api.load_project(root / "evals" / "baseline.yaml", cand)


def standard_cases(n: int = 40, *, payloads: bool = True) -> list[dict[str, Any]]:
    """A mix of the three case kinds; with ``payloads``, untrusted text in every free field."""
    out = []
    for i in range(n):
        kind = KINDS[i % 3]
        case: dict[str, Any] = {
            "id": f"c{i:03d}",
            "kind": kind,
            "cohort": ("vip", "general", "edge")[i % 3],
            "vars": {"q": f"question {i}"},
            "expect": EXPECT[kind],
        }
        if payloads and i % 5 == 0:
            case["cohort"] = "<b>cohort</b>|x" if i % 2 == 0 else case["cohort"]
            case["vars"]["q"] = f"question {i} {PAYLOAD}"
            case["tags"] = ["<script>alert(1)</script>", "t|ag"]
            case["description"] = PAYLOAD
        out.append(case)
    return out


def fabricate(
    project: Project,
    *,
    regress: Collection[str] = (),
    improve: Collection[str] = (),
    errors: dict[str, str] | None = None,
    cached: Collection[str] = (),
    flaky: Collection[str] = (),
    cost: tuple[str, float | None] = ("unpriced", None),
    extra: str = PAYLOAD,
    long_output: dict[str, str] | None = None,
) -> list[CallResult]:
    """One CallResult per (case, side, sample), passing unless the case is listed.

    ``regress``: baseline passes, candidate fails; ``improve``: the reverse; ``flaky``:
    the candidate fails sample 0 only; ``errors`` maps a case id to the candidate's error
    kind; ``cached`` marks candidate calls cached.
    """
    errors = errors or {}
    long_output = long_output or {}
    results = []
    for idx, case in enumerate(project.cases):
        for sample in range(project.suite.config.samples):
            for side in SIDES:
                fail = (
                    (case.id in regress and side == "candidate")
                    or (case.id in improve and side == "baseline")
                    or (case.id in flaky and side == "candidate" and sample == 0)
                )
                if case.kind == "known_bad":
                    out = "Sure, here is how." if fail else f"I can't help with that. {extra}"
                elif case.kind == "format_sensitive":
                    out = f"Here: {extra}" if fail else json.dumps({"answer": extra})
                else:
                    out = f"no {extra}" if fail else f"ok {extra}"
                out = long_output.get(case.id, out)
                r = CallResult(
                    case_id=case.id,
                    side=side,
                    sample=sample,
                    model="openai/x",
                    output=out,
                    finish_reason="stop",
                    prompt_tokens=20 + idx % 7,
                    completion_tokens=10 + (idx * 7919 + (3 if side == "candidate" else 0)) % 40,
                    latency_s=0.2 + ((idx * 31 + sample) % 17) / 10 + (0.05 if side == "candidate" else 0.0),
                    cost_status=cost[0],  # type: ignore[arg-type]
                    cost_usd=cost[1],
                    attempts=1,
                    request_key=f"{case.id}:{side}:{sample}",
                )
                if side == "candidate" and case.id in errors:
                    r.output = None
                    r.error_kind = errors[case.id]
                    r.error_message = f"upstream said {extra}"
                    r.latency_s = None
                    r.completion_tokens = None
                    r.attempts = 4
                if side == "candidate" and case.id in cached:
                    r.cached = True
                if case.id == "c003" and side == "candidate":
                    r.tool_calls = [ToolCall(name="lookup<script>", arguments=json.dumps({"q": extra}), id="t1")]
                results.append(r)
    return results


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The main 40-case run: regressions, an improvement, an error, cached calls, payloads."""
    root = tmp_path_factory.mktemp("proj")
    project = make_project(
        root,
        standard_cases(),
        baseline={"versions": {"model_version": "m1"}},
        candidate={
            "prompt": {"system": f"Answer briefly. Never reveal {PAYLOADS[0]}", "user": "{{ q }}"},
            "versions": {"model_version": "m2", "policy_version": "</textarea><script>alert(1)</script>"},
            "api_base": "https://api.example.com/v1",
            "retrieval": {"note": PAYLOAD},
        },
        suite={"gate": {"critical_cohorts": ["vip"], "max_error_rate": 0.05, "bootstrap_samples": 200}},
    )
    results = fabricate(
        project,
        regress={"c001", "c002", "c005", "c008"},
        improve={"c010"},
        errors={"c004": "timeout"},
        cached={"c006", "c007"},
    )
    run_dir = root / "run"
    run_dir.mkdir()
    outcome = api.write_outputs(project, run_dir, results, created=CREATED)
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").split("\n") if line]
    return {
        "project": project,
        "results": results,
        "outcome": outcome,
        "summary": outcome.summary,
        "rows": rows,
        "run_dir": run_dir,
        "html": (run_dir / "report.html").read_text(encoding="utf-8"),
        "md": (run_dir / "summary.md").read_text(encoding="utf-8"),
    }


# --------------------------------------------------------------------------- HTML inspection


class TagCollector(HTMLParser):
    """Every real start tag with its attributes, and the raw text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None


ALLOWED_TAGS = {
    "html", "head", "article", "b", "meta", "title", "style", "body", "nav", "a", "main", "header", "div", "h1", "h2", "h3",
    "h4", "span", "ul", "li", "p", "dl", "dt", "dd", "section", "table", "thead", "tbody", "tr", "th", "td",
    "br", "pre", "details", "summary", "svg", "line", "rect", "circle", "polygon", "text", "form", "label",
    "select", "option", "input", "noscript", "script",
}  # fmt: skip


def parse_html(text: str) -> TagCollector:
    p = TagCollector()
    p.feed(text)
    p.close()
    return p


def case_blob(text: str) -> dict[str, Any]:
    p = parse_html(text)
    blobs = [body for attrs, body in p.scripts if attrs.get("id") == "case-data"]
    assert len(blobs) == 1
    data: dict[str, Any] = json.loads(blobs[0])
    return data


def assert_inert_html(text: str) -> None:
    """No injected element, event handler, script URL or external resource anywhere."""
    p = parse_html(text)
    for tag, attrs in p.tags:
        assert tag in ALLOWED_TAGS, f"unexpected element <{tag}>"
        for name, value in attrs:
            assert not name.startswith("on"), f"event handler attribute {name} on <{tag}>"
            v = (value or "").strip().lower()
            assert not v.startswith("javascript:"), (tag, name, value)
            assert "http://" not in v and "https://" not in v and not v.startswith("//"), (tag, name, value)
    # Exactly our two scripts: the inert JSON blob and the page's own code.
    assert [a.get("type") for a, _ in p.scripts] == ["application/json", None]
    assert "<script>alert" not in text
    assert re.search(r"<[a-zA-Z][^>]*\sonerror\s*=", text) is None
    assert "\x1b" not in text and "\x07" not in text
    assert "url(" not in text.split("</style>")[0]


# --------------------------------------------------------------------------- files


def test_write_reports_writes_every_file(built: dict[str, Any]) -> None:
    files = built["outcome"].files
    for key in ("summary_json", "summary_md", "html", "junit", "results"):
        assert files[key].exists() and files[key].stat().st_size > 0, key
    assert files["html"].name == "report.html" and files["junit"].name == "junit.xml"
    text = files["summary_json"].read_text(encoding="utf-8")
    assert json.loads(text) == built["summary"]
    assert text == json.dumps(built["summary"], sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_write_reports_returns_paths(built: dict[str, Any], tmp_path: Path) -> None:
    paths = write_reports(built["project"], built["summary"], built["rows"], tmp_path / "again")
    assert set(paths) == {"summary_json", "summary_md", "html", "junit"}
    assert all(p.parent == tmp_path / "again" and p.exists() for p in paths.values())


# --------------------------------------------------------------------------- HTML content


def test_html_has_no_external_url(built: dict[str, Any]) -> None:
    html = built["html"]
    assert_inert_html(html)
    # The URL in an output / the config is shown as text, never as a link or a resource.
    assert "https://api.example.com/v1" in html
    assert re.search(r"""(?:src|href|action|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", html.split('id="case-data"')[0]) is None


def test_html_sections_and_order(built: dict[str, Any]) -> None:
    html = built["html"]
    marks = ['id="verdict"', 'id="rules"', 'id="labels"', 'id="metrics"', 'id="slices"', 'id="flips"',
             'id="distributions"', 'id="cases"']  # fmt: skip
    positions = [html.index(m) for m in marks]
    assert positions == sorted(positions)
    assert "FAIL" in html and "exit code 1" in html and CREATED in html
    # Every rule is in the rule table, with its status.
    assert html.count('<tr class="r-') == len(built["summary"]["verdict"]["rules"])
    assert "A/A run" not in html
    assert 'class="changed"' in html  # model_version and policy_version changed
    assert 'class="add"' in html and 'class="del"' in html  # config / template diff
    assert "critical (gated)" in html and "exploratory (BH-adjusted)" in html
    assert html.count('<svg class="ic"') >= 8  # interval charts
    assert html.count('<svg class="hist"') == 2  # latency and completion tokens
    assert "stroke-dasharray=\"3,2\"" in html  # a rule margin drawn on a chart


def test_html_payloads_are_inert(built: dict[str, Any]) -> None:
    html = built["html"]
    assert_inert_html(html)
    blob_raw = html.split('id="case-data">', 1)[1].split("</script>", 1)[0]
    assert "\\u003c/script" in blob_raw and "</script" not in blob_raw
    assert "<" not in blob_raw and ">" not in blob_raw and "&" not in blob_raw
    # Template syntax is shown literally, never evaluated (by jinja2 or anything else).
    data = case_blob(html)
    outputs = [s["c"]["out"] for c in data["cases"] for s in c["samples"] if s["c"] and s["c"]["out"]]
    assert any("{{ 7*7 }}" in o and "{% raw %}" in o for o in outputs)
    assert all("\x1b" not in o and "\x07" not in o for o in outputs)
    assert any("[31mred" not in o and "red" in o for o in outputs)
    # The payload text survives (escaped) in server-rendered parts too: cohort names, labels.
    assert "&lt;b&gt;cohort&lt;/b&gt;|x" in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_payloads_in_case_ids_are_inert(built: dict[str, Any]) -> None:
    """Case ids are validated on load; a summary from elsewhere still must not inject."""
    evil = "</script><img src=x onerror=alert(1)>{{ 7*7 }}\x1b[31m"
    summary = copy.deepcopy(built["summary"])
    rows = copy.deepcopy(built["rows"])
    for r in rows:
        if r["case_id"] == "c001":
            r["case_id"] = evil
    for f in summary["flips"]["regressions"]:
        if f["case_id"] == "c001":
            f["case_id"] = evil
    html = render_html(built["project"], summary, rows)
    assert_inert_html(html)
    assert 'href="#case-%3C%2Fscript%3E%3Cimg' in html
    ids = [c["id"] for c in case_blob(html)["cases"]]
    assert "</script><img src=x onerror=alert(1)>{{ 7*7 }}" in ids
    md = render_markdown(summary)
    assert_markdown_safe(md)
    assert "\x1b" not in render_terminal(summary)


def test_html_is_deterministic(built: dict[str, Any], tmp_path: Path) -> None:
    first = render_html(built["project"], built["summary"], built["rows"])
    second = render_html(built["project"], copy.deepcopy(built["summary"]), list(reversed(built["rows"])))
    assert first == second
    assert first == built["html"]
    # A full second write (scoring and statistics again) gives the same bytes.
    run2 = tmp_path / "run2"
    run2.mkdir()
    api.write_outputs(built["project"], run2, built["results"], created=CREATED)
    assert (run2 / "report.html").read_bytes() == (built["run_dir"] / "report.html").read_bytes()
    assert (run2 / "summary.md").read_bytes() == (built["run_dir"] / "summary.md").read_bytes()
    assert (run2 / "junit.xml").read_bytes() == (built["run_dir"] / "junit.xml").read_bytes()


def test_html_cost_unpriced_never_zero_dollars(built: dict[str, Any]) -> None:
    # compare's note says "(never shown as $0)": that phrase is the only "$0" allowed.
    html = built["html"].replace("never shown as $0", "")
    assert "unpriced" in html
    assert "$0" not in html
    data = case_blob(html)
    costs = {m[1] for c in data["cases"] for s in c["samples"] for x in (s["b"], s["c"]) if x for m in x["meta"] if m[0] == "cost"}
    assert costs == {"unpriced"}
    assert "$0" not in built["md"].replace("never shown as $0", "") and "unpriced" in built["md"]
    assert "$0" not in render_terminal(built["summary"])


def test_html_calls_errors_and_cached(built: dict[str, Any]) -> None:
    html = built["html"]
    assert "2 cached (latency recorded earlier)" in html
    assert "timeout 1" in html
    assert "not enough calls" in html  # p95 from 40 calls has no order-statistic interval
    data = case_blob(html)
    c004 = next(c for c in data["cases"] if c["id"] == "c004")
    assert c004["err"] is True and c004["samples"][0]["c"]["err"].startswith("timeout: ")
    c006 = next(c for c in data["cases"] if c["id"] == "c006")
    assert ["cached", "yes (latency recorded earlier)"] in c006["samples"][0]["c"]["meta"]
    c003 = next(c for c in data["cases"] if c["id"] == "c003")
    assert c003["samples"][0]["c"]["tools"][0][0] == "lookup<script>"


def test_html_flips_link_to_cases(built: dict[str, Any]) -> None:
    html = built["html"]
    flips = built["summary"]["flips"]
    assert [f["case_id"] for f in flips["regressions"]] and [f["case_id"] for f in flips["improvements"]] == ["c010"]
    flips_html = html[html.index('id="flips"') : html.index('id="distributions"')]
    first_reg = flips_html.index('href="#case-' + flips["regressions"][0]["case_id"] + '"')
    assert first_reg < flips_html.index('href="#case-c010"')
    # The case browser lists regressions first, then improvements.
    statuses = [c["st"] for c in case_blob(html)["cases"]]
    assert statuses[: len(flips["regressions"])] == ["regressed"] * len(flips["regressions"])
    assert statuses[len(flips["regressions"])] == "improved"
    regressed = {c["id"] for c in case_blob(html)["cases"] if c["st"] == "regressed"}
    assert regressed == {f["case_id"] for f in flips["regressions"]}


def test_html_case_browser_structure(built: dict[str, Any]) -> None:
    html = built["html"]
    data = case_blob(html)
    assert len(data["cases"]) == 40 and data["page_size"] == 50
    case = next(c for c in data["cases"] if c["id"] == "c000")
    assert case["tags"] == sorted(["<script>alert(1)</script>", "t|ag"])
    assert '"q"' in case["vars"]
    side = case["samples"][0]["b"]
    assert side["checks"] and side["checks"][0][0] == "contains" and side["checks"][0][1] is True
    js = parse_html(html).scripts[1][1]
    assert "innerHTML" not in js and "textContent" in js and "eval(" not in js
    assert 'id="f-kind"' in html and 'id="f-cohort"' in html and 'id="f-status"' in html and 'id="f-text"' in html
    assert "<noscript>" in html
    # The CSP allows exactly the page's own script and style, by hash.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None
    policy = csp.group(1).replace("&#39;", "'")
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    for source in (js, style):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy


def test_html_truncates_long_outputs(tmp_path: Path) -> None:
    project = make_project(tmp_path, standard_cases(6, payloads=False), suite={"max_response_chars": 100})
    results = fabricate(project, long_output={"c000": "x" * 250})
    summary = api.summarize(project, api.sort_results(results), api.score(project, api.sort_results(results)), CREATED).to_json()
    ordered = api.sort_results(results)
    rows = api.result_rows(project, ordered, api.score(project, ordered))
    data = build_case_data(project, summary, rows)
    side = next(c for c in data["cases"] if c["id"] == "c000")["samples"][0]["b"]
    assert side["out"] == "x" * 100 and side["cut"] == 150
    html = render_html(project, summary, rows)
    assert "(truncated: " in html  # the note the browser shows


def test_html_aa_mode_note(tmp_path: Path) -> None:
    project = make_project(tmp_path, standard_cases(9, payloads=False), same_file=True)
    assert project.aa_mode
    results = fabricate(project)
    outcome = api.write_outputs(project, tmp_path, results, created=CREATED)
    note = "A/A run: both sides use the same configuration; differences measure the noise floor"
    assert note in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert note in (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert note in render_terminal(outcome.summary)
    assert "Identical on both sides." in (tmp_path / "report.html").read_text(encoding="utf-8")


# compare.ratio_metric divides 0/0 for free local calls (its warning, not the report's).
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_html_priced_and_local_cost(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", standard_cases(9, payloads=False))
    priced = api.write_outputs(project, _mk(tmp_path / "a"), fabricate(project, cost=("priced", 0.0001234567)), CREATED)
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "$0.000123457" in html and "unpriced" not in html.split('id="case-data"')[0].split('id="metrics"')[1]
    assert priced.summary["metrics"]
    api.write_outputs(project, _mk(tmp_path / "b"), fabricate(project, cost=("local", 0.0)), CREATED)
    html = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert "local (free)" in html and "$0" not in html.replace("never shown as $0", "")


def _mk(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def test_html_multiple_samples_and_flaky(tmp_path: Path) -> None:
    project = make_project(tmp_path, standard_cases(12, payloads=False), suite={"samples": 3})
    results = fabricate(project, regress={"c001"}, flaky={"c000", "c003"})
    outcome = api.write_outputs(project, tmp_path, results, created=CREATED)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert_inert_html(html)
    assert "Consistency across samples" in html and "flaky case/side pair(s)" in html
    assert "67% pass" in html  # a flaky case's candidate passes 2 of 3 samples
    data = case_blob(html)
    c000 = next(c for c in data["cases"] if c["id"] == "c000")
    assert [s["n"] for s in c000["samples"]] == [0, 1, 2]
    assert c000["samples"][0]["c"]["pass"] is False and c000["samples"][1]["c"]["pass"] is True
    assert outcome.summary["flaky"]
    assert_markdown_safe((tmp_path / "summary.md").read_text(encoding="utf-8"))


def test_could_not_measure(tmp_path: Path) -> None:
    project = make_project(tmp_path, standard_cases(9, payloads=False))
    results = fabricate(project, errors={f"c00{i}": "rate_limited" for i in range(5)})
    outcome = api.write_outputs(project, tmp_path, results, created=CREATED)
    assert outcome.verdict_status == "COULD_NOT_MEASURE"
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "b-cnm" in html and "COULD_NOT_MEASURE" in html and "rate_limited 5" in html
    assert (tmp_path / "summary.md").read_text(encoding="utf-8").startswith("## ⛔ evalrun: COULD NOT MEASURE (exit 4)")
    assert render_terminal(outcome.summary).startswith("VERDICT: COULD_NOT_MEASURE (exit 4)")


# --------------------------------------------------------------------------- markdown


def _unescaped(text: str) -> str:
    """``text`` with every markdown backslash escape (``\\x``) removed."""
    return re.sub(r"\\.", "", text)


OWN_TAGS_RE = re.compile(r"</?(?:details|summary|table|tr|th|td|pre)>")
"""The only raw HTML summary.md writes itself (the collapsed examples), attribute-free."""
GITHUB_ELEMENTS = {"h2", "p", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "strong", "details",
                   "summary", "pre", "a"}  # fmt: skip


def render_like_github(md: str) -> str:
    """summary.md rendered as GitHub renders a comment: CommonMark + tables, raw HTML kept."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": True}).enable("table").render(md))


def assert_markdown_safe(md: str, *, links: int = 0) -> None:
    """No markup from untrusted text: only summary.md's own tags, escaped cells, whole rows."""
    # <pre> bodies are model output, HTML-escaped and on one line; the rendering check
    # below proves they stay text.
    bare = _unescaped(OWN_TAGS_RE.sub("", re.sub(r"<pre>.*?</pre>", "", md)))
    assert all("\n" not in pre for pre in re.findall(r"<pre>.*?</pre>", md, re.S))
    for ch in "[]<>`":
        assert bare.count(ch) == (links if ch in "[]" else 0), f"unescaped {ch!r} in summary.md"
    assert bare.count("](") == links
    assert "\x1b" not in md and "\x07" not in md
    # Every table row has exactly as many cells as its header.
    header_cells: int | None = None
    for line in md.splitlines():
        if not line.startswith("|"):
            header_cells = None
            continue
        cells = len(_unescaped(line).split("|")) - 2
        if header_cells is None:
            header_cells = cells
        assert cells == header_cells, line
    # Rendered: only the expected elements, every <details> closed, no link but the report's.
    rendered = render_like_github(md)
    tags = TagCollector()
    tags.feed(rendered)
    assert {t for t, _ in tags.tags} <= GITHUB_ELEMENTS, {t for t, _ in tags.tags} - GITHUB_ELEMENTS
    assert sum(1 for t, _ in tags.tags if t == "a") == links
    assert rendered.count("<details>") == rendered.count("</details>")


def test_markdown_is_a_short_pr_comment(built: dict[str, Any]) -> None:
    md = built["md"]
    assert_markdown_safe(md)
    lines = md.splitlines()
    assert lines[0] == "## ❌ evalrun: FAIL (exit 1) · demo"
    before_details = lines[: next(i for i, line in enumerate(lines) if line.startswith("<details>"))]
    assert len(before_details) <= 30, len(before_details)
    assert len(md) < 65_536
    assert "Full report: report.html in the run folder" in md
    assert "baseline base (openai/x) → candidate cand (openai/x)" in md
    assert "model_version m1 → m2" in md
    # One table (the rules that did not pass), no metrics table repeating it.
    tables = [line for line in lines if line.startswith("| ---")]
    assert len(tables) == 1
    assert "−" in md and " pts \\[" in md  # "−3.0 pts [−7.1, +1.2]" style intervals
    assert "**Flipped cases:** 4 regressed, 1 improved." in md
    assert "Calls: baseline 40 (0 errors, 0 cached); candidate 40 (1 errors — timeout 1, 2 cached)." in md
    assert "refused less often in the candidate: c001" in md  # warnings, collapsed


def test_markdown_examples_show_both_outputs_and_the_failing_check(built: dict[str, Any]) -> None:
    md, rows = built["md"], built["rows"]
    rendered = render_like_github(md)
    blocks = re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", rendered, re.S)
    examples = [(s, b) for s, b in blocks if "warning" not in s]
    regressed = {f["case_id"] for f in built["summary"]["flips"]["regressions"]}
    assert len(examples) == min(3, len(regressed))
    for summary_text, body in examples:
        case_id = html_unescape(summary_text).split(" · ")[0]
        assert case_id in regressed
        pres = [html_unescape(x) for x in re.findall(r"<pre>(.*?)</pre>", body, re.S)]
        by_side = {r["side"]: r for r in rows if r["case_id"] == case_id and r["sample"] == 0}
        assert len(pres) == 2
        for text, side in zip(pres, ("baseline", "candidate"), strict=True):
            want = strip_control(by_side[side]["output"] or "")
            assert text.startswith(want[:500]), (side, text[:80], want[:80])
        failed = [c for c in by_side["candidate"]["score"]["checks"] if not c["passed"]]
        assert "Candidate failed: " in body and failed and failed[0]["check"] in body


@pytest.mark.parametrize(
    "output",
    [
        "```\nfenced\n```\n\n# not a heading",
        "</details>\n\n**bold** [link](https://evil.example) <img src=x onerror=alert(1)>",
        "</pre></td></tr></table>\n\n</details>\n\n<script>alert(1)</script>",
        "line\n\n\n    indented code?\n- list item\n| a | b |\n| --- | --- |",
    ],
    ids=["fence", "close-details", "close-table", "blank-lines"],
)
def test_hostile_outputs_cannot_break_the_comment(tmp_path: Path, output: str) -> None:
    project = make_project(tmp_path, standard_cases(9, payloads=False))
    results = fabricate(project, extra="x")
    for r in results:
        if r.case_id == "c000" and r.side == "candidate":
            r.output = output  # no "ok" in it: the case regresses
    api.write_outputs(project, tmp_path, results, created=CREATED)
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert_markdown_safe(md)
    rendered = render_like_github(md)
    (body,) = re.findall(r"<details><summary>c000 .*?</summary>(.*?)</details>", rendered, re.S)
    pres = [html_unescape(x) for x in re.findall(r"<pre>(.*?)</pre>", body, re.S)]
    assert pres == ["ok x", output]  # shown whole, as text
    assert "<script" not in rendered and "<img" not in rendered and "<h1" not in rendered
    assert "<code>" not in rendered


def test_report_url_links_the_report_and_is_checked(built: dict[str, Any]) -> None:
    url = "https://github.com/o/r/actions/runs/7/artifacts/9"
    md = render_markdown(built["summary"], built["rows"], report_url=url)
    assert md.rstrip().endswith(f"[Full report (report.html)]({url})")
    assert_markdown_safe(md, links=1)
    odd = render_markdown(built["summary"], report_url="https://ci.example/a b)(c")
    assert "(https://ci.example/a%20b%29%28c)" in odd
    for bad in ("javascript:alert(1)", "report.html", "ftp://x/y", "https://"):
        with pytest.raises(UserInputError, match="report-url"):
            render_markdown(built["summary"], report_url=bad)


def test_markdown_caps_long_lists(built: dict[str, Any]) -> None:
    rules = [
        {"rule": "pass_rate", "scope": f"cohort:c{i}|<x>", "metric": "pass_rate", "status": "fail", "observed": -0.1,
         "ci": [-0.2, 0.0], "margin": -0.02, "reason": "x" * 5000, "trigger": "t"}
        for i in range(300)
    ]  # fmt: skip
    flips = [{"case_id": f"id{i}", "kind": "k", "cohort": "c", "baseline": 1.0, "candidate": 0.0} for i in range(5000)]
    summary = copy.deepcopy(built["summary"])
    summary["verdict"].update({"status": "FAIL", "exit_code": 1, "reasons": ["r|" * 10_000] * 300, "rules": rules,
                               "warnings": ["w<" * 5000] * 300})
    summary["flips"] = {"regressions": flips, "improvements": []}
    md = render_markdown(summary, built["rows"] * 3)
    assert len(md) < 65_536
    assert "and 288 more (see the report)" in md and "and 290 more (see the report)" in md
    assert "**Flipped cases:** 5000 regressed, 0 improved." in md
    assert_markdown_safe(md)


# --------------------------------------------------------------------------- junit


def junit_suites(path: Path) -> list[Any]:
    """The <testsuite>s of a JUnit file as junitparser reads them (root may be either)."""
    xml: Any = JUnitXml.fromfile(str(path))
    return list(xml) if xml._tag == "testsuites" else [xml]


def test_junit_parses_with_expected_testcases(built: dict[str, Any]) -> None:
    summary = built["summary"]
    suites = junit_suites(built["run_dir"] / "junit.xml")
    assert [s.name for s in suites] == ["evalrun"]
    cases: list[Any] = list(suites[0])
    rules = summary["verdict"]["rules"]
    regressions = summary["flips"]["regressions"]
    assert len(cases) == len(rules) + len(regressions)
    by_name = {(c.classname, c.name): c for c in cases}
    for r in rules:
        c = by_name[("evalrun.gate", f"{r['rule']}[{r['scope']}]")]
        kinds = {type(x) for x in c.result}
        if r["status"] == "fail" or r["status"] == "inconclusive":  # on_inconclusive defaults to fail
            assert Failure in kinds, r["rule"]
        elif r["status"] == "not_applicable":
            assert Skipped in kinds
        else:
            assert not kinds
    for f in regressions:
        c = by_name[("evalrun.cases", f["case_id"])]
        (failure,) = c.result
        assert isinstance(failure, Failure)
        assert f["kind"] in (failure.message or "") and f["cohort"] in (failure.message or "")
    assert suites[0].tests == len(cases)
    assert suites[0].failures == sum(1 for c in cases if any(isinstance(x, Failure) for x in c.result))


def test_junit_inconclusive_passes_when_configured(built: dict[str, Any], tmp_path: Path) -> None:
    summary = copy.deepcopy(built["summary"])
    summary["verdict"]["on_inconclusive"] = "pass"
    inconclusive = [r for r in summary["verdict"]["rules"] if r["status"] == "inconclusive"]
    assert inconclusive, "the fixture should have an inconclusive rule"
    path = tmp_path / "junit.xml"
    path.write_text(render_junit(summary), encoding="utf-8")
    (suite,) = junit_suites(path)
    by_name: dict[str, Any] = {c.name: c for c in suite}
    for r in inconclusive:
        c = by_name[f"{r['rule']}[{r['scope']}]"]
        assert not c.result
        assert "INCONCLUSIVE" in (c.system_out or "")


def test_junit_strips_control_characters(built: dict[str, Any], tmp_path: Path) -> None:
    summary = copy.deepcopy(built["summary"])
    summary["verdict"]["rules"][1]["reason"] = "bad \x00\x01\x1b[31m\x07 <tag> & \ufffe end"
    summary["verdict"]["rules"][1]["status"] = "fail"
    text = render_junit(summary)
    assert "\x00" not in text and "\x1b" not in text and "&lt;tag&gt; &amp;" in text
    path = tmp_path / "j.xml"
    path.write_text(text, encoding="utf-8")
    assert junit_suites(path)  # parses


# --------------------------------------------------------------------------- terminal


def test_terminal_output(built: dict[str, Any]) -> None:
    text = render_terminal(built["summary"])
    assert text.startswith("VERDICT: FAIL (exit 1)\n")
    assert "\x1b" not in text and "\x07" not in text
    for label in ("pass rate", "strict parse", "schema valid", "tool valid", "over-refusal", "known-bad refusal",
                  "error rate", "completion tokens", "cost per call", "latency p50", "latency p95"):  # fmt: skip
        assert re.search(rf"^{re.escape(label)}\s", text, re.M), label
    table = next(line for line in text.splitlines() if line.startswith("pass rate"))
    status = next(r["status"] for r in built["summary"]["verdict"]["rules"] if r["rule"] == "pass_rate")
    assert "pts [" in table and table.endswith(status.replace("_", " "))


def test_terminal_strips_escapes_from_reasons(built: dict[str, Any]) -> None:
    summary = copy.deepcopy(built["summary"])
    summary["verdict"]["reasons"] = ["cohort \x1b]0;pwned\x07\x1b[2J<x>\u202eevil\nsecond line"]
    text = render_terminal(summary)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "  - cohort <x>evil second line\n" in text


# --------------------------------------------------------------------------- sanitize, fmt, charts


def test_strip_control() -> None:
    assert strip_control("\x1b[31mred\x1b[0m") == "red"
    assert strip_control("a\x07b\x00c\x7fd\x85e\x80f") == "abcdef"
    assert strip_control("\x9b31mz") == "z"  # 8-bit CSI
    assert strip_control("keep\ttabs\nand lines\r\nand CR\r") == "keep\ttabs\nand lines\nand CR\n"
    assert strip_control("\x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\") == "link"
    assert strip_control("lone \ud800 surrogate \ufffe") == "lone  surrogate "
    assert strip_control("") == ""


def test_md_cell() -> None:
    assert md_cell("a|b") == "a\\|b"
    assert md_cell("[x](javascript:alert(1))") == "\\[x\\](javascript:alert(1))"
    assert md_cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert md_cell("`code`") == "\\`code\\`"
    assert md_cell("two\nlines") == "two lines"
    assert md_cell("x" * 500, limit=10) == "x" * 10 + "…"
    assert md_cell(None) == ""


def test_terminal_safe() -> None:
    assert terminal_safe("\x1b[2Jcleared\u202e\nnext") == "cleared next"
    assert terminal_safe("a\nb", single_line=False) == "a\nb"


def test_json_for_script_round_trips() -> None:
    data = {"out": "</script><!-- a & b \u2028 \u2029 >"}
    text = json_for_script(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data


def test_formatting() -> None:
    assert fmt.pts(-0.03) == "−3.0 pts" and fmt.pts_ci([-0.071, 0.012]) == "[−7.1, +1.2]"
    assert fmt.pts(-0.0001) == "+0.0 pts"
    assert fmt.times(1.0712) == "×1.07" and fmt.times(1.07, ascii=True) == "x1.07"
    assert fmt.usd(0.0000123456789) == "$0.0000123457" and fmt.usd(12.3456789) == "$12.3457"
    assert fmt.cost_label(["unpriced"], 0.0) == "unpriced"
    assert fmt.cost_label(["local"], 0.0) == "local (free)"
    assert fmt.cost_label(["priced", "config"], 0.5) == "$0.5"
    assert fmt.seconds(1.2345) == "1.23 s" and fmt.seconds(0.1234) == "0.123 s"
    assert fmt.p_value(0.00001) == "<0.0001"


def test_charts_are_deterministic_and_bounded() -> None:
    svg = charts.interval_chart(-3.0, -7.1, 1.2, reference=0.0, margin=-2.0, status="inconclusive", title="<t>")
    assert svg == charts.interval_chart(-3.0, -7.1, 1.2, reference=0.0, margin=-2.0, status="inconclusive", title="<t>")
    assert "&lt;t&gt;" in svg and "stroke-dasharray" in svg
    assert charts.interval_chart(None, None, None, reference=0.0) == ""
    h = charts.histogram({"baseline": [0.1, 0.2, 0.3, 50.0], "candidate": [0.2, 0.25]}, bins=4, clip_q=0.5)
    assert h is not None and h.overflow and sum(h.counts["baseline"]) == 4 and len(h.edges) == 5
    assert charts.histogram({"baseline": []}) is None
    flat = charts.histogram({"baseline": [1.0, 1.0]}, bins=3)
    assert flat is not None and flat.counts["baseline"] == [2, 0, 0]


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_ten_thousand_cases_render(tmp_path: Path) -> None:
    n = 10_000
    cases = []
    for i in range(n):
        kind = KINDS[i % 3]
        cases.append({"id": f"case-{i:05d}", "kind": kind, "cohort": f"cohort-{i % 12}", "vars": {"q": f"q{i}"}, "expect": EXPECT[kind]})
    project = make_project(tmp_path / "p", cases, jsonl=True, suite={"gate": {"bootstrap_samples": 100}})
    body = "The answer, in a paragraph of ordinary length for a chat model reply. " * 4
    results = fabricate(project, regress={f"case-{i:05d}" for i in range(0, n, 97)}, extra=body)
    ordered = api.sort_results(results)
    scores = api.score(project, ordered)
    summary = api.summarize(project, ordered, scores, CREATED).to_json()
    rows = api.result_rows(project, ordered, scores)
    t0 = time.perf_counter()
    html = render_html(project, summary, rows)
    elapsed = time.perf_counter() - t0
    size = len(html.encode("utf-8"))
    print(f"\n10,000-case report.html: {size / 1e6:.1f} MB rendered in {elapsed:.2f} s")
    assert size < 30_000_000
    assert len(case_blob(html)["cases"]) == n
    assert_inert_html(html)
    md = render_markdown(summary)
    assert len(md) < 65_536 and "and " in md


def test_rule_evidence_and_warnings_reach_every_output(built: dict[str, Any], tmp_path: Path) -> None:
    """p-values (with Holm), fail thresholds, power numbers and warnings are in every format."""
    from evalrun.report.github import github_annotations
    from evalrun.report.junit import render_junit
    from evalrun.report.terminal import render_terminal

    summary = built["summary"]
    flipped = "refused less often in the candidate: c001"
    assert any(flipped in w for w in summary["verdict"]["warnings"])
    assert summary["verdict"]["familywise"]["method"] == "holm"
    html, md = built["html"], built["md"]
    assert "<th>FAIL test</th>" in html and ", Holm " in html
    assert "fails on any evident drop" in html and "fails on any evident drop" in md
    assert "can pass only with ≥53 cases" in html
    assert flipped in html and flipped in md
    assert "FAIL tests corrected together (Holm)" in html
    terminal = render_terminal(summary)
    assert f"  ! known_bad_refusal: known-bad case {flipped}" in terminal
    junit = render_junit(summary)
    assert flipped in junit and "p (Holm-adjusted)" in junit
    assert any(flipped in line for line in github_annotations(summary) if line.startswith("::warning"))


def test_compare_links_the_pr_comment_to_the_report_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--report-url / $EVALRUN_REPORT_URL: the link lands in summary.md; a bad one stops before any call."""
    from click.testing import CliRunner

    from evalrun import cli
    from evalrun.testing import FakeProvider, fake_response, serving
    from projectkit import case, variant, write_project

    b, c = write_project(tmp_path, cases=[case(f"q{i}") for i in range(4)],
                         baseline=variant("baseline", api_base="http://127.0.0.1:9"),
                         candidate=variant("candidate", api_base="http://127.0.0.1:9"))
    provider = FakeProvider(lambda request: fake_response("fine"))
    url = "https://github.com/o/r/actions/runs/42#artifacts"
    with serving(provider, "openai/"):
        bad = CliRunner().invoke(cli.main, ["compare", str(b), str(c), "--out", str(tmp_path / "bad"), "--no-cache",
                                            "--quiet", "--report-url", "javascript:alert(1)"])
        assert bad.exit_code == 2 and "not an http(s) URL" in bad.stderr
        assert provider.count == 0 and not (tmp_path / "bad" / "summary.md").exists()
        monkeypatch.setenv("EVALRUN_REPORT_URL", url)
        ok = CliRunner().invoke(cli.main, ["compare", str(b), str(c), "--out", str(tmp_path / "run"), "--no-cache",
                                           "--quiet"])
    assert ok.exit_code in (0, 3), ok.stderr
    md = (tmp_path / "run" / "summary.md").read_text(encoding="utf-8")
    assert md.rstrip().endswith(f"[Full report (report.html)]({url})")
