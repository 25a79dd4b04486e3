"""Run the metric queries where the data lives; bring back only sufficient statistics.

The queries are ibis expressions written once: DuckDB (embedded, the default, for files)
and PostgreSQL (LiteLLM's spend logs, queried in place) are tested; any ibis backend
(BigQuery, Snowflake, ClickHouse, Trino, Spark) compiles the same expressions. One query
returns, per cohort × arm × time bucket, the unit count and n / Σx / Σx² of every measure
the stage's triggers read; latency triggers first fetch a 1 %-wide log histogram of the
baseline to set their threshold. Nothing row-level leaves the database except the handful
of sample outputs shown in the report.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.errors import CouldNotMeasureError, UserInputError
from evalrun.watch.data import Sample, StageData, stage_data_from_rows
from evalrun.watch.metrics import METRICS
from evalrun.watch.plan import LABEL_NAMES, Plan
from evalrun.watch.sources import (
    RECORD_READERS,
    _fmt_of,
    map_evalrun,
    map_litellm,
    plan_dir_of,
    read_files,
    records_table,
    resolve_paths,
    resolve_uri,
)
from evalrun.watch.table import by_trace, conform, with_measures
from evalrun.watch.verdict import measure_of

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

HIST_BINS_PER_E = 100
"""Latency histogram resolution: bins of ln(ms) width 1/100 (about 1 %)."""

MAX_SAMPLES = 6
"""Sample outputs fetched for the report's worst cohort."""


@dataclass
class Engine:
    """A connection and the normalised (measure-ready) table of one plan's source."""

    con: BaseBackend
    table: ir.Table
    dialect: str
    has_content: bool

    def close(self) -> None:
        """Disconnect (idempotent)."""
        with contextlib.suppress(Exception):
            self.con.disconnect()


def _content_udfs(con: Any) -> None:
    """Register the Stage-1 refusal and JSON checks as DuckDB functions."""
    from evalrun.checks.json_checks import analyze_json
    from evalrun.checks.refusal import match_refusal_phrase

    raw = con.con
    raw.create_function("evalrun_refused", lambda s: match_refusal_phrase(s) is not None,
                        ["VARCHAR"], "BOOLEAN", null_handling="default")
    raw.create_function("evalrun_json_strict", lambda s: analyze_json(s, None, False).strict,
                        ["VARCHAR"], "BOOLEAN", null_handling="default")


def _apply_content_checks(t: ir.Table, plan: Plan) -> ir.Table:
    import ibis

    checks = plan.source.content_checks
    out = t
    if checks.refusal:
        @ibis.udf.scalar.builtin(name="evalrun_refused")  # type: ignore[untyped-decorator]
        def refused_of(text: str) -> bool:  # type: ignore[empty-body]
            ...

        out = out.mutate(refused=out.refused.coalesce(refused_of(out.output)))
    if checks.parse_json:
        @ibis.udf.scalar.builtin(name="evalrun_json_strict")  # type: ignore[untyped-decorator]
        def parses(text: str) -> bool:  # type: ignore[empty-body]
            ...

        is_json = out.response_format.lower() == "json"
        out = out.mutate(parse_ok=out.parse_ok.coalesce(
            ibis.ifelse(is_json & out.output.notnull(), parses(out.output), ibis.null().cast("boolean"))))
    return out


def open_engine(plan: Plan, plan_path: Path) -> Engine:
    """Connect to the plan's source and build its normalised table (no data is read yet)."""
    import ibis

    source = plan.source
    secrets: list[str] = []
    try:
        if source.uri is not None:
            import psycopg

            uri = resolve_uri(source.uri)
            secrets = _uri_secrets(uri)
            # libpq parses the URI (every form it accepts, unix sockets included).
            con: Any = ibis.postgres.from_connection(psycopg.connect(uri, autocommit=True))
            # LiteLLM stores naive UTC timestamps; read them as UTC whatever the server's
            # default, and never write (watching is read-only by construction).
            con.raw_sql("SET TIME ZONE 'UTC'")
            con.raw_sql("SET default_transaction_read_only = on")
            t = con.table(source.table or "LiteLLM_SpendLogs")
            dialect = "postgres"
        else:
            con = ibis.duckdb.connect()
            con.raw_sql("SET threads TO 2")
            paths = resolve_paths(source, plan_dir_of(plan_path))
            dialect = "duckdb"
            if source.kind in RECORD_READERS:
                rows = RECORD_READERS[source.kind](paths, source)
                t = ibis.memtable(records_table(rows, source))
            else:
                fmts = {_fmt_of(p, source.format) for p in paths}
                if len(fmts) > 1:
                    raise UserInputError(f"source.path mixes formats ({', '.join(sorted(fmts))})",
                                         file=plan_path, field="source.path")
                t = read_files(con, paths, fmts.pop())
    except (UserInputError, CouldNotMeasureError):
        raise
    except Exception as exc:  # any driver error: one line, no traceback, no password
        raise CouldNotMeasureError(f"cannot read the log source: {_scrub(_one_line(exc), secrets)}") from None
    if source.kind == "litellm":
        mapped = map_litellm(t, source)
    elif source.kind == "evalrun":
        mapped = map_evalrun(t, source)
    else:
        mapped = t
    table = conform(mapped, source.cohort_fields)
    checks = source.content_checks
    if dialect == "duckdb" and (checks.refusal or checks.parse_json):
        _content_udfs(con)
        table = _apply_content_checks(table, plan)
    if plan.unit == "trace":
        table = by_trace(table, source.cohort_fields)
    has_content = "output" in t.columns or source.kind in RECORD_READERS or "output" in source.fields
    return Engine(con, with_measures(table), dialect, has_content)


def _uri_secrets(uri: str) -> list[str]:
    """The URI and its password: never to appear in a message."""
    from urllib.parse import unquote, urlsplit

    out = [uri]
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    if password:
        out += [password, unquote(password)]
    return out


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "…") if len(text) > 300 else text or type(exc).__name__


def _arm_expr(t: ir.Table, plan: Plan) -> Any:
    import ibis

    def match(labels: dict[str, str]) -> Any:
        cond = None
        for k in LABEL_NAMES:
            c = t[k] == labels[k]
            cond = c if cond is None else cond & c
        return cond

    return ibis.cases(
        (match(plan.labels.resolved("candidate")), "candidate"),
        (match(plan.labels.resolved("baseline")), "baseline"),
        else_=ibis.null().cast("string"),
    )


def stage_rows(engine: Engine, plan: Plan, stage_name: str, at: datetime) -> ir.Table:
    """The stage's units (arm assigned, cohort rule and time window applied)."""
    from evalrun.watch.cohort import cohort_filter

    stage = plan.stage(stage_name)
    t = engine.table
    # Cheap, selective filters first (time window, cohort), so the scan can prune; the arm
    # is then assigned only to the stage's rows.
    cond = t.ts < at
    if stage.start is not None:
        cond = cond & (t.ts >= stage.start)
    if stage.cohort:
        cond = cond & cohort_filter(stage.cohort, plan.source, t)
    t = t.filter(cond)
    t = t.mutate(arm=_arm_expr(t, plan))
    return t.filter(t.arm.notnull())


def _execute(engine: Engine, expr: Any) -> list[dict[str, Any]]:
    try:
        table = engine.con.to_pyarrow(expr)
    except Exception as exc:  # a failing query (any driver's error type) is "could not measure"
        raise CouldNotMeasureError(f"query failed on {engine.dialect}: {_one_line(exc)}") from None
    return table.to_pylist()  # type: ignore[no-any-return]


def _quantile_from_hist(bins: dict[int, float], q: float) -> float | None:
    total = sum(bins.values())
    if total <= 0:
        return None
    target = q * total
    run = 0.0
    for b in sorted(bins):
        run += bins[b]
        if run >= target:
            return math.exp((b + 1) / HIST_BINS_PER_E)  # the bin's upper edge: never understated
    return math.exp((max(bins) + 1) / HIST_BINS_PER_E)


def measure_stage(engine: Engine, plan: Plan, stage_name: str, at: datetime) -> StageData:
    """Aggregate the stage's window into ``StageData`` (two small queries at most)."""
    import ibis

    rows = stage_rows(engine, plan, stage_name, at)
    triggers = plan.stage_triggers(stage_name)
    queries: list[str] = []
    thresholds: dict[str, float | None] = {}
    quantiles: dict[str, dict[str, float | None]] = {}
    if any(METRICS[t.metric].kind == "quantile" for t in triggers):
        lat = rows.filter(rows.latency_ms.notnull() & (rows.latency_ms > 0))
        hist = lat.group_by(["arm", lat.latency_ms.ln().__mul__(HIST_BINS_PER_E).floor().cast("int64").name("bin")]).aggregate(
            count=lat.count())
        queries.append(str(ibis.to_sql(hist, dialect=engine.dialect)))
        by_arm: dict[str, dict[int, float]] = {"baseline": {}, "candidate": {}}
        for r in _execute(engine, hist):
            by_arm[str(r["arm"])][int(r["bin"])] = float(r["count"])
        for arm, bins in by_arm.items():
            quantiles[arm] = {"p50": _quantile_from_hist(bins, 0.5), "p95": _quantile_from_hist(bins, 0.95)}
        for t in triggers:
            m = METRICS[t.metric]
            if m.kind != "quantile":
                continue
            if t.kind == "absolute":
                thresholds[measure_of(t)] = t.limit
            else:
                qb = _quantile_from_hist(by_arm["baseline"], m.quantile or 0.5)
                thresholds[measure_of(t)] = qb * t.limit if qb is not None else None
    measures = sorted({measure_of(t) for t in triggers})
    f = "float64"
    values: dict[str, Any] = {}
    for m_name in measures:
        if m_name in thresholds:
            thr = thresholds[m_name]
            values[m_name] = ibis.ifelse(
                rows.latency_ms.notnull(),
                ibis.ifelse(rows.latency_ms > (thr if thr is not None else math.inf),
                            ibis.literal(1, type="int8"), ibis.literal(0, type="int8")).cast(f),
                ibis.null().cast(f),
            )
        else:
            values[m_name] = rows[m_name]
    bucket_s = int(plan.bucket.total_seconds())
    epoch = rows.ts.epoch_seconds().cast("float64")
    prepared = rows.mutate(
        bucket=((epoch // bucket_s) * bucket_s).cast("int64"), _epoch=epoch, **{f"_v_{k}": v for k, v in values.items()}
    )
    aggs: dict[str, Any] = {
        "units": prepared.count(),
        "first_ts": prepared._epoch.min(),
        "last_ts": prepared._epoch.max(),
    }
    for m_name in measures:
        v = prepared[f"_v_{m_name}"]
        aggs[f"{m_name}__n"] = v.count()
        aggs[f"{m_name}__s"] = v.sum()
        aggs[f"{m_name}__q"] = (v * v).sum()
    agg = prepared.group_by(["cohort", "arm", "bucket"]).aggregate(**aggs)
    queries.append(str(ibis.to_sql(agg, dialect=engine.dialect)))
    result = _execute(engine, agg)
    data = stage_data_from_rows(result, bucket_s=bucket_s, measures=measures)
    return StageData(
        bucket_s=data.bucket_s, cohorts=data.cohorts, buckets=data.buckets, units=data.units,
        n=data.n, total=data.total, squares=data.squares, first_ts=data.first_ts,
        last_ts=data.last_ts, thresholds=thresholds, quantiles=quantiles, queries=queries,
    )


def fetch_samples(engine: Engine, plan: Plan, stage_name: str, at: datetime, cohort: str) -> list[Sample]:
    """A few candidate outputs of ``cohort``, bad outcomes first (errors, parse misses, refusals)."""
    import ibis

    if not engine.has_content:
        return []
    rows = stage_rows(engine, plan, stage_name, at)
    rows = rows.filter((rows.arm == "candidate") & (rows.cohort == cohort) & rows.output.notnull())
    badness = (
        ibis.ifelse(rows.is_error > 0, 4, 0)
        + ibis.ifelse(rows.parse_ok == 0.0, 2, 0)
        + ibis.ifelse(rows.over_refused == 1.0, 1, 0)
        + ibis.ifelse(rows.task_success == 0.0, 1, 0)
    )
    picked = rows.mutate(_bad=badness).order_by([ibis.desc("_bad"), "ts", "unit_id"]).limit(MAX_SAMPLES)
    out: list[Sample] = []
    for r in _execute(engine, picked.select("unit_id", "ts", "cohort", "output", "error_type", "parse_ok",
                                              "over_refused", "task_success", "_bad")):
        flags = []
        if isinstance(r.get("error_type"), str):
            flags.append(f"error {r['error_type']}")
        if r.get("parse_ok") == 0.0:
            flags.append("parse failed")
        if r.get("over_refused") == 1.0:
            flags.append("refused")
        if r.get("task_success") == 0.0:
            flags.append("task failed")
        ts = r.get("ts")
        out.append(Sample(str(r.get("unit_id")), str(ts)[:19] if ts is not None else "", str(r.get("cohort")),
                          str(r.get("output") or ""), ", ".join(flags) or "no bad outcome recorded"))
    return out
