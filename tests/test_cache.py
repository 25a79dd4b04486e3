"""Response cache: round trips, error exclusion, batching, concurrent writers, pruning,
schema/corruption refusal and secret scrubbing."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import evalrun.execution.cache as cache_mod
from evalrun.errors import CouldNotMeasureError
from evalrun.execution.cache import (
    CACHE_DIR_ENV,
    SCHEMA_VERSION,
    CacheError,
    ResponseCache,
    default_cache_path,
)
from evalrun.execution.store import FORMAT_VERSION
from evalrun.records import CallResult, ToolCall
from evalrun.secrets import MASK, clear_known_secrets, register_secret

SECRET = "sk-test-SECRET123456"


def ok_result(i: int = 0, *, model: str = "gpt-4o-mini", output: str | None = None, **extra: Any) -> CallResult:
    """A successful result with every measured field set."""
    fields: dict[str, Any] = {
        "case_id": f"case-{i}",
        "side": "baseline",
        "sample": i % 3,
        "model": model,
        "output": output if output is not None else f'{{"answer": {i}}}',
        "tool_calls": [ToolCall(name="lookup_order", arguments=f'{{"order_id": "A-{i}"}}', id=f"call_{i}")],
        "finish_reason": "tool_calls",
        "refusal": None,
        "prompt_tokens": 120 + i,
        "completion_tokens": 30 + i,
        "tokens_estimated": True,
        "latency_s": 1.234567 + i,
        "attempt_latencies_s": [0.5, 1.234567 + i],
        "wall_s": 2.5 + i,
        "cost_usd": 0.000123 * (i + 1),
        "cost_status": "priced",
        "attempts": 2,
        "request_key": f"key-{i}",
    }
    fields.update(extra)
    return CallResult(**fields)


def error_result(i: int = 0, message: str = "429 Too Many Requests") -> CallResult:
    return CallResult(
        case_id=f"case-{i}", side="candidate", sample=0, model="gpt-4o-mini",
        error_kind="rate_limited", error_message=message, attempts=4, attempt_latencies_s=[0.1] * 4,
    )


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    c = ResponseCache(tmp_path / "cache" / "responses.sqlite3")
    yield c
    c.close()


@pytest.fixture
def fake_secret() -> Iterator[str]:
    register_secret(SECRET)
    yield SECRET
    clear_known_secrets()


def set_now(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(cache_mod, "_utcnow", lambda: moment)


# -- round trip --------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_marks_cached(cache: ResponseCache) -> None:
    original = ok_result(7)
    cache.put("k7", original)
    got = cache.get("k7")
    assert got is not None
    assert got.cached is True
    assert original.cached is False  # the caller's object is not touched
    expected = original.to_dict() | {"cached": True, "request_key": "k7"}
    assert got.to_dict() == expected
    # Spelled out: what a replayed latency/cost report depends on.
    assert got.latency_s == original.latency_s
    assert got.attempt_latencies_s == original.attempt_latencies_s
    assert got.wall_s == original.wall_s
    assert got.cost_usd == original.cost_usd
    assert got.cost_status == "priced"
    assert (got.prompt_tokens, got.completion_tokens, got.tokens_estimated) == (127, 37, True)
    assert got.tool_calls == [ToolCall(name="lookup_order", arguments='{"order_id": "A-7"}', id="call_7")]


def test_get_returns_a_fresh_copy_with_the_stored_rows_identity(cache: ResponseCache) -> None:
    cache.put("k", ok_result(1))
    first = cache.get("k")
    assert first is not None
    first.output = "mutated"
    first.case_id = "current-plan-case"
    second = cache.get("k")
    assert second is not None
    assert second.output == '{"answer": 1}'
    # case/side/sample are those of the stored call; the runner overwrites them.
    assert (second.case_id, second.side, second.sample) == ("case-1", "baseline", 1)


def test_miss_and_replace(cache: ResponseCache) -> None:
    assert cache.get("absent") is None
    cache.put("k", ok_result(1, output="old"))
    cache.put("k", ok_result(1, output="new"))
    got = cache.get("k")
    assert got is not None and got.output == "new"
    assert cache.stats().entries == 1


def test_rows_of_another_format_version_are_misses(cache: ResponseCache) -> None:
    cache.put("k", ok_result(1))
    conn = sqlite3.connect(cache.path)
    with conn:
        conn.execute("UPDATE responses SET format_version = ?", (FORMAT_VERSION + 1,))
    conn.close()
    assert cache.get("k") is None


# -- errors are never cached -------------------------------------------------------------


def test_errors_are_not_stored(cache: ResponseCache) -> None:
    cache.put("err", error_result())
    assert cache.get("err") is None
    cache.put_many([("a", ok_result(1)), ("b", error_result(2)), ("c", ok_result(3))])
    assert set(cache.get_many(["a", "b", "c"])) == {"a", "c"}
    assert cache.stats().entries == 2


def test_an_error_does_not_overwrite_a_stored_success(cache: ResponseCache) -> None:
    cache.put("k", ok_result(1))
    cache.put("k", error_result(1))
    got = cache.get("k")
    assert got is not None and got.ok


# -- batching ----------------------------------------------------------------------------


@pytest.mark.slow
def test_get_many_10000_keys(cache: ResponseCache, capsys: pytest.CaptureFixture[str]) -> None:
    n = 10_000
    cache.put_many([(f"key-{i:05d}", ok_result(i)) for i in range(n)])
    wanted = [f"key-{i:05d}" for i in range(n)] + ["missing-1", "missing-2", "key-00000"]
    started = time.perf_counter()
    found = cache.get_many(wanted)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[cache] get_many({len(wanted)} keys) -> {len(found)} hits in {elapsed * 1000:.0f} ms")
    assert len(found) == n
    assert all(r.cached for r in found.values())
    assert found["key-04242"].latency_s == ok_result(4242).latency_s
    assert cache.get_many([]) == {}


# -- concurrent writers ------------------------------------------------------------------


def _writer(path: str, worker: int, rows: int, start: Any, errors: Any) -> None:
    """Child process: wait for the common start, then write ``rows`` rows one by one."""
    try:
        c = ResponseCache(Path(path))
        start.wait()
        for i in range(rows):
            c.put(f"w{worker}-{i:04d}", ok_result(i, model=f"model-{worker}"))
        c.close()
    except BaseException:
        errors.put(f"worker {worker}: {traceback.format_exc()}")
        raise


@pytest.mark.slow
def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "responses.sqlite3"
    path.parent.mkdir()
    ctx = multiprocessing.get_context("spawn")
    n_proc, rows = 4, 500
    start = ctx.Event()
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, rows, start, errors)) for w in range(n_proc)]
    for p in procs:
        p.start()
    # Children open the (not yet existing) file concurrently; then all write at once.
    time.sleep(0.5)
    start.set()
    for p in procs:
        p.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in procs] == [0] * n_proc
    with ResponseCache(path) as c:
        stats = c.stats()
        assert stats.entries == n_proc * rows
        assert stats.per_model == {f"model-{w}": rows for w in range(n_proc)}
        keys = [f"w{w}-{i:04d}" for w in range(n_proc) for i in range(rows)]
        assert len(c.get_many(keys)) == n_proc * rows


def test_threads_share_one_cache(cache: ResponseCache) -> None:
    def write(t: int) -> None:
        for i in range(100):
            cache.put(f"t{t}-{i}", ok_result(i))
            cache.get(f"t{t}-{i}")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.stats().entries == 400


# -- prune and stats ---------------------------------------------------------------------


def test_stats(cache: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = cache.stats()
    assert (empty.entries, empty.oldest, empty.newest, empty.per_model) == (0, None, None, {})
    assert empty.size_bytes > 0
    t0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    set_now(monkeypatch, t0)
    cache.put_many([("a", ok_result(1, model="m1")), ("b", ok_result(2, model="m1"))])
    set_now(monkeypatch, t0 + timedelta(days=3))
    cache.put("c", ok_result(3, model="m2"))
    cache.put("e", error_result())
    s = cache.stats()
    assert s.entries == 3
    assert s.per_model == {"m1": 2, "m2": 1}
    assert s.oldest == "2024-01-02T03:04:05.000000Z"
    assert s.newest == "2024-01-05T03:04:05.000000Z"
    assert s.size_bytes >= cache.path.stat().st_size
    assert s.to_dict()["per_model"] == {"m1": 2, "m2": 1}


def test_prune_by_age(cache: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    set_now(monkeypatch, now - timedelta(days=40))
    cache.put_many([(f"old{i}", ok_result(i)) for i in range(5)])
    set_now(monkeypatch, now - timedelta(days=10))
    cache.put_many([(f"new{i}", ok_result(i)) for i in range(3)])
    set_now(monkeypatch, now)
    assert cache.prune(older_than_days=30) == 5
    assert cache.stats().entries == 3
    assert cache.get("old0") is None and cache.get("new0") is not None
    assert cache.prune(older_than_days=30) == 0


def test_prune_by_model_and_combined(cache: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    set_now(monkeypatch, now - timedelta(days=40))
    cache.put_many([("a-old", ok_result(1, model="a")), ("b-old", ok_result(2, model="b"))])
    set_now(monkeypatch, now)
    cache.put_many([("a-new", ok_result(3, model="a")), ("b-new", ok_result(4, model="b"))])
    # Both filters: only entries matching both go.
    assert cache.prune(older_than_days=30, model="a") == 1
    assert set(cache.get_many(["a-old", "a-new", "b-old", "b-new"])) == {"a-new", "b-old", "b-new"}
    assert cache.prune(model="b") == 2
    assert cache.stats().per_model == {"a": 1}
    assert cache.prune() == 0  # no criteria: nothing removed (file compacted)
    with pytest.raises(ValueError):
        cache.prune(older_than_days=-1)


def test_prune_by_size_evicts_oldest_first(cache: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    n = 1500
    for i in range(n):
        if i % 100 == 0:
            set_now(monkeypatch, t0 + timedelta(hours=i))
        cache.put(f"k{i:04d}", ok_result(i, output=f"{i:04d}" + "x" * 2000))
    before = cache.stats()
    assert before.size_bytes > 3 * 1024 * 1024
    removed = cache.prune(max_size_mb=1)
    after = cache.stats()
    assert after.size_bytes <= 1024 * 1024
    assert removed == n - after.entries
    assert after.entries > 0  # it evicted what it had to, not everything
    assert after.entries > 200  # and close to the target: a ~2.3 KB row fills one 4 KB page, ~250 fit
    kept = cache.get_many([f"k{i:04d}" for i in range(n)])
    assert f"k{n - 1:04d}" in kept and "k0000" not in kept
    # Survivors are the newest, as a contiguous tail.
    assert min(kept) == f"k{n - after.entries:04d}"
    # A target below the empty file's size empties the cache without looping forever.
    cache.prune(max_size_mb=0)
    assert cache.stats().entries == 0


# -- refusal: schema, corruption, foreign files ------------------------------------------


def _assert_one_line_user_error(exc: BaseException) -> str:
    assert isinstance(exc, CouldNotMeasureError)
    message = str(exc)
    assert "\n" not in message
    assert "--no-cache" in message
    return message


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    ResponseCache(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(CacheError) as info:
        ResponseCache(path)
    message = _assert_one_line_user_error(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and "newer" in message


def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(CouldNotMeasureError) as info:
        ResponseCache(path)
    message = _assert_one_line_user_error(info.value)
    assert "corrupt" in message and "delete" in message and str(path) in message


@pytest.mark.parametrize("keep", [0.5, 0.1, 40 / 4096])
def test_truncated_file_is_refused(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "responses.sqlite3"
    with ResponseCache(path) as c:
        c.put_many([(f"k{i}", ok_result(i, output="y" * 1000)) for i in range(2000)])
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(CouldNotMeasureError) as info:
        c2 = ResponseCache(path)
        try:  # damage may only show when the missing pages are read
            c2.get_many([f"k{i}" for i in range(2000)])
            c2.stats()
        finally:
            c2.close()
    message = _assert_one_line_user_error(info.value)
    assert "corrupt" in message


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(CacheError) as info:
        ResponseCache(path)
    assert "not an evalrun cache" in _assert_one_line_user_error(info.value)


# -- secrets -----------------------------------------------------------------------------


def test_registered_secret_never_reaches_the_file(tmp_path: Path, fake_secret: str) -> None:
    path = tmp_path / "c" / "responses.sqlite3"
    with ResponseCache(path) as c:
        leaky = ok_result(
            1,
            output=f"your key is {fake_secret}, keep it safe",
            refusal=f"no ({fake_secret})",
            tool_calls=[ToolCall(name="login", arguments=f'{{"token": "{fake_secret}"}}')],
        )
        c.put("leaky", leaky)
        c.put("error", error_result(2, message=f"401 invalid key {fake_secret}"))
        got = c.get("leaky")
        assert got is not None and got.output is not None
        assert fake_secret not in got.output and MASK in got.output
        assert fake_secret not in got.tool_calls[0].arguments
        # Check the bytes while the log still holds the writes, and after close folds them in.
        raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
        assert fake_secret.encode() not in raw
        assert b"your key is" in raw  # sanity: we are looking at the data
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    assert fake_secret.encode() not in raw


# -- location and lifecycle --------------------------------------------------------------


def test_default_cache_path_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert default_cache_path(tmp_path) == tmp_path / ".evalrun-cache" / "responses.sqlite3"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_path(tmp_path) == tmp_path / "elsewhere" / "responses.sqlite3"
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    assert default_cache_path(tmp_path) == tmp_path / ".evalrun-cache" / "responses.sqlite3"


def test_new_cache_folder_is_git_ignored_and_close_is_idempotent(tmp_path: Path) -> None:
    path = default_cache_path(tmp_path)
    c = ResponseCache(path)
    assert (path.parent / ".gitignore").read_text(encoding="utf-8").splitlines()[-1] == "*"
    c.put("k", ok_result())
    c.close()
    c.close()
    with pytest.raises(RuntimeError):
        c.get("k")
    with ResponseCache(path) as again:
        assert again.get("k") is not None


# -- damaged rows, and one answer shared by several planned calls ---------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("attempts", "two"), ("output", 5), ("tool_calls", [1]), ("side", "both"), ("cost_usd", "free"),
     ("prompt_tokens", 1.5), ("tool_calls", [{"name": "f", "arguments": {"a": 1}}])],
    ids=["attempts-str", "output-int", "tool-call-int", "side", "cost-str", "tokens-float", "arguments-dict"],
)
def test_a_row_with_a_wrong_typed_field_is_a_counted_miss(cache: ResponseCache, field: str, value: Any) -> None:
    import json

    cache.put_many([("good", ok_result(1)), ("bad", ok_result(2))])
    conn = sqlite3.connect(str(cache.path))
    row = json.loads(conn.execute("SELECT result FROM responses WHERE key = 'bad'").fetchone()[0])
    row[field] = value
    conn.execute("UPDATE responses SET result = ? WHERE key = 'bad'", (json.dumps(row),))
    conn.commit()
    conn.close()
    got = cache.get_many(["good", "bad"])
    assert set(got) == {"good"} and cache.unreadable == 1


def _fake_project(root: Path, cases: list[dict[str, Any]], **sides: Any) -> Any:
    from evalrun import api
    from projectkit import variant, write_project

    b, c = write_project(root, cases=cases, baseline=sides.get("baseline") or variant("baseline"),
                         candidate=sides.get("candidate") or variant("candidate"))
    return api.load_project(b, c)


def test_a_damaged_cache_row_means_one_more_call_and_a_warning_not_a_traceback(tmp_path: Path) -> None:
    import json

    from evalrun import api
    from evalrun.testing import FakeProvider
    from projectkit import case

    project = _fake_project(tmp_path / "proj", [case(f"c{i}", expect=[{"contains": {"value": "q"}}]) for i in range(3)])
    first = FakeProvider()
    api.compare(project, provider=first, run_dir=tmp_path / "run1", cache_path=tmp_path / "cache")
    assert first.count == 6
    conn = sqlite3.connect(str(tmp_path / "cache" / "responses.sqlite3"))
    key, payload = conn.execute("SELECT key, result FROM responses ORDER BY key LIMIT 1").fetchone()
    conn.execute("UPDATE responses SET result = ? WHERE key = ?",
                 (json.dumps({**json.loads(payload), "attempts": "many", "output": 7}), key))
    conn.commit()
    conn.close()
    notices: list[str] = []
    second = FakeProvider()
    outcome = api.compare(project, provider=second, run_dir=tmp_path / "run2", cache_path=tmp_path / "cache",
                          log=notices.append)
    # The damaged row was a miss: its request was made again (once per side: both sides of
    # this project send the same requests).
    assert second.count == 2
    assert len(notices) == 1 and "1 cached answer(s)" in notices[0] and "could not be read" in notices[0]
    assert outcome.summary["calls"]["baseline"]["total"] == outcome.summary["calls"]["candidate"]["total"] == 3
    # The fresh answer replaced the damaged row: a third run is all hits, no warning.
    notices.clear()
    third = FakeProvider()
    api.compare(project, provider=third, run_dir=tmp_path / "run3", cache_path=tmp_path / "cache", log=notices.append)
    assert third.count == 0 and notices == []


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_warm_cache_never_swaps_cases_that_render_the_same_prompt(tmp_path: Path) -> None:
    """Two cases with the same template and vars (so the same request) but different ids and
    expectations: the warm run must keep each case as itself, once per side."""
    from evalrun import api
    from evalrun.testing import FakeProvider
    from projectkit import case

    same = {"question": "What is 2 + 2?"}
    cases = [case("asks-four", vars=same, expect=[{"contains": {"value": "2 + 2"}}]),
             case("asks-five", vars=same, expect=[{"contains": {"value": "five"}}]),
             case("other", expect=[{"contains": {"value": "q"}}])]
    project = _fake_project(tmp_path / "proj", cases)
    cold = api.compare(project, provider=FakeProvider(), run_dir=tmp_path / "cold", cache_path=tmp_path / "cache")
    provider = FakeProvider()
    warm = api.compare(project, provider=provider, run_dir=tmp_path / "warm", cache_path=tmp_path / "cache")
    assert provider.count == 0
    for run_dir in (tmp_path / "cold", tmp_path / "warm"):
        rows = _rows(run_dir)
        assert sorted((r["case_id"], r["side"]) for r in rows) == sorted(
            (c["id"], side) for c in cases for side in ("baseline", "candidate"))
        passed = {(r["case_id"], r["side"]): r["score"]["passed"] for r in rows}
        assert passed == {(cid, side): cid != "asks-five" for cid in ("asks-four", "asks-five", "other")
                          for side in ("baseline", "candidate")}
    assert [r["case_id"] for r in _rows(tmp_path / "warm")] == [r["case_id"] for r in _rows(tmp_path / "cold")]
    assert warm.verdict_status == cold.verdict_status


def test_a_warm_cache_keeps_both_sides_when_they_send_the_same_request(tmp_path: Path) -> None:
    """Baseline and candidate differ only in labels (not A/A mode): every request is the same
    on both sides. A warm run used to relabel the one cached object as the candidate twice:
    "no case was measured on both sides", exit 4, on every warm run."""
    from evalrun import api
    from evalrun.testing import FakeProvider
    from projectkit import LABELS, case, variant

    project = _fake_project(
        tmp_path / "proj", [case(f"c{i}", expect=[{"contains": {"value": "q"}}]) for i in range(6)],
        candidate=variant("candidate", versions={**LABELS, "policy_version": "p2"}))
    assert not project.aa_mode
    cold = api.compare(project, provider=FakeProvider(), run_dir=tmp_path / "cold", cache_path=tmp_path / "cache")
    provider = FakeProvider()
    warm = api.compare(project, provider=provider, run_dir=tmp_path / "warm", cache_path=tmp_path / "cache")
    assert provider.count == 0
    assert warm.verdict_status == cold.verdict_status != "COULD_NOT_MEASURE"
    assert warm.summary["calls"]["baseline"]["cached"] == warm.summary["calls"]["candidate"]["cached"] == 6
    assert sorted((r["case_id"], r["side"]) for r in _rows(tmp_path / "warm")) == sorted(
        (f"c{i}", side) for i in range(6) for side in ("baseline", "candidate"))
