"""Judge checks of a project, validated when it loads: each case's ``rubric`` / ``pairwise`` /
``similar`` expectations, and the suite's ``judge:`` block with its templates and
calibration set.

Everything here fails as a one-line ``UserInputError`` naming file, case and field, before
any model call: a judge check without a judge, an unreadable criteria file, a template
that does not render, a calibration file that does not parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalrun.errors import UserInputError
from evalrun.judging.spec import (
    JUDGE_CHECKS,
    JudgeSettings,
    PairwiseCheck,
    ResolvedJudge,
    RubricCheck,
    SimilarCheck,
    parse_judge_check,
    resolve_criteria,
    resolve_judge,
)
from evalrun.project.yamlio import resolve_inside

if TYPE_CHECKING:
    from evalrun.judging.calibration import CalibrationSet
    from evalrun.judging.prompting import JudgeTemplate

__all__ = ["BUNDLED", "CaseJudge", "JudgeSetup", "is_judge_check", "load_judge_setup", "parse_case_judges"]

BUNDLED = "bundled"
"""``judge.calibration: bundled`` names the calibration set shipped for the example suite."""

JudgeKind = Literal["rubric", "pairwise", "similar"]


def is_judge_check(name: str) -> bool:
    """Whether the expectation ``name`` is a judge check (run after the variant calls)."""
    return name in JUDGE_CHECKS


@dataclass(frozen=True)
class CaseJudge:
    """One judge check of one case, its criteria read and its judge resolved."""

    name: str
    """Display name: ``rubric``, or ``rubric#2`` when a case holds two."""
    kind: JudgeKind
    check: RubricCheck | PairwiseCheck | SimilarCheck
    judge: ResolvedJudge
    """The judge model and parameters (``similar``: the embedding model and its endpoint)."""
    embedding_model: str | None = None
    """``similar`` only: the embedding model."""
    field: str = ""
    """Where the check is written (``expect[2].rubric``)."""


@dataclass(frozen=True)
class JudgeSetup:
    """The suite's judge, ready to use: settings, prompts and calibration set."""

    settings: JudgeSettings
    rubric_template: JudgeTemplate
    pairwise_template: JudgeTemplate
    calibration: CalibrationSet | None
    calibration_source: str | None
    """The calibration file as the suite names it (``bundled``: the shipped set)."""

    def suite_judge(self) -> ResolvedJudge:
        """The suite-level judge (what the calibration set measures)."""
        s = self.settings
        return ResolvedJudge(model=s.model, api_base=s.api_base, api_key_env=s.api_key_env, params=dict(s.params),
                             samples=s.samples)


def parse_case_judges(
    expect: list[tuple[str, dict[str, Any]]],
    *,
    settings: JudgeSettings | None,
    file: str,
    case_id: str,
    root: Path | None,
    suite_file: Path | None,
) -> list[CaseJudge]:
    """The judge checks among a case's expectations, validated (others are left alone)."""
    names = [n for n, _ in expect if is_judge_check(n)]
    seen: dict[str, int] = {}
    out: list[CaseJudge] = []
    base = Path(file).resolve().parent
    for i, (name, params) in enumerate(expect):
        if not is_judge_check(name):
            continue
        where = f"expect[{i}].{name}"
        check = parse_judge_check(name, params, file=file, case_id=case_id, field=where)
        seen[name] = seen.get(name, 0) + 1
        display = f"{name}#{seen[name]}" if names.count(name) > 1 else name
        if isinstance(check, SimilarCheck):
            model = check.embedding_model or (settings.embedding_model if settings is not None else None)
            if model is None:
                raise UserInputError(
                    "similar needs an embedding model: set embedding_model here or judge.embedding_model in the "
                    f"suite file{f' {suite_file}' if suite_file else ''}", file=file, case_id=case_id, field=where)
            if settings is None:
                raise UserInputError(
                    "similar needs the suite's `judge:` block (its endpoint and, for the other judge checks, "
                    f"model){f' in {suite_file}' if suite_file else ''}", file=file, case_id=case_id, field=where)
            override = check.judge
            embed = ResolvedJudge(
                model=model,
                api_base=override.api_base if override and override.api_base is not None else settings.api_base,
                api_key_env=(override.api_key_env if override and override.api_key_env is not None
                             else settings.api_key_env),
                params={}, samples=1)
            out.append(CaseJudge(display, "similar", check, embed, embedding_model=model, field=where))
            continue
        if settings is None:
            raise UserInputError(
                f"{name} needs a judge: add a `judge:` block (at least `model:`) to the suite file"
                f"{f' {suite_file}' if suite_file else ''}", file=file, case_id=case_id, field=where)
        check = resolve_criteria(check, base_dir=base, root=root, file=file, case_id=case_id, field=where)
        judge = resolve_judge(settings, check, file=file, case_id=case_id, field=where)
        kind: JudgeKind = "rubric" if isinstance(check, RubricCheck) else "pairwise"
        out.append(CaseJudge(display, kind, check, judge, field=where))
    return out


def load_judge_setup(settings: JudgeSettings | None, *, suite_file: Path, root: Path) -> JudgeSetup | None:
    """The suite's judge with its templates compiled and its calibration set read (None: no judge)."""
    if settings is None:
        return None
    from evalrun.judging.calibration import BUNDLED_CALIBRATION, load_calibration
    from evalrun.judging.prompting import load_template

    base = suite_file.resolve().parent

    def inside(rel: str, field: str) -> Path:
        return resolve_inside(base, rel, file=suite_file, field=field, root=root)

    rubric = load_template("rubric", inside(settings.rubric_template, "judge.rubric_template")
                           if settings.rubric_template else None)
    pairwise = load_template("pairwise", inside(settings.pairwise_template, "judge.pairwise_template")
                             if settings.pairwise_template else None)
    calibration = None
    if settings.calibration == BUNDLED:
        calibration = load_calibration(BUNDLED_CALIBRATION)
    elif settings.calibration is not None:
        path = inside(settings.calibration, "judge.calibration")
        if not path.is_file():
            raise UserInputError(f"calibration file {settings.calibration!r} not found", file=suite_file,
                                 field="judge.calibration")
        calibration = load_calibration(path)
    return JudgeSetup(settings, rubric, pairwise, calibration, settings.calibration)
