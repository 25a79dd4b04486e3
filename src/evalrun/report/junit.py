"""junit.xml: the gate as test results, for CI systems that render JUnit.

One ``<testsuite name="evalrun">``: a testcase per gate rule (classname ``evalrun.analysis.gate``,
name ``rule[scope]``) and one per regressed case (classname ``evalrun.project.cases``).

* fail → ``<failure>``; not applicable → ``<skipped>``;
* inconclusive → ``<failure>`` when the gate's ``on_inconclusive`` is "fail", otherwise
  passing with the reason in ``<system-out>``.

Built with ElementTree (which escapes markup); control characters are stripped first
because XML 1.0 cannot carry most of them at all, escaped or not.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from evalrun.analysis.summary_model import RuleResult, Summary, as_summary
from evalrun.report import fmt
from evalrun.report.sanitize import strip_control, truncate

MAX_TEXT = 4000


def _t(value: Any, limit: int = MAX_TEXT) -> str:
    text, cut = truncate(strip_control("" if value is None else str(value)), limit)
    return text + "…" if cut else text


def _rule_details(r: RuleResult) -> str:
    lines = [
        f"trigger: {r.trigger}",
        f"observed: {fmt.rule_observed(r, ascii=True)}",
        f"margin: {fmt.rule_margin(r, ascii=True)}",
        f"paired cases: {r.paired_n}",
        f"reason: {r.reason}",
    ]
    p = fmt.rule_p(r)
    if p:
        lines.append(f"p (Holm-adjusted): {p}")
    lines += [f"warning: {w}" for w in r.warnings]
    mde = fmt.rule_mde(r, ascii=True)
    if mde:
        lines.append(mde)
    return _t("\n".join(lines))


def build_junit(summary: Summary | Mapping[str, Any]) -> ET.Element:
    """The ``<testsuites>`` element (one ``<testsuite name="evalrun">`` inside)."""
    typed = as_summary(summary)
    verdict = typed.verdict
    fail_inconclusive = verdict.on_inconclusive == "fail"
    suite = ET.Element("testsuite", {"name": "evalrun"})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("verdict", verdict.status),
        ("exit_code", verdict.exit_code),
        ("suite", typed.run.suite),
        ("fingerprint", typed.run.fingerprint),
        ("created", typed.created),
    ):
        ET.SubElement(props, "property", {"name": key, "value": _t(value, 500)})
    tests = failures = skipped = 0
    for r in verdict.rules:
        tests += 1
        name = f"{r.rule}[{r.scope}]"
        case = ET.SubElement(suite, "testcase", {"classname": "evalrun.gate", "name": _t(name, 300), "time": "0"})
        message = _t(r.reason, 1000)
        details = _rule_details(r)
        if r.status == "fail" or (r.status == "inconclusive" and fail_inconclusive):
            failures += 1
            el = ET.SubElement(case, "failure", {"message": message, "type": r.status})
            el.text = details
        elif r.status == "not_applicable":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": message})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = (f"{r.status.upper()}: " if r.status == "inconclusive" else "") + details
    if verdict.warnings:
        out = ET.SubElement(suite, "system-out")
        out.text = _t("\n".join(f"warning: {w}" for w in verdict.warnings))
    for f in typed.flips.regressions:
        tests += 1
        failures += 1
        case = ET.SubElement(suite, "testcase", {"classname": "evalrun.cases", "name": _t(f.case_id, 300), "time": "0"})
        message = _t(
            f"regressed: passes {fmt.pct(f.baseline, 0)} of samples in the baseline, "
            f"{fmt.pct(f.candidate, 0)} in the candidate (kind {f.kind}, cohort {f.cohort})",
            1000,
        )
        el = ET.SubElement(case, "failure", {"message": message, "type": "regression"})
        el.text = message
    counts = {"tests": str(tests), "failures": str(failures), "errors": "0", "skipped": str(skipped), "time": "0"}
    suite.attrib.update(counts)
    root = ET.Element("testsuites", {"name": "evalrun", **{k: v for k, v in counts.items() if k != "skipped"}})
    root.append(suite)
    return root


def render_junit(summary: Summary | Mapping[str, Any]) -> str:
    """junit.xml's text (UTF-8 declaration, indented, trailing newline)."""
    root = build_junit(summary)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
