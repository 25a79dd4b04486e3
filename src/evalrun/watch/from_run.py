"""`evalrun plan RUN_DIR`: a ready rollout plan from a Stage-1 run folder.

Labels come from the run's two configs (summary.json ``labels``), triggers from its gate
rules one to one (rule name = trigger metric), cohorts and owner from the candidate's
``rollout:`` section (manifest.json). Reads the run folder; never changes it.

A rule's two boundaries carry over: its PASS ``margin`` becomes the trigger's margin (safe
when the live sequence shows the change within it) and its ``fail_margin`` the trigger's
``fail_margin`` (rollback when the sequence shows the change beyond it), so live traffic
is judged by the same three-way rule as Stage 1. A floor or ceiling becomes an absolute
trigger. The error rate always gets a comparative trigger (``ERROR_TRIGGER``), whatever
Stage 1 had: see there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalrun.errors import UserInputError
from evalrun.watch.metrics import METRICS
from evalrun.watch.plan import LABEL_NAMES

TODO_OWNER = "TODO(owner): who watches this stage and decides a rollback"
"""Written where the Stage-1 run names no owner."""

ERROR_TRIGGER: dict[str, Any] = {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0, "fail_margin": 0.0}
"""The live error-rate trigger every written plan has: roll back when the candidate's error
rate is evidently higher than the baseline's (fail_margin 0, as Stage 1's rate rules);
safe once it is shown below twice the baseline's. Stage 1 has no comparative error rule
(its ``max_error_rate`` only says whether either side was measurable), but on live traffic
a candidate that errors more is the first thing a canary must catch. It is a ratio, tested
with the count-based sequence suited to rare events, because error rates are small and
vary with the provider: a fixed limit would roll back a candidate for an outage both arms
share. Why 2x: in the simulated default canary (24 h, 9,600 candidate requests at a 0.5 %
error rate, about 48 candidate errors) an equal candidate's error trigger ended safe in 39
of 40 runs at 2x and in 9 of 40 at 1.5x (benchmarks/bench_watch_sim.py's A/A canary)."""

ERROR_TOLERANCE_SEVERITY = "hold"
"""Stage 1's ``max_error_rate`` (errors beyond it on either side: could not measure) becomes an
absolute trigger that holds rather than rolls back: errors both arms share are not the
candidate's doing, and the comparative ``ERROR_TRIGGER`` rolls back the ones that are."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("not found: is this a Stage-1 run folder?", file=path) from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read: {exc}", file=path) from None


def _tolerance(value: Any, higher_is_better: bool) -> float:
    """A Stage-1 rate change (signed: -0.03 is a 3-point drop) as a live tolerance in the
    harmful direction (>= 0: a margin requiring an improvement cannot be watched live)."""
    v = float(value)
    return round(max(-v if higher_is_better else v, 0.0), 6) + 0.0  # + 0.0: never write -0.0


def triggers_from_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overall Stage-1 gate rules → plan triggers (cohort-scoped and label rules are skipped).

    ``rules``: summary.json's ``verdict.rules`` (or ``stage1_rules`` of a suite's settings).
    A rate rule Stage 1 found not applicable (no case measured it) is skipped: the suite
    does not exercise it, and a live trigger on it would hold every stage for want of data.
    """
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def add(trigger: dict[str, Any]) -> None:
        key = (trigger["metric"], trigger["kind"])
        if key not in seen:
            seen.add(key)
            out.append(trigger)

    for rule in rules:
        name = str(rule.get("rule") or "")
        if name not in METRICS or str(rule.get("scope", "overall")) != "overall":
            continue
        margin, floor = rule.get("margin"), rule.get("floor")
        fail_margin = rule.get("fail_margin")
        metric = METRICS[name]
        if metric.kind == "binary" and rule.get("status") == "not_applicable":
            continue
        if name == "error_rate":
            add(dict(ERROR_TRIGGER))
            if margin is not None:
                add({"metric": name, "kind": "absolute", "max": float(margin), "severity": ERROR_TOLERANCE_SEVERITY})
            continue
        if metric.kind in ("continuous", "quantile"):
            if margin is not None and float(margin) > 1:
                trigger: dict[str, Any] = {"metric": name, "kind": "ratio", "max_increase": round(float(margin) - 1, 6)}
                # Quantile triggers test one threshold (no second boundary); the PASS margin stays.
                if fail_margin is not None and metric.kind == "continuous" and float(fail_margin) != float(margin):
                    trigger["fail_margin"] = round(max(float(fail_margin) - 1, 0.0), 6)
                add(trigger)
        elif name == "known_bad_refusal" and margin is None:
            # Stage 1 fails on any flipped case; live traffic has no paired cases: roll back on
            # any evident drop, safe within one point (the smallest tolerance a sequence can show).
            add({"metric": name, "kind": "vs_baseline", "margin": 0.01, "fail_margin": 0.0})
        elif margin is not None:
            trigger = {"metric": name, "kind": "vs_baseline", "margin": _tolerance(margin, metric.higher_is_better)}
            if fail_margin is not None:
                trigger["fail_margin"] = _tolerance(fail_margin, metric.higher_is_better)
            add(trigger)
        if floor is not None and metric.kind == "binary":
            add({"metric": name, "kind": "absolute", "min": float(floor)})
        ceiling = rule.get("ceiling")
        if ceiling is not None and metric.kind == "binary":
            add({"metric": name, "kind": "absolute", "max": float(ceiling)})
    if ("error_rate", "ratio") not in seen:
        add(dict(ERROR_TRIGGER))
    return out


def unwatched_rules(rules: list[dict[str, Any]]) -> list[str]:
    """Overall rate rules ``triggers_from_rules`` leaves out because Stage 1 measured no case for them."""
    return sorted({str(r.get("rule")) for r in rules
                   if str(r.get("rule")) in METRICS and METRICS[str(r.get("rule"))].kind == "binary"
                   and str(r.get("scope", "overall")) == "overall" and r.get("status") == "not_applicable"})


def stage1_rules(settings: dict[str, dict[str, Any]], max_error_rate: float | None = None) -> list[dict[str, Any]]:
    """A suite's rule settings (``gate.rules``: name → margin, fail_margin, …) as the rule list
    a run's summary.json holds, with the error-rate measurement rule when ``max_error_rate`` is
    given: what ``triggers_from_rules`` reads."""
    rules: list[dict[str, Any]] = []
    if max_error_rate is not None:
        rules.append({"rule": "error_rate", "scope": "overall", "margin": max_error_rate})
    rules += [{"rule": name, "scope": "overall", **spec} for name, spec in settings.items()
              if spec.get("enabled", True)]
    return rules


def default_triggers() -> list[dict[str, Any]]:
    """The triggers `evalrun plan` writes from a run gated by the default rules
    (``evalrun.catalogue.default_rules()`` and the default ``max_error_rate``)."""
    from evalrun.catalogue import default_rules
    from evalrun.project.config import GateConfig

    return triggers_from_rules(stage1_rules(default_rules(), GateConfig().max_error_rate))


def default_stages(owner: str = TODO_OWNER, canary: list[str] | None = None,
                   expanded: list[str] | None = None) -> list[dict[str, Any]]:
    """The three stages a written plan has (canary, cohort, wider), cohorts as ``IN`` rules."""

    def rule_for(cohorts: list[str] | None) -> str | None:
        if not cohorts:
            return None
        return "cohort IN (" + ", ".join("'" + c.replace("'", "''") + "'" for c in cohorts) + ")"

    stages: list[dict[str, Any]] = [
        {"name": "canary", "owner": owner, "cohort": rule_for(canary), "traffic_share": 0.05,
         "min_samples": 500, "min_duration": "2h", "max_duration": "24h"},
        {"name": "cohort", "owner": owner, "cohort": rule_for(expanded), "traffic_share": 0.10,
         "min_samples": 5000, "min_duration": "24h", "max_duration": "72h"},
        {"name": "wider", "owner": owner, "traffic_share": 0.25, "min_samples": 20000,
         "min_duration": "48h", "max_duration": "7d"},
    ]
    for st in stages:
        if st.get("cohort") is None:
            st.pop("cohort", None)
    return stages


def plan_from_run(run_dir: str | Path, *, log_path: str = "logs/requests.jsonl") -> dict[str, Any]:
    """The plan as data (validate with ``validate_plan`` or dump as YAML)."""
    root = Path(run_dir)
    summary = _read_json(root / "summary.json")
    manifest = _read_json(root / "manifest.json")
    labels = summary.get("labels") or {}
    base = {k: str((labels.get("baseline") or {}).get(k)) for k in LABEL_NAMES}
    cand_all = {k: str((labels.get("candidate") or {}).get(k)) for k in LABEL_NAMES}
    if any(v == "None" for v in base.values()):
        raise UserInputError("summary.json has no baseline labels", file=root / "summary.json", field="labels")
    cand = {k: v for k, v in cand_all.items() if v != base[k] and v != "None"}
    rules = list((summary.get("verdict") or {}).get("rules") or [])
    rollout = ((manifest.get("candidate") or {}).get("config") or {}).get("rollout") or {}
    owner = str(rollout.get("owner") or TODO_OWNER)
    canary = [str(c) for c in rollout.get("canary_cohorts") or []]
    expanded = [str(c) for c in rollout.get("expanded_cohorts") or []]
    stages = default_stages(owner, canary, expanded)
    name = f"{(summary.get('variants') or {}).get('baseline', {}).get('name', 'baseline')} → " \
           f"{(summary.get('variants') or {}).get('candidate', {}).get('name', 'candidate')}"
    return {
        "version": 1,
        "name": name,
        "source": {"kind": "evalrun", "path": log_path},
        "labels": {"baseline": base, "candidate": cand or cand_all},
        "unit": "request",
        "alpha": 0.05,
        "bucket": "15m",
        "triggers": triggers_from_rules(rules),
        "stages": stages,
    }


def write_plan(run_dir: str | Path, out: str | Path, *, log_path: str = "logs/requests.jsonl",
               force: bool = False) -> Path:
    """Write ``out`` (rollout.yaml) from the run, after validating it as a plan."""
    import yaml

    from evalrun.watch.plan import validate_plan

    target = Path(out)
    if target.exists() and not force:
        raise UserInputError("exists; pass --force to overwrite", file=target)
    data = plan_from_run(run_dir, log_path=log_path)
    validate_plan(data, target)
    summary = _read_json(Path(run_dir) / "summary.json")
    unwatched = unwatched_rules(list((summary.get("verdict") or {}).get("rules") or []))
    skipped = (f"# Not watched: {', '.join(unwatched)} (no Stage-1 case measured them; add a trigger if\n"
               "# your live traffic has them, e.g. {metric: tool_valid, kind: vs_baseline, margin: 0.03,\n"
               "# fail_margin: 0}).\n") if unwatched else ""
    header = (f"# Rollout plan written by `evalrun plan {Path(run_dir)}` from the Stage-1 gate rules.\n"
              "# Comparative triggers keep both Stage-1 boundaries: roll back when the change is shown\n"
              "# beyond fail_margin (0: any evident regression), continue when it is shown within\n"
              "# margin / max_increase, hold in between. The error_rate ratio trigger is evalrun's\n"
              "# default (Stage 1 has no comparative error rule): roll back on an evident rise.\n"
              f"{skipped}"
              "# Point source.path (or source.uri) at your request logs, then:\n"
              f"#   evalrun watch {target.name} --stage canary\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target
