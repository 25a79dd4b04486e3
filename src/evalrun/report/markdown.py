"""summary.md: the verdict as a pull-request comment a reviewer reads in ten seconds.

Short by design (about 20 lines before the collapsed examples): the verdict, the two sides
and the labels that changed; one table of the rules that did not pass, each with its
change, its interval, what it is allowed, how many cases got worse or better and what
would settle it; one line for everything that passed; the cohorts that got worse; then the
worst regressed cases in collapsed ``<details>``, both outputs side by side with the
failing check; a link to the full report when the CI run provides one (``report_url``).

Untrusted text: table cells and prose go through ``md_cell``; model outputs and ids inside
the HTML of a ``<details>`` block are HTML-escaped and kept on one line (newlines as
``&#10;``), so a blank line, a ``` fence or a ``</details>`` in an output cannot end the
block or start markdown. The comment stays under GitHub's 65,536-character limit.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

from evalrun.analysis.summary_model import CallCounts, Side, Summary, VariantInfo, as_summary
from evalrun.errors import UserInputError
from evalrun.report import fmt
from evalrun.report.digest import Digest, Example, RuleLine, SideOutput, digest
from evalrun.report.fmt import AA_NOTE
from evalrun.report.sanitize import md_cell, strip_control

__all__ = ["MAX_CHARS", "REPORT_URL_ENV", "check_report_url", "render_markdown"]

MAX_CHARS = 60_000
"""Hard cap on the comment (GitHub refuses comments over 65,536 characters)."""
MAX_WARNINGS = 10
MAX_RULE_ROWS = 12
EXAMPLE_CHARS = 600
"""Characters of each output in a collapsed example."""
REPORT_URL_ENV = "EVALRUN_REPORT_URL"
"""Environment variable the CLI reads for ``--report-url`` (the CI workflow sets it)."""
FOOTER = "Full report: report.html in the run folder."
ICONS = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "⚠️", "COULD_NOT_MEASURE": "⛔"}


def check_report_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL, percent-encoded for a markdown link.

    Raises ``UserInputError`` (exit 2) otherwise: a ``javascript:`` or relative link must never reach a
    comment.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserInputError(f"--report-url / ${REPORT_URL_ENV}: {url!r} is not an http(s) URL")
    # Spaces, parentheses, angle brackets and quotes would end or break a markdown link.
    return quote(url.strip(), safe=":/?#@!$&'*+,;=%~-._[]")


def _word(status: str) -> str:
    return status.replace("_", " ").upper()


def _side(v: VariantInfo | None, side: Side) -> str:
    if v is None:
        return side
    name = "" if v.name == side else f" {md_cell(v.name, 60)}"
    return f"{side}{name} ({md_cell(v.model, 80)})"


def _header(summary: Summary) -> list[str]:
    verdict, run = summary.verdict, summary.run
    lines = [f"## {ICONS.get(verdict.status, '')} evalrun: {_word(verdict.status)} (exit {verdict.exit_code})"
             f" · {md_cell(run.suite, 80)}", ""]
    facts = [f"{_side(summary.variants.get('baseline'), 'baseline')} → "
             f"{_side(summary.variants.get('candidate'), 'candidate')}",
             f"{fmt.count(run.n_cases)} cases × {fmt.count(run.samples)} sample(s)",
             f"{fmt.pct(run.confidence, 0)} intervals"]
    changes = [f"{md_cell(k, 40)} {md_cell(v[0] if v else None, 60)} → {md_cell(v[1] if len(v) > 1 else None, 60)}"
               for k, v in sorted(summary.label_changes.items())]
    facts.append("labels: " + ("; ".join(changes) if changes else "unchanged"))
    lines.append(" · ".join(facts))
    if run.aa_mode:
        lines += ["", f"**{AA_NOTE}.**"]
    return lines


def _rule_row(r: RuleLine) -> str:
    worse = "" if r.worse is None else f"{r.worse} worse" + ("" if r.better is None else f", {r.better} better")
    if r.change:
        values, change = f"{r.baseline} → {r.candidate}", r.change
    else:
        values, change = "", r.reason
    cells = [_word(r.status), r.title, values, change, r.allowed, worse, r.evidence]
    return "| " + " | ".join(md_cell(c, 200) for c in cells) + " |"


def _rules(d: Digest, confidence: Any) -> list[str]:
    lines: list[str] = []
    if d.deciding:
        lines += [f"| | Rule | Baseline → candidate | {md_cell(f'Change [{fmt.pct(confidence, 0)} interval]')} "
                  "| Allowed | Cases | Evidence |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_rule_row(r) for r in d.deciding[:MAX_RULE_ROWS]]
        if len(d.deciding) > MAX_RULE_ROWS:
            lines.append(f"| | and {len(d.deciding) - MAX_RULE_ROWS} more (see the report) | | | | | |")
        lines.append("")
    passed = []
    if d.passed:
        passed.append(("**Passed:** " if d.deciding else "**Every rule passed:** ") + md_cell(", ".join(d.passed), 1200))
    if d.labels_ok is not None:
        passed.append("labels: " + ("all recorded" if d.labels_ok else "see the failing label rules"))
    line = "; ".join(passed)
    if d.not_applicable:
        line += (". " if line else "") + "Not measured: " + md_cell(", ".join(d.not_applicable), 400)
    if line:
        lines.append(line + ("" if line.endswith(".") else "."))
    return lines


def _cohorts(d: Digest) -> list[str]:
    if not d.cohorts:
        return []
    lines = ["", "**Cohorts that got worse** (any move the wrong way; significance in brackets):"]
    for c in d.cohorts:
        parts = [f"{md_cell(x.label, 40)} {md_cell(x.baseline, 20)} → {md_cell(x.candidate, 20)} "
                 f"({'significant' if x.significant else 'not significant'}"
                 f"{', ' + md_cell(x.evidence, 30) if x.evidence else ''})" for x in c.changes[:3]]
        crit = ", critical" if c.critical else ""
        lines.append(f"- {md_cell(c.cohort, 80)} ({fmt.count(c.n_cases)} cases{crit}): " + "; ".join(parts))
    if d.cohorts_hidden:
        lines.append(f"- and {d.cohorts_hidden} more (see the report's slices)")
    return lines


def _pre(o: SideOutput) -> str:
    """One output as a one-line ``<pre>``: escaped, newlines as character references."""
    if o.error and o.text is None:
        text = f"error: {o.error}"
    elif o.text is None:
        text = "(no text output)"
    else:
        text = o.text or "(empty output)"
        if o.cut:
            text += f"… ({o.cut:,} more characters in the report)"
    body = html.escape(strip_control(text), quote=True).replace("\t", "&#9;").replace("\n", "&#10;")
    return f"<pre>{body}</pre>"


def _verdict_word(o: SideOutput) -> str:
    return "pass" if o.passed else "fail" if o.passed is False else "error" if o.error else "n/a"


def _example(ex: Example) -> list[str]:
    e = html.escape
    rules = f" · counts against {e(', '.join(ex.rules))}" if ex.rules else ""
    checks = "; ".join(ex.candidate.failed_checks) or (ex.candidate.error or "")
    # The table is one line: a blank line would end the HTML block and start markdown.
    table = (f"<table><tr><th>baseline ({_verdict_word(ex.baseline)})</th>"
             f"<th>candidate ({_verdict_word(ex.candidate)})</th></tr>"
             f"<tr><td>{_pre(ex.baseline)}</td><td>{_pre(ex.candidate)}</td></tr></table>")
    return [
        f"<details><summary>{e(ex.case_id)} · {e(ex.kind)} · {e(ex.cohort)}{rules}</summary>",
        "",
        f"Candidate failed: {md_cell(checks, 400)}" if checks else "Candidate failed.",
        "",
        table,
        "",
        "</details>",
    ]


def _flips(d: Digest) -> list[str]:
    if not d.regressions and not d.improvements:
        return ["", "No case flipped between pass and fail."]
    lines = ["", f"**Flipped cases:** {d.regressions} regressed, {d.improvements} improved."
             + (" Worst regressions:" if d.examples else "")]
    for ex in d.examples:
        lines += ["", *_example(ex)]
    return lines


def _calls(calls: Mapping[Side, CallCounts]) -> str:
    parts = []
    sides: tuple[Side, ...] = ("baseline", "candidate")
    for side in sides:
        c = calls.get(side)
        if c is None:
            continue
        kinds = ", ".join(f"{md_cell(k, 40)} {fmt.count(v)}" for k, v in sorted(c.errors_by_kind.items()))
        parts.append(f"{side} {fmt.count(c.total)} ({fmt.count(c.errors)} errors{' — ' + kinds if kinds else ''}, "
                     f"{fmt.count(c.cached)} cached)")
    return "Calls: " + "; ".join(parts) + "." if parts else ""


def _warnings(warnings: Sequence[str]) -> list[str]:
    if not warnings:
        return []
    lines = ["", f"<details><summary>{len(warnings)} warning{'s' if len(warnings) != 1 else ''}</summary>", ""]
    lines += [f"- {md_cell(w, 300)}" for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        lines.append(f"- and {len(warnings) - MAX_WARNINGS} more (see the report)")
    return [*lines, "", "</details>"]


def render_markdown(summary: Summary | Mapping[str, Any], rows: Iterable[Mapping[str, Any]] = (), *,
                    report_url: str | None = None) -> str:
    """summary.md's text (see the module docstring).

    ``rows`` are results.jsonl's rows (the regressed examples' outputs; without them the
    examples are listed without outputs); ``report_url`` links the full report (checked
    with ``check_report_url``).
    """
    typed = as_summary(summary)
    link = check_report_url(report_url) if report_url else None
    d = digest(typed, rows, example_chars=EXAMPLE_CHARS)
    footer = [f"[Full report (report.html)]({link})" if link else FOOTER]
    calls = _calls(typed.calls)
    # The client's own overhead is this machine's cost (in the report); only what weakens
    # the latency comparison reaches the comment.
    notes = [f"Latency caveat: {md_cell(n, 300)}." for n in (typed.latency_measurement or {}).get("notes") or []]
    tail = ["", *([calls] if calls else []), *notes, "", *footer]
    # A subset's verdict is not the suite's: said in the open, not among the collapsed warnings.
    subset = ["", f"**{md_cell(typed.verdict.warnings[0], 300)}**"] if typed.run.subset and typed.verdict.warnings else []
    head = [*_header(typed), *subset, "", *_rules(d, typed.run.confidence), *_cohorts(d)]
    head += _warnings(typed.verdict.warnings)
    text = ""
    # Examples are dropped from the end until the comment fits (each block stays whole).
    for keep in range(len(d.examples), -1, -1):
        kept = replace(d, examples=d.examples[:keep])
        text = "\n".join([*head, *_flips(kept), *tail]) + "\n"
        if len(text) <= MAX_CHARS:
            return text
    cut = text.rfind("\n", 0, MAX_CHARS - 200)
    return text[:cut] + "\n\n(summary cut to fit a comment)\n\n" + footer[0] + "\n"
