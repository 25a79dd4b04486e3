"""Write small evalrun projects into a temp folder for tests (no model involved)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

LABELS = {
    "model_version": "m1",
    "prompt_version": "p1",
    "retrieval_version": "none",
    "policy_version": "none",
}


def variant(name: str = "baseline", **overrides: Any) -> dict[str, Any]:
    """A minimal valid variant config."""
    data: dict[str, Any] = {
        "name": name,
        "suite": "suite.yaml",
        "model": "openai/test-model",
        "prompt": {"system": "You are terse.", "user": "{{ question }}"},
        "versions": dict(LABELS),
    }
    data.update(overrides)
    return data


def case(cid: str, kind: str = "representative", cohort: str = "c1", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": cid, "kind": kind, "cohort": cohort, "vars": {"question": f"q {cid}"}}
    data.update(extra)
    return data


def write_project(
    root: Path,
    *,
    cases: list[dict[str, Any]] | None = None,
    baseline: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
    suite: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Lay out ROOT/evals/{baseline,candidate,suite}.yaml and ROOT/cases/cases.yaml."""
    evals = root / "evals"
    evals.mkdir(parents=True, exist_ok=True)
    (root / "cases").mkdir(exist_ok=True)
    suite_data = {"cases": ["../cases"], "report_dir": "../reports", "concurrency": 4, "max_attempts": 2,
                  "backoff": {"initial_s": 0.01, "max_s": 0.05}}
    suite_data.update(suite or {})
    (evals / "suite.yaml").write_text(yaml.safe_dump(suite_data), encoding="utf-8")
    b = evals / "baseline.yaml"
    c = evals / "candidate.yaml"
    b.write_text(yaml.safe_dump(baseline or variant("baseline")), encoding="utf-8")
    c.write_text(yaml.safe_dump(candidate or variant("candidate")), encoding="utf-8")
    if cases is None:
        cases = [case(f"c{i:02d}") for i in range(4)]
    (root / "cases" / "cases.yaml").write_text(yaml.safe_dump(cases, sort_keys=False), encoding="utf-8")
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return b, c
