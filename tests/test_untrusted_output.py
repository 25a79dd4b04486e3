"""Untrusted text stays inert in every output: stdout, summary.md, report.html, junit.xml.

A compare through the shipped FakeProvider whose model outputs, tool calls, error messages
and refusals — and whose case vars, cohorts, tags, descriptions, variant names, version
labels and suite name — carry markup, markdown links, template syntax, terminal escapes
and control characters. Checked:

* the CLI's stdout (and stderr) has no ESC, control or bidi-override character;
* summary.md has no raw HTML tag, no markdown link, no broken table row;
* report.html has no payload unescaped: only its own two scripts, no event-handler
  attribute, no javascript: URL, no control characters; the payloads are still there as
  text (inert, not lost) in the case browser's JSON;
* junit.xml parses;
* a case value containing ``{{ 7*7 }}`` reaches the model verbatim (never evaluated).

Limits: one 5 MB response is truncated in report.html with a note (< 2 MB for a small
suite), and a 10,000-case run renders (size and time printed; < 40 MB).
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evalrun import api, cli
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.records import ToolCall
from evalrun.testing import FakeProvider, fake_response, last_user_text, serving
from projectkit import case, variant, write_project

PWN = "window.__pwned=1"
NOWHERE = "http://127.0.0.1:9/v1"
# FakeProvider latencies are scheduling noise (and can crash the gate: see test_faults).
NO_LATENCY_RULES = {"latency_p50_ratio": {"enabled": False}, "latency_p95_ratio": {"enabled": False}}
PAYLOADS: tuple[str, ...] = (
    f"<script>{PWN};alert(1)</script>",
    f'<img src=x onerror="{PWN};alert(1)">',
    f"[click](javascript:{PWN})",
    f"</textarea><script>{PWN}</script>",
    f"</script><script>{PWN}</script>",
    f"<svg onload={PWN}>",
    "{{ 7*7 }}",
    "{% raw %}",
    "\x1b[31mRED\x1b[0m",
    "\x1b]8;;http://evil.example/\x07osc-link\x1b]8;;\x07",
    "NUL\x00BEL\x07VT\x0bDEL\x7fCSI\x9b31m",
    "\u202egnp.exe",
    "| broken | row |\n| --- |",
    "line1\r\noverwrite\rX",
    "<!-- comment",
    "`code` **bold** <b>b</b>",
    "&lt;already-escaped&gt; &amp;",
    '"><iframe src=javascript:alert(1)>',
    "%0A::warning title=pwn::encoded",
    "x\n::warning title=pwn::injected\n",
)
# What must not survive anywhere as live markup (checked in report.html).
RAW_MARKUP = ("<script>window", "<img src=x", "<svg onload", "</textarea>", "<iframe", "</script><script>")
# C0 (but tab and newline), DEL and C1. Bidi overrides are only required gone on the terminal:
# sanitize.strip_control keeps them in the other formats (by design).
CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TERMINAL_BAD_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass
class HostileRun:
    root: Path
    baseline: Path
    candidate: Path
    run_dir: Path
    provider: FakeProvider
    stdout: str = ""
    stderr: str = ""
    exit_code: int = -1
    cases: list[dict[str, Any]] = field(default_factory=list)


def _case_id(i: int) -> str:
    return f"p{i:02d}"


def hostile_cases() -> list[dict[str, Any]]:
    cases = []
    for i, p in enumerate(PAYLOADS):
        kind = "known_bad" if i % 6 == 5 else "representative"
        cases.append(
            case(_case_id(i), kind=kind, cohort=f"{p} #{i}", tags=[p, "plain"], description=f"desc {p}",
                 vars={"question": f"Q{i}: {p}"}, expect=[{"contains": {"value": f"ok-{i}"}}])
        )
    # An id with URL-ish characters the id pattern allows, and a tool call.
    cases.append(case("javascript:x/../@evil", cohort="ids", vars={"question": "id test"},
                      expect=[{"contains": {"value": "ok-id"}}]))
    cases.append(case("tool", cohort="tools", vars={"question": "call a tool"}, expect=["tool_call"]))
    cases.append(case("err", cohort="errors", vars={"question": "fail please"}))
    return cases


def hostile_script(request: ProviderRequest) -> ProviderResponse | ProviderError:
    cid = str(request.metadata["case_id"])
    side = request.metadata["side"]
    text = last_user_text(request.messages)
    if cid == "tool":
        args = json.dumps({"q": PAYLOADS[0], "r": PAYLOADS[8]})
        return fake_response(None, tool_calls=[ToolCall(PAYLOADS[1], args, "id-" + PAYLOADS[2])], finish_reason="tool_calls")
    if cid == "err":
        if side == "candidate":
            return ProviderError("server_error", f"upstream said {PAYLOADS[3]} {PAYLOADS[9]}", retryable=False)
        return fake_response("fine")
    if cid.startswith("p"):
        i = int(cid[1:])
        p = PAYLOADS[i]
        if PAYLOADS[i] in ("{{ 7*7 }}", "{% raw %}"):
            assert p in text  # the case value reached the model verbatim: never evaluated
        if i % 6 == 5:  # known-bad: the baseline refuses, the candidate stops refusing
            if side == "baseline":
                return fake_response("I can't help with that.", refusal=f"refused {p}")
            return fake_response(f"Sure! {p}")
        if side == "candidate" and i % 2:
            return fake_response(f"regressed output {p} {PAYLOADS[(i + 4) % len(PAYLOADS)]}")
        return fake_response(f"ok-{i} {p} echo: {text}")
    return fake_response(f"ok-id {text}")


def build_hostile_run(root: Path, monkeypatch: pytest.MonkeyPatch) -> HostileRun:
    """Write the hostile project and run `evalrun compare` (in-process CLI, FakeProvider)."""
    cases = hostile_cases()
    # api_base: a closed loopback port, so a call that escaped the FakeProvider could never leave the machine.
    base = variant(f"base {PAYLOADS[0]}", prompt={"system": "You are terse.", "user": "{{ question }}"}, api_base=NOWHERE)
    cand = variant(f"cand {PAYLOADS[5]}\x1b[2J", prompt={"system": "You are terse. {{ case.cohort }}", "user": "{{ question }}"},
                   api_base=NOWHERE)
    cand["versions"] = {**base["versions"], "prompt_version": f"p2 {PAYLOADS[3]}{PAYLOADS[8]}"}
    critical = [c["cohort"] for c in cases if c["kind"] == "known_bad"]
    b, c = write_project(
        root, cases=cases, baseline=base, candidate=cand,
        suite={"name": f"suite {PAYLOADS[1]} {PAYLOADS[9]}", "max_attempts": 1,
               "gate": {"max_error_rate": 0.5, "critical_cohorts": critical, "rules": NO_LATENCY_RULES}},
    )
    project = api.load_project(b, c)
    loaded = {x.id: x for x in project.cases}
    for i, p in enumerate(PAYLOADS):  # the YAML round trip kept every byte of the payload
        assert loaded[_case_id(i)].vars["question"] == f"Q{i}: {p}"
    provider = FakeProvider(hostile_script)
    run_dir = root / "run"
    with serving(provider, "openai/"):
        result = CliRunner().invoke(cli.main, ["compare", str(b), str(c), "--out", str(run_dir), "--no-cache"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return HostileRun(root, b, c, run_dir, provider, result.stdout, result.stderr, result.exit_code, cases)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    with pytest.MonkeyPatch.context() as mp:
        return build_hostile_run(tmp_path_factory.mktemp("hostile"), mp)


# --------------------------------------------------------------------------- HTML inspection


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None
        self._script_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = dict(attrs)
            self._script_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._script_text)))
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self._script_text.append(data)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def inspect_html(html: str) -> dict[str, Any]:
    """Structural checks of a report page; returns the case browser's data."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    assert not CONTROL_RE.search(html), "control character in report.html"
    for raw in RAW_MARKUP:
        assert raw not in html, f"unescaped payload {raw!r} in report.html"
    allowed = {"html", "head", "meta", "title", "style", "body", "nav", "a", "main", "header", "div", "h1", "h2",
               "h3", "h4", "span", "p", "ul", "li", "dl", "dt", "dd", "section", "table", "thead", "tbody", "tr",
               "th", "td", "pre", "details", "summary", "br", "noscript", "form", "label", "select", "option",
               "input", "script", "svg", "g", "rect", "line", "text", "path", "polyline", "circle", "tspan", "article",
               "b", "small", "code", "strong", "em", "caption", "col", "colgroup", "abbr", "polygon", "defs",
               "pattern", "clippath", "ellipse"}
    for tag, attrs in parser.tags:
        assert tag in allowed, f"unexpected element <{tag}>"
        for name, value in attrs:
            assert not name.startswith("on"), f"event handler {name} on <{tag}>"
            if name in ("href", "src", "action", "xlink:href", "formaction"):
                v = (value or "").strip().lower()
                assert not v.startswith(("javascript:", "data:text", "vbscript:")), f"{name}={value!r}"
                assert v.startswith("#") or v == "", f"<{tag} {name}={value!r}>: no outside link in an offline report"
    assert len(parser.scripts) == 2, [a for a, _ in parser.scripts]
    (data_attrs, data_text), (js_attrs, _) = parser.scripts
    assert data_attrs.get("type") == "application/json" and js_attrs.get("type") in (None, "text/javascript")
    csp = next(dict(a).get("content") for t, a in parser.tags if t == "meta" and dict(a).get("http-equiv"))
    assert csp is not None and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    data: dict[str, Any] = json.loads(data_text)
    return data


def md_table_blocks(md: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_cli_stdout_has_no_control_characters(hostile: HostileRun) -> None:
    assert hostile.exit_code == 1, hostile.stdout + hostile.stderr  # the known-bad flip fails the gate
    assert "VERDICT: FAIL" in hostile.stdout
    assert not TERMINAL_BAD_RE.search(hostile.stdout), repr(TERMINAL_BAD_RE.findall(hostile.stdout))
    assert not TERMINAL_BAD_RE.search(hostile.stderr), repr(TERMINAL_BAD_RE.findall(hostile.stderr))
    # The reasons name the critical cohorts, i.e. payload text did reach stdout (inert).
    assert "known_bad_refusal [cohort:" in hostile.stdout
    assert "RED" not in hostile.stdout or "\x1b" not in hostile.stdout


def _github_stdout(hostile: HostileRun, monkeypatch: pytest.MonkeyPatch) -> str:
    out = hostile.root / "run-gh"
    with serving(FakeProvider(hostile_script), "openai/"):
        result = CliRunner().invoke(
            cli.main, ["compare", str(hostile.baseline), str(hostile.candidate), "--out", str(out),
                       "--no-cache", "--quiet", "--format", "github"],
        )
    assert result.exit_code == 1, result.stdout
    return result.stdout


def test_github_annotations_cannot_be_injected(hostile: HostileRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """--format github: a cohort holding a newline and '::warning' cannot start a workflow command."""
    stdout = _github_stdout(hostile, monkeypatch)
    commands = [line for line in stdout.splitlines() if line.startswith("::")]
    assert commands, "no annotation printed"
    for line in commands:
        assert re.match(r"::(error|warning|notice) title=evalrun[^:]*::", line), line
    assert any("%0A" in line for line in commands)  # the newline was encoded, not obeyed
    assert not CONTROL_RE.search(stdout), repr(CONTROL_RE.findall(stdout))


def test_github_annotations_have_no_bidi_overrides(hostile: HostileRun, monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _github_stdout(hostile, monkeypatch)
    assert not TERMINAL_BAD_RE.search(stdout), repr(TERMINAL_BAD_RE.findall(stdout))


def test_template_syntax_in_case_values_is_never_evaluated(hostile: HostileRun) -> None:
    sent = [last_user_text(r.messages) for r in hostile.provider.calls]
    assert any("{{ 7*7 }}" in s for s in sent) and any("{% raw %}" in s for s in sent)
    assert not any("Q6: 49" in s for s in sent)
    systems = [r.messages[0]["content"] for r in hostile.provider.calls if r.metadata["side"] == "candidate"]
    assert any("{{ 7*7 }}" in s for s in systems)  # a cohort holding template syntax, rendered as data


def check_markdown_inert(md: str) -> None:
    assert not CONTROL_RE.search(md), repr(CONTROL_RE.findall(md)[:10])
    assert not re.search(r"<[A-Za-z!/?]", md), f"raw HTML tag: {re.findall(r'<[A-Za-z!/?][^>]{0,30}', md)[:5]}"
    assert not re.search(r"(?<!\\)\]\s*\(", md), "markdown link"
    assert "http://evil" not in md  # the OSC 8 hyperlink went whole, URL included
    for block in md_table_blocks(md):
        widths = {unescaped_pipes(line) for line in block}
        assert len(widths) == 1, f"a row breaks its table: {block}"


OWN_MD_TAGS_RE = re.compile(r"</?(?:details|summary|table|tr|th|td)>")
"""summary.md's own raw HTML (the collapsed examples); attribute-free, never from data."""


def test_summary_md_is_inert(hostile: HostileRun) -> None:
    md = (hostile.run_dir / "summary.md").read_text(encoding="utf-8")
    # Outputs sit in one-line <pre> bodies, HTML-escaped: no tag, no newline, no control.
    pres = re.findall(r"<pre>(.*?)</pre>", md, re.S)
    assert pres and all("\n" not in x and not re.search(r"<[A-Za-z!/?]", x) for x in pres)
    assert any("&lt;script&gt;" in x for x in pres)
    check_markdown_inert(OWN_MD_TAGS_RE.sub("", re.sub(r"<pre>.*?</pre>", "", md)))
    assert len(md_table_blocks(md)) >= 1
    # Payload-derived text is present, escaped (the flips and reasons name payload cohorts).
    assert "&lt;script&gt;" in md and "cohort:&lt;svg onload" in md and "\\`code\\` \\*\\*bold" in md


def test_rollout_note_md_is_inert(hostile: HostileRun) -> None:
    md = (hostile.run_dir / "rollout_note.md").read_text(encoding="utf-8")
    # The monitoring queries must carry the labels verbatim (a query for an escaped label
    # would match nothing), so they sit in fenced code blocks, which markdown renders as
    # text. Check the fences cannot be closed early, then check the prose around them.
    fences = re.findall(r"^(`{3,})", md, flags=re.MULTILINE)
    assert len(fences) % 2 == 0, "an unbalanced code fence"
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", md, flags=re.MULTILINE | re.DOTALL)
    assert "WHERE model_version" not in prose
    check_markdown_inert(prose)
    assert not CONTROL_RE.search(md)


def test_report_html_is_inert(hostile: HostileRun) -> None:
    html = (hostile.run_dir / "report.html").read_text(encoding="utf-8")
    data = inspect_html(html)
    strings = _strings(data)
    # Inert, not lost: the payloads are in the data as text (controls stripped).
    for raw in (PAYLOADS[0], PAYLOADS[1], PAYLOADS[3], PAYLOADS[4], "{{ 7*7 }}"):
        assert any(raw in s for s in strings), f"{raw!r} missing from the case data"
    assert not any(CONTROL_RE.search(s) for s in strings)
    ids = {c["id"] for c in data["cases"]}
    assert ids == {c["id"] for c in hostile.cases}
    err = next(c for c in data["cases"] if c["id"] == "err")
    assert "upstream said" in err["samples"][0]["c"]["err"]
    # Server-rendered parts carry the escaped forms.
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html


BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")


def test_reports_have_no_bidi_overrides(hostile: HostileRun) -> None:
    for name in ("summary.md", "report.html"):
        text = (hostile.run_dir / name).read_text(encoding="utf-8")
        assert not BIDI_RE.search(text), f"bidi override in {name}"


def test_junit_parses(hostile: HostileRun) -> None:
    raw = (hostile.run_dir / "junit.xml").read_bytes()
    root = ET.fromstring(raw)
    assert root.tag == "testsuites"
    assert not CONTROL_RE.search(raw.decode("utf-8"))
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromfile(str(hostile.run_dir / "junit.xml"))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    assert sum(s.tests for s in suites) > 0
    names = [c.name for s in suites for c in s]
    assert any("known_bad_refusal[cohort:" in n for n in names)


def test_machine_files_stay_valid_json(hostile: HostileRun) -> None:
    json.loads((hostile.run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (hostile.run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * len(hostile.cases)
    assert any(PAYLOADS[9] in (r["output"] or "") for r in rows)  # raw data is kept verbatim for machines


# --------------------------------------------------------------------------- limits


FIVE_MB = 5_000_000


def build_big_response_run(root: Path) -> Path:
    """Four cases; one candidate output is 5 MB. Returns the run folder."""
    b, c = write_project(root, cases=[case(f"c{i}") for i in range(4)], suite={"gate": {"rules": NO_LATENCY_RULES}})
    big = ("<b>5MB</b> " * (FIVE_MB // 11 + 1))[:FIVE_MB]

    def script(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["case_id"] == "c1" and req.metadata["side"] == "candidate":
            return fake_response(big, completion_tokens=1_000_000)
        return fake_response("short answer")

    project = api.load_project(b, c)
    api.compare(project, provider=FakeProvider(script), run_dir=root / "run", cache="off")
    return root / "run"


def test_five_mb_response_is_truncated_in_the_report(tmp_path: Path) -> None:
    run_dir = build_big_response_run(tmp_path)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    size = len(html.encode("utf-8"))
    assert size < 2 * 1024 * 1024, f"report.html is {size:,} bytes"
    data = inspect_html(html)
    entry = next(c for c in data["cases"] if c["id"] == "c1")["samples"][0]["c"]
    limit = 20_000  # the suite's default max_response_chars
    assert len(entry["out"]) == limit and entry["cut"] == FIVE_MB - limit
    js = re.search(r"<script>(.*?)</script>", html, re.S)
    assert js is not None and "(truncated: " in js.group(1)  # the note the browser shows with it
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert max(len(r["output"] or "") for r in rows) == FIVE_MB  # the machine record keeps it whole
    assert (run_dir / "summary.md").stat().st_size < 20_000


@pytest.mark.slow
def test_ten_thousand_cases_render(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    n = 10_000
    b, c = write_project(tmp_path, cases=[case("seed")], suite={"gate": {"rules": NO_LATENCY_RULES}})
    (tmp_path / "cases" / "cases.yaml").unlink()
    kinds = ("representative", "format_sensitive", "known_bad")
    lines = [
        json.dumps({"id": f"case-{i:05d}", "kind": kinds[i % 3], "cohort": f"cohort-{i % 7}",
                    "vars": {"question": f"question {i}"}, "expect": [{"contains": {"value": "answer"}}]})
        for i in range(n)
    ]
    (tmp_path / "cases" / "cases.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def script(req: ProviderRequest) -> ProviderResponse:
        i = int(str(req.metadata["case_id"]).rsplit("-", 1)[1])
        if req.metadata["side"] == "candidate" and i % 50 == 0:
            return fake_response("no")
        return fake_response(f"answer {i}")

    started = time.monotonic()
    project = api.load_project(b, c)
    outcome = api.compare(project, provider=FakeProvider(script), run_dir=tmp_path / "run", cache="off")
    elapsed = time.monotonic() - started
    html_path = tmp_path / "run" / "report.html"
    size = html_path.stat().st_size
    text = (f"\n10,000-case run (FakeProvider, zero latency): compare {elapsed:.1f} s, report.html {size / 1e6:.1f} MB, "
            f"results.jsonl {(tmp_path / 'run' / 'results.jsonl').stat().st_size / 1e6:.1f} MB, "
            f"summary.md {(tmp_path / 'run' / 'summary.md').stat().st_size / 1e3:.1f} kB, verdict {outcome.verdict_status}")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(text, flush=True)
    assert size < 40 * 1024 * 1024
    assert outcome.summary["run"]["n_cases"] == n
    data = inspect_html(html_path.read_text(encoding="utf-8"))
    assert len(data["cases"]) == n
    # Every 50th case regresses on the candidate, except known-bad ones (they fail on both sides).
    regressed = sum(1 for i in range(0, n, 50) if kinds[i % 3] != "known_bad")
    assert len(outcome.summary["flips"]["regressions"]) == regressed
