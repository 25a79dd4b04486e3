"""summary.json as types: ``Summary`` and its parts, versioned by ``format_version``.

The summary is built as plain data by ``analysis.compare`` / ``analysis.gate`` and validated
into these models once (``Summary.of``); reporters read the models, and the file is
``Summary.to_json()`` — the very dict it was built from, keys present exactly as computed
(``exclude_unset``), so the JSON is unchanged. ``SUMMARY_SCHEMA`` (shipped with the
package as ``evalrun/schemas/summary.schema.json``) is this module's JSON Schema; a test
keeps the file in step and validates real outputs against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SUMMARY_FORMAT_VERSION",
    "SUMMARY_SCHEMA_FILE",
    "Familywise",
    "MeanMetric",
    "MetricResult",
    "QuantileMetric",
    "RateMetric",
    "RatioMetric",
    "RuleResult",
    "Summary",
    "Verdict",
    "as_summary",
    "summary_schema",
]

SUMMARY_FORMAT_VERSION = 2
"""summary.json's shape (2: family-wise FAIL tests, ratio-of-means costs, per-call latency
quantiles, rule p-values, power numbers and warnings). Independent of the run folder's
journal format (``store.FORMAT_VERSION``)."""

SUMMARY_SCHEMA_FILE = "schemas/summary.schema.json"
"""The JSON Schema of summary.json, inside the ``evalrun`` package."""

Number = int | float
Interval = list[Number | None]
Side = Literal["baseline", "candidate"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateSide(_Model):
    """One side's rate: value, interval, cases, calls and the design-effect sample size."""

    value: Number | None = None
    n: int = 0
    calls: int = 0
    n_eff: Number | None = None
    successes: Number | None = None
    ci: Interval | None = None


class Moments(_Model):
    """Σd and Σd² of the per-case differences (power extrapolation)."""

    n: int
    sum_d: Number | None = None
    sum_d2: Number | None = None


class Table(_Model):
    """The paired 2×2 table (one sample per case)."""

    n11: int
    n10: int
    n01: int
    n00: int


class _MetricBase(_Model):
    metric: str
    """Catalogue name (``evalrun.catalogue``)."""
    label: str
    higher_is_better: bool


class RateMetric(_MetricBase):
    """A rate on each side and the paired difference (candidate − baseline)."""

    type: Literal["rate"]
    baseline: RateSide
    candidate: RateSide
    paired_n: int
    delta: Number | None = None
    delta_ci: Interval | None = None
    centre: Number | None = None
    se: Number | None = None
    p_value: Number | None = None
    q_value: Number | None = None
    """Benjamini–Hochberg q-value (exploratory slices only)."""
    table: Table | None = None
    mde: Number | None = None
    moments: Moments | None = None
    regressed_cases: int = 0
    regressed_case_ids: list[str] | None = None
    method: str | None = None


class MeanSide(_Model):
    """One side's mean per call and total."""

    mean: Number | None = None
    total: Number | None = None
    n: int = 0


class RatioMetric(_MetricBase):
    """Mean per call on each side and the ratio of means (candidate / baseline)."""

    type: Literal["ratio"]
    baseline: MeanSide
    candidate: MeanSide
    ratio: Number | None = None
    ratio_ci: Interval | None = None
    centre: Number | None = None
    se: Number | None = None
    df: int | None = None
    scale: Literal["log"] = "log"
    paired_n: int = 0
    excluded: int = 0
    method: str | None = None
    mde: Number | None = None
    cost_status: dict[Side, list[str]] | None = None
    note: str | None = None


class QuantileSide(_Model):
    """One side's per-call quantile with its order-statistic interval."""

    value: Number | None = None
    ci: Interval | None = None
    n: int = 0
    enough: bool = False


class QuantileMetric(_MetricBase):
    """Per-call quantiles on each side, their ratio and difference (bootstrap over cases)."""

    type: Literal["quantile"]
    baseline: QuantileSide
    candidate: QuantileSide
    cached_calls: dict[Side, int]
    ratio: Number | None = None
    ratio_ci: Interval | None = None
    centre: Number | None = None
    se: Number | None = None
    scale: Literal["log"] = "log"
    delta_s: Number | None = None
    delta_ci: Interval | None = None
    paired_n: int = 0
    n_cases: int = 0
    method: str | None = None
    mde: Number | None = None


class MeanValue(_Model):
    """One side's mean."""

    value: Number | None = None
    n: int = 0


class MeanMetric(_MetricBase):
    """A mean on each side, shown but not gated."""

    type: Literal["mean"]
    baseline: MeanValue
    candidate: MeanValue


MetricResult = Annotated[RateMetric | RatioMetric | QuantileMetric | MeanMetric, Field(discriminator="type")]
"""One metric of one slice (``type`` says which)."""


class RuleResult(_Model):
    """One gate rule in one scope (see ``evalrun.analysis.gate.RuleResult``)."""

    rule: str
    scope: str
    trigger: str
    metric: str
    status: Literal["pass", "fail", "inconclusive", "not_applicable"]
    reason: str
    observed: Number | None = None
    ci: Interval | None = None
    margin: Number | None = None
    fail_margin: Number | None = None
    floor: Number | None = None
    ceiling: Number | None = None
    candidate_value: Number | None = None
    p_value: Number | None = None
    p_bound: Number | None = None
    p_adjusted: Number | None = None
    mde: Number | None = None
    cases_needed: int | None = None
    cases_needed_for: str | None = None
    cases_to_pass: int | None = None
    paired_n: int = 0
    warnings: list[str] = []


class Familywise(_Model):
    """How the verdict's FAIL tests were corrected together (Holm)."""

    method: str
    alpha: Number
    hypotheses: int
    first_step_level: Number


class Verdict(_Model):
    """The gate's answer, its reasons and every rule."""

    status: Literal["PASS", "FAIL", "INCONCLUSIVE", "COULD_NOT_MEASURE"]
    exit_code: int
    reasons: list[str]
    warnings: list[str] = []
    on_inconclusive: str = "fail"
    familywise: Familywise | dict[str, Any] = {}
    rules: list[RuleResult] = []


class RunInfo(_Model):
    """What was compared, how sure to be, and the seed."""

    fingerprint: str
    suite: str
    suite_file: str
    n_cases: int
    samples: int
    aa_mode: bool
    alpha: Number
    confidence: Number
    seed: int
    subset: str | None = None
    """How the cases were chosen when the run is not the whole suite (a subset's verdict
    is not the suite's); None for a whole-suite run."""
    n_suite_cases: int | None = None
    """Cases in the whole suite, when ``subset`` is set."""


class VariantInfo(_Model):
    """One side's name, model, config file and version labels."""

    name: str
    model: str
    config_file: str
    labels: dict[str, str]


class CallCounts(_Model):
    """Calls, errors by kind, retries and cache hits of one side."""

    total: int
    ok: int
    errors: int
    errors_by_kind: dict[str, int]
    content_policy: int
    retried: int
    attempts: int
    cached: int
    tokens_estimated: int
    responses_truncated: int


class Flip(_Model):
    """A case whose pass share changed between the sides."""

    case_id: str
    kind: str
    cohort: str
    baseline: Number
    candidate: Number


class Flips(_Model):
    """Regressions (passed → fails) first, then improvements."""

    regressions: list[Flip]
    improvements: list[Flip]


class FlakyCase(_Model):
    """A case whose K samples disagree on one side."""

    case_id: str
    side: Side
    passes: int
    samples: int
    pass_at_k: bool
    pass_hat_k: bool


class Consistency(_Model):
    """pass@k and pass^k rates of one side."""

    pass_at_k: Number | None = None
    pass_hat_k: Number | None = None
    n: int = 0


class Slice(_Model):
    """Every metric for one kind or cohort."""

    n_cases: int
    critical: bool
    metrics: list[MetricResult]


class LabelFinding(_Model):
    """What one version label stands for, on both sides (``project.fingerprint``)."""

    label: str
    status: str
    baseline_label: str
    candidate_label: str
    baseline_fingerprint: str
    candidate_fingerprint: str
    changed_fields: list[str]
    diff: str


class Summary(_Model):
    """summary.json."""

    format_version: int
    evalrun_version: str
    created: str
    verdict: Verdict
    run: RunInfo
    variants: dict[Side, VariantInfo]
    labels: dict[Side, dict[str, str]]
    label_changes: dict[str, list[str]]
    label_audit: list[LabelFinding]
    calls: dict[Side, CallCounts]
    metrics: list[MetricResult]
    slices: dict[Literal["kind", "cohort"], dict[str, Slice]]
    flips: Flips
    flaky: list[FlakyCase]
    consistency: dict[Side, Consistency]
    latency_measurement: dict[str, Any]
    """How latency was measured and the client's own overhead (``analysis.measurement``)."""
    sequential: dict[str, Any] | None = None
    """``compare --sequential``'s block (cases and calls made, each rule's sequence)."""

    @classmethod
    def of(cls, data: dict[str, Any]) -> Summary:
        """The typed summary of ``data`` (summary.json's content); ``ValidationError`` on drift."""
        return cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        """summary.json's content: exactly the keys it was built with."""
        return self.model_dump(mode="json", exclude_unset=True)

    def metric(self, name: str) -> RateMetric | RatioMetric | QuantileMetric | MeanMetric | None:
        """The overall metric called ``name``."""
        return next((m for m in self.metrics if m.metric == name), None)


def as_summary(summary: Summary | Mapping[str, Any]) -> Summary:
    """``summary`` typed (a reporter given summary.json's content as a dict validates it once)."""
    return summary if isinstance(summary, Summary) else Summary.of(dict(summary))


def summary_schema() -> dict[str, Any]:
    """The JSON Schema of summary.json (generated from ``Summary``)."""
    schema = Summary.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://evalrun.invalid/schemas/summary.schema.json"
    return schema


def shipped_schema_text() -> str:
    """The schema file shipped in the package."""
    return resources.files("evalrun").joinpath(SUMMARY_SCHEMA_FILE).read_text(encoding="utf-8")
