"""The run folder a command writes into: where it is, what it holds, and what to do with it.

``open_run_folder`` locks the folder and decides, from what it holds, whether the run is
new, resumed, already finished, or started over (see the README's "Re-using a run folder").
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evalrun.errors import UserInputError
from evalrun.execution.store import FolderState, RunLock, inspect_folder
from evalrun.project.loader import Project

__all__ = ["FolderMode", "RunFolder", "default_run_dir", "is_unfinished_run_of", "new_run_dir", "open_run_folder"]


def default_run_dir(project: Project) -> Path:
    """Where a run goes without ``--out``: ``<report_dir>/<UTC time>-<fingerprint>``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return project.suite.report_dir() / f"{stamp}-{project.fingerprint()[:8]}"


def new_run_dir(project: Project, out: str | Path | None = None) -> Path:
    """A run folder under the suite's report_dir (or exactly ``out``), created."""
    path = Path(out) if out is not None else default_run_dir(project)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_unfinished_run_of(run_dir: Path, project: Project) -> bool:
    """True when ``run_dir`` holds an interrupted run (no summary yet) of exactly these inputs:
    starting the same run again then continues it instead of starting over."""
    state = inspect_folder(Path(run_dir))
    return state.is_run and not state.finished and state.fingerprint == project.fingerprint()


FolderMode = Literal["new", "resume", "finished", "restart"]


@dataclass
class RunFolder:
    """A run folder opened for one command, locked until ``close``.

    ``mode`` says what the command does with it: ``new`` (empty or absent), ``resume``
    (continue the run it holds: make the missing and failed calls), ``finished`` (it holds
    the finished run of exactly these inputs: nothing to do), ``restart`` (it holds a run
    of other inputs, or a fresh run was asked for: its run files are replaced). ``note``
    is the one line telling the user which, and why ("" for ``new``).
    """

    path: Path
    mode: FolderMode
    note: str
    lock: RunLock

    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run_folder(
    project: Project, out: str | Path | None = None, *, resume: bool = False, fresh: bool = False
) -> RunFolder:
    """Lock the run folder of a compare and decide what to do with what it holds.

    * absent or empty (hidden files aside): a new run;
    * holding files but no evalrun run: refused (``UserInputError``): nothing is overwritten;
    * the run of these same inputs (same fingerprint): resumed when unfinished or when it
      could not measure (its failed calls are made again), else ``finished`` — a no-op;
      with ``fresh`` (``--refresh``: every call made again) a finished one is started over;
    * a run of other inputs: started over (its run files removed), so no old call can be
      mixed into the new run; with ``resume`` (an explicit ``--resume``) resumed instead:
      a journaled call is kept only when its exact request (case, side, request key) is
      still planned, and the manifest is rewritten for the new inputs.

    Raises ``RunFolderError`` (exit 4) when another evalrun holds the folder.
    """
    path = Path(out) if out is not None else default_run_dir(project)
    _refuse_foreign(inspect_folder(path))
    lock = RunLock(path).acquire()
    try:
        state = inspect_folder(path)  # again, under the lock: another run may just have finished
        _refuse_foreign(state)
        same = state.is_run and state.fingerprint == project.fingerprint()
        mode: FolderMode
        if not state.is_run:
            mode, note = "new", ""
        elif resume and not same:
            mode, note = "resume", (f"resuming {path}, whose inputs changed since: calls whose request is "
                                    "unchanged are kept, the others are made")
        elif resume:
            mode, note = "resume", f"resuming {path}: only its missing and failed calls are made"
        elif not same:
            mode, note = "restart", f"{path} held a run of other inputs: starting it over"
        elif fresh and state.finished:
            mode, note = "restart", f"{path} held a finished run of these inputs: starting it over (--refresh)"
        elif not state.finished:
            mode, note = "resume", f"{path} holds an unfinished run of these inputs: resuming it"
        elif state.verdict_status == "COULD_NOT_MEASURE":
            mode, note = "resume", (f"{path} holds a run of these inputs that could not measure: "
                                    "making its failed calls again")
        else:
            mode, note = "finished", (f"{path} already holds the finished run of these inputs "
                                      f"({state.verdict_status}): nothing to call; --refresh calls again")
    except BaseException:
        lock.release()
        raise
    return RunFolder(path, mode, note, lock)


def _refuse_foreign(state: FolderState) -> None:
    if state.exists and not state.is_run and state.others:
        shown = ", ".join(state.others[:3]) + (f" and {len(state.others) - 3} more" if len(state.others) > 3 else "")
        raise UserInputError(
            f"not an evalrun run folder and not empty ({shown}): refusing to write into it; "
            "choose a new or empty folder", file=state.path)

