"""Run folder format: a manifest plus append-only JSONL journals of call results.

The journal is written one line per finished call, each line handed to the OS with one
``write`` the moment the call finishes (no user-space buffer), so a crash or ``kill -9``
loses at most the line being written. Reading tolerates a torn last line.

A run made by worker processes (``evalrun.parallel``) has one journal per worker,
``journal.w0.jsonl``, ``journal.w1.jsonl``, … next to ``journal.jsonl`` (cache hits and
single-process runs); ``read_journals`` reads them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from evalrun.records import CallResult

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
WORKER_JOURNAL_RE = re.compile(r"^journal\.w(\d+)\.jsonl$")


def worker_journal_name(index: int) -> str:
    """The journal file of worker process ``index`` (0-based) in a run folder."""
    return f"journal.w{index}.jsonl"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the basis of every hash evalrun takes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


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
            self._repair_tail()
            self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for the run
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
        self._write(result_line(result).encode("utf-8"))

    def append_many(self, results: Iterable[CallResult]) -> None:
        """Write several rows with one system call (e.g. cache hits known up front)."""
        data = "".join(result_line(r) for r in results).encode("utf-8")
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        fh = self._handle()
        view = memoryview(data)
        while view:  # a regular file takes it all at once; loop for partial writes anyway
            view = view[fh.write(view) :]

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
    than once (same case, side, sample and request key) is returned once, first one wins.
    """
    seen: set[tuple[str, str, int, str]] = set()
    out: list[CallResult] = []
    for path in journal_paths(run_dir):
        for r in iter_journal(path):
            ident = (r.case_id, r.side, r.sample, r.request_key)
            if ident in seen:
                continue
            seen.add(ident)
            out.append(r)
    return out


def iter_journal(path: Path) -> Iterator[CallResult]:
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line
            try:
                yield CallResult.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) with sorted keys and a trailing newline."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(canonical_json(row) + "\n")
    os.replace(tmp, path)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    return data
