"""Hidden-edit detection: does each version label still stand for the same configuration?

Live traffic is segmented by four labels (``versions:`` in a variant config). A label is
only useful if a change to what it covers comes with a new label value; a prompt edited
under the same ``prompt_version`` makes the live dashboards compare unlike with like.

``fingerprints(variant)`` hashes, per label, exactly the fields that label stands for:

==================  =====================================================================
label               fields fingerprinted
==================  =====================================================================
model_version       ``model``, ``api_base``, ``model_path`` (file name and size in bytes,
                    never the absolute path), ``params`` (every generation parameter:
                    temperature, max_tokens, top_p, seed, stop, response_format, tools,
                    tool_choice, extra)
prompt_version      the system and user template *sources* and few-shot ``examples`` (inline or from
                    ``*_file``), with line endings normalised to LF, trailing whitespace
                    stripped from every line and leading/trailing blank space removed
retrieval_version   the ``retrieval`` mapping
policy_version      the ``policy`` mapping
==================  =====================================================================

Not fingerprinted (they do not change what the model is asked or how it answers):
``name``, ``suite``, ``api_key_env``, ``timeout_s``, ``pricing``, ``rollout`` and the
labels themselves. String values under credential-like keys (``api_key``,
``authorization``, ``password``, ``client_secret``, ``access_token``, ...) and passwords
inside ``api_base`` URLs are masked before hashing, so a key rotation is not a model
change and no secret ever reaches a hash, a diff or summary.json.

Each fingerprint is the sha256 hex of the canonical JSON (sorted keys, no whitespace) of
the parsed values, so YAML formatting, comments, key order and flow/block style never
matter, and moving a template between ``system:`` and ``system_file:`` does not either.
Parameters left unset (``None``) and an empty ``extra`` are dropped, so writing
``top_p: null`` is the same as omitting it.

``label_audit(baseline, candidate)`` compares the two sides label by label:

* ``hidden_edit``: fingerprint differs, label identical — the gate fails;
* ``bumped_without_change``: label differs, fingerprint identical — a warning;
* ``bumped``: both differ (the expected shape of a change);
* ``unchanged``: neither differs (every label of an A/A run).

``evalrun.analysis.label_rules.audit_rules(findings)`` turns the findings into gate rules for
``evalrun.analysis.gate.decide_verdict(extra_rules=...)``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from evalrun.canonical import canonical_json, stable_hash
from evalrun.project.config import VERSION_LABELS, LoadedVariant
from evalrun.secrets import MASK, scrub

__all__ = [
    "FIELDS_BY_LABEL",
    "LabelFinding",
    "LabelStatus",
    "fingerprint_inputs",
    "fingerprints",
    "hidden_edit_rule",
    "label_audit",
    "normalise_template",
]

LabelStatus = Literal["hidden_edit", "bumped_without_change", "bumped", "unchanged"]

# The README table in data form (what each label's fingerprint is computed from).
FIELDS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "model_version": ("model", "api_base", "model_path", "params"),
    "prompt_version": ("prompt.system", "prompt.user", "prompt.examples"),
    "retrieval_version": ("retrieval",),
    "policy_version": ("policy",),
}

# Key *endings* only, and only string values are masked: "max_tokens", "eos_token" or a
# policy flag like "redact_secrets: true" must stay visible to the fingerprint.
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[-_])?(?:api[-_]?key|secret|secret[-_]?key|password|passwd|authorization"
    r"|credentials?|(?:access|auth|bearer|refresh|session|api)[-_]?token)$"
)
_URL_PASSWORD = re.compile(r"(//[^/:@\s]*:)[^/@\s]*@")

# A diff longer than this is cut: the note and the verdict need the gist, not the file.
_MAX_DIFF_LINES = 40


def normalise_template(source: str | None) -> str | None:
    """A template source as the prompt fingerprint sees it (None stays None).

    Line endings become LF and trailing whitespace goes from every line, so re-indenting
    or re-wrapping the YAML around a block scalar changes nothing; the whole text is
    stripped because the renderer strips the rendered prompt too. Wording, inner blank
    lines and leading indentation inside the text are kept: they reach the model.
    """
    if source is None:
        return None
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _mask_secrets(value: Any) -> Any:
    """``value`` with credential-like keys' values replaced by the mask, recursively."""
    if isinstance(value, dict):
        return {
            str(k): (MASK if isinstance(v, str) and _SECRET_KEY.match(str(k)) else _mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_secrets(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1" + MASK + "@", value)
    return value


def _model_file(variant: LoadedVariant) -> dict[str, Any] | None:
    path = variant.model_path
    if path is None:
        return None
    try:
        size: int | None = path.stat().st_size
    except OSError:  # checked at load time; vanished since — still fingerprint the name
        size = None
    # Name and size, not the path: the same weights checked out elsewhere are the same model.
    return {"name": path.name, "size": size}


def fingerprint_inputs(variant: LoadedVariant) -> dict[str, dict[str, Any]]:
    """The exact (secret-masked) data each label's fingerprint is the hash of."""
    cfg = variant.config
    params = {k: v for k, v in cfg.params.model_dump(mode="json").items() if v is not None}
    if not params.get("extra"):
        params.pop("extra", None)
    raw: dict[str, dict[str, Any]] = {
        "model_version": {
            "model": cfg.model,
            "api_base": cfg.api_base,
            "model_path": _model_file(variant),
            "params": params,
            # Deployments behind a router are the model too (key variable names excluded).
            **({"router": cfg.router.model_dump(mode="json", exclude={"deployments": {"__all__": {"api_key_env"}}})}
               if cfg.router else {}),
        },
        "prompt_version": {
            "prompt": {
                "system": normalise_template(variant.system_template),
                "user": normalise_template(variant.user_template),
                # Few-shot turns are part of the prompt; absent and empty hash the same.
                **({"examples": [dict(m) for m in cfg.prompt.examples]} if cfg.prompt.examples else {}),
            }
        },
        "retrieval_version": {"retrieval": cfg.retrieval},
        "policy_version": {"policy": cfg.policy},
    }
    masked: dict[str, dict[str, Any]] = _mask_secrets(raw)
    return masked


def fingerprints(variant: LoadedVariant) -> dict[str, str]:
    """sha256 hex per version label of what that label stands for (see the module docstring)."""
    return {
        label: stable_hash(data)
        for label, data in fingerprint_inputs(variant).items()
    }


def hidden_edit_rule(label: str) -> str:
    """The identifier of a hidden edit of ``label`` (``hidden_<label>_edit``)."""
    return f"hidden_{label}_edit"


@dataclass(slots=True)
class LabelFinding:
    """How one version label compares between baseline and candidate."""

    label: str
    status: LabelStatus
    baseline_label: str
    candidate_label: str
    changed_fields: list[str] = field(
        default_factory=list
    )  # e.g. ["params.temperature", "prompt.system"]
    diff: str = ""  # short unified diff of the changed fields, secrets masked
    baseline_fingerprint: str = ""
    candidate_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k in sorted(value, key=str):
            _flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def _leaves(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten(data, "", out)
    return out


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    a, b = _leaves(before), _leaves(after)
    missing = object()
    return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def _cap(lines: list[str]) -> str:
    if len(lines) > _MAX_DIFF_LINES:
        lines = [*lines[:_MAX_DIFF_LINES], f"... ({len(lines) - _MAX_DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


def _diff(label: str, before: dict[str, Any], after: dict[str, Any], changed: Sequence[str]) -> str:
    lines: list[str] = []
    if label == "prompt_version":
        for name in ("system", "user"):
            field_name = f"prompt.{name}"
            if field_name not in changed:
                continue
            old = before["prompt"][name]
            new = after["prompt"][name]
            lines.extend(
                difflib.unified_diff(
                    [] if old is None else old.split("\n"),
                    [] if new is None else new.split("\n"),
                    fromfile=f"baseline {field_name}",
                    tofile=f"candidate {field_name}",
                    n=1,
                    lineterm="",
                )
            )
        example_fields = [k for k in changed if k.startswith("prompt.examples")]
        if example_fields:
            a, b = _leaves(before), _leaves(after)
            lines.extend(
                difflib.unified_diff(
                    [f"{k}: {canonical_json(a[k])}" for k in example_fields if k in a],
                    [f"{k}: {canonical_json(b[k])}" for k in example_fields if k in b],
                    fromfile="baseline prompt.examples",
                    tofile="candidate prompt.examples",
                    n=0,
                    lineterm="",
                )
            )
    else:
        # One "field: value" line per changed leaf reads better than a diff of nested JSON.
        a, b = _leaves(before), _leaves(after)
        old_lines = [f"{k}: {canonical_json(a[k])}" for k in changed if k in a]
        new_lines = [f"{k}: {canonical_json(b[k])}" for k in changed if k in b]
        lines.extend(
            difflib.unified_diff(
                old_lines,
                new_lines,
                fromfile=f"baseline {label}",
                tofile=f"candidate {label}",
                n=0,
                lineterm="",
            )
        )
    # Belt and braces: anything credential-shaped that slipped into a value is masked.
    return scrub(_cap(lines))


def label_audit(baseline: LoadedVariant, candidate: LoadedVariant) -> list[LabelFinding]:
    """Compare each version label with its fingerprint, baseline vs candidate (label order)."""
    b_in, c_in = fingerprint_inputs(baseline), fingerprint_inputs(candidate)
    b_fp, c_fp = fingerprints(baseline), fingerprints(candidate)
    b_lab = baseline.config.versions.model_dump()
    c_lab = candidate.config.versions.model_dump()
    findings: list[LabelFinding] = []
    for label in VERSION_LABELS:
        content_changed = b_fp[label] != c_fp[label]
        label_changed = b_lab[label] != c_lab[label]
        status: LabelStatus
        if content_changed and not label_changed:
            status = "hidden_edit"
        elif label_changed and not content_changed:
            status = "bumped_without_change"
        elif label_changed:
            status = "bumped"
        else:
            status = "unchanged"
        changed = _changed(b_in[label], c_in[label]) if content_changed else []
        findings.append(
            LabelFinding(
                label=label,
                status=status,
                baseline_label=str(b_lab[label]),
                candidate_label=str(c_lab[label]),
                changed_fields=changed,
                diff=_diff(label, b_in[label], c_in[label], changed) if changed else "",
                baseline_fingerprint=b_fp[label],
                candidate_fingerprint=c_fp[label],
            )
        )
    return findings


def fields_text(fields: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(fields[:limit])
    return shown + (f" and {len(fields) - limit} more" if len(fields) > limit else "")
