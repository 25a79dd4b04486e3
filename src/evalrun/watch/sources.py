"""Log sources mapped onto the normalised table (see ``evalrun.watch.table``).

* ``evalrun`` — JSONL / Parquet / CSV already in the normalised layout (what
  ``evalrun traffic`` writes); read by DuckDB in place.
* ``litellm`` — the LiteLLM proxy's ``LiteLLM_SpendLogs``: in PostgreSQL (queried where it
  lives, through ibis) or an export file (DuckDB). Labels come from ``metadata`` keys or
  ``request_tags`` entries ``key:value``.
* ``otel`` — OpenTelemetry GenAI spans, OTLP JSON export (one document, or one per line).
  Inference spans are units; ``execute_tool`` child spans give tool calls and errors;
  labels come from span (then resource) attributes.
* ``langfuse`` — a Langfuse export (JSON, JSONL or CSV of observations): GENERATION
  observations are units, TOOL observations of the same trace give tool outcomes.

``source.fields`` overrides any default mapping: for table sources a column, a JSON path
``metadata.key`` or ``tag:key``; for OTel an attribute key; for Langfuse a dotted path in
the exported record.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.errors import CouldNotMeasureError, UserInputError
from evalrun.watch.plan import LABEL_NAMES, Plan, Source
from evalrun.watch.table import COLUMNS

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

OUTCOME_FIELDS: tuple[str, ...] = ("parse_ok", "schema_ok", "refused", "should_refuse", "task_success")
"""Boolean outcomes every source may carry in its metadata / attributes under these names."""

MAX_OUTPUT_CHARS = 20_000
"""Content kept per unit (samples and content checks need no more)."""


def resolve_paths(source: Source, plan_dir: Path) -> list[str]:
    """The source's files (globs expanded, relative to the plan), sorted; error when none."""
    out: list[str] = []
    for raw in source.paths:
        p = raw if os.path.isabs(raw) else str(plan_dir / raw)
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else ([p] if os.path.exists(p) else [])
        if not matches:
            raise CouldNotMeasureError(f"source.path: no log file matches {raw!r}")
        out += matches
    return out


def _fmt_of(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lower = path.lower()
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".jsonl", "jsonl"),
                     (".ndjson", "jsonl"), (".json", "json")):
        if lower.endswith(ext):
            return fmt
    raise UserInputError(f"cannot tell the format of {path!r}; set source.format", field="source.format")


def resolve_uri(uri: str) -> str:
    """``env:VAR`` → the variable's value (never printed); anything else as is."""
    if uri.startswith("env:"):
        name = uri[4:]
        value = os.environ.get(name)
        if not value:
            raise CouldNotMeasureError(f"source.uri: environment variable {name} is not set")
        return value
    return uri


# ------------------------------------------------------------------ table sources


def read_files(con: BaseBackend, paths: list[str], fmt: str) -> ir.Table:
    """Read files of one format into a DuckDB-backed ibis table."""
    if fmt == "parquet":
        return con.read_parquet(paths)
    if fmt == "csv":
        return con.read_csv(paths)
    return con.read_json(paths, format="newline_delimited" if fmt == "jsonl" else "auto")


def _json_text(x: Any) -> Any:
    """A JSON value as text: strings unquoted, numbers/booleans as written, JSON null as NULL.

    Not ibis's ``.str``: on PostgreSQL 15 it compiles to ``->> VARIADIC ARRAY[]`` which the
    server rejects; a cast to text and unquoting works on every backend.
    """
    import ibis

    txt = x.cast("string")
    unquoted = ibis.ifelse(txt.startswith('"') & txt.endswith('"') & (txt.length() >= 2),
                           txt.substr(1, txt.length() - 2), txt)
    return unquoted.nullif("null")


def field_expr(t: ir.Table, spec: str) -> Any:
    """An ibis string expression for a field spec: ``col``, ``col.key.sub`` or ``tag:key``."""
    import ibis

    if spec.startswith("tag:"):
        key = spec[4:]
        if "request_tags" not in t.columns:
            return ibis.null().cast("string")
        pattern = '"' + _re_escape(key) + ':([^"]*)"'
        found = t.request_tags.cast("string").re_extract(pattern, 1)
        return found.nullif("")
    head, _, rest = spec.partition(".")
    if head not in t.columns:
        return ibis.null().cast("string")
    if not rest:
        return t[head].cast("string") if not str(t[head].type()).startswith("timestamp") else t[head]
    x = t[head].cast("json")
    for part in rest.split("."):
        x = x[part]
    return _json_text(x)


def _re_escape(text: str) -> str:
    import re

    return re.escape(text)


def _first(t: ir.Table, specs: list[str]) -> Any:
    exprs = [field_expr(t, s) for s in specs]
    out = exprs[0]
    for e in exprs[1:]:
        out = out.coalesce(e)
    return out


def _as_bool(x: Any) -> Any:
    import ibis

    low = x.cast("string").lower()
    return ibis.cases(
        (low.isin(["true", "1", "yes", "pass", "t"]), True),
        (low.isin(["false", "0", "no", "fail", "f"]), False),
        else_=ibis.null().cast("boolean"),
    )


def map_litellm(t: ir.Table, source: Source) -> ir.Table:
    """LiteLLM_SpendLogs (database table or export) → normalised columns."""
    import ibis

    user = source.fields

    def pick(name: str, defaults: list[str]) -> Any:
        return field_expr(t, user[name]) if name in user else _first(t, defaults)

    cols: dict[str, Any] = {
        "unit_id": pick("unit_id", ["request_id"]),
        "trace_id": pick("trace_id", ["metadata.trace_id", "request_id"]),
        "session_id": pick("session_id", ["session_id", "metadata.session_id"]),
        "cohort": pick("cohort", ["metadata.cohort", "tag:cohort", "end_user"]),
        "response_format": pick("response_format", ["metadata.response_format"]),
        "output": pick("output", ["response", "messages"]) if "output" in user else ibis.null().cast("string"),
    }
    for label in LABEL_NAMES:
        fallback = ["model"] if label == "model_version" else []
        cols[label] = pick(label, [f"metadata.{label}", f"tag:{label}", *fallback])
    ts_col = user.get("ts", "startTime")
    cols["ts"] = t[ts_col].cast("timestamp('UTC')") if ts_col in t.columns else ibis.null().cast("timestamp('UTC')")
    for name, col in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"),
                      ("cost_usd", "spend")):
        spec = user.get(name, col)
        cols[name] = field_expr(t, spec).cast("float64")
    if "latency_ms" in user:
        cols["latency_ms"] = field_expr(t, user["latency_ms"]).cast("float64")
    elif "request_duration_ms" in t.columns:
        cols["latency_ms"] = t.request_duration_ms.cast("float64")
    elif "endTime" in t.columns and "startTime" in t.columns:
        end = t["endTime"].cast("timestamp('UTC')").epoch_seconds()
        start = t["startTime"].cast("timestamp('UTC')").epoch_seconds()
        cols["latency_ms"] = ((end - start) * 1000).cast("float64")
    status = field_expr(t, user.get("error_type", "status"))
    cols["error_type"] = ibis.ifelse(status.isnull() | (status.lower() == "success"),
                                     ibis.null().cast("string"), status)
    tool = field_expr(t, user.get("tool_calls", "mcp_namespaced_tool_name"))
    cols["tool_calls"] = ibis.ifelse(tool.notnull(), 1, 0).cast("int64")
    cols["tool_errors"] = ibis.ifelse(tool.notnull() & cols["error_type"].notnull(), 1, 0).cast("int64")
    for name in OUTCOME_FIELDS:
        cols[name] = _as_bool(pick(name, [f"metadata.{name}"]))
    for name in source.cohort_fields:
        cols[name] = pick(name, [f"metadata.{name}", f"tag:{name}"])
    return t.select(**cols)


def map_evalrun(t: ir.Table, source: Source) -> ir.Table:
    """Files in the normalised layout; ``fields`` may rename or extract columns."""
    if not source.fields:
        return t
    extra = {}
    for name, spec in source.fields.items():
        expr = field_expr(t, spec)
        dtype = COLUMNS.get(name, "string")
        extra[name] = _as_bool(expr) if dtype == "boolean" else expr.cast(dtype)
    return t.mutate(**extra)


# ------------------------------------------------------------------ record sources


def _iter_json_records(path: str, fmt: str) -> Iterator[Any]:
    with open(path, encoding="utf-8") as fh:
        if fmt == "jsonl":
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserInputError(f"line {lineno}: not JSON ({exc.msg})", file=path) from None
        elif fmt == "csv":
            yield from csv.DictReader(fh)
        else:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise UserInputError(f"not JSON ({exc.msg} at line {exc.lineno})", file=path) from None
            if isinstance(data, list):
                yield from data
            else:
                yield data


def _otel_value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_otel_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(items: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _otel_value(a.get("value") or {}) for a in items or [] if "key" in a}


def _text_of_messages(value: Any) -> str | None:
    """The text of an OTel ``gen_ai.output.messages`` value (JSON string or list)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return str(value)
    parts: list[str] = []
    for msg in value if isinstance(value, list) else [value]:
        if isinstance(msg, dict):
            for part in msg.get("parts") or []:
                if isinstance(part, dict) and part.get("type") == "text":
                    parts.append(str(part.get("content", "")))
            if isinstance(msg.get("content"), str):
                parts.append(msg["content"])
    return "\n".join(parts) if parts else None


INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
"""``gen_ai.operation.name`` values whose spans are units."""


def otel_rows(paths: list[str], source: Source) -> list[dict[str, Any]]:
    """Flatten OTLP JSON exports into normalised rows (inference spans → units)."""
    spans: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for path in paths:
        fmt = "jsonl" if _fmt_of(path, source.format) == "jsonl" else "json"
        for doc in _iter_json_records(path, fmt):
            for rs in (doc or {}).get("resourceSpans", []) or []:
                res = _attrs((rs.get("resource") or {}).get("attributes"))
                for ss in rs.get("scopeSpans", []) or []:
                    for span in ss.get("spans", []) or []:
                        spans.append((span, _attrs(span.get("attributes")), res))
    tools: dict[str, list[bool]] = {}
    for span, attrs, _ in spans:
        if attrs.get("gen_ai.operation.name") == "execute_tool":
            failed = attrs.get("error.type") is not None or (span.get("status") or {}).get("code") in (2, "STATUS_CODE_ERROR")
            for key in (span.get("parentSpanId"), span.get("traceId")):
                if key:
                    tools.setdefault(str(key), []).append(bool(failed))
    user = source.fields
    rows: list[dict[str, Any]] = []
    for span, attrs, res in spans:
        if attrs.get("gen_ai.operation.name") not in INFERENCE_OPERATIONS:
            continue

        def get(name: str, defaults: list[str], _a: dict[str, Any] = attrs, _r: dict[str, Any] = res) -> Any:
            for key in [user[name]] if name in user else defaults:
                if key in _a and _a[key] is not None:
                    return _a[key]
                if key in _r and _r[key] is not None:
                    return _r[key]
            return None

        start = int(span.get("startTimeUnixNano") or 0)
        end = int(span.get("endTimeUnixNano") or start)
        status = span.get("status") or {}
        err = get("error_type", ["error.type"])
        if err is None and status.get("code") in (2, "STATUS_CODE_ERROR"):
            err = status.get("message") or "error"
        span_tools = tools.get(str(span.get("spanId")), [])
        row: dict[str, Any] = {
            "unit_id": str(span.get("spanId") or ""),
            "trace_id": str(span.get("traceId") or ""),
            "ts": datetime.fromtimestamp(start / 1e9, UTC),
            "session_id": _s(get("session_id", ["gen_ai.conversation.id", "session.id"])),
            "cohort": _s(get("cohort", ["cohort", "app.cohort"])),
            "response_format": _s(get("response_format", ["response_format", "gen_ai.output.type"])),
            "input_tokens": _f(get("input_tokens", ["gen_ai.usage.input_tokens"])),
            "output_tokens": _f(get("output_tokens", ["gen_ai.usage.output_tokens"])),
            "cost_usd": _f(get("cost_usd", ["cost_usd", "gen_ai.usage.cost"])),
            "latency_ms": (end - start) / 1e6,
            "error_type": _s(err),
            "tool_calls": len(span_tools),
            "tool_errors": sum(span_tools),
            "output": _clip(_text_of_messages(get("output", ["gen_ai.output.messages", "gen_ai.completion"]))),
        }
        for label in LABEL_NAMES:
            extra = ["gen_ai.response.model", "gen_ai.request.model"] if label == "model_version" else []
            row[label] = _s(get(label, [label, f"app.{label}", *extra]))
        for name in OUTCOME_FIELDS:
            row[name] = _b(get(name, [name, f"app.{name}"]))
        for name in source.cohort_fields:
            row[name] = _s(get(name, [name, f"app.{name}"]))
        rows.append(row)
    return rows


def _path(record: Any, dotted: str) -> Any:
    cur = record
    for part in dotted.split("."):
        if isinstance(cur, str) and cur[:1] in "{[":
            try:
                cur = json.loads(cur)
            except json.JSONDecodeError:
                return None
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _ts(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value) / (1000 if value > 1e11 else 1), UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def langfuse_rows(paths: list[str], source: Source) -> list[dict[str, Any]]:
    """Flatten a Langfuse observations export (GENERATION rows → units)."""
    records: list[Any] = []
    for path in paths:
        records += list(_iter_json_records(path, _fmt_of(path, source.format)))
    tools: dict[str, list[bool]] = {}
    for r in records:
        if str(_path(r, "type") or "").upper() == "TOOL":
            key = str(_path(r, "traceId") or "")
            tools.setdefault(key, []).append(str(_path(r, "level") or "").upper() == "ERROR")
    user = source.fields
    rows: list[dict[str, Any]] = []
    for r in records:
        if str(_path(r, "type") or "GENERATION").upper() != "GENERATION":
            continue

        def get(name: str, defaults: list[str], _r: Any = r) -> Any:
            for spec in [user[name]] if name in user else defaults:
                v = _path(_r, spec)
                if v not in (None, ""):
                    return v
            return None

        start, end = _ts(get("ts", ["startTime", "start_time"])), _ts(_path(r, "endTime"))
        latency = _f(get("latency_ms", []))
        if latency is None and start and end:
            latency = (end - start).total_seconds() * 1000
        if latency is None and _f(_path(r, "latency")) is not None:
            latency = float(_path(r, "latency")) * 1000
        err = get("error_type", [])
        if err is None and str(_path(r, "level") or "").upper() == "ERROR":
            err = _path(r, "statusMessage") or "error"
        trace = str(_path(r, "traceId") or "")
        out = get("output", ["output"])
        row: dict[str, Any] = {
            "unit_id": str(_path(r, "id") or ""),
            "trace_id": trace or None,
            "ts": start,
            "session_id": _s(get("session_id", ["sessionId", "trace.sessionId"])),
            "cohort": _s(get("cohort", ["metadata.cohort", "trace.metadata.cohort"])),
            "response_format": _s(get("response_format", ["metadata.response_format"])),
            "input_tokens": _f(get("input_tokens", ["usageDetails.input", "usage.input", "promptTokens"])),
            "output_tokens": _f(get("output_tokens", ["usageDetails.output", "usage.output", "completionTokens"])),
            "cost_usd": _f(get("cost_usd", ["costDetails.total", "calculatedTotalCost", "totalCost"])),
            "latency_ms": latency,
            "error_type": _s(err),
            "tool_calls": len(tools.get(trace, [])),
            "tool_errors": sum(tools.get(trace, [])),
            "output": _clip(_content(out)),
        }
        for label in LABEL_NAMES:
            extra = {"model_version": ["model"], "prompt_version": ["promptVersion"]}.get(label, [])
            row[label] = _s(get(label, [f"metadata.{label}", f"trace.metadata.{label}", *extra]))
        for name in OUTCOME_FIELDS:
            row[name] = _b(get(name, [f"metadata.{name}"]))
        for name in source.cohort_fields:
            row[name] = _s(get(name, [f"metadata.{name}", f"trace.metadata.{name}"]))
        rows.append(row)
    return rows


def _content(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        for key in ("content", "text", "output"):
            if isinstance(value.get(key), str):
                return str(value[key])
        return json.dumps(value, sort_keys=True)
    return str(value)


def _s(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _f(v: Any) -> float | None:
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _b(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if v is None:
        return None
    low = str(v).strip().lower()
    if low in ("true", "1", "yes", "pass", "t"):
        return True
    if low in ("false", "0", "no", "fail", "f"):
        return False
    return None


def _clip(text: str | None) -> str | None:
    return text[:MAX_OUTPUT_CHARS] if text is not None else None


RECORD_READERS: dict[str, Callable[[list[str], Source], list[dict[str, Any]]]] = {
    "otel": otel_rows,
    "langfuse": langfuse_rows,
}
"""Sources flattened in Python (nested exports), by kind."""


def records_table(rows: list[dict[str, Any]], source: Source) -> Any:
    """Normalised rows → a pyarrow table with every normalised column."""
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp('UTC')": pa.timestamp("us", tz="UTC"),
             "float64": pa.float64(), "int64": pa.int64(), "boolean": pa.bool_()}
    names = [*COLUMNS, *source.cohort_fields]
    schema = pa.schema([(n, types[COLUMNS.get(n, "string")]) for n in names])
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=schema)


def plan_dir_of(plan_path: Path) -> Path:
    """Paths in a plan are relative to the plan file's folder."""
    return plan_path.resolve().parent


def describe_source(plan: Plan) -> str:
    """One line naming the source without secrets (a URI is never shown)."""
    s = plan.source
    where = f"table {s.table or 'LiteLLM_SpendLogs'} in PostgreSQL" if s.uri else ", ".join(s.paths)
    return f"{s.kind}: {where}"
