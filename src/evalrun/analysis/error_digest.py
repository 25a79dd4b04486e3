"""The failed calls of a run, grouped by error kind with one sample message each.

When a run cannot measure (errors above ``max_error_rate``), the verdict's one line says
how many calls failed; the cause is in the messages. This digest puts the commonest kinds
and a real message of each on the terminal, so a wrong key or a stopped server is read
there, not dug out of the journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from evalrun.records import CallResult

__all__ = ["ErrorGroup", "error_digest", "render_digest"]


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failed calls of one error kind: how many, per side, and the first one's message."""

    kind: str
    count: int
    baseline: int
    candidate: int
    sample_case: str
    sample_side: str
    sample_message: str


def error_digest(results: Iterable[CallResult], *, top: int = 5) -> list[ErrorGroup]:
    """The ``top`` commonest error kinds (most calls first, then by name), each with the
    message of its first call in case order (deterministic)."""
    groups: dict[str, list[CallResult]] = {}
    for r in results:
        if not r.ok and r.error_kind is not None:
            groups.setdefault(r.error_kind, []).append(r)
    out = []
    for kind, rows in groups.items():
        first = min(rows, key=lambda r: (r.case_id, r.side, r.sample))
        out.append(ErrorGroup(kind, len(rows), sum(r.side == "baseline" for r in rows),
                              sum(r.side == "candidate" for r in rows), first.case_id, first.side,
                              " ".join((first.error_message or "no message").split())[:240]))
    out.sort(key=lambda g: (-g.count, g.kind))
    return out[:top]


def render_digest(groups: list[ErrorGroup]) -> list[str]:
    """Lines for the terminal (plain ASCII layout; the caller makes them terminal-safe)."""
    if not groups:
        return []
    width = max(len(g.kind) for g in groups)
    lines = ["failed calls by kind (after retries):"]
    for g in groups:
        lines.append(f"  {g.kind.ljust(width)}  {g.count:>5}  (baseline {g.baseline}, candidate {g.candidate})")
        lines.append(f"  {' ' * width}  e.g. {g.sample_side} case {g.sample_case}: {g.sample_message}")
    return lines
