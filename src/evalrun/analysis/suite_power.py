"""What a suite can decide, before any call: per rule, can an equally good candidate PASS, and
what is the smallest regression a FAIL can catch.

These are bounds that hold whatever the models do, computed from the suite's shape alone
(cases per rule, samples, the rules and α) with the intervals the gate uses:

* a rate rule's PASS needs at least ``power.cases_to_pass`` cases even when no case changes
  outcome — below that, no candidate can pass it ("12 parse cases: the 3-point margin can
  never pass; 53 cases could");
* its FAIL, at the family-wise level α/m a lone regression is tested at, cannot detect a
  drop smaller than ``power.rate_drop_detectable`` even in the best case (only the
  regressing cases change); real churn makes the detectable drop larger, and the report
  measures it;
* latency rules need ``min_n`` calls per side, ratio rules ``min_n`` paired cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalrun.analysis import power
from evalrun.project.config import RuleSpec

if TYPE_CHECKING:
    from evalrun.project.loader import Project

__all__ = ["RulePower", "SuitePower", "suite_power"]

_RATE_MEASURED = {
    "pass_rate": "",
    "parse_strict": " with a json or json_schema check",
    "schema_valid": " with a json_schema check",
    "tool_valid": " with a tool_call check",
    "over_refusal": " that should be answered",
    "known_bad_refusal": " that should be refused",
    "judge_pass_rate": " with a rubric check (a calibrated judge widens the interval by about 1/J)",
    "pairwise_net_loss": " with a pairwise check",
}
_JUDGE_RULES = ("judge_pass_rate", "pairwise_net_loss")


@dataclass(slots=True)
class RulePower:
    """One rule in one scope, as this suite can decide it."""

    rule: str
    scope: str
    cases: int
    can_pass: bool | None
    cases_to_pass: int | None = None
    smallest_detectable: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class SuitePower:
    """Every enabled rule's pre-run power, and the family-wise level FAIL tests face."""

    rules: list[RulePower] = field(default_factory=list)
    hypotheses: int = 0
    fail_level: float = 0.05

    def lines(self) -> list[str]:
        """One line per rule, for ``evalrun estimate``."""
        out = [f"power (before any call; FAIL tests at α/{self.hypotheses} = {self.fail_level:.4g} family-wise, "
               "80 % power, best case):"]
        for r in self.rules:
            scope = "" if r.scope == "overall" else f" [{r.scope}]"
            out.append(f"  {r.rule}{scope}: {r.note}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"hypotheses": self.hypotheses, "fail_level": self.fail_level,
                "rules": [r.to_dict() for r in self.rules]}


def _rate_counts(cases: list[Any]) -> dict[str, int]:
    from evalrun.checks.scoring import check_kind

    counts = dict.fromkeys(_RATE_MEASURED, 0)
    for c in cases:
        kinds = {check_kind(name) for name, _ in c.expect}
        should_refuse = bool(getattr(c.compiled, "should_refuse", c.kind == "known_bad"))
        counts["pass_rate"] += 1
        counts["parse_strict"] += bool(kinds & {"json", "json_schema"})
        counts["schema_valid"] += "json_schema" in kinds
        counts["tool_valid"] += "tool_call" in kinds
        counts["known_bad_refusal"] += should_refuse
        counts["over_refusal"] += not should_refuse
        judged = {j.kind for j in getattr(c, "judges", [])}
        counts["judge_pass_rate"] += "rubric" in judged
        counts["pairwise_net_loss"] += "pairwise" in judged
    return counts


def _pts(x: float) -> str:
    """A margin in words: ``-0.03`` → ``3-point``."""
    return f"{abs(x) * 100:.3g}-point"


def suite_power(project: Project) -> SuitePower:
    """Per enabled rule (overall and per critical cohort): can it PASS, what can it detect."""
    from evalrun.analysis.gate import COHORT_RULES, LATENCY_RULES, RULES, fail_threshold

    suite = project.suite.config
    gate = suite.gate
    k = suite.samples
    conf_z = power.z_one_sided(gate.alpha)
    scopes: list[tuple[str, list[Any]]] = [("overall", list(project.cases))]
    for cohort in gate.critical_cohorts:
        scopes.append((f"cohort:{cohort}", [c for c in project.cases if c.cohort == cohort]))
    from evalrun.providers.registry import spec_for

    local = {side: spec_for(project.variant(side).config.model).free for side in ("baseline", "candidate")}
    priced = {side: project.variant(side).config.pricing is not None or not local[side]
              for side in ("baseline", "candidate")}
    plan: list[tuple[str, str, RuleSpec, int]] = []
    hypotheses = 0
    for scope, cases in scopes:
        counts = _rate_counts(cases)
        for name, rd in RULES.items():
            spec = gate.rules.get(name) or RuleSpec()
            if not spec.enabled or (scope != "overall" and name not in COHORT_RULES):
                continue
            n = counts.get(name, len(cases))
            if name in _JUDGE_RULES and n == 0:
                continue  # no judge check of that kind: the rule does not exist for this suite
            plan.append((name, scope, spec, n))
            if rd.kind == "delta":
                hypotheses += (n > 0) * (1 + (spec.floor is not None or spec.ceiling is not None))
            elif name in LATENCY_RULES:
                hypotheses += n * k >= (spec.min_n or 2)
            elif name != "cost_ratio" or not all(local.values()):
                hypotheses += n >= (spec.min_n or 2)
    level = gate.alpha / max(hypotheses, 1)
    out = SuitePower(hypotheses=hypotheses, fail_level=level)
    for name, scope, spec, n in plan:
        rd = RULES[name]
        if rd.kind == "delta":
            out.rules.append(_rate_power(name, scope, spec, n, k, conf_z, level, fail_threshold(spec)))
        elif name in LATENCY_RULES:
            need = spec.min_n or 2
            calls = n * k
            ok = calls >= need
            note = (f"{calls} calls per side; decides from {need}" if ok else
                    f"{calls} calls per side < {need} (min_n): can never PASS; needs {-(-need // k)} cases "
                    f"× {k} sample(s)")
            out.rules.append(RulePower(name, scope, n, ok, None, None, note))
        else:
            need = spec.min_n or 2
            if name == "cost_ratio" and all(local.values()):
                out.rules.append(RulePower(name, scope, n, None, None, None, "not applicable: local models cost nothing"))
                continue
            if name == "cost_ratio" and not all(priced.values()):
                note = "needs prices for both models (litellm's price map or `pricing:`), else not applicable; "
            else:
                note = ""
            ok = n >= need
            note += (f"{n} paired cases; decides from {need}; its MDE depends on the per-case spread "
                     "(the report measures it)" if ok else f"{n} paired cases < {need} (min_n): can never PASS")
            out.rules.append(RulePower(name, scope, n, ok, None, None, note))
    return out


def _rate_power(
    name: str, scope: str, spec: RuleSpec, n: int, k: int, conf_z: float, level: float, fail_at: float | None
) -> RulePower:
    if n == 0:
        return RulePower(name, scope, 0, None, None, None, f"not applicable: no cases{_RATE_MEASURED[name]}")
    margin = spec.margin if spec.margin is not None else 0.0
    lower_is_better = name == "over_refusal"
    safe = margin > 0 if lower_is_better else margin < 0  # an equal candidate can only clear a margin on its safe side
    to_pass = power.cases_to_pass(abs(margin), conf_z) if safe else None
    bound = spec.floor if spec.floor is not None else spec.ceiling
    if bound is not None:
        need = power.bound_cases_to_pass(bound, conf_z, floor=spec.floor is not None)
        to_pass = None if to_pass is None or need is None else max(to_pass, need)
    distance = abs(fail_at if fail_at is not None else margin)
    detect = power.rate_drop_detectable(n, distance, level)
    word = "rise" if name == "over_refusal" else "drop"
    samples = f" × {k} samples" if k > 1 else ""
    what = f"{n} case{'s' if n != 1 else ''}{_RATE_MEASURED[name]}{samples}"
    if to_pass is None:
        pass_txt = f"a {_pts(margin)} margin on this side can never PASS an equally good candidate"
    elif n < to_pass:
        pass_txt = f"can never PASS with the {_pts(margin)} margin ({to_pass} cases could)"
    else:
        pass_txt = f"an equally good candidate can PASS (needs ≥ {to_pass} cases)"
    if bound is not None:
        pass_txt += f" and the {'floor' if spec.floor is not None else 'ceiling'} {bound * 100:g}%"
    detect_txt = (f"smallest detectable {word} {detect * 100:.3g} points" if detect is not None
                  else f"no {word} is detectable at this level")
    return RulePower(name, scope, n, to_pass is not None and n >= to_pass, to_pass, detect,
                     f"{what}: {pass_txt}; {detect_txt}")
