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


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(dir_okay=False), help="Suite file (overrides `suite:` in the configs).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder to write (default: a new one under the suite's report_dir).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True), help="Continue an interrupted run folder.")
@click.option("--aa", is_flag=True, help="A/A mode: treat the sides as identical configs to measure the noise floor.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
def compare(baseline: str, candidate: str, suite: str | None, out: str | None, resume_dir: str | None, aa: bool, quiet: bool) -> None:
    """Run the suite against BASELINE and CANDIDATE, gate the change, write the reports."""
    from evalrun import api
    from evalrun.progress import Progress
    from evalrun.report.terminal import render_terminal

    progress: Progress | None = None
    run_dir: Path | None = None
    try:
        project = api.load_project(baseline, candidate, suite, aa_mode=aa)
        api.check_environment(project)
        total = len(project.cases) * project.suite.config.samples * 2
        progress = Progress(total, quiet=quiet)
        run_dir = Path(resume_dir) if resume_dir else api.new_run_dir(project, out)
        progress.message(f"evalrun: {len(project.cases)} cases x {project.suite.config.samples} sample(s) x 2 sides -> {run_dir}")
        outcome = api.compare(project, run_dir=run_dir, progress=progress, resume=resume_dir is not None)
    except EvalrunError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("\nevalrun: interrupted; finished calls are saved in the journal.", err=True)
        if run_dir is not None:
            click.echo(f"evalrun: resume with: evalrun compare {baseline} {candidate} --resume {run_dir}", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    click.echo(render_terminal(outcome.summary))
    click.echo(f"report: {outcome.files.get('html', outcome.run_dir / 'report.html')}")
    _append_step_summary(outcome.files.get("summary_md"))
    sys.exit(outcome.exit_code)


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
    from evalrun.report.terminal import render_terminal

    try:
        outcome = api.rescore(run_dir)
    except EvalrunError as exc:
        _fail(exc)
    click.echo(render_terminal(outcome.summary))
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report(run_dir: str) -> None:
    """Re-render the reports of a run folder from its stored results."""
    rescore.callback(run_dir)  # type: ignore[misc]


def run() -> Any:
    """Console-script entry that never shows a traceback for a user error."""
    return main()
