"""Run a subset of the suite: cases chosen by id, cohort, kind or tag globs, or by id list.

A subset is for iterating (fix a prompt, re-run the eight cases it broke): its verdict
speaks for those cases only, and every output says so (``Project.subset``; the summary's
``run.subset`` and a verdict warning). A subset PASS is not a suite PASS.
"""

from __future__ import annotations

import difflib
import fnmatch
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from evalrun.errors import UserInputError
from evalrun.project.cases import Case

__all__ = ["CaseSelection", "select_cases"]


@dataclass(frozen=True, slots=True)
class CaseSelection:
    """Which cases to run. Each given filter must match (AND); within one filter any glob
    may match (OR). Globs are shell-style (``fmt-*``, ``*refund*``), case-sensitive.

    ``ids``: exact case ids (e.g. the failed cases of an earlier run), described by ``ids_from``.
    """

    cases: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ids: frozenset[str] | None = None
    ids_from: str = ""

    @property
    def is_empty(self) -> bool:
        """Selects every case (no filter given)."""
        return not (self.cases or self.cohorts or self.kinds or self.tags) and self.ids is None

    def matches(self, case: Case) -> bool:
        """Whether ``case`` is selected."""
        def any_glob(value: str, globs: Sequence[str]) -> bool:
            return any(fnmatch.fnmatchcase(value, g) for g in globs)

        return ((not self.cases or any_glob(case.id, self.cases))
                and (not self.cohorts or any_glob(case.cohort, self.cohorts))
                and (not self.kinds or any_glob(case.kind, self.kinds))
                and (not self.tags or any(any_glob(t, self.tags) for t in case.tags))
                and (self.ids is None or case.id in self.ids))

    def describe(self) -> str:
        """The options that made it, e.g. ``--cohort fashion --kind 'known_*'``."""
        parts = [f"{opt} {shlex.quote(g)}" for opt, globs in (("--case", self.cases), ("--cohort", self.cohorts),
                                                              ("--kind", self.kinds), ("--tag", self.tags))
                 for g in globs]
        if self.ids is not None:
            parts.append(self.ids_from or f"{len(self.ids)} listed case ids")
        return " ".join(parts)


def _unmatched_hint(option: str, globs: Sequence[str], values: Collection[str]) -> str:
    for g in globs:
        if not any(fnmatch.fnmatchcase(v, g) for v in values):
            close = difflib.get_close_matches(g, sorted(values), n=1, cutoff=0.6)
            known = ", ".join(sorted(values)[:8]) + (", ..." if len(values) > 8 else "")
            return f"{option} {g!r} matches nothing" + (f" (did you mean {close[0]!r}?)" if close else f" (the suite has: {known})")
    return ""


def select_cases(cases: Sequence[Case], selection: CaseSelection) -> list[Case]:
    """The selected cases, in suite order; ``UserInputError`` (exit 2) when none is selected,
    naming the filter that matched nothing."""
    chosen = [c for c in cases if selection.matches(c)]
    if chosen:
        return chosen
    hint = (_unmatched_hint("--case", selection.cases, {c.id for c in cases})
            or _unmatched_hint("--cohort", selection.cohorts, {c.cohort for c in cases})
            or _unmatched_hint("--kind", selection.kinds, {c.kind for c in cases})
            or _unmatched_hint("--tag", selection.tags, {t for c in cases for t in c.tags}))
    raise UserInputError(f"no case of the suite is selected by {selection.describe()}" + (f": {hint}" if hint else ""))
