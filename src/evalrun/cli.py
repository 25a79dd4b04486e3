"""The `evalrun` command: a thin skin over ``evalrun.api``.

This is the one place exceptions become exit codes. Heavy modules (litellm, pandas) are
imported only by the commands that need them, so `evalrun --help` and `evalrun validate`
stay fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from evalrun import __version__
from evalrun.errors import EvalrunError, ExitCode

if TYPE_CHECKING:
    from evalrun.execution.progress import Progress

EXIT_CODES_HELP = """\b
Exit codes:
  0  gate passed (or INCONCLUSIVE with on_inconclusive: pass)
  1  regression: the gate failed
  2  usage, config or case error (nothing was called)
  3  inconclusive: the suite cannot tell (on_inconclusive: fail)
  4  could not measure: provider down, key missing, errors above tolerance
  130 interrupted (resume with --resume RUN_DIR)
"""


def _fail(exc: EvalrunError) -> NoReturn:
    from evalrun.secrets import scrub_known

    click.echo(f"evalrun: error: {scrub_known(str(exc))}", err=True)
    sys.exit(int(exc.exit_code))


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="evalrun")
def main() -> None:
    """evalrun: gate prompt and model changes offline before they reach live traffic."""


def entry() -> None:
    """The `evalrun` program (console script and ``python -m evalrun``): run one command, exit.

    Every output is written when a command returns; what is left is the interpreter's
    teardown, whose garbage collection of every loaded module's objects (litellm, pandas)
    took ~1.2 s of CPU and wall on the 2-core machine. ``gc.freeze()`` takes them out of
    that collection (measured: 0.07 s), with ``sys.exit``'s ordinary shutdown otherwise
    (atexit handlers, flushed streams). Only the program does this: ``main`` embedded in
    another process (tests through click's runner) keeps its garbage collector.
    """
    import gc

    try:
        main()
    finally:
        gc.freeze()


@main.command()
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(dir_okay=False), help="Suite file (overrides `suite:` in the configs).")
def validate(baseline: str, candidate: str, suite: str | None) -> None:
    """Check configs, cases, templates, model strings, key variables and version labels; no model call.

    Exit 2 when a file needs fixing (including a hidden edit the gate would fail on), 4 when
    only the environment is missing something (a key variable, an install extra), else 0.
    """
    from evalrun.project.loader import load_project
    from evalrun.project.preflight import offline_problems
    from evalrun.secrets import scrub_known

    try:
        project = load_project(baseline, candidate, suite)
    except EvalrunError as exc:
        _fail(exc)
    problems = offline_problems(project)
    for p in problems:
        word = "warning" if p.severity == "warning" else "error"
        click.echo(f"evalrun: {word}: {scrub_known(p.line())}", err=True)
    severities = {p.severity for p in problems}
    if "config" in severities:
        sys.exit(int(ExitCode.CONFIG_ERROR))
    if "environment" in severities:
        sys.exit(int(ExitCode.COULD_NOT_MEASURE))
    n = len(project.cases)
    kinds = sorted({c.kind for c in project.cases})
    cohorts = sorted({c.cohort for c in project.cases})
    judged = sum(len(c.judges) for c in project.cases)
    judges = (f" (+ judge calls for {judged} judge check{'' if judged == 1 else 's'}: `evalrun estimate` counts "
              "them)") if judged else ""
    click.echo(
        f"ok: {n} cases ({', '.join(kinds)}), {len(cohorts)} cohorts, "
        f"{n * project.suite.config.samples * 2} calls planned{judges}; suite {project.suite.path}"
    )


def _subset_options(command: Any) -> Any:
    """--case/--cohort/--kind/--tag globs and --rerun-failed, shared by compare and estimate."""
    for name, what in (("tag", "a tag"), ("kind", "kind"), ("cohort", "cohort"), ("case", "id")):
        command = click.option(f"--{name}", f"{name}_globs", multiple=True, metavar="GLOB",
                               help=f"Only cases whose {what} matches GLOB (shell-style, e.g. 'fmt-*'; repeatable).")(command)
    return click.option("--rerun-failed", "rerun_failed", type=click.Path(file_okay=False, exists=True),
                        help="Only the cases that failed (candidate) or errored in the run folder RUN_DIR.")(command)


def _selection(*, case_globs: tuple[str, ...], cohort_globs: tuple[str, ...], kind_globs: tuple[str, ...],
               tag_globs: tuple[str, ...], rerun_failed: str | None) -> Any:
    from evalrun.project.subset import CaseSelection

    ids = None
    if rerun_failed is not None:
        from evalrun.execution.rerun import failed_case_ids

        ids = failed_case_ids(rerun_failed)
    return CaseSelection(cases=case_globs, cohorts=cohort_globs, kinds=kind_globs, tags=tag_globs, ids=ids,
                         ids_from=f"--rerun-failed {rerun_failed}: {len(ids)} failed" if ids is not None else "")


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/", 1))
    except ValueError:
        raise click.BadParameter("expected I/N, e.g. 2/4", param_hint="--shard") from None
    if n < 1 or not 1 <= i <= n:
        raise click.BadParameter("expected 1 <= I <= N", param_hint="--shard")
    return i, n


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(dir_okay=False), help="Suite file (overrides `suite:` in the configs).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder to write (default: a new one under the suite's report_dir).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True), help="Continue an interrupted run folder.")
@click.option("--aa", is_flag=True, help="A/A mode: treat the sides as identical configs to measure the noise floor.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--refresh", is_flag=True, help="Call every model again and overwrite the cached answers.")
@click.option("--replay", "--offline", "replay", is_flag=True, help="Never call a provider: answer from the cache or fail (exit 4).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Response cache folder (default: .evalrun-cache in the project, or $EVALRUN_CACHE_DIR).")
@click.option("--max-cost", type=float, help="Budget in USD for both sides; refuse to start or stop starting calls beyond it (exit 4).")
@click.option("--shard", "shard_spec", help="Run only shard I of N (deterministic by case id), e.g. 2/4; combine with `evalrun merge`.")
@click.option("--format", "fmt", type=click.Choice(["text", "github", "json"]), default="text", show_default=True,
              help="stdout format: a table, GitHub annotations plus the table, or summary.json.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Processes making the calls (default: the suite's `workers`, else chosen from the "
                   "calls and the cores; 1 = this process).")
@click.option("--sequential", is_flag=True,
              help="Random case order; stop calling once every rule is decided (anytime-valid sequences).")
@click.option("--look-every", type=click.IntRange(1), help="--sequential: cases per look (default: 5 %% of the suite, at least 5).")
@click.option("--report-url", envvar="EVALRUN_REPORT_URL", metavar="URL",
              help="Link summary.md (the PR comment) to the uploaded report, e.g. the CI run's artifact URL "
                   "[env: EVALRUN_REPORT_URL].")
@_subset_options
def compare(baseline: str, candidate: str, suite: str | None, out: str | None, resume_dir: str | None, aa: bool,
            no_cache: bool, refresh: bool, replay: bool, cache_dir: str | None, max_cost: float | None,
            shard_spec: str | None, fmt: str, quiet: bool, workers: int | None, sequential: bool,
            look_every: int | None, report_url: str | None, **subset: Any) -> None:
    """Run the suite against BASELINE and CANDIDATE, gate the change, write the reports."""
    from evalrun import api
    from evalrun.execution.progress import Progress

    if sum([no_cache, refresh, replay]) > 1:
        raise click.UsageError("--no-cache, --refresh and --replay exclude each other")
    if sequential and (resume_dir or max_cost is not None or shard_spec):
        raise click.UsageError("--sequential excludes --resume, --max-cost and --shard")
    mode: api.CacheMode = "off" if no_cache else "refresh" if refresh else "replay" if replay else "use"
    run_dir: Path | None = None
    try:
        if report_url:
            api.check_report_url(report_url)  # a bad link stops here, before any call
        project = api.load_project(baseline, candidate, suite, aa_mode=aa, shard=_parse_shard(shard_spec),
                                   select=_selection(**subset))
        progress = Progress(len(project.cases) * project.suite.config.samples * 2, quiet=quiet,
                            max_error_rate=project.suite.config.gate.max_error_rate)
        progress.error_alarm = _error_alarm(progress)
        if mode != "replay":
            api.check_model_strings(project)
            api.check_environment(project)
        _warn_hidden_edits(project, progress.message)
        options = api.RunOptions(resume=resume_dir is not None, max_cost=max_cost, cache=mode,
                                 cache_dir=Path(cache_dir) if cache_dir else None, workers=workers,
                                 progress=progress, log=progress.message)
        with api.open_run_folder(project, resume_dir or out, resume=options.resume,
                                 fresh=mode == "refresh") as folder:
            run_dir = folder.path
            finished = folder.mode == "finished"
            if folder.note and (finished or not sequential):  # --sequential decides per look (pipeline)
                progress.message(f"evalrun: {folder.note}")
            if not finished:
                progress.message(
                    f"evalrun: {len(project.cases)} cases x {project.suite.config.samples} sample(s) x 2 sides -> {run_dir}"
                    + (" (A/A: measuring the noise floor)" if project.aa_mode else "")
                )
            if max_cost is not None and not finished:
                from evalrun.analysis.estimate import estimate

                progress.message("evalrun: " + estimate(project).line())
            if sequential and not finished:
                outcome = api.compare_sequential(project, run_dir=run_dir, options=options, look_every=look_every)
            else:
                outcome = api.compare(project, run_dir=folder, options=options)
        if report_url:
            outcome.files["summary_md"] = api.rewrite_summary_md(outcome.run_dir, report_url=report_url)
    except EvalrunError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("\nevalrun: interrupted; finished calls are saved in the journal.", err=True)
        if run_dir is not None:
            click.echo(f"evalrun: resume with: evalrun compare {baseline} {candidate} --resume {run_dir}", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    _print_outcome(outcome.summary, outcome.files, outcome.run_dir, fmt)
    _append_step_summary(outcome.files.get("summary_md"))
    if outcome.exit_code == ExitCode.COULD_NOT_MEASURE:
        _print_error_digest(outcome.run_dir)
    sys.exit(outcome.exit_code)


def _error_alarm(progress: Progress) -> Callable[[list[Any], float], None]:
    """Mid-run: failed calls passed max_error_rate; their kinds and a message each, once (stderr)."""
    from evalrun.analysis.error_digest import error_digest, render_digest
    from evalrun.report.sanitize import terminal_safe
    from evalrun.secrets import scrub_known

    def alarm(failed: list[Any], rate: float) -> None:
        limit = progress.max_error_rate or 0.0
        progress.message(f"evalrun: {len(failed)} calls failed so far ({rate:.1%}), above max_error_rate "
                         f"{limit:.1%}: unless that falls, the verdict will be COULD NOT MEASURE (exit 4)")
        for line in render_digest(error_digest(failed)):
            progress.message(terminal_safe(scrub_known(line)))

    return alarm


def _print_error_digest(run_dir: Path) -> None:
    """Why the run could not measure: the commonest error kinds with a message each (stderr)."""
    from evalrun import api
    from evalrun.analysis.error_digest import render_digest
    from evalrun.report.sanitize import terminal_safe
    from evalrun.secrets import scrub_known

    for line in render_digest(api.error_digest(run_dir)):
        click.echo(terminal_safe(scrub_known(line)), err=True)


def _warn_hidden_edits(project: Any, say: Any) -> None:
    """Say before the first call what the gate will fail on whatever the outputs."""
    from evalrun.project.preflight import offline_problems

    for p in offline_problems(project):
        if p.severity == "config":
            say(f"evalrun: warning: {p.line()}")


def _print_outcome(summary: dict[str, Any], files: dict[str, Path], run_dir: Path, fmt: str) -> None:
    from evalrun.report.terminal import render_terminal

    if fmt == "json":
        import json

        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    if fmt == "github":
        from evalrun.report.github import github_annotations

        for line in github_annotations(summary):
            click.echo(line)
    click.echo(render_terminal(summary))
    click.echo(f"report: {files.get('html', run_dir / 'report.html')}")


@main.command()
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(dir_okay=False), help="Suite file (overrides `suite:` in the configs).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@_subset_options
def estimate(baseline: str, candidate: str, suite: str | None, as_json: bool, **subset: Any) -> None:
    """Tokens, cost and expected time per side of a compare, and what the suite can decide; no call."""
    from evalrun.analysis.estimate import estimate as run_estimate
    from evalrun.project.loader import (
        load_project,  # not evalrun.api: its imports cost a tenth of a second
    )

    try:
        est = run_estimate(load_project(baseline, candidate, suite, select=_selection(**subset)))
    except EvalrunError as exc:
        _fail(exc)
    if as_json:
        import json

        click.echo(json.dumps(est.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(est.text())


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the merged run.")
@click.option("--format", "fmt", type=click.Choice(["text", "github", "json"]), default="text", show_default=True)
def merge(run_dirs: tuple[str, ...], out: str, fmt: str) -> None:
    """Combine shard run folders (same configs and suite) into one run and one report."""
    from evalrun import api

    try:
        outcome = api.merge(list(run_dirs), out)
    except EvalrunError as exc:
        _fail(exc)
    _print_outcome(outcome.summary, outcome.files, outcome.run_dir, fmt)
    sys.exit(outcome.exit_code)


@main.command("note")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def note_cmd(run_dir: str) -> None:
    """Write RUN_DIR/rollout_note.md (change, risk, cohorts, metrics to watch, rollback triggers, queries)."""
    from evalrun import api

    try:
        path = api.note(run_dir)
    except EvalrunError as exc:
        _fail(exc)
    click.echo(path.read_text(encoding="utf-8"))
    click.echo(f"written: {path}", err=True)


@main.command("init")
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init_cmd(directory: str, force: bool) -> None:
    """Scaffold a working evalrun project (configs, cases, schema, CI workflow) in DIRECTORY."""
    from evalrun.project.scaffold import init_project, next_steps

    try:
        written = init_project(Path(directory), force=force)
    except EvalrunError as exc:
        _fail(exc)
    for path in written:
        click.echo(f"created {path}")
    click.echo(next_steps(Path(directory)))


@main.group()
def cache() -> None:
    """Inspect or prune the response cache."""


def _cache_at(cache_dir: str | None) -> Any:
    from evalrun.execution.cache import CACHE_FILE, ResponseCache, default_cache_path

    path = Path(cache_dir) / CACHE_FILE if cache_dir else default_cache_path(Path.cwd())
    if not path.exists():
        raise click.ClickException(f"no response cache at {path}")
    return ResponseCache(path)


@cache.command("stats")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache folder (default: ./.evalrun-cache or $EVALRUN_CACHE_DIR).")
def cache_stats(cache_dir: str | None) -> None:
    """Entries, size and models in the cache."""
    import json

    try:
        store = _cache_at(cache_dir)
        click.echo(json.dumps(store.stats().to_dict(), indent=2, sort_keys=True))
        store.close()
    except EvalrunError as exc:
        _fail(exc)


@cache.command("prune")
@click.option("--cache-dir", type=click.Path(file_okay=False))
@click.option("--older-than-days", type=float, help="Remove entries recorded more than N days ago.")
@click.option("--model", help="Remove entries of this model string.")
@click.option("--max-size-mb", type=float, help="Remove the oldest entries until the file is under this size.")
def cache_prune(cache_dir: str | None, older_than_days: float | None, model: str | None, max_size_mb: float | None) -> None:
    """Remove cache entries by age, model or total size."""
    if older_than_days is None and model is None and max_size_mb is None:
        raise click.UsageError("say what to prune: --older-than-days, --model or --max-size-mb")
    try:
        store = _cache_at(cache_dir)
        removed = store.prune(older_than_days=older_than_days, model=model, max_size_mb=max_size_mb)
        store.close()
    except EvalrunError as exc:
        _fail(exc)
    click.echo(f"removed {removed} entries")


def _append_step_summary(md: Path | None) -> None:
    """In GitHub Actions, put summary.md on the job's summary page."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target and md is not None and md.exists():
        try:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(md.read_text(encoding="utf-8") + "\n")
        except OSError as exc:  # the verdict and its exit code stand; say what was not written
            click.echo(f"evalrun: warning: cannot append summary.md to {target}: {exc.strerror or exc}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def rescore(run_dir: str) -> None:
    """Re-apply the (changed) checks to a run's stored outputs; only changed judge requests are made."""
    from evalrun import api

    try:
        outcome = api.rescore(run_dir)
    except EvalrunError as exc:
        _fail(exc)
    _print_outcome(outcome.summary, outcome.files, outcome.run_dir, "text")
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report(run_dir: str) -> None:
    """Re-render the reports of a run folder from its stored results."""
    rescore.callback(run_dir)  # type: ignore[misc]


WATCH_EXIT_HELP = """\b
Exit codes:
  0  continue: every trigger is on its safe side and the stage's minimums are met
  1  rollback: a rollback trigger's sequence is wholly in its harm region
  2  usage or plan error (nothing was queried)
  3  hold: inconclusive, a hold trigger fired, split mismatch, stale data or max duration
  4  could not measure: no data in the window, or the source cannot be read
"""


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8080", param_hint="--serve") from None
    if not 0 <= number <= 65535:
        raise click.BadParameter("port must be 0-65535", param_hint="--serve")
    return host or "127.0.0.1", number


@main.command("watch", epilog=WATCH_EXIT_HELP)
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--stage", help="Stage to decide (required unless --serve, which serves every stage).")
@click.option("--at", "at", help="Decide as of this time (ISO 8601 with zone; default now): replays a past decision.")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder for verdict.json, summary.md, report.html (default: reports/watch-STAGE next to the plan).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="stdout: the verdict and table, or verdict.json.")
@click.option("--serve", "listen", help="Answer verdicts over HTTP on HOST:PORT (Argo Rollouts Web metric, Flagger webhooks).")
@click.option("--refresh", type=click.FloatRange(min=0), default=60.0, show_default=True, help="--serve: recompute a verdict at most every N seconds.")
def watch_cmd(plan: str, stage: str | None, at: str | None, out: str | None, fmt: str,
              listen: str | None, refresh: float) -> None:
    """Decide a rollout stage from live logs: continue, hold or roll back."""
    from evalrun.watch import run as watch_run

    if listen is not None:
        _serve(plan, stage, out, listen, refresh)
        return
    if not stage:
        raise click.UsageError("--stage is required (or use --serve)")
    try:
        outcome = watch_run.watch(plan, stage, at=watch_run.parse_at(at), out_dir=out)
    except EvalrunError as exc:
        _fail(exc)
    if fmt == "json":
        import json

        click.echo(json.dumps(outcome.summary, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        from evalrun.watch.markdown import render_terminal

        click.echo(render_terminal(outcome))
        click.echo(f"report: {outcome.files['html']}")
    _append_step_summary(outcome.files.get("summary_md"))
    sys.exit(outcome.exit_code)


def _serve(plan: str, stage: str | None, out: str | None, listen: str, refresh: float) -> None:
    from evalrun.watch.plan import load_plan
    from evalrun.watch.serve import VerdictCache, make_server, plan_compute

    host, port = _parse_listen(listen)
    try:
        loaded = load_plan(plan)
    except EvalrunError as exc:
        _fail(exc)
    names = {s.name for s in loaded.stages}
    if stage is not None and stage not in names:
        raise click.BadParameter(f"no stage {stage!r} (stages: {', '.join(sorted(names))})", param_hint="--stage")
    cache = VerdictCache(plan_compute(Path(plan), Path(out) if out else None), refresh_s=refresh)
    server = make_server(host, port, cache, {stage} if stage else names)
    click.echo(f"evalrun watch: serving {', '.join(sorted({stage} if stage else names))} on "
               f"http://{host}:{server.server_address[1]}/verdict/<stage> (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command("plan")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out", type=click.Path(dir_okay=False), default="rollout.yaml", show_default=True, help="Plan file to write.")
@click.option("--log", "log_path", default="logs/requests.jsonl", show_default=True, help="Log file(s) the plan's source points at (edit later for other sources).")
@click.option("--force", is_flag=True, help="Overwrite an existing plan file.")
def plan_cmd(run_dir: str, out: str, log_path: str, force: bool) -> None:
    """Write a rollout plan (rollout.yaml) from a Stage-1 run: labels, triggers, cohorts, owner."""
    from evalrun.watch.from_run import write_plan

    try:
        path = write_plan(run_dir, out, log_path=log_path, force=force)
    except EvalrunError as exc:
        _fail(exc)
    click.echo(f"written: {path}")
    click.echo(f"next: point source.path at your logs, then `evalrun watch {path} --stage canary`")


@main.command("traffic")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--requests", "n", type=click.IntRange(min=1), default=100_000, show_default=True, help="Requests in the log.")
@click.option("--days", type=click.FloatRange(min=0.01), default=2.0, show_default=True, help="Days the log spans.")
@click.option("--end", help="Time of the last request (ISO 8601; default 2026-11-30T12:00:00Z).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same log).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="parquet", show_default=True, help="Log file format.")
@click.option("--regression", "regressions", multiple=True, default=("parse_fail=0.05",), show_default=True,
              help="Candidate rate change NAME=VALUE (error, parse_fail, task_fail, over_refusal, tool_fail, cost_scale, latency_scale); repeatable; 'none' for an A/A log.")
@click.option("--regression-cohort", help="Tenant the regression hits (default: the canary tenant, staff).")
@click.option("--no-content", is_flag=True, help="Omit answer text (smaller, faster logs).")
def traffic_cmd(directory: str, n: int, days: float, end: str | None, seed: int, fmt: str,
                regressions: tuple[str, ...], regression_cohort: str | None, no_content: bool) -> None:
    """Write a realistic synthetic request log and a rollout plan that watches it."""
    from evalrun.watch.traffic import Rates, TrafficSpec, write_demo

    changes: dict[str, float] = {}
    for item in regressions:
        if item == "none":
            continue
        key, _, value = item.partition("=")
        if key not in Rates.__dataclass_fields__:
            raise click.BadParameter(f"unknown rate {key!r}", param_hint="--regression")
        try:
            changes[key] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected NAME=NUMBER", param_hint="--regression") from None
    spec_kwargs: dict[str, Any] = {}
    if end is not None:
        from evalrun.watch.run import parse_at

        try:
            spec_kwargs["end"] = parse_at(end)
        except EvalrunError as exc:
            _fail(exc)
    spec = TrafficSpec(requests=n, days=days, seed=seed, regression=changes,
                       regression_cohort=regression_cohort, content=not no_content, **spec_kwargs)
    files = write_demo(Path(directory), spec, fmt)  # type: ignore[arg-type]
    for path in files.values():
        click.echo(f"written: {path}")
    click.echo(f"next: evalrun watch {files['plan']} --stage canary --at {spec.end.isoformat().replace('+00:00', 'Z')}")
