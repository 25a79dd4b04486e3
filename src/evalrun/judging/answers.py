"""Reading judge answers: tolerant about the wrapping, honest about the content.

A judge answers with one JSON object: ``{"verdict": "pass"|"fail", "reason": "..."}`` for a
pass/fail rubric, ``{"score": 1..N, "reason": "..."}`` for a scaled one and
``{"winner": "A"|"B"|"tie", "reason": "..."}`` for a pairwise comparison.

Tolerated: a code fence around the JSON, prose before or after it, upper case values
(``"PASS"``), a score written as ``4``, ``4.0`` or ``"4"``. Everything else — no JSON, a
missing or unknown verdict, a score out of range or fractional, several JSON answers that
disagree — is a :class:`JudgeError` with a reason. A judge error is never a failure of the
judged output: the caller retries it, then counts it as a judge error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "JudgeError",
    "JudgeErrorKind",
    "Order",
    "PairOutcome",
    "PairwiseVerdict",
    "Preferred",
    "RubricVerdict",
    "answer_schema",
    "combine_orders",
    "parse_pairwise_answer",
    "parse_rubric_answer",
    "response_format",
]

Order = Literal["baseline_first", "candidate_first"]
"""Which output the judge saw as response A: ``baseline_first`` puts the baseline in A."""

ORDERS: tuple[Order, Order] = ("baseline_first", "candidate_first")
"""Both orders, in the order they are asked."""

Preferred = Literal["baseline", "candidate", "tie"]
"""A pairwise preference mapped back from the judge's A/B to the two sides."""

JudgeErrorKind = Literal["call_failed", "unparseable", "invalid"]
"""``call_failed``: the judge call itself failed; ``unparseable``: no JSON answer;
``invalid``: JSON whose content is not a valid answer."""

MAX_REASON_CHARS = 300
"""A judge's reason is kept to this many characters, on one line."""

MAX_RAW_CHARS = 500
"""A judge error keeps this much of the raw answer for the report."""

_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class JudgeError:
    """A judge answer that cannot be used, and why (``raw`` is the answer, clipped)."""

    kind: JudgeErrorKind
    reason: str
    raw: str = ""


@dataclass(frozen=True)
class RubricVerdict:
    """A usable rubric answer: pass or fail, the score when the rubric has a scale, the reason."""

    passed: bool
    score: int | None
    reason: str


@dataclass(frozen=True)
class PairwiseVerdict:
    """A usable pairwise answer in one order: the judge's choice and what it means."""

    choice: Literal["A", "B", "tie"]
    preferred: Preferred
    order: Order
    reason: str


@dataclass(frozen=True)
class PairOutcome:
    """One pairwise judgement asked in both orders, from the candidate's point of view.

    ``outcome`` is ``win`` / ``loss`` only when both orders prefer the same side; every
    other combination is a ``tie``. ``agreement`` says how the orders related:
    ``consistent`` (same answer), ``partial`` (one order a tie, the other a preference) or
    ``contradictory`` (each order preferred a different side). For a contradictory pair
    ``position`` is the position the judge picked both times (``first`` = A), its bias.
    """

    outcome: Literal["win", "tie", "loss"]
    agreement: Literal["consistent", "partial", "contradictory"]
    position: Literal["first", "second"] | None
    reasons: tuple[str, str]

    @property
    def consistent(self) -> bool:
        """True when both orders gave the same answer."""
        return self.agreement == "consistent"

    @property
    def score(self) -> int:
        """+1 for a win, 0 for a tie, −1 for a loss (the per-pair contribution to the net)."""
        return {"win": 1, "tie": 0, "loss": -1}[self.outcome]


def _clip(text: str, limit: int) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(kind: JudgeErrorKind, reason: str, raw: str) -> JudgeError:
    return JudgeError(kind, reason, _clip(raw, MAX_RAW_CHARS))


def _objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object the answer holds: the whole text, fenced blocks, or objects in prose."""
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict):
        return [whole]
    found: list[dict[str, Any]] = []
    for block in _FENCE_RE.findall(text):
        try:
            obj = json.loads(block.strip())
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            found.append(obj)
    if found:
        return found
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        pos = text.find("{", end)
    return found


def _answer(
    text: str | None, keys: tuple[str, ...], finish_reason: str | None
) -> dict[str, Any] | JudgeError:
    """The one JSON object carrying any of ``keys`` (keys lower-cased), or why there is none."""
    raw = text or ""
    if not raw.strip():
        return _error("unparseable", "the judge answered nothing", raw)
    candidates = [{str(k).strip().lower(): v for k, v in obj.items()} for obj in _objects(raw)]
    relevant = [obj for obj in candidates if any(k in obj for k in keys)]
    if not relevant:
        cut = " (the answer was cut off at max_tokens)" if finish_reason == "length" else ""
        what = "no JSON object" if not candidates else f"no JSON object with {' or '.join(map(repr, keys))}"
        return _error("unparseable", f"{what} in the judge's answer{cut}", raw)
    first = {k: relevant[0].get(k) for k in keys}
    if any({k: obj.get(k) for k in keys} != first for obj in relevant[1:]):
        return _error("invalid", "the judge gave several JSON answers that disagree", raw)
    return relevant[0]


def _reason(obj: Mapping[str, Any]) -> str:
    reason = obj.get("reason")
    return _clip(reason, MAX_REASON_CHARS) if isinstance(reason, str) else ""


def _score(value: Any) -> int | None:
    """An integral score from 4, 4.0 or "4"; None when it is anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,6}\s*", value):
        return int(value)
    return None


_VERDICTS = {"pass": True, "passed": True, "fail": False, "failed": False}


def parse_rubric_answer(
    text: str | None,
    *,
    scale: int | None = None,
    pass_threshold: int | None = None,
    finish_reason: str | None = None,
) -> RubricVerdict | JudgeError:
    """Read a rubric judge's answer.

    Args:
        text: the judge's answer.
        scale: N of a 1–N rubric (None: pass/fail).
        pass_threshold: lowest passing score of a scaled rubric (required with ``scale``).
        finish_reason: the call's finish reason; ``length`` is named in the error, since a
            cut-off answer is the usual reason for missing JSON.

    With a scale the score decides (a ``verdict`` beside it is ignored); without one the
    ``verdict`` must be ``pass`` or ``fail`` (``passed``/``failed`` and any case accepted).
    """
    if scale is not None and pass_threshold is None:
        raise ValueError("a scaled rubric needs pass_threshold")
    keys = ("score",) if scale is not None else ("verdict",)
    obj = _answer(text, keys, finish_reason)
    if isinstance(obj, JudgeError):
        return obj
    raw = text or ""
    if scale is not None and pass_threshold is not None:
        value = obj.get("score")
        score = _score(value)
        if score is None:
            return _error("invalid", f"score {_clip(json.dumps(value), 40)} is not a whole number", raw)
        if not 1 <= score <= scale:
            return _error("invalid", f"score {score} is outside 1–{scale}", raw)
        return RubricVerdict(score >= pass_threshold, score, _reason(obj))
    value = obj.get("verdict")
    verdict = _VERDICTS.get(value.strip().lower()) if isinstance(value, str) else None
    if verdict is None:
        return _error("invalid", f"verdict {_clip(json.dumps(value), 40)} is not \"pass\" or \"fail\"", raw)
    return RubricVerdict(verdict, None, _reason(obj))


_CHOICES: dict[str, Literal["A", "B", "tie"]] = {"a": "A", "b": "B", "tie": "tie"}


def parse_pairwise_answer(
    text: str | None, *, order: Order, finish_reason: str | None = None
) -> PairwiseVerdict | JudgeError:
    """Read a pairwise judge's answer given in ``order`` and map A/B back to the two sides.

    ``winner`` must be ``A``, ``B`` or ``tie`` (any case; "response A" and "[[A]]" are not
    accepted: the prompt asks for the letter).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    obj = _answer(text, ("winner",), finish_reason)
    if isinstance(obj, JudgeError):
        return obj
    value = obj.get("winner")
    choice = _CHOICES.get(value.strip().lower()) if isinstance(value, str) else None
    if choice is None:
        return _error("invalid", f"winner {_clip(json.dumps(value), 40)} is not \"A\", \"B\" or \"tie\"", text or "")
    first: Preferred = "baseline" if order == "baseline_first" else "candidate"
    second: Preferred = "candidate" if order == "baseline_first" else "baseline"
    preferred: Preferred = first if choice == "A" else second if choice == "B" else "tie"
    return PairwiseVerdict(choice, preferred, order, _reason(obj))


def combine_orders(
    baseline_first: PairwiseVerdict | JudgeError, candidate_first: PairwiseVerdict | JudgeError
) -> PairOutcome | JudgeError:
    """Combine the two orders of one pairwise judgement (an error in either is the pair's error).

    Both orders preferring the candidate is a win, both preferring the baseline a loss;
    anything else — both tie, one tie, or the two orders contradicting each other — is a
    tie, so a judge swayed by position cannot manufacture a win or a loss.
    """
    for verdict in (baseline_first, candidate_first):
        if isinstance(verdict, JudgeError):
            return verdict
    assert isinstance(baseline_first, PairwiseVerdict) and isinstance(candidate_first, PairwiseVerdict)
    if baseline_first.order != "baseline_first" or candidate_first.order != "candidate_first":
        raise ValueError("combine_orders takes the baseline_first verdict, then the candidate_first one")
    a, b = baseline_first.preferred, candidate_first.preferred
    reasons = (baseline_first.reason, candidate_first.reason)
    if a == b:
        outcome: Literal["win", "tie", "loss"] = "win" if a == "candidate" else "loss" if a == "baseline" else "tie"
        return PairOutcome(outcome, "consistent", None, reasons)
    if "tie" in (a, b):
        return PairOutcome("tie", "partial", None, reasons)
    position: Literal["first", "second"] = "first" if baseline_first.choice == "A" else "second"
    return PairOutcome("tie", "contradictory", position, reasons)


def answer_schema(kind: Literal["rubric", "pairwise"], *, scale: int | None = None) -> dict[str, Any]:
    """JSON Schema of the answer the bundled prompts ask for (rubric with or without a scale).

    Passed as a structured-output ``response_format`` (see :func:`response_format`), it lets
    providers that support it — and the embedded model, through llama.cpp's JSON grammar —
    constrain the judge to a parseable answer. The parser stays the judge of validity.
    ``reason`` comes first so a model writes its reason before deciding (measured best of
    the variants in ``benchmarks/judge_agreement.py``); the parser accepts either order.
    """
    spec: dict[str, Any]
    if kind == "pairwise":
        key, spec = "winner", {"type": "string", "enum": ["A", "B", "tie"]}
    elif scale is not None:
        key, spec = "score", {"type": "integer", "minimum": 1, "maximum": scale}
    else:
        key, spec = "verdict", {"type": "string", "enum": ["pass", "fail"]}
    return {
        "type": "object",
        "properties": {"reason": {"type": "string"}, key: spec},
        "required": ["reason", key],
        "additionalProperties": False,
    }


def response_format(schema: Mapping[str, Any], *, name: str = "judge_answer") -> dict[str, Any]:
    """An OpenAI-style ``response_format`` parameter asking for ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": True}}
