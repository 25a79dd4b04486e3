"""The cases an earlier run did not get right, for ``compare --rerun-failed RUN_DIR``."""

from __future__ import annotations

import json
from pathlib import Path

from evalrun.errors import UserInputError
from evalrun.execution.store import MANIFEST, read_journals

__all__ = ["failed_case_ids"]

RESULTS = "results.jsonl"


def failed_case_ids(run_dir: str | Path) -> frozenset[str]:
    """Cases of ``run_dir`` whose candidate failed a check (regressions included) or whose
    call failed on either side.

    Read from ``results.jsonl`` (scored); a run stopped before scoring (a preflight, a
    crash) has only its journal, and then the cases with a failed call are returned.
    """
    rd = Path(run_dir)
    if not (rd / MANIFEST).is_file():
        raise UserInputError(f"not a run folder (no {MANIFEST})", file=rd, field="--rerun-failed")
    results = rd / RESULTS
    if not results.is_file():
        return frozenset(r.case_id for r in read_journals(rd) if not r.ok)
    failed: set[str] = set()
    try:
        for line in results.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            score = row.get("score") or {}
            if row.get("error_kind") or (row.get("side") == "candidate" and not score.get("passed", False)):
                failed.add(str(row["case_id"]))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserInputError(f"cannot be read ({type(exc).__name__}: {exc})", file=results) from None
    return frozenset(failed)
