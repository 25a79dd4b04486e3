"""Run folder format: a manifest plus an append-only JSONL journal of call results.

The journal is written one line per finished call and flushed immediately, so a crash or
``kill -9`` loses at most the line being written. Reading tolerates a torn last line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from evalrun.records import CallResult

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"


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


class Journal:
    """Append-only JSONL of CallResults; each row flushed as soon as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = None

    def _handle(self) -> IO[str]:
        if self._fh is None:
            self._repair_tail()
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
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
        fh = self._handle()
        fh.write(canonical_json(result.to_dict()) + "\n")
        fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_journal(path: Path) -> list[CallResult]:
    """Read every complete row; a torn or corrupt line is skipped, never fatal."""
    return list(iter_journal(path))


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
