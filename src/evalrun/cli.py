"""The `evalrun` command: a thin skin over ``evalrun.api``.

This is the one place exceptions become exit codes. Heavy modules (litellm, pandas) are
imported only by the commands that need them, so `evalrun --help` and `evalrun validate`
stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from evalrun import __version__
from evalrun.errors import EvalrunError, ExitCode

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


@main.command()
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(dir_okay=False), help="Suite file (overrides `suite:` in the configs).")
def validate(baseline: str, candidate: str, suite: str | None) -> None:
    """Check configs, cases, schemas, regexes, checks and templates without calling a model."""
    from evalrun.api import load_project

    try:
        project = load_project(baseline, candidate, suite)
    except EvalrunError as exc:
        _fail(exc)
    n = len(project.cases)
    kinds = sorted({c.kind for c in project.cases})
    cohorts = sorted({c.cohort for c in project.cases})
    click.echo(
        f"ok: {n} cases ({', '.join(kinds)}), {len(cohorts)} cohorts, "
        f"{n * project.suite.config.samples * 2} calls planned; suite {project.suite.path}"
    )


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
              help="Processes making the calls (default: the suite's `workers`; 1 = this process).")
def compare(baseline: str, candidate: str, suite: str | None, out: str | None, resume_dir: str | None, aa: bool,
            no_cache: bool, refresh: bool, replay: bool, cache_dir: str | None, max_cost: float | None,
            shard_spec: str | None, fmt: str, quiet: bool, workers: int | None) -> None:
    """Run the suite against BASELINE and CANDIDATE, gate the change, write the reports."""
    from evalrun import api
    from evalrun.progress import Progress

    if sum([no_cache, refresh, replay]) > 1:
        raise click.UsageError("--no-cache, --refresh and --replay exclude each other")
    mode: api.CacheMode = "off" if no_cache else "refresh" if refresh else "replay" if replay else "use"
    if workers is not None and workers > 1 and mode != "replay":
        from evalrun.parallel import prestart

        prestart()  # the worker processes' litellm import starts now, while the project loads
    progress: Progress | None = None
    run_dir: Path | None = None
    try:
        project = api.load_project(baseline, candidate, suite, aa_mode=aa, shard=_parse_shard(shard_spec))
        if mode != "replay":
            api.check_environment(project)
        total = len(project.cases) * project.suite.config.samples * 2
        progress = Progress(total, quiet=quiet)
        run_dir = Path(resume_dir) if resume_dir else api.new_run_dir(project, out)
        resume = resume_dir is not None or api.is_unfinished_run_of(run_dir, project)
        if resume and resume_dir is None:
            progress.message(f"evalrun: {run_dir} holds an unfinished run of these inputs: resuming it")
        progress.message(
            f"evalrun: {len(project.cases)} cases x {project.suite.config.samples} sample(s) x 2 sides -> {run_dir}"
            + (" (A/A: measuring the noise floor)" if project.aa_mode else "")
        )
        if max_cost is not None:
            from evalrun.estimate import estimate

            progress.message("evalrun: " + estimate(project).line())
        outcome = api.compare(project, run_dir=run_dir, progress=progress, resume=resume,
                              max_cost=max_cost, cache=mode, cache_path=cache_dir, workers=workers)
    except EvalrunError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("\nevalrun: interrupted; finished calls are saved in the journal.", err=True)
        if run_dir is not None:
            click.echo(f"evalrun: resume with: evalrun compare {baseline} {candidate} --resume {run_dir}", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    _print_outcome(outcome.summary, outcome.files, outcome.run_dir, fmt)
    _append_step_summary(outcome.files.get("summary_md"))
    _exit_now(outcome.exit_code)


def _exit_now(code: int) -> NoReturn:
    """Exit once every file is written: run the atexit handlers, skip the interpreter's
    teardown (with litellm loaded it alone costs ~0.6 s of CPU and wall, measured).

    Only as the `evalrun` program itself; embedded (click's CliRunner in tests, another
    program calling ``main``) it is a normal ``sys.exit``.
    """
    import atexit

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if not (argv0.name == "evalrun" or argv0.resolve() == Path(__file__).with_name("__main__.py").resolve()):
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


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
def estimate(baseline: str, candidate: str, suite: str | None, as_json: bool) -> None:
    """Expected tokens and cost of a compare (prompts counted, completions bounded by max_tokens)."""
    from evalrun import api
    from evalrun.estimate import estimate as run_estimate

    try:
        est = run_estimate(api.load_project(baseline, candidate, suite))
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
    from evalrun.scaffold import init_project, next_steps

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
    from evalrun.cache import CACHE_FILE, ResponseCache, default_cache_path

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
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(md.read_text(encoding="utf-8") + "\n")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def rescore(run_dir: str) -> None:
    """Re-apply the (changed) checks to a run's stored outputs; no model is called."""
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


def run() -> Any:
    """Console-script entry that never shows a traceback for a user error."""
    return main()
