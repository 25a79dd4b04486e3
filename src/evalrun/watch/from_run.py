"""`evalrun plan RUN_DIR`: a ready rollout plan from a Stage-1 run folder.

Labels come from the run's two configs (summary.json ``labels``), triggers from its gate
rules one to one (rule name = trigger metric; a rule with a margin becomes a vs_baseline
or ratio trigger, a floor an absolute one), cohorts and owner from the candidate's
``rollout:`` section (manifest.json). Reads the run folder; never changes it.
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("not found: is this a Stage-1 run folder?", file=path) from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read: {exc}", file=path) from None


def triggers_from_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overall Stage-1 gate rules → plan triggers (cohort-scoped and label rules are skipped)."""
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
        metric = METRICS[name]
        if name == "error_rate":
            add({"metric": name, "kind": "absolute", "max": float(margin if margin is not None else 0.01)})
        elif metric.kind in ("continuous", "quantile"):
            if margin is not None and float(margin) > 1:
                add({"metric": name, "kind": "ratio", "max_increase": round(float(margin) - 1, 6)})
        elif name == "known_bad_refusal" and margin is None:
            # Stage 1 fails on any flipped case; live traffic has no paired cases, so one point
            # of refusal rate is the smallest tolerance a sequence can ever call safe.
            add({"metric": name, "kind": "vs_baseline", "margin": 0.01})
        elif margin is not None:
            # The rule's tolerance (its PASS margin): live, one boundary separates harm from safe.
            add({"metric": name, "kind": "vs_baseline", "margin": abs(float(margin))})
        if floor is not None and metric.kind == "binary":
            add({"metric": name, "kind": "absolute", "min": float(floor)})
        ceiling = rule.get("ceiling")
        if ceiling is not None and metric.kind == "binary":
            add({"metric": name, "kind": "absolute", "max": float(ceiling)})
    return out


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

    def rule_for(cohorts: list[str]) -> str | None:
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
    for s in stages:
        if s.get("cohort") is None:
            s.pop("cohort", None)
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
    header = (f"# Rollout plan written by `evalrun plan {Path(run_dir)}` from the Stage-1 gate rules.\n"
              "# Point source.path (or source.uri) at your request logs, then:\n"
              f"#   evalrun watch {target.name} --stage canary\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target
