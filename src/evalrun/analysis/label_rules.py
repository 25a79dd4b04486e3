"""The label audit as gate rules: one ``label_<label>`` rule per version label."""

from __future__ import annotations

from collections.abc import Sequence

from evalrun.analysis.gate import RuleResult, Status
from evalrun.project.fingerprint import LabelFinding, fields_text, hidden_edit_rule

__all__ = ["audit_rules"]


def audit_rules(findings: Sequence[LabelFinding]) -> list[RuleResult]:
    """One gate rule per label (``label_<label>``): fail on a hidden edit, else pass.

    A bump without a change passes with a warning in its reason: it is harmless for the
    offline gate but splits live dashboards for no reason.
    """
    rules: list[RuleResult] = []
    content_changed = {
        f.label for f in findings if f.baseline_fingerprint != f.candidate_fingerprint
    }
    for f in findings:
        trigger = f"hidden {f.label} edit without a version bump"
        status: Status
        if f.status == "hidden_edit":
            status = "fail"
            reason = (
                f"{hidden_edit_rule(f.label)}: {fields_text(f.changed_fields)} changed but "
                f"{f.label} is {f.candidate_label!r} on both sides; bump the label"
            )
        elif f.status == "bumped_without_change":
            status = "pass"
            reason = (
                f"warning: {f.label} bumped {f.baseline_label!r} -> {f.candidate_label!r} "
                "but nothing it covers changed"
            )
            if f.label == "prompt_version" and content_changed & {
                "policy_version",
                "retrieval_version",
            }:
                # Templates read policy/retrieval values: the rendered prompt can still differ.
                reason += " (template sources identical; rendered prompts may differ through policy/retrieval values)"
        elif f.status == "bumped":
            status = "pass"
            reason = (
                f"{f.label} bumped {f.baseline_label!r} -> {f.candidate_label!r}; "
                f"changed {fields_text(f.changed_fields)}"
            )
        else:
            status = "pass"
            reason = f"{f.label} {f.candidate_label!r} on both sides, nothing it covers changed"
        rules.append(
            RuleResult(
                rule=f"label_{f.label}",
                scope="overall",
                trigger=trigger,
                metric="-",
                status=status,
                reason=reason,
            )
        )
    return rules
