"""The rollout plan (``rollout.yaml``): labels, log source, stages and rollback triggers.

Validated completely before any query runs; every problem is one line naming the file
and the field (exit 2). See the README's "Live rollout (Stages 2–4)" section for the
format, and ``evalrun plan RUN_DIR`` for a plan written from a Stage-1 run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from evalrun.errors import UserInputError
from evalrun.project.config import VERSION_LABELS
from evalrun.project.validation import first_error
from evalrun.project.yamlio import load_yaml
from evalrun.watch.metrics import METRIC_NAMES, METRICS

LABEL_NAMES: tuple[str, ...] = VERSION_LABELS
"""The four version labels that segment traffic into arms."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"3d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 15m, 2h or 3d")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("a duration must be a non-negative number of seconds")
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    raise ValueError("expected a duration like 15m, 2h or 3d")


def format_duration(td: timedelta) -> str:
    """The shortest exact spelling of ``td`` in the plan's duration syntax."""
    s = td.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if s and s % _UNIT_SECONDS[unit] == 0:
            return f"{int(s // _UNIT_SECONDS[unit])}{unit}"
    return f"{s:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """A rollback trigger: a metric, a comparison, and what crossing it means.

    * ``absolute``: the candidate's own value against a limit (``max`` or ``min``), e.g.
      parse failures above 2 % is ``{metric: parse_strict, kind: absolute, min: 0.98}``;
      for latency quantiles ``max`` is in milliseconds.
    * ``vs_baseline``: the difference candidate − baseline beyond ``margin`` in the
      harmful ``direction`` (rates in fractions: 0.01 is one point).
    * ``ratio``: candidate / baseline above ``1 + max_increase`` (or below
      ``1 - max_decrease``). For rates this compares the rate of the *bad* event (errors,
      parse failures …) with a count-based test suited to rare events.

    Comparative triggers carry Stage 1's two boundaries. ``margin`` / ``max_increase`` /
    ``max_decrease`` is the PASS margin: the trigger is *safe* once its sequence shows the
    change within it. ``fail_margin`` is the FAIL boundary, in the same units as the
    margin (rate points for vs_baseline, a fraction of the baseline for ratio): the
    trigger is in *harm* once its sequence shows the change beyond it (0: any evident
    harmful change). In between it is inconclusive (the stage holds). Without
    ``fail_margin`` one boundary does both jobs, as in plans written before it existed.
    When the sequence is both beyond ``fail_margin`` and within the margin (an evident but
    small regression), harm wins, as FAIL wins in Stage 1.
    """

    metric: str
    """A Stage-1 gate rule name (see ``evalrun.watch.metrics.METRICS``)."""
    kind: Literal["absolute", "vs_baseline", "ratio"]
    """absolute, vs_baseline or ratio."""
    max: float | None = None
    """absolute: harm above this value."""
    min: float | None = None
    """absolute: harm below this value."""
    margin: float | None = Field(default=None, ge=0)
    """vs_baseline: tolerated change in the harmful direction."""
    direction: Literal["increase", "decrease"] | None = None
    """vs_baseline: the harmful direction (default: the metric's bad direction)."""
    max_increase: float | None = Field(default=None, gt=0)
    """ratio: harm when candidate/baseline exceeds 1 + this."""
    max_decrease: float | None = Field(default=None, gt=0, lt=1)
    """ratio: harm when candidate/baseline falls below 1 - this."""
    fail_margin: float | None = Field(default=None, ge=0)
    """vs_baseline, ratio: the FAIL boundary (harm when the change is shown beyond it);
    the margin above is then only the PASS margin (safe when shown within it)."""
    severity: Literal["rollback", "hold"] = "rollback"
    """What a trigger in its harm region does to the stage: roll back, or hold for a human."""
    enabled: bool = True
    """false removes a plan-level trigger in a stage's override."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r} (known: {', '.join(METRIC_NAMES)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Trigger:
        m = METRICS[self.metric]
        given = {k for k in ("max", "min", "margin", "direction", "max_increase", "max_decrease", "fail_margin")
                 if getattr(self, k) is not None}
        allowed = {
            "absolute": {"max", "min"},
            "vs_baseline": {"margin", "direction", "fail_margin"},
            "ratio": {"max_increase", "max_decrease", "fail_margin"},
        }[self.kind]
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{', '.join(extra)} does not apply to kind {self.kind}")
        if not self.enabled:
            return self
        if self.kind == "absolute":
            if (self.max is None) == (self.min is None):
                raise ValueError("an absolute trigger needs exactly one of max or min")
            limit = self.max if self.max is not None else self.min
            assert limit is not None
            if m.kind == "binary" and not 0 <= limit <= 1:
                raise ValueError(f"{self.metric} is a rate: its limit must be between 0 and 1")
            if m.kind == "quantile" and self.max is None:
                raise ValueError(f"{self.metric}: an absolute latency trigger takes max (milliseconds)")
        elif self.kind == "vs_baseline":
            if self.margin is None:
                raise ValueError("a vs_baseline trigger needs margin")
            if m.kind == "quantile":
                raise ValueError(f"{self.metric} compares quantiles: use kind ratio")
        elif (self.max_increase is None) == (self.max_decrease is None):
            raise ValueError("a ratio trigger needs exactly one of max_increase or max_decrease")
        if self.fail_margin is not None:
            if m.kind == "binary" and self.kind == "vs_baseline" and self.fail_margin >= 1:
                raise ValueError(f"{self.metric} is a rate: fail_margin is a change in rate units below 1 "
                                 "(0.01 is one point)")
            if self.kind == "ratio" and self.max_decrease is not None and self.fail_margin >= 1:
                raise ValueError("with max_decrease, fail_margin is a fraction of the baseline below 1")
            if m.kind == "quantile":
                # A quantile trigger tests the share of units slower than (1 + max_increase) x the
                # baseline's quantile: one threshold, so one boundary.
                raise ValueError(f"{self.metric} compares quantiles through one threshold: "
                                 "fail_margin does not apply (set max_increase)")
        return self

    @property
    def key(self) -> tuple[str, str]:
        """Identity for stage overrides: (metric, kind)."""
        return (self.metric, self.kind)

    @property
    def harm_direction(self) -> Literal["increase", "decrease"]:
        """Which way is harm for this trigger."""
        if self.kind == "absolute":
            return "increase" if self.max is not None else "decrease"
        if self.kind == "ratio":
            return "increase" if self.max_increase is not None else "decrease"
        if self.direction is not None:
            return self.direction
        return "decrease" if METRICS[self.metric].higher_is_better else "increase"

    @property
    def limit(self) -> float:
        """The safe boundary (the PASS margin) on the trigger's own scale.

        absolute: the limit; vs_baseline: ±margin on the difference; ratio: 1 ± change.
        Without ``fail_margin`` it is also the harm boundary.
        """
        if self.kind == "absolute":
            value = self.max if self.max is not None else self.min
        elif self.kind == "vs_baseline":
            value = (self.margin or 0.0) * (1 if self.harm_direction == "increase" else -1)
        elif self.max_increase is not None:
            value = 1.0 + self.max_increase
        else:
            value = 1.0 - (self.max_decrease or 0.0)
        assert value is not None
        return float(value)

    @property
    def harm_limit(self) -> float:
        """The harm boundary (the FAIL boundary): ``fail_margin`` on the trigger's scale, else ``limit``."""
        if self.fail_margin is None or self.kind == "absolute":
            return self.limit
        sign = 1.0 if self.harm_direction == "increase" else -1.0
        if self.kind == "vs_baseline":
            return sign * self.fail_margin + 0.0  # + 0.0: a zero margin is 0, never -0
        return 1.0 + sign * self.fail_margin

    @property
    def title(self) -> str:
        """One short line: what crosses what."""
        m = METRICS[self.metric]
        if self.kind == "absolute":
            op = "above" if self.max is not None else "below"
            value = f"{self.limit:g} ms" if m.kind == "quantile" else _fmt_limit(m.kind, self.limit)
            return f"{m.label} {op} {value}"
        if self.kind == "vs_baseline":
            verb = "rises" if self.harm_direction == "increase" else "drops"
            amount = _fmt_limit(m.kind, abs(self.limit), points=True)
            if self.fail_margin is None:
                return f"{m.label} {verb} more than {amount} vs baseline"
            harm = (f"{verb} measurably" if self.fail_margin == 0 else
                    f"{verb} more than {_fmt_limit(m.kind, self.fail_margin, points=True)}")
            return f"{m.label} {harm} vs baseline (safe: within {amount})"
        change = abs(self.limit - 1.0) * 100
        subject = f"{m.event_word} rate" if m.kind == "binary" else m.label
        verb = "up" if self.harm_direction == "increase" else "down"
        if self.fail_margin is None:
            return f"{subject} {verb} more than {change:g}% vs baseline"
        harm = f"{verb} measurably" if self.fail_margin == 0 else f"{verb} more than {self.fail_margin * 100:g}%"
        return f"{subject} {harm} vs baseline (safe: {verb} at most {change:g}%)"


def _fmt_limit(kind: str, value: float, *, points: bool = False) -> str:
    if kind == "binary":
        return f"{value * 100:g} pts" if points else f"{value * 100:g}%"
    return f"{value:g}"


class Labels(_Strict):
    """Version labels of one arm; on the candidate, unspecified labels inherit the baseline's."""

    model_version: str | None = Field(default=None, min_length=1)
    """Model version label."""
    prompt_version: str | None = Field(default=None, min_length=1)
    """Prompt version label."""
    retrieval_version: str | None = Field(default=None, min_length=1)
    """Retrieval version label."""
    policy_version: str | None = Field(default=None, min_length=1)
    """Policy version label."""

    def as_dict(self) -> dict[str, str | None]:
        """The four labels by name (None where unspecified)."""
        return {k: getattr(self, k) for k in LABEL_NAMES}


class Arms(_Strict):
    """Baseline and candidate labels; together they assign every log row to an arm (or none)."""

    baseline: Labels
    """The labels of the traffic served by the current configuration (all four required)."""
    candidate: Labels
    """The labels that differ for the candidate; the others are inherited."""

    @field_validator("baseline")
    @classmethod
    def _complete(cls, v: Labels) -> Labels:
        missing = [k for k, x in v.as_dict().items() if x is None]
        if missing:
            raise ValueError(f"the baseline needs all four labels; missing {', '.join(missing)}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Arms:
        if self.resolved("candidate") == self.resolved("baseline"):
            raise ValueError("the candidate's labels equal the baseline's: the arms cannot be told apart")
        return self

    def resolved(self, arm: Literal["baseline", "candidate"]) -> dict[str, str]:
        """All four labels of ``arm`` (the candidate's inherited where unspecified)."""
        base = {k: str(v) for k, v in self.baseline.as_dict().items() if v is not None}
        if arm == "baseline":
            return base
        cand = {k: v for k, v in self.candidate.as_dict().items() if v is not None}
        return {**base, **cand}


SourceKind = Literal["evalrun", "otel", "litellm", "langfuse"]


class ContentChecks(_Strict):
    """Compute outcomes from stored content with the Stage-1 checks where the log lacks them."""

    refusal: bool = False
    """Set ``refused`` from the output text (the Stage-1 refusal phrases)."""
    parse_json: bool = False
    """Set ``parse_ok`` (strict JSON) on units whose ``response_format`` is ``json``."""


class Source(_Strict):
    """Where the logs are and how they map onto the normalised table."""

    kind: SourceKind
    """evalrun (JSONL/Parquet/CSV in the normalised layout), otel (OTLP JSON export),
    litellm (LiteLLM_SpendLogs: Postgres or an export file), langfuse (export file)."""
    path: str | list[str] | None = None
    """File(s) or glob(s), relative to the plan file."""
    uri: str | None = None
    """PostgreSQL connection URI, or ``env:VAR`` to read it from the environment (never printed)."""
    table: str | None = None
    """Table name for a database source (default LiteLLM_SpendLogs)."""
    format: Literal["auto", "jsonl", "json", "parquet", "csv"] = "auto"
    """File format (auto: by extension)."""
    fields: dict[str, str] = Field(default_factory=dict)
    """Normalised field → source field (column, ``metadata.key``, ``tag:key`` or attribute)."""
    cohort_fields: list[str] = Field(default_factory=list)
    """Extra fields carried for cohort rules (e.g. tenant, region, tenant_tier)."""
    content_checks: ContentChecks = Field(default_factory=ContentChecks)
    """Compute refusal / JSON parse outcomes from stored content (file sources only)."""

    @model_validator(mode="after")
    def _where(self) -> Source:
        if (self.path is None) == (self.uri is None):
            raise ValueError("give exactly one of path (files) or uri (a database)")
        if self.uri is not None and self.kind != "litellm":
            raise ValueError(f"a database uri is supported for kind litellm, not {self.kind}")
        if self.uri is not None and (self.content_checks.refusal or self.content_checks.parse_json):
            raise ValueError("content_checks run on file sources only (content stays in the database)")
        for name in self.cohort_fields:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"cohort field {name!r}: use lower-case letters, digits and _")
        return self

    @property
    def paths(self) -> list[str]:
        """``path`` as a list."""
        if self.path is None:
            return []
        return [self.path] if isinstance(self.path, str) else list(self.path)


class Stage(_Strict):
    """One rollout stage: who owns it, which traffic, how much evidence, which triggers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Stage name (used with --stage)."""
    owner: str = Field(min_length=1)
    """Who watches this stage and decides a rollback."""
    cohort: str | None = None
    """A predicate over log fields selecting this stage's traffic, e.g. ``tenant_tier = 'internal'``."""
    traffic_share: float | None = Field(default=None, gt=0, lt=1)
    """Expected candidate share of the stage's traffic (checked for sample-ratio mismatch)."""
    min_samples: int = Field(default=500, ge=1)
    """Candidate units needed before the stage may continue (also tunes the sequences)."""
    min_events: int = Field(default=0, ge=0)
    """Bad events (both arms) a rare-event trigger needs before it can be called safe."""
    min_duration: Duration = timedelta(0)
    """Time the candidate must have been live in this stage before it may continue."""
    max_duration: Duration | None = None
    """After this long without a decision the stage holds for a human."""
    start: datetime | None = None
    """When the stage started (default: the first candidate unit in the cohort)."""
    triggers: list[Trigger] = Field(default_factory=list)
    """Overrides: replace plan triggers with the same (metric, kind); enabled: false removes."""

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. 2026-11-30T08:00:00Z")
        return v

    @model_validator(mode="after")
    def _durations(self) -> Stage:
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise ValueError("max_duration must be longer than min_duration")
        return self


class Plan(_Strict):
    """A rollout plan: ``rollout.yaml``."""

    version: Literal[1] = 1
    """Plan format version."""
    name: str | None = None
    """What is being rolled out (shown in reports)."""
    source: Source
    """The log source."""
    labels: Arms
    """Baseline and candidate version labels."""
    unit: Literal["request", "trace"] = "request"
    """One unit of evidence: a request, or a whole trace (its requests aggregated)."""
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    """Family-wise false-alarm budget per stage, split evenly across its triggers."""
    srm_alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """False-alarm budget of the sample-ratio-mismatch check (a mismatch holds the stage)."""
    bucket: Duration = timedelta(minutes=15)
    """Time bucket: the sequences are looked at once per bucket."""
    triggers: list[Trigger] = Field(default_factory=list)
    """Triggers of every stage (stages may override)."""
    stages: list[Stage] = Field(min_length=1)
    """The stages, in rollout order."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1 or v.total_seconds() % 1:
            raise ValueError("bucket must be a whole number of seconds, at least 1s")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Plan:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate stage name {dupes[0]!r}")
        keys = [t.key for t in self.triggers]
        dup_keys = sorted({k for k in keys if keys.count(k) > 1})
        if dup_keys:
            raise ValueError(f"trigger {dup_keys[0][0]} ({dup_keys[0][1]}) is given twice")
        for stage in self.stages:
            if not self.stage_triggers(stage.name):
                raise ValueError(f"stage {stage.name!r} has no enabled trigger")
        return self

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (KeyError when absent)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def stage_triggers(self, name: str) -> list[Trigger]:
        """The enabled triggers of a stage: plan triggers with the stage's overrides applied."""
        merged: dict[tuple[str, str], Trigger] = {t.key: t for t in self.triggers}
        for t in self.stage(name).triggers:
            merged[t.key] = t
        return [t for t in merged.values() if t.enabled]

    def fingerprint(self) -> str:
        """A short hash of the validated plan (recorded in verdict.json for replays)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).hexdigest()


def validate_plan(data: Any, path: Path) -> Plan:
    """Validate parsed YAML as a plan; a problem is one UserInputError naming file and field."""
    if data is None:
        raise UserInputError("file is empty", file=path)
    if not isinstance(data, dict):
        raise UserInputError(f"expected a mapping at the top level, found {type(data).__name__}", file=path)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        loc, msg = first_error(exc, what="the plan format")
        raise UserInputError(msg, file=path, field=loc) from None
    from evalrun.watch.cohort import check_cohort_rule

    for i, stage in enumerate(plan.stages):
        if stage.cohort is not None:
            try:
                check_cohort_rule(stage.cohort, plan.source)
            except ValueError as exc:
                raise UserInputError(str(exc), file=path, field=f"stages.{i}.cohort") from None
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and validate ``rollout.yaml``."""
    p = Path(path)
    return validate_plan(load_yaml(p, what="rollout plan"), p)


def now_utc() -> datetime:
    """The current time, UTC, to the second (the CLI's default for --at)."""
    return datetime.now(UTC).replace(microsecond=0)
