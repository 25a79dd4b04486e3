"""Calibration files: human-labelled examples the judge is measured on before it is trusted.

A calibration file is YAML (a list of items, or ``{defaults: {criteria: ...}, items: [...]}``)
or JSONL (one item per line). An item is either

* a **rubric** item — ``id``, ``input``, ``output``, ``criteria`` (or the file's default),
  ``human: pass | fail``; or
* a **pairwise** item — ``id``, ``input``, ``output_a``, ``output_b``, ``criteria``,
  ``human: a | b | tie`` (which output the human prefers).

Optional on both: ``note`` (why the human decided so), ``cohort``, ``tags``. Ids are unique
per file. Every mistake is one :class:`CalibrationFileError` line naming the file, the item
and the field.

:func:`score_rubric_calibration` and :func:`score_pairwise_calibration` turn the judge's
answers on the items into agreement statistics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalrun.errors import MAX_DETAIL_CHARS, MAX_ID_CHARS, UserInputError, clip
from evalrun.judging.agreement import (
    BinaryAgreement,
    CategoricalAgreement,
    binary_agreement,
    categorical_agreement,
)
from evalrun.judging.answers import JudgeError, PairOutcome, Preferred, RubricVerdict
from evalrun.judging.spec import MAX_CRITERIA_CHARS, format_validation_error
from evalrun.project.yamlio import load_yaml, read_text

__all__ = [
    "BUNDLED_CALIBRATION",
    "CalibrationFileError",
    "CalibrationSet",
    "PairwiseCalibration",
    "PairwiseItem",
    "RubricCalibration",
    "RubricItem",
    "load_calibration",
    "score_pairwise_calibration",
    "score_rubric_calibration",
]

BUNDLED_CALIBRATION = Path(__file__).parent / "data" / "shop_assistant_calibration.yaml"
"""The calibration set shipped for the example shop assistant (``cases/``), labelled by hand."""

_DEFAULT_KEYS = ("criteria",)


class CalibrationFileError(UserInputError):
    """A calibration file is invalid: ``FILE: item ID: field FIELD: what is wrong``."""

    def render(self) -> str:
        """One line, like :class:`UserInputError` but naming the item rather than a case."""
        parts: list[str] = []
        if self.file:
            parts.append(clip(self.file, 4096))
        if self.case_id:
            parts.append(f"item {clip(self.case_id)}")
        if self.field:
            parts.append(f"field {clip(self.field, 2 * MAX_ID_CHARS)}")
        parts.append(clip(self.detail, MAX_DETAIL_CHARS))
        return ": ".join(parts)


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/@+\-]+$")
    """Unique within the file."""
    input: str = Field(min_length=1)
    """What the judged model was asked."""
    criteria: str = Field(min_length=1, max_length=MAX_CRITERIA_CHARS)
    """The criteria the human applied (and the judge will be given)."""
    note: str | None = None
    """Why the human decided so (shown in reports, never sent to the judge)."""
    cohort: str | None = Field(default=None, min_length=1)
    tags: list[str] = Field(default_factory=list)


class RubricItem(_Item):
    """One output with the human's pass/fail verdict on it."""

    output: str
    """The output the human graded (may be empty: an empty answer is a valid thing to grade)."""
    human: Literal["pass", "fail"]
    """The human's verdict."""

    @field_validator("human", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def human_passed(self) -> bool:
        """True when the human passed the output."""
        return self.human == "pass"


class PairwiseItem(_Item):
    """Two outputs to one input with the human's preference between them."""

    output_a: str
    """The first output (treated as the baseline's when the judge is scored)."""
    output_b: str
    """The second output (treated as the candidate's)."""
    human: Literal["a", "b", "tie"]
    """Which output the human prefers, or ``tie``."""

    @field_validator("human", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def human_preferred(self) -> Preferred:
        """The human's choice in the judge's terms: a → baseline, b → candidate."""
        return "baseline" if self.human == "a" else "candidate" if self.human == "b" else "tie"


@dataclass(frozen=True)
class CalibrationSet:
    """The items of one calibration file, in file order."""

    source: str
    rubric: tuple[RubricItem, ...]
    pairwise: tuple[PairwiseItem, ...]

    def __len__(self) -> int:
        return len(self.rubric) + len(self.pairwise)


def _item(raw: Any, *, path: Path, where: str, defaults: Mapping[str, Any]) -> RubricItem | PairwiseItem:
    if not isinstance(raw, dict):
        raise CalibrationFileError(f"an item must be a mapping, found {type(raw).__name__}", file=path,
                                   case_id=where)
    item_id = str(raw["id"]) if isinstance(raw.get("id"), str | int) else None
    data = {**defaults, **raw}
    pairwise = "output_a" in raw or "output_b" in raw
    if pairwise and "output" in raw:
        raise CalibrationFileError("give either output (a rubric item) or output_a and output_b (a pairwise "
                                   "item), not both", file=path, case_id=item_id or where)
    if not pairwise and "output" not in raw:
        raise CalibrationFileError("needs output (a rubric item) or output_a and output_b (a pairwise item)",
                                   file=path, case_id=item_id or where)
    model: type[RubricItem] | type[PairwiseItem] = PairwiseItem if pairwise else RubricItem
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, msg = format_validation_error(exc)
        if field == "human":
            msg = "must be " + ("a, b or tie" if pairwise else "pass or fail")
        elif field == "criteria" and msg == "is required":
            msg = "is required (on the item, or as defaults.criteria for the whole file)"
        raise CalibrationFileError(msg, file=path, case_id=item_id or where, field=field or None) from None


def load_calibration(path: str | Path) -> CalibrationSet:
    """Load and validate a calibration file (YAML, or JSONL for ``.jsonl``).

    Raises:
        CalibrationFileError: one line naming the file, the item and the field (also for a
            missing or unreadable file, bad YAML/JSON, duplicate ids and an empty file).
    """
    file = Path(path)
    raw_items: list[tuple[str, Any]] = []
    defaults: dict[str, Any] = {}
    try:
        if file.suffix == ".jsonl":
            text = read_text(file, what="calibration file")
            for lineno, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    raw_items.append((f"on line {lineno}", json.loads(line)))
                except (ValueError, RecursionError) as exc:
                    detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                    raise CalibrationFileError(f"line {lineno}: invalid JSON: {detail}", file=file) from None
        else:
            data = load_yaml(file, what="calibration file")
            if isinstance(data, dict):
                unknown = sorted(str(k) for k in set(data) - {"defaults", "items"})
                if unknown:
                    raise CalibrationFileError(f"unknown top-level key {unknown[0]!r} (expected defaults, items)",
                                               file=file)
                defaults = data.get("defaults") or {}
                if not isinstance(defaults, dict):
                    raise CalibrationFileError("must be a mapping", file=file, field="defaults")
                bad = sorted(str(k) for k in set(defaults) - set(_DEFAULT_KEYS))
                if bad:
                    raise CalibrationFileError(f"key {bad[0]!r} cannot have a default (only {', '.join(_DEFAULT_KEYS)})",
                                               file=file, field="defaults")
                data = data.get("items")
            if data is not None and not isinstance(data, list):
                raise CalibrationFileError("expected a list of items", file=file)
            raw_items = [(f"#{i}", raw) for i, raw in enumerate(data or [])]
    except CalibrationFileError:
        raise
    except UserInputError as exc:  # read/parse errors from yamlio, re-labelled
        raise CalibrationFileError(exc.detail, file=exc.file or file, field=exc.field) from None
    rubric: list[RubricItem] = []
    pairwise: list[PairwiseItem] = []
    seen: set[str] = set()
    for where, raw in raw_items:
        item = _item(raw, path=file, where=where, defaults=defaults)
        if item.id in seen:
            raise CalibrationFileError("duplicate id", file=file, case_id=item.id, field="id")
        seen.add(item.id)
        (pairwise if isinstance(item, PairwiseItem) else rubric).append(item)  # type: ignore[arg-type]
    if not rubric and not pairwise:
        raise CalibrationFileError("the calibration file has no items", file=file)
    return CalibrationSet(str(file), tuple(rubric), tuple(pairwise))


@dataclass(frozen=True)
class RubricCalibration:
    """A rubric judge scored on calibration items.

    ``agreement`` covers the items with at least one usable judge answer; ``error_ids``
    lists the items where every judge call failed (left out of ``agreement``).
    """

    agreement: BinaryAgreement
    error_ids: tuple[str, ...]
    judge_pass: Mapping[str, float]

    @property
    def errors(self) -> int:
        """Items with no usable judge answer."""
        return len(self.error_ids)


def _share(verdicts: Sequence[RubricVerdict | JudgeError]) -> float | None:
    usable = [v for v in verdicts if isinstance(v, RubricVerdict)]
    return sum(v.passed for v in usable) / len(usable) if usable else None


def score_rubric_calibration(
    items: Sequence[RubricItem],
    verdicts: Mapping[str, Sequence[RubricVerdict | JudgeError]],
    *,
    confidence: float = 0.90,
) -> RubricCalibration:
    """Agreement of a rubric judge with the humans, from its answers keyed by item id.

    Each item may have K answers (judge samples): its judge verdict is the share of usable
    answers that passed. An item without any answer in ``verdicts`` is a ``KeyError``: the
    caller must ask the judge about every item.
    """
    human: list[bool] = []
    judge: list[float] = []
    shares: dict[str, float] = {}
    errors: list[str] = []
    for item in items:
        share = _share(verdicts[item.id])
        if share is None:
            errors.append(item.id)
            continue
        human.append(item.human_passed)
        judge.append(share)
        shares[item.id] = share
    return RubricCalibration(binary_agreement(human, judge, confidence=confidence), tuple(errors), shares)


@dataclass(frozen=True)
class PairwiseCalibration:
    """A pairwise judge scored on calibration items (``error_ids``: no usable pair)."""

    agreement: CategoricalAgreement
    error_ids: tuple[str, ...]
    judge_preferred: Mapping[str, Preferred]

    @property
    def errors(self) -> int:
        """Items with no usable judge answer."""
        return len(self.error_ids)


def score_pairwise_calibration(
    items: Sequence[PairwiseItem],
    outcomes: Mapping[str, Sequence[PairOutcome | JudgeError]],
    *,
    confidence: float = 0.90,
) -> PairwiseCalibration:
    """Agreement of a pairwise judge with the humans' preferences.

    ``outcomes[item.id]`` holds one combined pair per judge sample, computed with
    ``output_a`` as the baseline and ``output_b`` as the candidate. The judge's label for
    an item is the sign of its mean pair score: candidate (b) above 0, baseline (a) below,
    tie at 0.
    """
    human: list[str] = []
    judge: list[str] = []
    preferred: dict[str, Preferred] = {}
    errors: list[str] = []
    for item in items:
        usable = [o for o in outcomes[item.id] if isinstance(o, PairOutcome)]
        if not usable:
            errors.append(item.id)
            continue
        mean = sum(o.score for o in usable) / len(usable)
        label: Preferred = "candidate" if mean > 0 else "baseline" if mean < 0 else "tie"
        human.append(item.human_preferred)
        judge.append(label)
        preferred[item.id] = label
    return PairwiseCalibration(categorical_agreement(human, judge, confidence=confidence), tuple(errors),
                               preferred)
