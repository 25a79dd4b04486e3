"""Pairwise judge statistics: win / tie / loss per case, the net preference, position bias.

The case is the unit. Each case's pairs (one per judge sample, each asked in both orders
and combined by :func:`evalrun.judging.answers.combine_orders`) are averaged into a case
score s ∈ [−1, 1] (+1 every sample a candidate win, −1 every sample a loss). The net
preference is the mean case score, (wins − losses)/n with fractional wins and losses when
samples disagree; its interval uses the same Agresti–Min pseudo-cases as the paired rate
differences (half a case at +1, half at −1, one at 0), so it never has zero width and it
is exactly Agresti–Min for one sample per case.

Position bias is the share of pairs whose two orders disagreed (Wilson interval), with the
direction of the contradictions: a judge that picks whatever it sees first turns every
pair into a tie, and a net of 0 with a narrow interval would then look like a safe PASS.
:mod:`evalrun.judging.reliability` refuses that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalrun.judging._proportion import check_confidence, norm_cdf, wilson, z_two_sided
from evalrun.judging.answers import JudgeError, PairOutcome

__all__ = [
    "CaseScore",
    "NetPreference",
    "PositionBias",
    "case_score",
    "net_preference",
    "position_bias",
]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class CaseScore:
    """One case's pairwise result over its judge samples.

    ``wins``/``ties``/``losses`` are shares of the usable pairs (they sum to 1); ``score``
    = wins − losses; ``pairs`` usable pairs and ``errors`` pairs lost to judge errors.
    """

    score: float
    wins: float
    ties: float
    losses: float
    pairs: int
    errors: int
    inconsistent: int


def case_score(pairs: Sequence[PairOutcome | JudgeError]) -> CaseScore | None:
    """Average one case's pairs (one per judge sample); None when every pair was a judge error."""
    usable = [p for p in pairs if isinstance(p, PairOutcome)]
    errors = len(pairs) - len(usable)
    if not usable:
        return None
    k = len(usable)
    wins = sum(p.outcome == "win" for p in usable) / k
    losses = sum(p.outcome == "loss" for p in usable) / k
    return CaseScore(
        score=wins - losses,
        wins=wins,
        ties=1.0 - wins - losses,
        losses=losses,
        pairs=k,
        errors=errors,
        inconsistent=sum(not p.consistent for p in usable),
    )


@dataclass(frozen=True)
class NetPreference:
    """The candidate's net preference over ``n`` cases: (wins − losses)/n with its interval.

    ``wins``, ``ties`` and ``losses`` are case counts (fractional with several samples).
    ``centre``/``se`` are the Agresti–Min centre and standard error the interval and
    :meth:`p_value` use.
    """

    n: int
    wins: float
    ties: float
    losses: float
    net: float | None
    centre: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float

    def p_value(self, threshold: float, *, higher_is_better: bool = True) -> float | None:
        """One-sided p-value that the true net preference is beyond ``threshold`` (the bad side).

        For the rule ``pairwise_net_loss`` with margin m the FAIL test is at threshold −m
        (H0: net ≥ −m; p = Φ((centre + m)/se)): p < α exactly when the interval at
        confidence 1 − 2α lies wholly below −m. None without cases.
        """
        if self.centre is None or self.se is None:
            return None
        gap = (self.centre - threshold) if higher_is_better else (threshold - self.centre)
        if self.se <= 0.0:
            return 0.0 if gap < 0.0 else 1.0
        return norm_cdf(gap / self.se)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def net_preference(scores: Sequence[float | CaseScore], *, confidence: float = 0.90) -> NetPreference:
    """Net preference of the candidate from per-case scores in [−1, 1] (cases are the unit).

    Args:
        scores: per case, a :class:`CaseScore` or a plain score (wins − losses share).
            Cases without a usable pair (``case_score`` returned None) must be left out by
            the caller and reported as judge errors.
        confidence: two-sided confidence of the interval (0.90 is the gate's 1 − 2α).
    """
    check_confidence(confidence)
    items = list(scores)
    cases = [x for x in items if isinstance(x, CaseScore)]
    if cases and len(cases) != len(items):
        raise ValueError("give either CaseScore objects or plain scores, not both")
    s = np.asarray([x.score if isinstance(x, CaseScore) else x for x in items], dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any((s < -1.0) | (s > 1.0)):
        raise ValueError("case scores must lie in [-1, 1]")
    n = int(s.size)
    if cases:
        wins, losses = sum(c.wins for c in cases), sum(c.losses for c in cases)
    else:  # plain scores: the split with the fewest ties
        wins, losses = float(np.sum(np.maximum(s, 0.0))), float(np.sum(np.maximum(-s, 0.0)))
    if n == 0:
        return NetPreference(0, 0.0, 0.0, 0.0, None, None, None, None, None, confidence)
    big_n = n + 2.0
    centre = float(np.sum(s)) / big_n
    var = max(0.0, (float(np.sum(s * s)) + 1.0) / big_n - centre * centre)
    se = math.sqrt(var / big_n)
    z = z_two_sided(confidence)
    return NetPreference(
        n=n,
        wins=wins,
        ties=n - wins - losses,
        losses=losses,
        net=float(np.mean(s)),
        centre=centre,
        se=se,
        ci_low=max(-1.0, centre - z * se),
        ci_high=min(1.0, centre + z * se),
        confidence=confidence,
    )


@dataclass(frozen=True)
class PositionBias:
    """How often the two orders of a pair disagreed, with a Wilson interval.

    ``inconsistent`` = ``partial`` + ``contradictory`` pairs out of ``pairs``;
    ``prefers_first``/``prefers_second`` split the contradictory ones by the position the
    judge picked both times.
    """

    pairs: int
    inconsistent: int
    partial: int
    contradictory: int
    prefers_first: int
    prefers_second: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def position_bias(pairs: Sequence[PairOutcome], *, confidence: float = 0.90) -> PositionBias:
    """Position-bias (order-inconsistency) rate over every usable pair of a run."""
    check_confidence(confidence)
    n = len(pairs)
    partial = sum(p.agreement == "partial" for p in pairs)
    contradictory = sum(p.agreement == "contradictory" for p in pairs)
    first = sum(p.position == "first" for p in pairs)
    inconsistent = partial + contradictory
    if n == 0:
        return PositionBias(0, 0, 0, 0, 0, 0, None, None, None, confidence)
    low, high = wilson(inconsistent, n, confidence)
    return PositionBias(n, inconsistent, partial, contradictory, first, contradictory - first,
                        inconsistent / n, low, high, confidence)
