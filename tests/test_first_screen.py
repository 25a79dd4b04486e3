"""The report's first screen tells the truth: every number on it is summary.json's.

The verdict block, the worst regressed examples and the degraded cohorts of report.html are
read back as text and checked against summary.json and results.jsonl, recomputed here with
plain formatting (not the report's own formatter). Runs shaped like the shipped example
come from ``reviewkit``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from reviewkit import build_review_run


@pytest.fixture(scope="module")
def fail_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_review_run(tmp_path_factory.mktemp("review_fail"), "fail")


@pytest.fixture(scope="module")
def inconclusive_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_review_run(tmp_path_factory.mktemp("review_inc"), "inconclusive")


RULE_WORDS = {
    "error_rate": "error rate", "pass_rate": "pass rate", "parse_strict": "strict parse",
    "schema_valid": "schema valid", "over_refusal": "over-refusal", "known_bad_refusal": "known-bad refusal",
    "completion_tokens_ratio": "completion tokens", "cost_ratio": "cost per call", "latency_p50_ratio": "latency p50",
}  # fmt: skip


def _text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _between(page: str, start: str, end: str) -> str:
    i = page.index(start)
    return page[i : page.index(end, i)]


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _pts(x: float) -> str:
    return f"{x * 100:+.1f}".replace("-", "−")


def _load(run: Path) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    page = (run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return page, summary, rows


@pytest.mark.parametrize("which", ["fail_run", "inconclusive_run"])
def test_verdict_lines_match_summary_json(which: str, request: pytest.FixtureRequest) -> None:
    page, summary, _ = _load(request.getfixturevalue(which))
    header = _between(page, '<header id="verdict"', "</header>")
    assert f">{summary['verdict']['status']}<" in header
    assert f"exit code {summary['verdict']['exit_code']}" in header
    items = [_text(li) for li in re.findall(r'<li class="r-(?:fail|inconclusive)">(.*?)</li>', header, re.S)]
    rules = summary["verdict"]["rules"]
    deciding = [r for r in rules if r["status"] == "fail"] + [r for r in rules if r["status"] == "inconclusive"]
    assert len(items) == len(deciding) > 0
    metrics = {m["metric"]: m for m in summary["metrics"]}
    for text, rule in zip(items, deciding, strict=True):
        assert text.startswith(rule["status"].upper())
        m = metrics[rule["metric"]]
        if m["type"] != "rate":
            continue
        lo, hi = rule["ci"]
        assert f"{_pct(m['baseline']['value'])} → {_pct(m['candidate']['value'])}" in text, text
        assert f"{_pts(rule['observed'])} pts [{_pts(lo)}, {_pts(hi)}]" in text, text
        t = m["table"]
        worse, better = (t["n10"], t["n01"]) if m["higher_is_better"] else (t["n01"], t["n10"])
        assert f"{worse} case{'s' if worse != 1 else ''} worse, {better} better" in text, text
        if rule["status"] == "fail":
            assert "Holm-adjusted p " in text
        elif rule.get("cases_needed"):
            assert f"≈{rule['cases_needed']:,} cases would settle it" in text
    passed = _text(_between(header, '<p class="passed">', "</p>"))
    for r in rules:
        if r["status"] == "pass" and r["rule"] in RULE_WORDS:
            assert RULE_WORDS[r["rule"]] in passed, (r["rule"], passed)
        elif r["rule"] in RULE_WORDS:
            assert RULE_WORDS[r["rule"]] + " " not in passed.split("not measured")[0].replace("PASS ", ""), r["rule"]
    assert "labels: all recorded" in passed


def test_examples_are_real_regressions_with_their_outputs(fail_run: Path) -> None:
    page, summary, rows = _load(fail_run)
    glance = _between(page, '<section id="glance"', "</section>")
    regressed = {f["case_id"] for f in summary["flips"]["regressions"]}
    articles = re.findall(r'<article class="ex">(.*?)</article>', glance, re.S)
    assert len(articles) == 3
    assert f"3 of {len(regressed)}" in _text(glance)
    for art in articles:
        case_id = _text(re.search(r'<a class="mono" href="#case-[^"]*">(.*?)</a>', art, re.S).group(1))  # type: ignore[union-attr]
        assert case_id in regressed
        by_side = {r["side"]: r for r in rows if r["case_id"] == case_id}
        outs = [html.unescape(x) for x in re.findall(r'<pre class="out">(.*?)</pre>', art, re.S)]
        assert len(outs) == 2
        for shown, side in zip(outs, ("baseline", "candidate"), strict=True):
            full = by_side[side]["output"]
            assert shown.rstrip("…") == full[: len(shown.rstrip("…"))] and len(shown.rstrip("…")) <= 280
        # The failing check of the candidate, in its own words.
        detail = next(c["detail"] for c in by_side["candidate"]["score"]["checks"] if not c["passed"])
        assert html.escape(detail, quote=True) in art or detail in html.unescape(art)
    # The worst examples are the ones that count against the failing rule (over-refusal).
    assert all("over-refusal" in _text(a) for a in articles)


def test_degraded_cohorts_match_the_slices(fail_run: Path) -> None:
    page, summary, _ = _load(fail_run)
    glance = _between(page, '<section id="glance"', "</section>")
    listed = re.findall(r"<li><b>(.*?)</b>(.*?)</ul></li>", glance, re.S)
    cohorts = summary["slices"]["cohort"]
    worse = {}
    for name, entry in cohorts.items():
        m = next(x for x in entry["metrics"] if x["metric"] == "over_refusal")
        if m["delta"] and m["delta"] > 0:
            worse[name] = m
    assert {html.unescape(n) for n, _ in listed} >= set(worse) and worse
    seen = {True: 0, False: 0}
    for name, body in listed:
        m = worse.get(html.unescape(name))
        if m is None:
            continue
        (line,) = re.findall(r'<li class="d-worse" data-metric="over_refusal">(.*?)</li>', body, re.S)
        text = _text(line)
        assert text.startswith(f"over-refusal {_pct(m['baseline']['value'])} → {_pct(m['candidate']['value'])}")
        # Coloured as worse (d-worse) whether or not significant; significance said beside it.
        significant = m["q_value"] <= 1 - summary["run"]["confidence"]
        assert ('class="sig small yes"' in line) == significant, text
        assert text.endswith(f"significant, q {m['q_value']:.3g}"), text
        seen[significant] += 1
    assert seen[True] and seen[False], seen  # the fixture has both kinds


def test_pass_run_says_so_in_one_line(tmp_path: Path) -> None:
    page, summary, _ = _load(build_review_run(tmp_path, "pass"))
    header = _between(page, '<header id="verdict"', "</header>")
    assert summary["verdict"]["status"] == "PASS"
    assert 'class="r-fail"' not in header and 'class="r-inconclusive"' not in header
    assert "labels: all recorded" in _text(header)
    assert "No case went from pass to fail." in page and "No cohort moved the wrong way" in page
