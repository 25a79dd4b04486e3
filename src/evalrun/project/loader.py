"""A project: both variants, the suite and its cases, loaded and validated as one value.

Everything a user can get wrong is checked here, before any model call and without
importing litellm: both configs, the shared suite, every case file, every check's
parameters (regexes compile, schemas exist, python checks import), and that both
variants' templates render for every case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.canonical import stable_hash
from evalrun.checks.refusal import RefusalDetector
from evalrun.errors import UserInputError
from evalrun.project.cases import Case, compile_case_expectations, discover_case_files, load_cases
from evalrun.project.config import (
    LoadedSuite,
    LoadedVariant,
    load_suite,
    load_variant,
    project_root,
    resolve_suite_path,
)
from evalrun.project.prompts import PromptRenderer
from evalrun.project.subset import CaseSelection, select_cases
from evalrun.records import SIDES, Side

__all__ = ["Project", "load_project", "shard_cases"]


@dataclass
class Project:
    """Validated inputs of a comparison: both variants, the suite and its cases."""

    baseline: LoadedVariant
    candidate: LoadedVariant
    suite: LoadedSuite
    cases: list[Case]
    renderers: dict[str, PromptRenderer]
    aa_mode: bool = False
    shard: tuple[int, int] | None = None
    refusal: RefusalDetector | None = None
    """The suite's refusal detector (None: the default English list)."""
    subset: str | None = None
    """How the cases were chosen when not the whole suite (``--cohort x``, ``shard 2/4``)."""
    n_suite_cases: int = 0
    """Cases in the whole suite (``len(cases)`` unless a subset or shard was chosen)."""

    def variant(self, side: Side) -> LoadedVariant:
        """The variant of ``side``."""
        return self.baseline if side == "baseline" else self.candidate

    def _configs(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.config.model_dump(mode="json"),
            "candidate": self.candidate.config.model_dump(mode="json"),
            "templates": [self.baseline.system_template, self.baseline.user_template,
                          self.candidate.system_template, self.candidate.user_template],
            "suite": self.suite.config.model_dump(mode="json"),
        }

    def config_fingerprint(self) -> str:
        """Identity of configs, templates and suite (not the case selection): guards merges."""
        return stable_hash({**self._configs(), "aa_mode": self.aa_mode}, 16)

    def fingerprint(self) -> str:
        """Identity of the inputs (configs, suite, cases): names run folders."""
        cases = [[c.id, c.kind, c.cohort, c.vars, c.messages, c.expect] for c in self.cases]
        return stable_hash({**self._configs(), "cases": cases}, 16)


def load_project(
    baseline: str | Path,
    candidate: str | Path,
    suite: str | Path | None = None,
    *,
    aa_mode: bool = False,
    shard: tuple[int, int] | None = None,
    select: CaseSelection | None = None,
) -> Project:
    """Load and validate everything before any model call (never imports litellm).

    ``select`` keeps only the selected cases (``project.subset`` says how); every case of
    the suite is still validated, so a subset run never hides a broken case file.

    Raises ``UserInputError`` naming file / case / field for the first problem found.
    """
    b = load_variant(baseline)
    c = load_variant(candidate)
    suite_path = resolve_suite_path(b, c, suite)
    s = load_suite(suite_path)
    root = project_root(suite_path)
    files = discover_case_files(s.config.cases, base_dir=s.base_dir, suite_file=suite_path, root=root)
    cases = load_cases(files)
    compile_case_expectations(cases)
    suite_vars = {name for case in cases for name in case.vars}
    renderers = {"baseline": PromptRenderer(b, suite_vars=suite_vars), "candidate": PromptRenderer(c, suite_vars=suite_vars)}
    for case in cases:
        for side in SIDES:
            renderers[side].render(case)
    same_file = Path(baseline).resolve() == Path(candidate).resolve()
    project = Project(b, c, s, cases, renderers, aa_mode=aa_mode or same_file, n_suite_cases=len(cases),
                      refusal=refusal_detector(s))
    described = []
    if select is not None and not select.is_empty:
        project.cases = select_cases(project.cases, select)
        described.append(select.describe())
    if shard is not None:
        project.cases = shard_cases(project.cases, *shard)
        project.shard = shard
        described.append(f"shard {shard[0]}/{shard[1]}")
    if described:
        project.subset = " ".join(described)
    return project


def refusal_detector(suite: LoadedSuite) -> RefusalDetector:
    """The suite's ``refusal:`` settings as a detector; a model-graded ``check`` is built
    here, so an unknown name or bad params are a config error naming the suite field."""
    from evalrun.checks.registry import BuildContext, build_check

    spec = suite.config.refusal
    check = None
    if spec.check is not None:
        ctx = BuildContext(file=str(suite.path), case_id="", base_dir=suite.base_dir, field="refusal.check")
        check = build_check(spec.check, spec.check_params, ctx)
    return RefusalDetector.for_languages(spec.languages, add=spec.phrases, replace=spec.replace, window=spec.window,
                                         check=check, check_name=spec.check)


def shard_cases(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """The deterministic slice I of N (1-based): by a hash of the case id, so adding a case
    never moves the others between shards."""
    if count < 1 or not 1 <= index <= count:
        raise UserInputError(f"--shard {index}/{count}: expected I/N with 1 <= I <= N")
    return [c for c in cases if int(stable_hash(c.id, 8), 16) % count == index - 1]
