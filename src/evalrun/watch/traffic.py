"""A realistic synthetic request log with exactly known truths (`evalrun traffic`).

Tenants in two regions plus an internal (staff) tenant, two use cases (chat, and JSON
extraction), a diurnal volume curve, the four version labels, and — for the candidate —
a configurable regression injected into one cohort. The log is in the normalised layout
(``source.kind: evalrun``), with answer text consistent with every outcome flag, so the
Stage-1 content checks recompute the same parse and refusal outcomes. A ``rollout.yaml``
that watches it is written next to it: ``evalrun watch DIR/rollout.yaml --stage canary``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

BASELINE_LABELS = {"model_version": "gpt-4o-mini-2024-07-18", "prompt_version": "shop-v1",
                   "retrieval_version": "faq-3", "policy_version": "policy-v1"}
"""Labels of the baseline traffic."""
CANDIDATE_LABELS = {**BASELINE_LABELS, "prompt_version": "shop-v2"}
"""Labels of the candidate traffic (a prompt change)."""

TENANTS: tuple[tuple[str, str, str, float], ...] = (
    ("staff", "internal", "eu", 0.08),
    ("acme", "standard", "eu", 0.30),
    ("globex", "standard", "us", 0.32),
    ("initech", "premium", "us", 0.18),
    ("umbrella", "premium", "eu", 0.12),
)
"""(tenant, tenant_tier, region, share of volume)."""


@dataclass(frozen=True)
class Rates:
    """Per-unit outcome rates of one arm in one cohort (the generator's ground truth)."""

    error: float = 0.004
    parse_fail: float = 0.01
    task_fail: float = 0.08
    over_refusal: float = 0.01
    tool_fail: float = 0.02
    cost_scale: float = 1.0
    latency_scale: float = 1.0

    def with_changes(self, changes: dict[str, float]) -> Rates:
        """These rates with some replaced."""
        data = {**self.__dict__, **changes}
        return Rates(**data)


@dataclass(frozen=True)
class TrafficSpec:
    """What to generate."""

    requests: int = 40_000
    days: float = 2.0
    end: datetime = field(default_factory=lambda: datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    seed: int = 0
    canary_tenant: str = "staff"
    canary_share: float = 0.5
    """Share of the canary tenant's traffic served by the candidate."""
    candidate_since_hours: float = 24.0
    """The candidate went live this many hours before ``end``."""
    regression: dict[str, float] = field(default_factory=dict)
    """Rates changed for the candidate in ``regression_cohort`` (e.g. {"parse_fail": 0.03})."""
    regression_cohort: str | None = None
    """Cohort (tenant) the regression hits (default: the canary tenant)."""
    content: bool = True
    """Write answer text (needed for samples and content checks; off for huge logs)."""
    baseline: Rates = field(default_factory=Rates)


def _diurnal_times(n: int, start: float, span: float, rng: np.random.Generator) -> np.ndarray:
    """n event times with a day/night volume curve (peak 14:00 UTC, trough 02:00, 4:1)."""
    out = np.empty(0)
    while out.size < n:
        t = start + rng.random(2 * n) * span
        hour = (t % 86400) / 3600
        weight = 0.6 + 0.4 * np.cos(2 * math.pi * (hour - 14) / 24)
        keep = rng.random(t.size) < weight
        out = np.concatenate([out, t[keep]])
    return np.sort(out[:n])


_CHAT_OK = ("Our store opens at 9am and closes at 6pm.", "You can return items within 30 days.",
            "Shipping to the EU takes 3-5 business days.", "That item is in stock in size M.")
_REFUSAL = "I can't help with that."
_JSON_OK = '{"order_id": %d, "items": [{"sku": "A-%d", "qty": %d}]}'
_JSON_BAD = ("Sure! Here is the order:\n```json\n{\"order_id\": %d}\n```", "The order id is %d.")


def _pick(cond: np.ndarray, yes: Any, no: Any) -> np.ndarray:
    """An object array: ``yes`` (scalar or array) where ``cond``, else ``no`` (None allowed)."""
    out = np.empty(cond.shape[0], dtype=object)
    out[:] = no
    out[cond] = yes[cond] if isinstance(yes, np.ndarray) else yes
    return out


def generate(spec: TrafficSpec) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Columns of the log, and the ground truth that produced them."""
    rng = np.random.default_rng(spec.seed)
    n = spec.requests
    end = spec.end.timestamp()
    span = spec.days * 86400
    ts = _diurnal_times(n, end - span, span, rng)
    names = [t[0] for t in TENANTS]
    shares = np.array([t[3] for t in TENANTS])
    tenant_idx = rng.choice(len(TENANTS), size=n, p=shares / shares.sum())
    tenant = np.array(names, dtype=object)[tenant_idx]
    tier = np.array([t[1] for t in TENANTS], dtype=object)[tenant_idx]
    region = np.array([t[2] for t in TENANTS], dtype=object)[tenant_idx]
    extraction = rng.random(n) < 0.4
    since = end - spec.candidate_since_hours * 3600
    is_cand = (tenant == spec.canary_tenant) & (ts >= since) & (rng.random(n) < spec.canary_share)
    reg_cohort = spec.regression_cohort or spec.canary_tenant
    cand_rates = spec.baseline.with_changes(spec.regression)
    hit = is_cand & (tenant == reg_cohort)
    rates = {k: np.where(hit, getattr(cand_rates, k), getattr(spec.baseline, k))
             for k in spec.baseline.__dict__}

    def u() -> np.ndarray:
        return rng.random(n)

    error = u() < rates["error"]
    known_bad = (~extraction) & (u() < 0.01)
    refused = np.where(known_bad, u() < 0.95, u() < rates["over_refusal"]) & ~error
    # A refused extraction is a parse failure too (Stage 1 classes it "refused").
    parse_ok = np.where(extraction & ~error, u() >= rates["parse_fail"], False) & ~refused
    tool_calls = np.where((~extraction) & (u() < 0.25) & ~error, 1, 0)
    tool_errors = np.where(tool_calls > 0, (u() < rates["tool_fail"]).astype(int), 0)
    task_ok = (u() >= rates["task_fail"]) & ~refused & (parse_ok | ~extraction)
    in_tok = np.round(rng.gamma(9.0, 60.0, n))
    out_tok = np.where(error, 0, np.round(rng.gamma(4.0, 30.0, n) * rates["cost_scale"]))
    cost = (in_tok * 0.15 + out_tok * 0.60) / 1e6
    latency = np.round(rng.lognormal(math.log(700), 0.45, n) * rates["latency_scale"] + out_tok * 4, 1)
    arm_labels = {k: np.where(is_cand, CANDIDATE_LABELS[k], BASELINE_LABELS[k]).astype(object)
                  for k in BASELINE_LABELS}
    ids = np.array([f"req-{spec.seed}-{i:08d}" for i in range(n)], dtype=object)
    cols: dict[str, np.ndarray] = {
        "unit_id": ids,
        "trace_id": ids,
        "ts": ts,
        **arm_labels,
        "cohort": tenant,
        "tenant": tenant,
        "tenant_tier": tier,
        "region": region,
        "use_case": _pick(extraction, "extraction", "chat"),
        "response_format": _pick(extraction, "json", None),
        "input_tokens": in_tok,
        "output_tokens": np.where(error, np.nan, out_tok),
        "cost_usd": cost,
        "latency_ms": latency,
        "error_type": _pick(error, "server_error", None),
        "tool_calls": tool_calls,
        "tool_errors": tool_errors,
        "parse_ok": _pick(extraction & ~error, parse_ok, None),
        "refused": _pick(~error, refused, None),
        "should_refuse": known_bad,
        "task_success": _pick(~error, task_ok, None),
    }
    if spec.content:
        out = np.empty(n, dtype=object)
        pick = rng.integers(0, 1_000_000, n)
        for i in range(n):
            if error[i]:
                out[i] = None
            elif refused[i]:
                out[i] = _REFUSAL
            elif extraction[i]:
                out[i] = (_JSON_OK % (pick[i], pick[i] % 97, 1 + pick[i] % 3)) if parse_ok[i] else \
                    _JSON_BAD[pick[i] % 2] % pick[i]
            else:
                out[i] = _CHAT_OK[pick[i] % len(_CHAT_OK)]
        cols["output"] = out
    truth = {
        "baseline": spec.baseline.__dict__,
        "candidate": {"cohort": reg_cohort, **cand_rates.__dict__},
        "candidate_since": datetime.fromtimestamp(since, UTC).isoformat(),
        "candidate_units": int(is_cand.sum()),
        "baseline_units": int((~is_cand).sum()),
        "end": spec.end.isoformat(),
    }
    return cols, truth


def write_log(cols: dict[str, np.ndarray], path: Path, fmt: Literal["jsonl", "parquet"]) -> None:
    """Write the columns as JSONL or Parquet (timestamps as UTC)."""
    import pyarrow as pa

    arrays = {}
    for k, v in cols.items():
        if k == "ts":
            arrays[k] = pa.array((v * 1e6).astype("int64"), type=pa.timestamp("us", tz="UTC"))
        elif k in ("tool_calls", "tool_errors"):
            arrays[k] = pa.array(v.astype("int64"))
        elif k in ("parse_ok", "refused", "should_refuse", "task_success"):
            arrays[k] = pa.array(list(v), type=pa.bool_())
        elif v.dtype == object:
            arrays[k] = pa.array(list(v), type=pa.string())
        else:
            arrays[k] = pa.array(v, type=pa.float64(), from_pandas=True)
    table = pa.table(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, row_group_size=1_000_000)
        return
    with open(path, "w", encoding="utf-8") as fh:
        for row in table.to_pylist():
            row["ts"] = row["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            fh.write(json.dumps(row, sort_keys=True, allow_nan=False,
                                default=lambda x: None) + "\n")


def demo_plan(log_name: str, spec: TrafficSpec) -> dict[str, Any]:
    """A rollout plan watching the generated log (canary, then two wider stages)."""
    return {
        "version": 1,
        "name": "shop assistant: prompt shop-v2",
        "source": {"kind": "evalrun", "path": log_name,
                   "cohort_fields": ["tenant", "tenant_tier", "region", "use_case"]},
        "labels": {"baseline": dict(BASELINE_LABELS), "candidate": {"prompt_version": "shop-v2"}},
        "unit": "request",
        "alpha": 0.05,
        "bucket": "15m",
        "triggers": [
            {"metric": "parse_strict", "kind": "absolute", "min": 0.98},
            # Stage 1's two boundaries: roll back on any evident regression (fail_margin 0),
            # continue once the change is shown within the margin, hold in between.
            {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.02, "fail_margin": 0.0},
            {"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.03},
            {"metric": "tool_valid", "kind": "vs_baseline", "margin": 0.02, "fail_margin": 0.0},
            {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.02, "fail_margin": 0.0},
            {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0, "fail_margin": 0.0},
            {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.10, "severity": "hold"},
            {"metric": "latency_p95_ratio", "kind": "ratio", "max_increase": 0.3, "severity": "hold"},
        ],
        "stages": [
            {"name": "canary", "owner": "dana@shop.example (shop-assistant on-call)",
             "cohort": f"tenant = '{spec.canary_tenant}'", "traffic_share": spec.canary_share,
             "min_samples": 300, "min_duration": "2h", "max_duration": "3d"},
            {"name": "cohort-eu", "owner": "dana@shop.example", "cohort": "region = 'eu'",
             "traffic_share": 0.1, "min_samples": 3000, "min_duration": "24h", "max_duration": "5d"},
            {"name": "wider", "owner": "lee@shop.example", "cohort": "tenant_tier <> 'internal'",
             "traffic_share": 0.25, "min_samples": 20000, "min_duration": "48h", "max_duration": "7d"},
        ],
    }


def write_demo(out_dir: Path, spec: TrafficSpec, fmt: Literal["jsonl", "parquet"] = "jsonl") -> dict[str, Path]:
    """Write ``traffic.<fmt>``, ``rollout.yaml`` and ``truth.json`` into ``out_dir``."""
    import yaml

    cols, truth = generate(spec)
    log = out_dir / f"traffic.{fmt}"
    write_log(cols, log, fmt)
    plan = out_dir / "rollout.yaml"
    plan.write_text(yaml.safe_dump(demo_plan(log.name, spec), sort_keys=False), encoding="utf-8")
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"log": log, "plan": plan, "truth": truth_path}
