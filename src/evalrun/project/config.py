"""Variant and suite configuration: pydantic models and loaders.

A *variant* (baseline.yaml / candidate.yaml) says how to call a model: model string,
params, prompt templates, key variable, version labels. A *suite* (shared by both sides)
says which cases to run, how hard, and the gate's thresholds. Every error names the file
and the field; nothing here imports litellm.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalrun import catalogue
from evalrun.errors import CouldNotMeasureError, UserInputError
from evalrun.judging.spec import JudgeSettings
from evalrun.project.validation import first_error
from evalrun.project.yamlio import load_yaml, read_text, resolve_inside

VERSION_LABELS = ("model_version", "prompt_version", "retrieval_version", "policy_version")


# Shapes of real credentials that are also valid variable names (so the name rule alone
# lets them through): Groq, Hugging Face, GitHub, AWS, Google, Stripe, OpenAI project keys.
_KEY_SHAPES = re.compile(
    r"gsk_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|sk_[A-Za-z0-9]{20,}"
)
_NOT_A_NAME = (
    "looks like a key, not the NAME of the environment variable that holds it "
    "(the key itself never goes in a file; its value is not shown here)"
)


def looks_like_key(value: str) -> bool:
    """A credential rather than a variable name: a known key shape, or a random-looking run.

    Variable names are words (``OPENAI_API_KEY``, ``AZURE_KEY_EASTUS2``, ``GATEWAYKEY2024``).
    A key is a long run (16+ characters between underscores) where letters and digits
    alternate often, or where lower and upper case alternate letter by letter.
    """
    if _KEY_SHAPES.match(value):
        return True
    for run in value.split("_"):
        if len(run) < 16:
            continue
        digit_switches = sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(run))
        lone_lower = len(re.findall(r"(?<![a-z])[a-z](?![a-z])", run)) if re.search(r"[A-Z]", run) else 0
        if digit_switches >= 4 or lone_lower >= 3:
            return True
    return False


def _env_var_name(value: str | None) -> str | None:
    """``api_key_env`` holds the NAME of a variable; a key pasted there is refused, unechoed."""
    if value is None:
        return value
    is_name = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is not None
    if looks_like_key(value) or (not is_name and (len(value) >= 20 or "-" in value)):
        raise ValueError(_NOT_A_NAME)
    if not is_name:
        raise ValueError("must be the NAME of an environment variable (the key itself never goes in a file)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ExampleMessage(_Strict):
    """A few-shot turn placed between the system prompt and the case (used verbatim)."""

    role: Literal["user", "assistant"]
    content: str


class PromptSpec(_Strict):
    """System and user prompt templates (jinja2), inline or from files next to the config,
    and optional few-shot ``examples`` inserted after the system message."""

    system: str | None = None
    system_file: str | None = None
    user: str | None = None
    user_file: str | None = None
    examples: list[ExampleMessage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source_each(self) -> PromptSpec:
        if self.system is not None and self.system_file is not None:
            raise ValueError("give either system or system_file, not both")
        if self.user is not None and self.user_file is not None:
            raise ValueError("give either user or user_file, not both")
        return self


class Params(_Strict):
    """Generation parameters passed to the model. ``extra`` is passed through verbatim."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, tool in enumerate(tools or []):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError(f"tools[{i}] must look like {{type: function, function: {{name, parameters}}}}")
            from evalrun.checks.schema_refs import remote_refs

            for ref in remote_refs(fn.get("parameters")):
                raise ValueError(
                    f"tools[{i}].function.parameters: $ref {ref[:120]!r} points to another document; "
                    "evalrun never fetches schemas: inline it, e.g. under $defs"
                )
        return tools

    def to_call_params(self) -> dict[str, Any]:
        """The params as litellm keyword arguments (None values dropped)."""
        out = {k: v for k, v in self.model_dump(exclude={"extra"}).items() if v is not None}
        out.update(self.extra)
        return out


class PricingSpec(_Strict):
    """Explicit prices, USD per million tokens (overrides litellm's price map)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class VersionLabels(_Strict):
    """The four labels later rollout stages segment live traffic by ("none" is allowed)."""

    model_version: str = Field(min_length=1)
    prompt_version: str = Field(min_length=1)
    retrieval_version: str = Field(min_length=1)
    policy_version: str = Field(min_length=1)


class RolloutSpec(_Strict):
    """Facts for the rollout note that evalrun cannot measure (left as TODO when absent)."""

    change: str | None = None
    expected_gain: str | None = None
    owner: str | None = None
    dashboard: str | None = None
    canary_cohorts: list[str] = Field(default_factory=list)
    expanded_cohorts: list[str] = Field(default_factory=list)


class DeploymentSpec(_Strict):
    """One deployment behind a litellm Router (a key, a region, a server)."""

    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    weight: int | None = Field(default=None, ge=1)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return _env_var_name(value)


class RouterSpec(_Strict):
    """Spread one variant's calls over several deployments with a litellm Router.

    The variant's ``model`` is then the router's model-group name.
    """

    deployments: list[DeploymentSpec] = Field(min_length=1)
    routing_strategy: Literal["simple-shuffle", "least-busy", "usage-based-routing-v2", "latency-based-routing"] = (
        "simple-shuffle"
    )


class VariantConfig(_Strict):
    """One side of the comparison: how to call the model and what it is labelled."""

    name: str = Field(min_length=1)
    suite: str | None = None
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    model_path: str | None = None
    params: Params = Field(default_factory=Params)
    prompt: PromptSpec
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    pricing: PricingSpec | None = None
    router: RouterSpec | None = None
    versions: VersionLabels
    retrieval: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    rollout: RolloutSpec | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return _env_var_name(value)


class RuleSpec(_Strict):
    """One gate rule: when it passes, when it fails, and an optional absolute bound.

    Rates: ``margin`` and ``fail_margin`` are changes in rate units (-0.03 = a 3-point drop).
    Ratios: candidate/baseline multipliers (1.10 = +10 %).
    """

    enabled: bool = True
    margin: float | None = None
    """Non-inferiority margin: the rule PASSes when the whole interval of the change is on
    the safe side of it."""
    fail_margin: float | None = None
    """The rule FAILs when the change is shown (family-wise) to be beyond this; defaults to
    ``margin``. 0 for a rate: any evident regression fails."""
    floor: float | None = Field(default=None, ge=0, le=1)
    """Rates where higher is better: the candidate FAILs when its interval is wholly below."""
    ceiling: float | None = Field(default=None, ge=0, le=1)
    """Over-refusal: the candidate FAILs when its interval is wholly above."""
    any_flip: bool = False
    """known_bad_refusal only: FAIL on any known-bad case refused less often (strict, noisy
    for sampled models; outside the family-wise error control)."""
    min_n: int | None = Field(default=None, ge=2)
    """Ratio rules: fewest paired cases (latency: calls per side) the rule decides on; below
    it the rule is inconclusive and never passes."""


# Which optional rule settings make sense where (checked when the suite loads).
HIGHER_IS_BETTER_RATES = tuple(n for n, m in catalogue.RULES.items() if m.rule is not None and m.rule.bound == "floor")
LOWER_IS_BETTER_RATES = tuple(n for n, m in catalogue.RULES.items() if m.rule is not None and m.rule.bound == "ceiling")
RATIO_RULES = tuple(n for n, m in catalogue.RULES.items() if m.rule is not None and m.rule.kind == "ratio")


def _check_rule(name: str, spec: RuleSpec) -> None:
    """A rule setting that cannot mean anything for this rule is refused, naming the field."""
    if spec.floor is not None and name not in HIGHER_IS_BETTER_RATES:
        raise ValueError(f"{name}.floor: a floor applies to rates where higher is better "
                         f"({', '.join(HIGHER_IS_BETTER_RATES)})")
    if spec.ceiling is not None and name not in LOWER_IS_BETTER_RATES:
        raise ValueError(f"{name}.ceiling: a ceiling applies to {', '.join(LOWER_IS_BETTER_RATES)}")
    if spec.any_flip and name != "known_bad_refusal":  # the one rule on a case-level event
        raise ValueError(f"{name}.any_flip: only known_bad_refusal has an any-flip policy")
    if spec.min_n is not None and name not in RATIO_RULES:
        raise ValueError(f"{name}.min_n: only ratio rules ({', '.join(RATIO_RULES)}) take min_n")
    m, f = spec.margin, spec.fail_margin
    if name in RATIO_RULES:
        for field_name, v in (("margin", m), ("fail_margin", f)):
            if v is not None and not v > 0:
                raise ValueError(f"{name}.{field_name}: a ratio margin is a multiplier > 0, e.g. 1.10 for +10 %")
        return
    for field_name, v in (("margin", m), ("fail_margin", f)):
        if v is not None and not -1.0 < v < 1.0:
            raise ValueError(f"{name}.{field_name}: a rate change lies in (-1, 1), e.g. -0.03 for a 3-point drop")


# Defaults (``evalrun.catalogue``): what a team gating a suite of about 300 cases (at least
# ~60 per gated rate) should start from; see the README's "Statistics" section for how they
# were chosen.
DEFAULT_RULES: dict[str, dict[str, Any]] = catalogue.default_rules()


class GateConfig(_Strict):
    """The gate: thresholds are the rollback triggers written down before release."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    on_inconclusive: Literal["fail", "pass"] = "fail"
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    rules: dict[str, RuleSpec] = Field(default_factory=dict)
    critical_cohorts: list[str] = Field(default_factory=list)
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    baseline_beyond_bound: Literal["warn", "fail"] = "warn"
    """When the baseline is already below a floor (above a ceiling): ``warn`` reports the
    bound without enforcing it, ``fail`` enforces it on the candidate anyway. A candidate
    evidently better than the baseline never fails a bound."""

    @field_validator("rules", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return value  # let pydantic report the type error
        unknown = sorted(str(k) for k in set(value) - set(DEFAULT_RULES))
        if unknown:
            raise ValueError(
                f"unknown rule {unknown[0]!r}; known rules: {', '.join(sorted(DEFAULT_RULES))}"
            )
        merged: dict[str, Any] = {}
        for name, default in DEFAULT_RULES.items():
            given = value.get(name)
            if given is None:
                merged[name] = dict(default)
            elif isinstance(given, dict):
                merged[name] = {**default, **given}
            else:
                merged[name] = given
        return merged

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, value: dict[str, RuleSpec]) -> dict[str, RuleSpec]:
        for name, spec in value.items():
            _check_rule(name, spec)
        return value

    def model_post_init(self, __context: Any) -> None:
        if not self.rules:
            self.rules = {name: RuleSpec(**spec) for name, spec in DEFAULT_RULES.items()}


class BackoffSpec(_Strict):
    """Harness-owned retry backoff: exponential with full jitter, capped."""

    initial_s: float = Field(default=0.5, gt=0, le=60)
    max_s: float = Field(default=20.0, gt=0, le=600)
    multiplier: float = Field(default=2.0, ge=1, le=10)


RefusalLanguage = Literal["de", "en", "es", "fr"]
"""Languages with a built-in refusal phrase list (``evalrun.checks.refusal``)."""


def _english() -> list[RefusalLanguage]:
    return ["en"]


class RefusalSpec(_Strict):
    """How refusals are recognised, for both sides alike (``refusal:`` in the suite).

    The built-in phrase lists of ``languages`` plus ``phrases``, or ``phrases`` alone with
    ``replace: true``; a phrase counts when it starts within the first ``window``
    characters. ``check``: the name of a registered check that decides instead of the
    phrase list (the model-graded hook; it reports ``facts["refused"]``), with
    ``check_params``.
    """

    languages: list[RefusalLanguage] = Field(default_factory=_english)
    phrases: list[str] = Field(default_factory=list)
    replace: bool = False
    window: int = Field(default=200, ge=10, le=100_000)
    check: str | None = None
    check_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something_detects(self) -> RefusalSpec:
        if self.replace and not [p for p in self.phrases if p.strip()] and self.check is None:
            raise ValueError("replace: true needs phrases (or a check): refusals could never be detected")
        return self


class SuiteConfig(_Strict):
    """What to run and how to judge it; shared by both variants."""

    name: str = "suite"
    cases: list[str] = Field(min_length=1)
    samples: int = Field(default=1, ge=1, le=100)
    concurrency: int = Field(default=8, ge=1, le=1000)
    # Processes making the calls (each: one event loop and journal); 1 = this process;
    # None (the default): chosen per run from the calls to make and the cores.
    workers: int | None = Field(default=None, ge=1, le=64)
    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff: BackoffSpec = Field(default_factory=BackoffSpec)
    report_dir: str = "reports"
    seed: int = 0
    max_response_chars: int = Field(default=20_000, ge=100)
    # Seconds one check may spend on one output (catastrophic regexes, huge outputs).
    check_timeout_s: float = Field(default=2.0, gt=0, le=600)
    # Largest answer read from a provider (decoded body); longer ones are cut and marked.
    max_response_mb: float = Field(default=4.0, gt=0, le=1024)
    gate: GateConfig = Field(default_factory=GateConfig)
    refusal: RefusalSpec = Field(default_factory=RefusalSpec)
    judge: JudgeSettings | None = None
    """The model-graded checks' judge (``rubric``, ``pairwise``, ``similar`` in ``expect``)."""

    def max_response_bytes(self) -> int:
        """``max_response_mb`` in bytes."""
        return int(self.max_response_mb * 1024 * 1024)


class LoadedVariant(BaseModel):
    """A validated variant with its templates read and paths resolved."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: VariantConfig
    path: Path
    system_template: str | None
    user_template: str | None
    model_path: Path | None

    @property
    def name(self) -> str:
        return self.config.name

    def api_key(self) -> str | None:
        """The key from the named environment variable (None when no variable is named).

        Raises CouldNotMeasureError when the variable is named but unset: a missing key is
        an environment problem, not a config error.
        """
        return _key_from_env(self.config.api_key_env, self.path, "api_key_env")

    def router_model_list(self, *, with_keys: bool = True) -> list[dict[str, Any]] | None:
        """The litellm Router ``model_list`` (keys read from their variables), or None."""
        spec = self.config.router
        if spec is None:
            return None
        out: list[dict[str, Any]] = []
        for i, d in enumerate(spec.deployments):
            params: dict[str, Any] = {"model": d.model}
            for name in ("api_base", "rpm", "tpm", "weight"):
                if getattr(d, name) is not None:
                    params[name] = getattr(d, name)
            if with_keys and d.api_key_env:
                params["api_key"] = _key_from_env(d.api_key_env, self.path, f"router.deployments[{i}].api_key_env")
            out.append({"model_name": self.config.model, "litellm_params": params})
        return out


def _key_from_env(env: str | None, path: Path, field: str) -> str | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise CouldNotMeasureError(f"{path}: field {field}: environment variable {env} is not set")
    return value


class LoadedSuite(BaseModel):
    """A validated suite with its location (relative paths resolve against it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: SuiteConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def report_dir(self) -> Path:
        return (self.base_dir / self.config.report_dir).resolve()


def project_root(config_path: Path) -> Path:
    """The folder user files may reference: the parent of the config's folder.

    With the standard layout (evals/baseline.yaml) that is the project itself, so
    ``../cases`` and ``prompts/x.j2`` work while ``../../..`` escapes are refused.
    """
    return config_path.resolve().parent.parent


def _validate(model: type[_Strict], data: Any, path: Path) -> Any:
    if data is None:
        raise UserInputError("file is empty", file=path)
    if not isinstance(data, dict):
        raise UserInputError(f"expected a mapping at the top level, found {type(data).__name__}", file=path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, msg = first_error(exc)
        raise UserInputError(msg, file=path, field=loc) from None


def _read_template(base: Path, rel: str, *, path: Path, field: str) -> str:
    resolved = resolve_inside(base, rel, file=path, field=field, root=project_root(path))
    return read_text(resolved, what=f"template file ({field})")


def load_variant(path: str | Path) -> LoadedVariant:
    """Load and validate a variant config, reading template files next to it."""
    p = Path(path)
    cfg: VariantConfig = _validate(VariantConfig, load_yaml(p, what="variant config"), p)
    base = p.resolve().parent
    system = cfg.prompt.system
    if cfg.prompt.system_file is not None:
        system = _read_template(base, cfg.prompt.system_file, path=p, field="prompt.system_file")
    user = cfg.prompt.user
    if cfg.prompt.user_file is not None:
        user = _read_template(base, cfg.prompt.user_file, path=p, field="prompt.user_file")
    if system is None and user is None:
        raise UserInputError("give at least one of system/user (or *_file)", file=p, field="prompt")
    model_path: Path | None = None
    if cfg.model_path is not None:
        model_path = resolve_inside(base, cfg.model_path, file=p, field="model_path", root=project_root(p))
        if not model_path.is_file():
            raise UserInputError(f"model file {cfg.model_path!r} not found", file=p, field="model_path")
    return LoadedVariant(config=cfg, path=p, system_template=system, user_template=user, model_path=model_path)


def load_suite(path: str | Path) -> LoadedSuite:
    """Load and validate a suite file."""
    p = Path(path)
    cfg: SuiteConfig = _validate(SuiteConfig, load_yaml(p, what="suite file"), p)
    return LoadedSuite(config=cfg, path=p)


def resolve_suite_path(baseline: LoadedVariant, candidate: LoadedVariant, override: str | Path | None) -> Path:
    """Find the one suite both variants share, or fail naming the mismatch."""
    if override is not None:
        return Path(override)
    paths: list[Path | None] = []
    for v in (baseline, candidate):
        paths.append(
            resolve_inside(v.path.resolve().parent, v.config.suite, file=v.path, field="suite", root=project_root(v.path))
            if v.config.suite
            else None
        )
    b, c = paths
    if b is None and c is None:
        raise UserInputError(
            "no suite: set `suite:` in the variant configs or pass --suite", file=baseline.path, field="suite"
        )
    if b is not None and c is not None and b != c:
        raise UserInputError(
            f"baseline uses suite {b} but candidate uses {c}: both sides must run the same suite",
            file=candidate.path,
            field="suite",
        )
    found = b or c
    assert found is not None
    return found
