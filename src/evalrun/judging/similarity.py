"""The ``similar`` check's arithmetic: cosine similarity of two embeddings against a threshold.

The embedding call itself (``litellm.aembedding``) belongs to the runner; this is the pure
part, so a stored pair of embeddings can be re-scored with another threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from evalrun.judging.answers import JudgeError

__all__ = ["SimilarVerdict", "cosine_similarity", "similar_verdict"]


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """cos(a, b) = a·b / (|a| |b|), in [−1, 1].

    Raises:
        ValueError: different lengths, an empty or zero vector, or a non-finite value.
    """
    if len(a) != len(b):
        raise ValueError(f"embeddings have different lengths: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("embeddings are empty")
    if not all(math.isfinite(x) for x in a) or not all(math.isfinite(x) for x in b):
        raise ValueError("embeddings hold a non-finite value")
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(y * y for y in b))
    if na == 0.0 or nb == 0.0:
        raise ValueError("an embedding is the zero vector")
    return max(-1.0, min(1.0, dot / (na * nb)))


@dataclass(frozen=True)
class SimilarVerdict:
    """A ``similar`` outcome: passed when ``similarity`` ≥ ``threshold``."""

    passed: bool
    similarity: float
    threshold: float


def similar_verdict(
    output_embedding: Sequence[float], reference_embedding: Sequence[float], *, threshold: float
) -> SimilarVerdict | JudgeError:
    """Compare an output's embedding with the reference's; unusable embeddings are a judge error."""
    try:
        similarity = cosine_similarity(output_embedding, reference_embedding)
    except ValueError as exc:
        return JudgeError("invalid", f"cannot compare embeddings: {exc}")
    return SimilarVerdict(similarity >= threshold, similarity, threshold)
