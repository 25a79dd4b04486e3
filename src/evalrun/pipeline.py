"""The stages chained into the jobs the CLI offers: compare, compare --sequential, merge,
rescore, note. Each is a short composition of ``execution`` (make or read back the calls),
``analysis`` (score, compare, gate) and ``report`` (write the outputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalrun.analysis.summary import SequentialVerdict, score, sort_results
from evalrun.errors import CouldNotMeasureError, UserInputError
from evalrun.execution.folder import RunFolder, new_run_dir, open_run_folder
from evalrun.execution.manifest import Manifest, read_manifest, write_manifest
from evalrun.execution.options import RunOptions
from evalrun.execution.plan import plan_calls
from evalrun.execution.run import run
from evalrun.execution.store import (
    JOURNAL,
    MANIFEST,
    SUMMARY,
    Journal,
    RunLock,
    clear_run,
    read_journals,
)
from evalrun.project.loader import Project, load_project
from evalrun.records import CallResult
from evalrun.report.outputs import CompareOutcome, stored_outcome, write_note, write_outputs

__all__ = ["compare", "compare_sequential", "load_run", "merge", "note", "rescore"]


def compare(project: Project, run_dir: str | Path | RunFolder | None = None,
            options: RunOptions | None = None) -> CompareOutcome:
    """Run both sides, then score, compare, gate and write the reports.

    A folder that already holds the finished run of these inputs is not run again; its
    stored outcome is returned (see ``execution.folder.open_run_folder``).
    """
    opts = options or RunOptions()
    folder = run_dir if isinstance(run_dir, RunFolder) else open_run_folder(
        project, run_dir, resume=opts.resume, fresh=opts.cache == "refresh")
    try:
        if folder.mode == "finished":
            return stored_outcome(folder.path)
        outcome = run(project, folder, opts)
        return write_outputs(project, outcome.run_dir, outcome.results, outcome.created)
    finally:
        if folder is not run_dir:
            folder.close()


def compare_sequential(project: Project, run_dir: str | Path | None = None, options: RunOptions | None = None,
                       *, look_every: int | None = None) -> CompareOutcome:
    """`compare --sequential`: cases in a seeded random order, a batch at a time, stopping
    as soon as every gate rule is decided by its anytime-valid sequence (see
    ``evalrun.watch.stage1``). Without an early stop the whole suite runs and the ordinary
    gate decides. Calls are made in this process (batches are small)."""
    from evalrun.watch import stage1

    opts = dataclasses.replace(options or RunOptions(), workers=1)
    cfg = project.suite.config
    kinds = {c.id: c.kind for c in project.cases}
    order = stage1.sequential_order([c.id for c in project.cases], kinds, cfg.seed)
    by_id = {c.id: c for c in project.cases}
    n_bad = sum(1 for k in kinds.values() if k == "known_bad")
    step = look_every or max(5, len(order) // 20)
    rd = Path(run_dir) if run_dir is not None else new_run_dir(project)
    taken, decided = 0, None
    looks: list[dict[str, Any]] = []
    rules: list[stage1.RuleLook] = []
    sub, outcome = project, None
    while taken < len(order) and decided is None:
        taken = min(len(order), max(taken + step, n_bad))
        sub = dataclasses.replace(project, cases=[by_id[c] for c in order[:taken]])
        outcome = run(sub, rd, dataclasses.replace(opts, resume=bool(looks)))
        results = sort_results(outcome.results)
        values = stage1.per_case_values(results, score(sub, results))
        rules = stage1.look(dict(cfg.gate.rules), values, alpha=cfg.gate.alpha,
                            n_opt=max(len(order) / 2, 10), known_bad_done=taken >= n_bad)
        decided = stage1.decision(rules, taken)
        looks.append({"cases": taken, "decision": decided})
    assert outcome is not None
    write_manifest(sub, rd, outcome.created)
    planned = len(order) * cfg.samples * 2
    calls_made = taken * cfg.samples * 2
    block = {"cases_run": taken, "cases_total": len(order), "calls_made": calls_made,
             "calls_planned": planned, "looks": looks, "stopped_early": decided is not None and taken < len(order),
             "decision": decided, "rules": [r.to_dict() for r in rules], "seed": cfg.seed}
    verdict = SequentialVerdict(block)
    if decided is not None and taken < len(order):
        why = [f"{r.rule}: sequence [{r.low:.4g}, {r.high:.4g}] {'beyond' if r.status == 'fail' else 'inside'} "
               f"its threshold" if r.low is not None and r.high is not None else f"{r.rule}: {r.note or r.status}"
               for r in rules if r.status == ("fail" if decided == "FAIL" else "pass")]
        head = f"sequential: decided after {taken} of {len(order)} cases ({calls_made} of {planned} calls)"
        verdict = SequentialVerdict(block, decided, (head, *why))
    return write_outputs(sub, rd, outcome.results, outcome.created, sequential=verdict)


def load_run(run_dir: str | Path) -> tuple[Project, list[CallResult], Manifest]:
    """Re-load a run folder: its project (from the config files named in the manifest) and results."""
    rd = Path(run_dir)
    if not (rd / MANIFEST).exists():
        raise CouldNotMeasureError(f"{rd}: not a run folder (no {MANIFEST})")
    try:
        manifest = read_manifest(rd)
    except (OSError, ValueError) as exc:
        raise CouldNotMeasureError(f"{rd / MANIFEST}: damaged, cannot be read ({type(exc).__name__}: {exc})") from None
    shard = manifest.shard
    project = load_project(manifest.baseline.config_file, manifest.candidate.config_file, manifest.suite.file,
                           aa_mode=manifest.aa_mode, shard=(int(shard[0]), int(shard[1])) if shard else None)
    if manifest.subset is not None:  # the cases the run chose (by filters, or an earlier run's failures)
        chosen = set(manifest.cases)
        project.cases = [c for c in project.cases if c.id in chosen]
        project.subset = manifest.subset
    return project, read_journals(rd), manifest


def merge(run_dirs: Sequence[str | Path], out: str | Path) -> CompareOutcome:
    """Combine shard run folders into one run and one report.

    Refuses runs whose configs or suite differ (their config fingerprints must match, and
    must match the config files as they are now). ``out`` is written like a compare's
    folder (locked; a previous run there is replaced; a folder of other files is refused).
    """
    if not run_dirs:
        raise UserInputError("merge needs at least one run folder")
    if any(Path(rd).resolve() == Path(out).resolve() for rd in run_dirs):
        raise UserInputError("--out is one of the run folders being merged: choose another folder", file=out)
    manifests = []
    for rd in run_dirs:
        if not (Path(rd) / MANIFEST).exists():
            raise UserInputError(f"not a run folder (no {MANIFEST})", file=rd)
        try:
            manifests.append(read_manifest(Path(rd)))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"damaged manifest: {exc}", file=Path(rd) / MANIFEST) from None
    first = manifests[0]
    for rd, m in zip(run_dirs, manifests, strict=True):
        if m.config_fingerprint != first.config_fingerprint:
            raise UserInputError(
                f"configs or suite differ from {run_dirs[0]} (config fingerprint {m.config_fingerprint} "
                f"!= {first.config_fingerprint}): refusing to merge", file=rd)
    project = load_project(first.baseline.config_file, first.candidate.config_file, first.suite.file,
                           aa_mode=first.aa_mode)
    if project.config_fingerprint() != first.config_fingerprint:
        raise UserInputError("the config files changed since these runs were made: refusing to merge", file=run_dirs[0])
    plan_keys = {p.identity for p in plan_calls(project, with_keys=False)}
    merged: dict[str, CallResult] = {}
    for rd in run_dirs:
        for r in read_journals(Path(rd)):
            k = r.identity
            if k in plan_keys and (k not in merged or (r.ok and not merged[k].ok)):
                merged[k] = r
    missing = len(plan_keys) - len(merged)
    with open_run_folder(project, out, fresh=True) as folder:
        out_dir = folder.path
        if folder.mode in ("restart", "finished", "resume"):
            clear_run(out_dir)
        created = min(m.created for m in manifests)
        write_manifest(project, out_dir, created)
        journal = Journal(out_dir / JOURNAL)
        try:
            journal.append_many(sort_results(list(merged.values())))
        finally:
            journal.close()
        if missing:
            raise CouldNotMeasureError(
                f"merged runs cover {len(merged)} of {len(plan_keys)} planned calls: a shard is missing or incomplete")
        return write_outputs(project, out_dir, list(merged.values()), created)


def rescore(run_dir: str | Path) -> CompareOutcome:
    """Re-apply the (possibly changed) checks to stored outputs; no model is called."""
    with RunLock(Path(run_dir)):
        project, results, manifest = load_run(run_dir)
        keys = {p.identity for p in plan_calls(project, with_keys=False)}
        kept = [r for r in results if r.identity in keys]
        return write_outputs(project, Path(run_dir), kept, manifest.created)


def note(run_dir: str | Path) -> Path:
    """Re-write a run's rollout note from its summary.json (configs re-read from the manifest)."""
    import json

    rd = Path(run_dir)
    with RunLock(rd):
        project, _, _ = load_run(rd)
        try:
            summary = json.loads((rd / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CouldNotMeasureError(f"{rd / SUMMARY}: cannot be read ({exc}): is the run finished?") from None
        return write_note(project, summary, rd)
