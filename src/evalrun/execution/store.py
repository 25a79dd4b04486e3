"""Run folder format: a manifest plus append-only JSONL journals of call results.

The journal is written one line per finished call, each line handed to the OS with one
``write`` the moment the call finishes (no user-space buffer), so a crash or ``kill -9``
loses at most the line being written. Reading tolerates a torn last line.

A run made by worker processes (``evalrun.execution.pool``) has one journal per worker,
``journal.w0.jsonl``, ``journal.w1.jsonl``, … next to ``journal.jsonl`` (cache hits and
single-process runs); ``read_journals`` reads them all.

Every write is atomic (temp file + rename) or a whole journal line, and a failed write is a
one-line ``RunFolderError`` (exit 4), never a traceback. ``summary.json`` is written last:
its presence means the run finished. ``inspect_folder`` tells what a folder holds (a run,
of which inputs, finished or not; or someone's files), ``clear_run`` removes a run's files
and nothing else, and ``RunLock`` keeps a second evalrun out of a folder in use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from evalrun.canonical import canonical_json, stable_hash
from evalrun.errors import CouldNotMeasureError
from evalrun.records import CallResult

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
SUMMARY = "summary.json"
LOCK = ".evalrun.lock"
WORKER_JOURNAL_RE = re.compile(r"^journal\.w(\d+)\.jsonl$")
# Every file a run writes into its folder (besides worker journals and temp files). A run
# started over removes exactly these; anything else in the folder is left alone.
JUDGE_DIR = "judge"
"""The judge calls' journal folder inside a run folder (``judge/journal.jsonl``)."""
RUN_FILES = (SUMMARY, "summary.md", "report.html", "junit.xml", "rollout_note.md", "results.jsonl", JOURNAL,
             MANIFEST, JUDGE_DIR)
_SURROGATES = re.compile("[\ud800-\udfff]")


class RunFolderError(CouldNotMeasureError):
    """A run folder cannot be written (disk full, no permission, read-only) or is in use."""


def _write_error(path: Path, exc: OSError) -> RunFolderError:
    why = exc.strerror or str(exc) or type(exc).__name__
    return RunFolderError(
        f"cannot write {path}: {why}. Finished calls stay in the run folder's journal: fix this and run the "
        "same command again to finish (finished calls are not repeated)"
    )


def worker_journal_name(index: int) -> str:
    """The journal file of worker process ``index`` (0-based) in a run folder."""
    return f"journal.w{index}.jsonl"


def request_key(
    *, model: str, api_base: str | None, messages: list[dict[str, Any]], params: dict[str, Any], sample: int,
    model_path: str | None = None,
) -> str:
    """Identity of one call: everything that determines the response, and the sample index."""
    return stable_hash(
        {"model": model, "api_base": api_base, "messages": messages, "params": params, "sample": sample,
         "model_path": model_path}
    )


_PLAIN_TYPES = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def plain(value: Any) -> Any:
    """``dataclasses.asdict`` for JSON-shaped records, 3-4x faster.

    Dataclasses become dicts, lists/tuples/dicts are rebuilt with their items converted;
    every other value is kept as is (``asdict`` deep-copies it — pointless for data about
    to be serialised). Equal to ``asdict`` for CallResult, Score and CheckOutcome.
    """
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        items = [_plain(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(value))
        return {name: _plain(getattr(value, name)) for name in names}
    return value


def result_line(result: CallResult) -> str:
    """One journal line (with its newline): ``canonical_json(result.to_dict())``, built
    without ``asdict``'s deep copies (a third of the journal's CPU per call)."""
    return canonical_json(_plain(result)) + "\n"


def _encode_line(line: str) -> bytes:
    """UTF-8 bytes of a line; a lone surrogate (which UTF-8 cannot hold) becomes U+FFFD."""
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", line).encode("utf-8")


class Journal:
    """Append-only JSONL of CallResults; each row reaches the OS as soon as it is written.

    Every ``append`` is one unbuffered ``write`` of one complete line (``O_APPEND``), so a
    killed process leaves whole lines plus at most one torn last line, never a buffer of
    finished-but-unwritten rows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] | None = None

    def _handle(self) -> IO[bytes]:
        if self._fh is None:
            try:
                self._repair_tail()
                self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for the run
            except OSError as exc:
                raise _write_error(self.path, exc) from exc
        return self._fh

    def _repair_tail(self) -> None:
        """Drop a torn last line (a crash mid-write) so appends start on a clean line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # Find the last newline and cut after it.
            pos = size - 1
            chunk = 4096
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                data = fh.read(pos - start)
                idx = data.rfind(b"\n")
                if idx >= 0:
                    fh.truncate(start + idx + 1)
                    return
                pos = start
            fh.truncate(0)

    def append(self, result: CallResult) -> None:
        """Write one finished call's line (one ``write`` system call, already flushed)."""
        self._write(_encode_line(result_line(result)))

    def append_many(self, results: Iterable[CallResult]) -> None:
        """Write several rows with one system call (e.g. cache hits known up front)."""
        data = _encode_line("".join(result_line(r) for r in results))
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        """Raises ``RunFolderError`` when the line cannot be written (disk full...): a row
        that is not on disk is not safe, so the run must stop rather than go on."""
        fh = self._handle()
        view = memoryview(data)
        try:
            while view:  # a regular file takes it all at once; loop for partial writes anyway
                view = view[fh.write(view) :]
        except OSError as exc:
            raise _write_error(self.path, exc) from exc

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_journal(path: Path) -> list[CallResult]:
    """Read every complete row; a torn or corrupt line is skipped, never fatal."""
    return list(iter_journal(path))


def journal_paths(run_dir: Path) -> list[Path]:
    """``journal.jsonl`` then every ``journal.wN.jsonl`` by worker number (existing files only)."""
    paths = [run_dir / JOURNAL] if (run_dir / JOURNAL).exists() else []
    if run_dir.is_dir():
        workers = []
        for p in run_dir.iterdir():
            m = WORKER_JOURNAL_RE.match(p.name)
            if m is not None and p.is_file():
                workers.append((int(m.group(1)), p))
        paths += [p for _, p in sorted(workers)]
    return paths


def read_journals(run_dir: Path) -> list[CallResult]:
    """Every row of a run folder: ``journal.jsonl`` plus the worker journals ``journal.w*.jsonl``.

    Each file tolerates a torn last line (a killed worker). A planned call recorded more
    than once (same case, side, sample and request key: a failed call made again by a
    resumed run) is returned once: an answer wins over an error, else the later row.
    """
    by_ident: dict[tuple[str, str, int, str], int] = {}
    out: list[CallResult] = []
    for path in journal_paths(run_dir):
        for r in iter_journal(path):
            ident = (r.case_id, r.side, r.sample, r.request_key)
            at = by_ident.get(ident)
            if at is None:
                by_ident[ident] = len(out)
                out.append(r)
            elif r.ok or not out[at].ok:
                out[at] = r
    return out


def iter_journal(path: Path) -> Iterator[CallResult]:
    """The complete, readable rows of one journal file (torn or invalid lines are skipped)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line
            try:
                yield CallResult.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a damaged row: the call counts as not made (a resume makes it)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) with sorted keys and a trailing newline."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text atomically (temp file + rename); ``RunFolderError`` when it cannot be written."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(_encode_line(text))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _write_error(path, exc) from exc


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one canonical JSON line per row, atomically (see ``write_text``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            for row in rows:
                fh.write(_encode_line(canonical_json(row) + "\n"))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _write_error(path, exc) from exc


# --------------------------------------------------------------------------- the folder itself


@dataclass(frozen=True)
class FolderState:
    """What a folder holds, as far as runs are concerned (see ``inspect_folder``)."""

    path: Path
    exists: bool
    is_run: bool  # holds a readable evalrun manifest
    others: tuple[str, ...]  # visible entries that are not run files (a user's files)
    fingerprint: str | None = None
    finished: bool = False  # summary.json is there: every output was written (it is written last)
    verdict_status: str | None = None

    @property
    def is_empty(self) -> bool:
        """No run, no visible file: any folder evalrun may use."""
        return not self.is_run and not self.others


def _is_run_file(name: str) -> bool:
    base = name.removesuffix(".tmp")
    return base in RUN_FILES or WORKER_JOURNAL_RE.match(base) is not None


def inspect_folder(path: Path) -> FolderState:
    """Look at ``path`` without changing it: is it a run, of which inputs, finished or not.

    Hidden entries (``.gitkeep``, the lock file) are ignored; evalrun never writes a
    visible file it did not create. A manifest that cannot be read means "not a run".
    """
    if not path.exists():
        return FolderState(path, exists=False, is_run=False, others=())
    if not path.is_dir():
        return FolderState(path, exists=True, is_run=False, others=(path.name,))
    try:
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise RunFolderError(f"cannot read the run folder {path}: {exc.strerror or exc}") from exc
    manifest: dict[str, Any] | None = None
    if MANIFEST in names:
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and "format_version" in data and "fingerprint" in data:
            manifest = data
    if manifest is None:
        return FolderState(path, exists=True, is_run=False, others=tuple(names))
    status: str | None = None
    finished = SUMMARY in names
    if finished:
        try:
            summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
            status = str(summary["verdict"]["status"])
        except (OSError, ValueError, KeyError, TypeError):
            finished = False  # a damaged summary: the outputs are simply written again
    return FolderState(path, exists=True, is_run=True, others=tuple(n for n in names if not _is_run_file(n)),
                       fingerprint=str(manifest.get("fingerprint")), finished=finished, verdict_status=status)


def clear_run(path: Path) -> None:
    """Remove the files of the run in ``path`` (summary.json first, so an interrupted
    clearing leaves an unfinished run, never a "finished" one without its journal)."""
    names = [SUMMARY, *sorted(p.name for p in path.iterdir() if _is_run_file(p.name) and p.name != SUMMARY)]
    for name in names:
        try:
            if name == JUDGE_DIR and (path / name).is_dir():
                shutil.rmtree(path / name)
                continue
            (path / name).unlink(missing_ok=True)
        except OSError as exc:
            raise _write_error(path / name, exc) from exc


class RunLock:
    """An exclusive lock on a run folder for as long as a command uses it.

    ``flock`` on ``DIR/.evalrun.lock``: released by the kernel when the process ends, even
    on ``kill -9``, so a crashed run never leaves a stale lock. A second evalrun on the same
    folder fails at once with a ``RunFolderError`` instead of making every call again and
    overwriting the first one's files. Re-entrant within a process (a command that holds
    the folder may call library functions that lock it too). Where ``fcntl`` is missing,
    nothing is locked.
    """

    _held: ClassVar[dict[Path, list[int]]] = {}  # resolved folder -> [fd, holders] (this process)
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key: Path | None = None

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder) or raise ``RunFolderError``; idempotent."""
        if self._key is not None:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            key = self.path.resolve()
        except OSError as exc:
            raise _write_error(self.path / LOCK, exc) from exc
        with RunLock._guard:
            held = RunLock._held.get(key)
            if held is not None:
                held[1] += 1
            else:
                RunLock._held[key] = [_lock_folder(self.path), 1]
        self._key = key
        return self

    def release(self) -> None:
        """Let go of the lock (idempotent). The lock file stays: removing it would race."""
        if self._key is None:
            return
        with RunLock._guard:
            held = RunLock._held[self._key]
            held[1] -= 1
            if held[1] == 0:
                del RunLock._held[self._key]
                os.close(held[0])
        self._key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_folder(path: Path) -> int:
    """Open and ``flock`` ``path/.evalrun.lock``; its fd (holding the lock) or RunFolderError."""
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _write_error(path / LOCK, exc) from exc
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
        os.close(fd)
        raise RunFolderError(
            f"{path} is in use by another evalrun{holder}: wait for it to finish, or choose another --out"
        ) from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
