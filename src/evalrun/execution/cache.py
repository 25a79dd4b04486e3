"""Response cache: successful call results keyed by canonical request hash, in one SQLite file.

Several processes (CI shards, worker processes) may read and write the same file at once,
so the store uses WAL mode (readers never block the writer), a generous ``busy_timeout``
(a waiting writer queues instead of failing with "database is locked"), and short
``BEGIN IMMEDIATE`` transactions (take the write lock up front: a deferred transaction that
upgrades from read to write can fail with SQLITE_BUSY without ever waiting).

Only successful results are stored: an error (a 429 today) must never be replayed tomorrow.
Every stored string goes through ``scrub_known``, which also masks credential-shaped text
(``sk-...``, ``Bearer ...``): a replayed output can differ from the live one in exactly those
spans, a price worth paying to keep keys out of a file that CI caches and uploads. Rows
written under another evalrun format version are treated as misses. Any SQLite failure surfaces as a
one-line :class:`CacheError` (a :class:`~evalrun.errors.CouldNotMeasureError`) telling the
user to delete the file or run with ``--no-cache``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from evalrun.canonical import canonical_json
from evalrun.errors import CouldNotMeasureError
from evalrun.execution.store import FORMAT_VERSION
from evalrun.records import CallResult
from evalrun.secrets import scrub_known

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FILE",
    "DEFAULT_CACHE_DIR",
    "SCHEMA_VERSION",
    "CacheError",
    "CacheStats",
    "ResponseCache",
    "default_cache_path",
]

CACHE_DIR_ENV = "EVALRUN_CACHE_DIR"
DEFAULT_CACHE_DIR = ".evalrun-cache"
CACHE_FILE = "responses.sqlite3"

# Layout of the SQLite file (tables, columns). Bump on incompatible changes; an older
# evalrun refuses a newer file rather than misreading it.
SCHEMA_VERSION = 1

BUSY_TIMEOUT_S = 30.0
_T = TypeVar("_T")
# Well below SQLite's bound-parameter limit, and keeps each statement/transaction short.
_CHUNK = 500
# sqlite3 extended error codes that mean "this file is damaged or not a database".
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS responses (
        key TEXT PRIMARY KEY NOT NULL,
        model TEXT NOT NULL,
        result TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        format_version INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS responses_recorded_at ON responses (recorded_at)",
    "CREATE INDEX IF NOT EXISTS responses_model ON responses (model)",
)


class CacheError(CouldNotMeasureError):
    """The response cache cannot be used (corrupt, newer schema, locked too long, unwritable)."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds. Times are UTC ISO strings (``None`` when empty)."""

    path: Path
    entries: int
    size_bytes: int  # database file plus its write-ahead log
    oldest: str | None
    newest: str | None
    per_model: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``evalrun cache stats --json`` and reports)."""
        return {
            "path": str(self.path),
            "entries": self.entries,
            "size_bytes": self.size_bytes,
            "oldest": self.oldest,
            "newest": self.newest,
            "per_model": dict(sorted(self.per_model.items())),
        }


def default_cache_path(project_root: Path) -> Path:
    """Where the cache lives: ``$EVALRUN_CACHE_DIR/responses.sqlite3`` if that is set (a
    relative value is taken from the current directory), else
    ``<project_root>/.evalrun-cache/responses.sqlite3``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return (Path(env).expanduser().resolve()) / CACHE_FILE
    return project_root / DEFAULT_CACHE_DIR / CACHE_FILE


def _utcnow() -> datetime:
    """Current UTC time (a seam for tests)."""
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _scrub(value: Any) -> Any:
    """Scrub every string inside a JSON-shaped value of registered and key-shaped secrets."""
    if isinstance(value, str):
        return scrub_known(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class ResponseCache:
    """Successful :class:`CallResult` records keyed by ``request_key``, in one SQLite file.

    Safe to share between processes (each opens its own ``ResponseCache``) and between
    threads of one process (calls are serialised by a lock). A cache object inherited
    through ``fork`` reopens its connection in the child.
    """

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the cache at ``path``.

        Raises :class:`CacheError` when the file is not an evalrun cache, is corrupt, or was
        written by a newer evalrun (schema version above :data:`SCHEMA_VERSION`).
        """
        self.path = Path(path)
        self._lock = threading.RLock()
        # Connections inherited through fork are never used or closed in the child: SQLite
        # forbids it. Keeping a reference stops garbage collection from closing them.
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self.unreadable = 0
        """Rows ``get``/``get_many`` found but could not read (treated as misses) so far."""
        parent = self.path.parent
        if not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
                # Like .pytest_cache: a fresh cache directory must not end up in a commit.
                (parent / ".gitignore").write_text("# Created by evalrun.\n*\n", encoding="utf-8")
            except OSError as exc:
                raise CacheError(
                    f"response cache {self.path}: cannot create its folder ({_one_line(str(exc))}): "
                    f"set {CACHE_DIR_ENV} to a writable folder or run with --no-cache"
                ) from exc
        self._conn = self._retry(self._open_once)

    # -- connection and error handling ------------------------------------------------

    def _open_once(self) -> sqlite3.Connection:
        """Connect, switch to WAL, create or check the schema."""
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (see module docstring).
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # Switching to WAL needs an exclusive lock and can fail at once, without waiting,
            # while other processes create the same file; only switch when not yet WAL.
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a power cut may drop the last writes but never corrupts the file,
            # the right trade for a cache.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        with self._transaction(conn):
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if names and "schema_version" not in names:
                raise CacheError(
                    f"response cache {self.path} is an SQLite file but not an evalrun cache: "
                    f"delete it, set {CACHE_DIR_ENV} elsewhere, or run with --no-cache"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if version is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif int(version) > SCHEMA_VERSION:
                raise CacheError(
                    f"response cache {self.path} has schema version {version}, newer than this "
                    f"evalrun understands ({SCHEMA_VERSION}): upgrade evalrun, delete the file, "
                    "or run with --no-cache"
                )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"response cache {self.path} is closed")
        if self._pid != os.getpid():
            self._inherited.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
            self._conn = self._retry(self._open_once)
        return self._conn

    def _retry(self, op: Callable[[], _T]) -> _T:
        """Run one atomic step; retry it while the file is busy, map SQLite errors to CacheError.

        ``busy_timeout`` already makes SQLite wait for locks, but a few paths (journal-mode
        switch, WAL recovery after a crash) report SQLITE_BUSY at once; those are retried
        here, with jittered backoff, up to the same overall deadline.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                return op()
            except sqlite3.Error as exc:
                if self._is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 0.5)
                    continue
                raise self._error(exc) from exc

    @staticmethod
    def _is_busy(exc: sqlite3.Error) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in _BUSY_CODES
        return "locked" in str(exc) or "busy" in str(exc)

    def _error(self, exc: sqlite3.Error) -> CacheError:
        detail = _one_line(str(exc)) or type(exc).__name__
        code = getattr(exc, "sqlite_errorcode", None)
        base = code & 0xFF if isinstance(code, int) else None
        if base in _CORRUPT_CODES or "malformed" in detail or "not a database" in detail:
            return CacheError(
                f"response cache {self.path} is corrupt ({detail}): delete it or run with --no-cache"
            )
        if self._is_busy(exc):
            return CacheError(
                f"response cache {self.path} stayed locked by another process for "
                f"{BUSY_TIMEOUT_S:.0f} s ({detail}): retry, or run with --no-cache"
            )
        return CacheError(
            f"response cache {self.path} cannot be used ({detail}): delete it or run with --no-cache"
        )

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _write(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own short write transaction (retried as a whole); rows changed."""

        def step() -> int:
            with self._transaction(conn):
                return conn.execute(sql, params).rowcount

        return self._retry(step)

    # -- reading ----------------------------------------------------------------------

    @staticmethod
    def _decode(key: str, payload: str) -> CallResult:
        result = CallResult.from_dict(json.loads(payload))
        result.cached = True
        result.warmup = False  # whatever the original call was, this run did not make it
        result.request_key = key
        return result

    def get(self, key: str) -> CallResult | None:
        """The stored result for ``key`` with ``cached=True``, or ``None`` (also for a row
        that cannot be read: counted in :attr:`unreadable`).

        Latency, cost, tokens and tool calls are as recorded when the call was made. The
        ``case_id``/``side``/``sample`` fields are those of the call that was *stored*
        (another case may share the request): callers must overwrite them with the current
        plan's values.
        """
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, CallResult]:
        """Stored results for those ``keys`` that are present (see :meth:`get`), in batches."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, CallResult] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                sql = (
                    "SELECT key, result FROM responses WHERE format_version = ? "
                    f"AND key IN ({','.join('?' * len(chunk))})"
                )

                def fetch(sql: str = sql, chunk: list[str] = chunk) -> list[tuple[str, str]]:
                    return conn.execute(sql, (FORMAT_VERSION, *chunk)).fetchall()

                rows = self._retry(fetch)
                for key, payload in rows:
                    try:
                        found[key] = self._decode(key, payload)
                    except (ValueError, TypeError, KeyError, AttributeError):
                        # An unreadable row (hand-edited, damaged, another version's) is a
                        # miss: the call is made again and its fresh answer replaces the row.
                        self.unreadable += 1
        return found

    # -- writing ----------------------------------------------------------------------

    def put(self, key: str, result: CallResult) -> None:
        """Store ``result`` under ``key`` (replacing any older entry); errors are ignored."""
        self.put_many([(key, result)])

    def put_many(self, items: Sequence[tuple[str, CallResult]]) -> None:
        """Store every successful result, in short batched transactions; failed results
        (``not result.ok``) are skipped so a transient error is never replayed."""
        recorded_at = _timestamp(_utcnow())
        rows: list[tuple[str, str, str, str, int]] = []
        for key, result in items:
            if not result.ok:
                continue
            data = result.to_dict()
            data["cached"] = False  # a stored row describes the original call
            data["request_key"] = key
            rows.append(
                (key, scrub_known(result.model), canonical_json(_scrub(data)), recorded_at, FORMAT_VERSION)
            )
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]

                def step(chunk: list[tuple[str, str, str, str, int]] = chunk) -> None:
                    with self._transaction(conn):
                        conn.executemany(
                            "INSERT OR REPLACE INTO responses "
                            "(key, model, result, recorded_at, format_version) VALUES (?, ?, ?, ?, ?)",
                            chunk,
                        )

                self._retry(step)

    # -- maintenance ------------------------------------------------------------------

    def _size_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def stats(self) -> CacheStats:
        """Entry count, size on disk, oldest/newest recorded time and entries per model."""
        with self._lock:
            conn = self._connection()

            def query() -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
                totals = conn.execute(
                    "SELECT COUNT(*), MIN(recorded_at), MAX(recorded_at) FROM responses"
                ).fetchone()
                models = conn.execute("SELECT model, COUNT(*) FROM responses GROUP BY model").fetchall()
                return totals, models

            (entries, oldest, newest), models = self._retry(query)
        return CacheStats(
            path=self.path,
            entries=int(entries),
            size_bytes=self._size_on_disk(),
            oldest=oldest,
            newest=newest,
            per_model={str(m): int(n) for m, n in models},
        )

    def recent_call_times(self, model: str, *, limit: int = 200) -> list[float]:
        """Seconds the ``limit`` most recent stored calls of ``model`` took when they were made
        (their whole call, retries included; else the provider's latency): what ``estimate``
        expects the next calls of that model to take."""
        with self._lock:
            conn = self._connection()

            def query() -> list[tuple[Any, ...]]:
                return conn.execute(
                    "SELECT result FROM responses WHERE model = ? AND format_version = ? "
                    "ORDER BY recorded_at DESC LIMIT ?", (model, FORMAT_VERSION, limit)).fetchall()

            rows = self._retry(query)
        times: list[float] = []
        for (text,) in rows:
            try:
                data = json.loads(text)
                value = data.get("wall_s") or data.get("latency_s")
            except (ValueError, AttributeError):
                continue
            if isinstance(value, int | float) and value > 0:
                times.append(float(value))
        return times

    def prune(
        self,
        *,
        older_than_days: float | None = None,
        model: str | None = None,
        max_size_mb: float | None = None,
    ) -> int:
        """Remove entries and compact the file (VACUUM); returns the number of rows removed.

        ``older_than_days`` and ``model`` select what to remove (both given: entries
        matching both). ``max_size_mb`` then evicts the oldest entries of the whole cache
        until the file (with its log) is at most that size. With no argument nothing is
        removed, but the file is still compacted.
        """
        if older_than_days is not None and older_than_days < 0:
            raise ValueError("older_than_days must be >= 0")
        if max_size_mb is not None and max_size_mb < 0:
            raise ValueError("max_size_mb must be >= 0")
        removed = 0
        with self._lock:
            conn = self._connection()
            where: list[str] = []
            params: list[Any] = []
            if older_than_days is not None:
                where.append("recorded_at < ?")
                params.append(_timestamp(_utcnow() - timedelta(days=older_than_days)))
            if model is not None:
                where.append("model = ?")
                params.append(scrub_known(model))  # stored model names were scrubbed too
            if where:
                removed += self._write(conn, f"DELETE FROM responses WHERE {' AND '.join(where)}", params)
            self._compact(conn)
            if max_size_mb is not None:
                removed += self._shrink_to(conn, int(max_size_mb * 1024 * 1024))
        return removed

    def _compact(self, conn: sqlite3.Connection) -> None:
        self._retry(lambda: conn.execute("VACUUM"))
        # In WAL mode VACUUM's output sits in the log until a checkpoint copies it back;
        # TRUNCATE also empties the log so the size on disk really drops. (Readers of other
        # processes can hold it back; it then completes at a later checkpoint.)
        self._retry(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    def _shrink_to(self, conn: sqlite3.Connection, target_bytes: int) -> int:
        """Evict oldest entries until the file fits ``target_bytes``; returns rows removed."""
        removed = 0
        row_cost = "length(result) + length(key) + 64"  # payload plus a rough per-row overhead
        # Each round estimates how many rows to drop from their payload sizes, then
        # re-measures after VACUUM; a few rounds converge (each drops at least one row).
        for _ in range(8):
            size = self._size_on_disk()
            if size <= target_bytes:
                return removed
            total_payload, count = self._retry(
                lambda: conn.execute(f"SELECT COALESCE(SUM({row_cost}), 0), COUNT(*) FROM responses").fetchone()
            )
            if count == 0:
                return removed
            # Scale the bytes to shed from file terms to payload terms (page and index overhead).
            excess = (size - target_bytes) * int(total_payload) / size

            def pick(excess: float = excess) -> list[str]:
                victims: list[str] = []
                shed = 0
                cursor = conn.execute(f"SELECT key, {row_cost} FROM responses ORDER BY recorded_at, key")
                try:
                    for key, cost in cursor:
                        victims.append(key)
                        shed += int(cost)
                        if shed >= excess:
                            break
                finally:
                    cursor.close()  # a pending statement would make VACUUM fail
                return victims

            victims = self._retry(pick)
            for start in range(0, len(victims), _CHUNK):
                chunk = victims[start : start + _CHUNK]
                removed += self._write(
                    conn, f"DELETE FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
            self._compact(conn)
        if self._size_on_disk() > target_bytes:
            # Estimates kept undershooting (a target near the empty file's size): empty it.
            removed += self._write(conn, "DELETE FROM responses")
            self._compact(conn)
        return removed

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent); the last closer folds the log into the file."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
