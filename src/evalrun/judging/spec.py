"""What the judge checks and the suite's ``judge:`` block mean, as validated models.

Judge checks go in a case's ``expect`` list like every other check::

    expect:
      - rubric: {criteria: "answers the question asked, correctly"}
      - rubric: {criteria_file: criteria/helpful.txt, scale: 5, pass_threshold: 4, samples: 3}
      - pairwise: {criteria: "which reply helps the customer more"}
      - similar: {reference: "Paris is the capital of France.", threshold: 0.8}

Every model forbids unknown keys and is strict about types (``samples: "3"`` in YAML is a
mistake, not a value). :func:`parse_judge_check` turns a validation failure into one
:class:`~evalrun.errors.UserInputError` line naming the file, the case and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalrun.errors import UserInputError
from evalrun.judging.reliability import ReliabilityPolicy

__all__ = [
    "DEFAULT_JUDGE_PARAMS",
    "JUDGE_CHECKS",
    "JudgeCheck",
    "JudgeOverride",
    "JudgeSettings",
    "PairwiseCheck",
    "ResolvedJudge",
    "RubricCheck",
    "SimilarCheck",
    "format_validation_error",
    "parse_judge_check",
    "resolve_criteria",
    "resolve_judge",
]

JUDGE_CHECKS: tuple[str, ...] = ("rubric", "pairwise", "similar")
"""Check names (the ``expect`` keys) this package defines."""

MAX_CRITERIA_CHARS = 20_000
"""Longest criteria text (inline or from a file); a longer one is almost surely the wrong file."""

MAX_SAMPLES = 20
"""Most judge samples per judged output."""

DEFAULT_JUDGE_PARAMS: dict[str, Any] = {"temperature": 0, "max_tokens": 256}
"""Judge call parameters unless the suite says otherwise: deterministic, and bounded (a
one-sentence reason and a verdict need far less; a judge rambling past it is a judge error,
and the bound lets budgets and estimates count judge calls)."""

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class JudgeOverride(_Strict):
    """Per-check judge settings, laid over the suite's ``judge:`` (unset fields inherit)."""

    model: str | None = Field(default=None, min_length=1)
    """litellm model string of the judge, e.g. ``openai/gpt-4o-mini`` or ``local/smollm2``."""
    api_base: str | None = Field(default=None, min_length=1)
    """Base URL of an OpenAI-compatible endpoint."""
    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """Name of the environment variable holding the key (never the key itself)."""
    params: dict[str, Any] | None = None
    """Completion parameters merged over the suite's (``temperature``, ``max_tokens``...)."""


class _CriteriaCheck(_Strict):
    criteria: str | None = Field(default=None, min_length=1, max_length=MAX_CRITERIA_CHARS)
    """What a good output does, in plain words."""
    criteria_file: str | None = Field(default=None, min_length=1)
    """A text file holding the criteria, relative to the case file."""
    reference: str | None = Field(default=None, min_length=1)
    """An ideal answer the judge may compare with (optional)."""
    samples: int | None = Field(default=None, ge=1, le=MAX_SAMPLES)
    """Judge samples per judged output (default: the suite's ``judge.samples``)."""
    judge: JudgeOverride | None = None
    """A different judge model or parameters for this check."""

    @model_validator(mode="after")
    def _one_criteria(self) -> _CriteriaCheck:
        if (self.criteria is None) == (self.criteria_file is None):
            raise ValueError("give exactly one of criteria or criteria_file")
        if self.criteria is not None and not self.criteria.strip():
            raise ValueError("criteria is empty")
        return self


class RubricCheck(_CriteriaCheck):
    """``rubric``: the judge grades one output against criteria, pass/fail or on a 1–N scale."""

    scale: int | None = Field(default=None, ge=2, le=100)
    """N of a 1–N scale; unset for a plain pass/fail verdict."""
    pass_threshold: int | None = Field(default=None, ge=1)
    """With ``scale``: the lowest passing score (required: there is no safe default)."""

    @model_validator(mode="after")
    def _threshold(self) -> RubricCheck:
        if self.scale is None and self.pass_threshold is not None:
            raise ValueError("pass_threshold needs a scale (for example scale: 5)")
        if self.scale is not None:
            if self.pass_threshold is None:
                raise ValueError(f"scale: {self.scale} needs pass_threshold, the lowest passing score (1–{self.scale})")
            if self.pass_threshold > self.scale:
                raise ValueError(f"pass_threshold {self.pass_threshold} is above the scale's top score {self.scale}")
        return self


class PairwiseCheck(_CriteriaCheck):
    """``pairwise``: the judge compares the baseline's and the candidate's output of a case.

    It is always asked in both orders (baseline as A, then candidate as A); there is no
    setting to turn that off.
    """


class SimilarCheck(_Strict):
    """``similar``: cosine similarity of the output's embedding to a reference answer's."""

    reference: str = Field(min_length=1)
    """The reference answer."""
    threshold: float = Field(default=0.75, ge=-1.0, le=1.0, allow_inf_nan=False)
    """Lowest passing cosine similarity (0.75 by default, as promptfoo's ``similar``); what
    counts as similar depends on the embedding model, so set it from your own examples."""
    embedding_model: str | None = Field(default=None, min_length=1)
    """litellm embedding model (default: the suite's ``judge.embedding_model``)."""
    judge: JudgeOverride | None = None
    """A different endpoint (``api_base``, ``api_key_env``) for the embedding call."""


JudgeCheck = RubricCheck | PairwiseCheck | SimilarCheck
"""Any judge check specification."""

_MODELS: dict[str, type[RubricCheck] | type[PairwiseCheck] | type[SimilarCheck]] = {
    "rubric": RubricCheck,
    "pairwise": PairwiseCheck,
    "similar": SimilarCheck,
}


def format_validation_error(exc: ValidationError, *, prefix: str = "") -> tuple[str, str]:
    """(field, message) of the first problem, worded for someone editing YAML.

    ``prefix`` is prepended to the field path (``expect[2].rubric``).
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = ".".join(p for p in (prefix, loc) if p)
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "is required"
    return field, msg


def parse_judge_check(
    name: str,
    params: Any,
    *,
    file: str | Path | None = None,
    case_id: str | None = None,
    field: str | None = None,
) -> JudgeCheck:
    """Validate the parameters of judge check ``name`` (``rubric``, ``pairwise`` or ``similar``).

    Raises:
        UserInputError: one line naming ``file``, ``case_id`` and the field
            (``field`` + the key inside the check, e.g. ``expect[0].rubric.scale``).
    """
    model = _MODELS.get(name)
    where = field or name
    if model is None:
        raise UserInputError(f"{name!r} is not a judge check ({', '.join(JUDGE_CHECKS)})",
                             file=file, case_id=case_id, field=where)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UserInputError(f"parameters of {name!r} must be a mapping, found {type(params).__name__}",
                             file=file, case_id=case_id, field=where)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        loc, msg = format_validation_error(exc, prefix=where)
        allowed = ", ".join(model.model_fields)
        raise UserInputError(f"{msg} (keys of {name}: {allowed})", file=file, case_id=case_id,
                             field=loc) from None


def resolve_criteria(
    check: RubricCheck | PairwiseCheck,
    *,
    base_dir: Path,
    root: Path | None = None,
    file: str | Path | None = None,
    case_id: str | None = None,
    field: str | None = None,
) -> RubricCheck | PairwiseCheck:
    """The check with ``criteria_file`` read into ``criteria`` (returned unchanged when inline).

    The file is resolved against ``base_dir`` (the case file's folder) and, when ``root``
    is given, must lie inside it. Errors are one-line ``UserInputError``s naming the field.
    """
    if check.criteria_file is None:
        return check
    where = f"{field}.criteria_file" if field else "criteria_file"
    path = Path(check.criteria_file)
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if root is not None:
        top = root.resolve()
        if path != top and top not in path.parents:
            raise UserInputError(f"criteria file {check.criteria_file!r} is outside the project folder {top}",
                                 file=file, case_id=case_id, field=where)
    try:
        if path.stat().st_size > 4 * MAX_CRITERIA_CHARS:
            raise UserInputError(f"criteria file {check.criteria_file!r} is larger than "
                                 f"{MAX_CRITERIA_CHARS:,} characters", file=file, case_id=case_id, field=where)
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UserInputError(f"criteria file {check.criteria_file!r} not found", file=file,
                             case_id=case_id, field=where) from None
    except UnicodeDecodeError:
        raise UserInputError(f"criteria file {check.criteria_file!r} is not UTF-8 text", file=file,
                             case_id=case_id, field=where) from None
    except OSError as exc:
        raise UserInputError(f"cannot read criteria file {check.criteria_file!r}: {exc.strerror}",
                             file=file, case_id=case_id, field=where) from None
    if not text:
        raise UserInputError(f"criteria file {check.criteria_file!r} is empty", file=file,
                             case_id=case_id, field=where)
    if len(text) > MAX_CRITERIA_CHARS:
        raise UserInputError(f"criteria file {check.criteria_file!r} is longer than "
                             f"{MAX_CRITERIA_CHARS:,} characters", file=file, case_id=case_id, field=where)
    data = check.model_dump(exclude_unset=True)
    data.pop("criteria_file")
    data["criteria"] = text
    return type(check).model_validate(data)


class JudgeSettings(_Strict):
    """The suite's ``judge:`` block: which model judges, how, and how it was calibrated."""

    model: str = Field(min_length=1)
    """litellm model string of the judge (``local/smollm2`` runs with no key)."""
    api_base: str | None = Field(default=None, min_length=1)
    """Base URL of an OpenAI-compatible endpoint."""
    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    """Name of the environment variable holding the judge's key."""
    params: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_JUDGE_PARAMS))
    """Completion parameters of every judge call (default: ``DEFAULT_JUDGE_PARAMS``)."""
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES)
    """Judge samples per judged output; more than 1 needs a temperature above 0."""
    embedding_model: str | None = Field(default=None, min_length=1)
    """litellm embedding model for ``similar`` checks."""
    calibration: str | None = Field(default=None, min_length=1)
    """Calibration file (YAML or JSONL), relative to the suite file."""
    rubric_template: str | None = Field(default=None, min_length=1)
    """A Jinja file replacing the bundled rubric prompt."""
    pairwise_template: str | None = Field(default=None, min_length=1)
    """A Jinja file replacing the bundled pairwise prompt."""
    min_youden: float = Field(default=0.5, ge=-1.0, le=1.0)
    """Rubric rules decide only when the lower bound of the judge's J = Se + Sp − 1 reaches this."""
    min_pairwise_kappa: float = Field(default=0.4, ge=-1.0, le=1.0)
    """Pairwise rules decide only when the lower bound of κ with human preferences reaches this."""
    uncalibrated: Literal["fail_only", "inconclusive"] = "fail_only"
    """Without calibration: FAIL on evidence but never PASS (default), or decide nothing."""

    @model_validator(mode="after")
    def _sampling(self) -> JudgeSettings:
        _check_sampling(self.samples, self.params)
        return self

    def policy(self) -> ReliabilityPolicy:
        """The reliability policy these settings ask for (other thresholds at their defaults)."""
        return ReliabilityPolicy(min_youden=self.min_youden, min_pairwise_kappa=self.min_pairwise_kappa,
                                 uncalibrated=self.uncalibrated)


def _check_sampling(samples: int, params: dict[str, Any]) -> None:
    temperature = params.get("temperature")
    if samples > 1 and isinstance(temperature, int | float) and temperature <= 0:
        raise ValueError(f"samples: {samples} at temperature {temperature} asks the same judge the same question "
                         f"{samples} times: set params.temperature above 0, or samples: 1")


class ResolvedJudge(_Strict):
    """The judge one check uses: the suite's settings with the check's override applied."""

    model: str
    api_base: str | None
    api_key_env: str | None
    params: dict[str, Any]
    samples: int


def resolve_judge(
    settings: JudgeSettings,
    check: RubricCheck | PairwiseCheck,
    *,
    file: str | Path | None = None,
    case_id: str | None = None,
    field: str | None = None,
) -> ResolvedJudge:
    """Apply a check's ``judge`` override and ``samples`` to the suite's judge settings.

    Unset override fields inherit; ``params`` merge key by key (the check's win).

    Raises:
        UserInputError: the result samples more than once at temperature 0.
    """
    override = check.judge or JudgeOverride()
    params = {**settings.params, **(override.params or {})}
    samples = check.samples or settings.samples
    try:
        _check_sampling(samples, params)
    except ValueError as exc:
        raise UserInputError(str(exc), file=file, case_id=case_id, field=f"{field}.samples" if field else "samples") \
            from None
    return ResolvedJudge(
        model=override.model or settings.model,
        api_base=override.api_base if override.api_base is not None else settings.api_base,
        api_key_env=override.api_key_env if override.api_key_env is not None else settings.api_key_env,
        params=params,
        samples=samples,
    )
