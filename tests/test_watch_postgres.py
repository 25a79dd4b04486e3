"""`evalrun watch` against a real PostgreSQL server holding LiteLLM_SpendLogs.

The server is started by the test (Debian's postgresql binaries, a temp folder, 127.0.0.1)
and skipped with a reason only when the binaries are absent. The same ibis queries run in
PostgreSQL and, on an export of the same table, in DuckDB: the sufficient statistics and
the verdict must be identical.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalrun.errors import CouldNotMeasureError
from evalrun.watch.run import evaluate
from support.pg_server import PostgresServer, find_bin_dir
from test_watch_engine import pooled, stage_stats
from watchkit import AT, SPEND_LOGS_DDL, base_plan, make_log, spend_log_rows, write_plan

BIN = find_bin_dir()
pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(BIN is None, reason="PostgreSQL server binaries not installed (apt-get install postgresql)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def spend_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[dict[str, Any]]]]:
    import psycopg

    assert BIN is not None
    d = tmp_path_factory.mktemp("pg")
    _, cols, _ = make_log(d, requests=15_000, seed=21, regression={"parse_fail": 0.10, "cost_scale": 1.4})
    rows = spend_log_rows(cols)
    server = PostgresServer(BIN).start()
    try:
        with psycopg.connect(server.uri, autocommit=True) as conn:
            conn.execute(SPEND_LOGS_DDL)
            names = list(rows[0])
            quoted = ", ".join(f'"{n}"' for n in names)
            with conn.cursor() as cur, cur.copy(f'COPY "LiteLLM_SpendLogs" ({quoted}) FROM STDIN') as copy:
                for r in rows:
                    copy.write_row([r[n] for n in names])
        yield server.uri, d, rows
    finally:
        server.stop()


def _plan(source: dict[str, Any]) -> dict[str, Any]:
    plan = base_plan("unused")
    plan["source"] = {**source, "cohort_fields": ["tenant", "tenant_tier"]}
    plan["triggers"] += [
        {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0},
        {"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.03},
        {"metric": "latency_p95_ratio", "kind": "ratio", "max_increase": 0.3},
    ]
    return plan


def _export_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (v.isoformat(sep=" ") if hasattr(v, "isoformat") else v) for k, v in r.items()})


def test_postgres_and_duckdb_compute_identical_statistics(spend_logs: tuple[str, Path, list[dict[str, Any]]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    uri, d, rows = spend_logs
    monkeypatch.setenv("EVALRUN_TEST_PG", uri)
    pg = stage_stats(write_plan(d / "pg.yaml", _plan({"kind": "litellm", "uri": "env:EVALRUN_TEST_PG"})))
    _export_csv(rows, d / "spend.csv")
    duck = stage_stats(write_plan(d / "duck.yaml", _plan({"kind": "litellm", "path": "spend.csv"})))
    assert pooled(pg) == pooled(duck)
    assert pg.cohorts == duck.cohorts == ["staff"]
    assert pg.thresholds == duck.thresholds
    assert "FROM \"LiteLLM_SpendLogs\"" in pg.queries[-1] or "LiteLLM_SpendLogs" in pg.queries[-1]
    assert uri not in " ".join(pg.queries)


def test_labels_from_metadata_and_tags_split_the_arms_like_the_native_log(
        spend_logs: tuple[str, Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    uri, d, _ = spend_logs
    monkeypatch.setenv("EVALRUN_TEST_PG", uri)
    pg = pooled(stage_stats(write_plan(d / "pg2.yaml", _plan({"kind": "litellm", "uri": "env:EVALRUN_TEST_PG"}))))
    native_plan = _plan({"kind": "evalrun", "path": "traffic.jsonl"})
    native = pooled(stage_stats(write_plan(d / "native.yaml", native_plan)))
    assert pg["units"] == native["units"]
    for m in ("parse_ok", "task_success", "is_error", "over_refused"):
        assert pg[m] == native[m], m
    assert pg["cost_usd"][1][1] == pytest.approx(native["cost_usd"][1][1])


def test_regression_in_postgres_logs_is_rolled_back(spend_logs: tuple[str, Path, list[dict[str, Any]]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    uri, d, _ = spend_logs
    monkeypatch.setenv("EVALRUN_TEST_PG", uri)
    outcome = evaluate(write_plan(d / "pg3.yaml", _plan({"kind": "litellm", "uri": "env:EVALRUN_TEST_PG"})),
                       "canary", at=AT)
    assert outcome.verdict.status == "rollback"
    fired = {t["metric"] for t in outcome.summary["triggers"] if t["status"] == "harm"}
    assert {"parse_strict", "cost_ratio"} <= fired
    assert uri not in json.dumps(outcome.summary)


def test_unset_uri_variable_cannot_measure_and_names_the_variable(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALRUN_TEST_PG_MISSING", raising=False)
    plan = write_plan(tmp_path / "p.yaml", _plan({"kind": "litellm", "uri": "env:EVALRUN_TEST_PG_MISSING"}))
    with pytest.raises(CouldNotMeasureError, match="EVALRUN_TEST_PG_MISSING is not set"):
        evaluate(plan, "canary", at=AT)


def test_unreachable_server_cannot_measure_without_printing_the_password(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALRUN_TEST_PG_BAD", "postgresql://watcher:s3cret-pw@127.0.0.1:1/logs")
    plan = write_plan(tmp_path / "p.yaml", _plan({"kind": "litellm", "uri": "env:EVALRUN_TEST_PG_BAD"}))
    with pytest.raises(CouldNotMeasureError) as info:
        evaluate(plan, "canary", at=AT)
    assert "s3cret-pw" not in str(info.value)
