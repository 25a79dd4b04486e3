"""Helpers for the `evalrun watch` tests: generated logs, plans, LiteLLM spend-log rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from evalrun.watch.traffic import BASELINE_LABELS, TrafficSpec, generate, write_log

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
AT = END + timedelta(seconds=1)


def write_plan(path: Path, plan: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return path


def base_plan(log: str, **overrides: Any) -> dict[str, Any]:
    """A plan over a generated log: canary on tenant staff at a 50 % split."""
    plan: dict[str, Any] = {
        "source": {"kind": "evalrun", "path": log, "cohort_fields": ["tenant", "tenant_tier", "region", "use_case"]},
        "labels": {"baseline": dict(BASELINE_LABELS), "candidate": {"prompt_version": "shop-v2"}},
        "alpha": 0.05,
        "bucket": "15m",
        "triggers": [
            {"metric": "parse_strict", "kind": "absolute", "min": 0.95},
            {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.03},
            {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1},
        ],
        "stages": [{"name": "canary", "owner": "dana", "cohort": "tenant = 'staff'",
                    "traffic_share": 0.5, "min_samples": 300, "min_duration": "2h"}],
    }
    plan.update(overrides)
    return plan


def make_log(directory: Path, *, fmt: str = "jsonl", **spec: Any) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Generate a log; return its path, its columns and the generator's truth."""
    s = TrafficSpec(end=END, **spec)
    cols, truth = generate(s)
    path = directory / f"traffic.{fmt}"
    write_log(cols, path, fmt)  # type: ignore[arg-type]
    return path, cols, truth


def spend_log_rows(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """The generated log as LiteLLM_SpendLogs rows (labels in metadata and request_tags)."""
    rows = []
    n = len(cols["unit_id"])
    for i in range(n):
        start = datetime.fromtimestamp(float(cols["ts"][i]), UTC).replace(tzinfo=None)
        start = start.replace(microsecond=(start.microsecond // 1000) * 1000)
        latency = float(cols["latency_ms"][i])
        end = start + timedelta(milliseconds=round(latency))
        meta = {
            "prompt_version": cols["prompt_version"][i],
            "retrieval_version": cols["retrieval_version"][i],
            "cohort": cols["cohort"][i],
            "tenant_tier": cols["tenant_tier"][i],
            "response_format": cols["response_format"][i],
            "parse_ok": _py(cols["parse_ok"][i]),
            "refused": _py(cols["refused"][i]),
            "should_refuse": _py(cols["should_refuse"][i]),
            "task_success": _py(cols["task_success"][i]),
        }
        out_tok = cols["output_tokens"][i]
        rows.append({
            "request_id": cols["unit_id"][i],
            "call_type": "acompletion",
            "spend": float(cols["cost_usd"][i]),
            "prompt_tokens": int(cols["input_tokens"][i]),
            "completion_tokens": 0 if out_tok != out_tok else int(out_tok),
            "startTime": start,
            "endTime": end,
            "model": cols["model_version"][i],
            "model_group": "shop",
            "metadata": json.dumps({k: v for k, v in meta.items() if v is not None}),
            "request_tags": json.dumps([f"policy_version:{cols['policy_version'][i]}", f"tenant:{cols['tenant'][i]}"]),
            "end_user": cols["tenant"][i],
            "status": "failure" if cols["error_type"][i] else "success",
            "session_id": None,
            "mcp_namespaced_tool_name": "shop/lookup" if int(cols["tool_calls"][i]) else None,
        })
    return rows


def _py(v: Any) -> Any:
    if v is None:
        return None
    return bool(v)


SPEND_LOGS_DDL = """
CREATE TABLE "LiteLLM_SpendLogs" (
    request_id TEXT PRIMARY KEY,
    call_type TEXT NOT NULL,
    api_key TEXT NOT NULL DEFAULT '',
    spend DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    "startTime" TIMESTAMP(3) NOT NULL,
    "endTime" TIMESTAMP(3) NOT NULL,
    "completionStartTime" TIMESTAMP(3),
    model TEXT NOT NULL DEFAULT '',
    model_id TEXT DEFAULT '',
    model_group TEXT DEFAULT '',
    custom_llm_provider TEXT DEFAULT '',
    api_base TEXT DEFAULT '',
    "user" TEXT DEFAULT '',
    metadata JSONB DEFAULT '{}',
    cache_hit TEXT DEFAULT '',
    cache_key TEXT DEFAULT '',
    request_tags JSONB DEFAULT '[]',
    team_id TEXT,
    end_user TEXT,
    requester_ip_address TEXT,
    messages JSONB DEFAULT '{}',
    response JSONB DEFAULT '{}',
    session_id TEXT,
    status TEXT,
    mcp_namespaced_tool_name TEXT,
    proxy_server_request JSONB DEFAULT '{}'
)
"""
"""LiteLLM's spend-log table (columns as in its Prisma schema)."""
