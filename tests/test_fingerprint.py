"""Version-label fingerprints: hidden edits fail the gate, formatting never matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from evalrun.analysis.gate import RuleResult
from evalrun.analysis.label_rules import audit_rules
from evalrun.project.config import VERSION_LABELS, load_variant
from evalrun.project.fingerprint import (
    FIELDS_BY_LABEL,
    fingerprint_inputs,
    fingerprints,
    label_audit,
    normalise_template,
)

LABELS = {
    "model_version": "m1",
    "prompt_version": "p1",
    "retrieval_version": "r1",
    "policy_version": "pol1",
}


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "v",
        "model": "openai/x",
        "params": {"temperature": 0, "max_tokens": 64},
        "prompt": {
            "system": "You are a terse shop assistant.\nAnswer in English.",
            "user": "{{ q }}",
        },
        "versions": dict(LABELS),
        "retrieval": {"index": "faq", "top_k": 3},
        "policy": {"strict_json": False},
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "evals" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
    )
    return path


def audit(tmp_path: Path, base: dict[str, Any] | str, cand: dict[str, Any] | str) -> dict[str, Any]:
    b = load_variant(write(tmp_path, "baseline", base))
    c = load_variant(write(tmp_path, "candidate", cand))
    return {f.label: f for f in label_audit(b, c)}


def rule_by_name(rules: list[RuleResult], name: str) -> RuleResult:
    (found,) = [r for r in rules if r.rule == name]
    return found


# A config written as block style, with comments, and the system prompt as a block scalar.
BLOCK = """\
# baseline, block style
name: v
model: openai/x
params:
  temperature: 0
  max_tokens: 64
prompt:
  system: |
    You are a terse shop assistant.
    Answer in English.
  user: "{{ q }}"
versions:
  model_version: m1
  prompt_version: p1
  retrieval_version: r1
  policy_version: pol1
retrieval:
  index: faq
  top_k: 3
policy:
  strict_json: false
"""

# The same content: flow style, keys reordered, other indentation, CRLF-free comments,
# trailing spaces after the prompt's lines and a quoted scalar with an explicit newline.
FLOW = """\
versions: {policy_version: pol1, retrieval_version: r1, prompt_version: p1, model_version: m1}
policy: {strict_json: no}   # yes/no are YAML 1.1 booleans
retrieval: {top_k: 3, index: "faq"}
prompt:
    user: '{{ q }}'
    system: "You are a terse shop assistant.   \\nAnswer in English.\\n\\n"
params: {max_tokens: 64, temperature: 0.0, top_p: null}
model: "openai/x"
name: another-name     # the name is not fingerprinted
"""


def test_reformatted_yaml_has_identical_fingerprints(tmp_path: Path) -> None:
    b = load_variant(write(tmp_path, "baseline", BLOCK))
    c = load_variant(write(tmp_path, "candidate", FLOW))
    d = load_variant(write(tmp_path, "dumped", minimal()))
    assert fingerprints(b) == fingerprints(c) == fingerprints(d)
    assert all(f.status == "unchanged" for f in label_audit(b, c))


def test_fingerprints_are_sha256_hex_per_label(tmp_path: Path) -> None:
    fps = fingerprints(load_variant(write(tmp_path, "baseline", minimal())))
    assert list(fps) == list(VERSION_LABELS) == list(FIELDS_BY_LABEL)
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in fps.values())
    assert len(set(fps.values())) == 4


def test_aa_run_is_all_unchanged(tmp_path: Path) -> None:
    v = load_variant(write(tmp_path, "baseline", minimal()))
    findings = label_audit(v, v)
    assert [f.status for f in findings] == ["unchanged"] * 4
    assert all(r.status == "pass" for r in audit_rules(findings))
    assert all(f.changed_fields == [] and f.diff == "" for f in findings)


def test_prompt_wording_change_without_bump_is_a_hidden_edit(tmp_path: Path) -> None:
    cand = minimal(
        prompt={
            "system": "You are a friendly shop assistant.\nAnswer in English.",
            "user": "{{ q }}",
        }
    )
    found = audit(tmp_path, minimal(), cand)
    f = found["prompt_version"]
    assert f.status == "hidden_edit"
    assert f.changed_fields == ["prompt.system"]
    assert "-You are a terse shop assistant." in f.diff
    assert "+You are a friendly shop assistant." in f.diff
    assert {k: v.status for k, v in found.items() if k != "prompt_version"} == {
        "model_version": "unchanged",
        "retrieval_version": "unchanged",
        "policy_version": "unchanged",
    }

    rules = audit_rules(list(found.values()))
    assert [r.rule for r in rules] == [f"label_{label}" for label in VERSION_LABELS]
    r = rule_by_name(rules, "label_prompt_version")
    assert r.status == "fail"
    assert r.scope == "overall"
    assert r.trigger == "hidden prompt_version edit without a version bump"
    assert "hidden_prompt_version_edit" in r.reason and "prompt.system" in r.reason
    assert all(x.status == "pass" for x in rules if x is not r)


def test_hidden_edit_fails_the_gate(tmp_path: Path) -> None:
    from evalrun.analysis.gate import decide_verdict
    from evalrun.project.config import GateConfig

    cand = minimal(prompt={"system": "Different words.", "user": "{{ q }}"})
    extra = audit_rules(list(audit(tmp_path, minimal(), cand).values()))
    rate = {"value": 1.0, "n": 10, "successes": 10, "ci": [0.7, 1.0]}
    overall = [
        {
            "metric": "error_rate",
            "baseline": {"value": 0.0},
            "candidate": {"value": 0.0},
            "paired_n": 10,
        },
        {
            "metric": "pass_rate",
            "baseline": rate,
            "candidate": rate,
            "paired_n": 10,
            "delta": 0.0,
            "delta_ci": [-0.01, 0.01],
            "mde": 0.1,
        },
    ]
    verdict = decide_verdict(overall, {}, GateConfig(), extra_rules=extra)
    assert verdict.status == "FAIL"
    assert any(line.startswith("label_prompt_version:") for line in verdict.reasons)


def test_whitespace_only_template_edits_do_not_count(tmp_path: Path) -> None:
    base = minimal(prompt={"system": "Line one.\nLine two.", "user": "{{ q }}"})
    cand = minimal(prompt={"system": "\nLine one.  \r\nLine two.\t\n\n", "user": "  {{ q }}  "})
    assert audit(tmp_path, base, cand)["prompt_version"].status == "unchanged"
    assert normalise_template("a \r\nb\rc  \n") == "a\nb\nc"
    assert normalise_template(None) is None


def test_template_moved_to_a_file_is_unchanged(tmp_path: Path) -> None:
    (tmp_path / "evals" / "prompts").mkdir(parents=True)
    (tmp_path / "evals" / "prompts" / "system.j2").write_text(
        "You are a terse shop assistant.\r\nAnswer in English.\r\n", encoding="utf-8"
    )
    cand = minimal(prompt={"system_file": "prompts/system.j2", "user": "{{ q }}"})
    assert audit(tmp_path, minimal(), cand)["prompt_version"].status == "unchanged"


def test_user_template_change_is_detected(tmp_path: Path) -> None:
    cand = minimal(
        prompt={
            "system": "You are a terse shop assistant.\nAnswer in English.",
            "user": "Question: {{ q }}",
        }
    )
    f = audit(tmp_path, minimal(), cand)["prompt_version"]
    assert f.status == "hidden_edit" and f.changed_fields == ["prompt.user"]


def test_label_bump_without_change_is_a_warning(tmp_path: Path) -> None:
    cand = minimal(versions={**LABELS, "model_version": "m2"})
    findings = list(audit(tmp_path, minimal(), cand).values())
    f = findings[0]
    assert (f.label, f.status, f.baseline_label, f.candidate_label) == (
        "model_version",
        "bumped_without_change",
        "m1",
        "m2",
    )
    assert f.changed_fields == [] and f.diff == ""
    r = rule_by_name(audit_rules(findings), "label_model_version")
    assert r.status == "pass"
    assert r.reason.startswith("warning:") and "'m1' -> 'm2'" in r.reason


def test_label_bump_with_change_is_bumped(tmp_path: Path) -> None:
    cand = minimal(
        params={"temperature": 0.7, "max_tokens": 64}, versions={**LABELS, "model_version": "m2"}
    )
    found = audit(tmp_path, minimal(), cand)
    f = found["model_version"]
    assert f.status == "bumped" and f.changed_fields == ["params.temperature"]
    r = rule_by_name(audit_rules(list(found.values())), "label_model_version")
    assert r.status == "pass" and "params.temperature" in r.reason


@pytest.mark.parametrize(
    ("change", "label", "fields"),
    [
        (
            {"params": {"temperature": 0.7, "max_tokens": 64}},
            "model_version",
            ["params.temperature"],
        ),
        (
            {"params": {"temperature": 0, "max_tokens": 64, "seed": 3}},
            "model_version",
            ["params.seed"],
        ),
        (
            {"params": {"temperature": 0, "max_tokens": 64, "extra": {"frequency_penalty": 0.5}}},
            "model_version",
            ["params.extra.frequency_penalty"],
        ),
        (
            {
                "params": {
                    "temperature": 0,
                    "max_tokens": 64,
                    "response_format": {"type": "json_object"},
                }
            },
            "model_version",
            ["params.response_format.type"],
        ),
        (
            {
                "params": {
                    "temperature": 0,
                    "max_tokens": 64,
                    "tool_choice": "auto",
                    "tools": [{"type": "function", "function": {"name": "lookup"}}],
                }
            },
            "model_version",
            ["params.tool_choice", "params.tools[0].function.name", "params.tools[0].type"],
        ),
        ({"model": "openai/y"}, "model_version", ["model"]),
        ({"api_base": "http://127.0.0.1:9/v1"}, "model_version", ["api_base"]),
        ({"retrieval": {"index": "faq", "top_k": 5}}, "retrieval_version", ["retrieval.top_k"]),
        (
            {"retrieval": {"index": "faq-2025", "top_k": 3}},
            "retrieval_version",
            ["retrieval.index"],
        ),
        ({"policy": {"strict_json": True}}, "policy_version", ["policy.strict_json"]),
        (
            {"policy": {"strict_json": False, "refuse_harmful": True}},
            "policy_version",
            ["policy.refuse_harmful"],
        ),
    ],
)
def test_each_field_feeds_its_own_label(
    tmp_path: Path, change: dict[str, Any], label: str, fields: list[str]
) -> None:
    found = audit(tmp_path, minimal(), minimal(**change))
    assert found[label].status == "hidden_edit"
    assert found[label].changed_fields == fields
    assert {k for k, f in found.items() if f.status != "unchanged"} == {label}
    r = rule_by_name(audit_rules(list(found.values())), f"label_{label}")
    assert r.status == "fail" and r.trigger == f"hidden {label} edit without a version bump"


def test_unfingerprinted_fields_change_nothing(tmp_path: Path) -> None:
    cand = minimal(
        name="other",
        timeout_s=5,
        api_key_env="OTHER_KEY",
        pricing={"input_per_mtok": 1, "output_per_mtok": 2},
        rollout={"owner": "someone"},
    )
    assert all(f.status == "unchanged" for f in audit(tmp_path, minimal(), cand).values())


def test_model_path_uses_file_name_and_size_not_location(tmp_path: Path) -> None:
    for sub, content in (("a", b"weights"), ("b", b"weights"), ("c", b"weights!")):
        (tmp_path / "models" / sub).mkdir(parents=True)
        (tmp_path / "models" / sub / "m.gguf").write_bytes(content)
    a = load_variant(write(tmp_path, "a", minimal(model_path="../models/a/m.gguf")))
    b = load_variant(write(tmp_path, "b", minimal(model_path="../models/b/m.gguf")))
    c = load_variant(write(tmp_path, "c", minimal(model_path="../models/c/m.gguf")))
    assert fingerprints(a) == fingerprints(b)
    assert fingerprint_inputs(a)["model_version"]["model_path"] == {"name": "m.gguf", "size": 7}
    (f, *_) = label_audit(a, c)
    assert f.status == "hidden_edit" and f.changed_fields == ["model_path.size"]
    assert str(tmp_path) not in str(fingerprint_inputs(a))


def test_secrets_never_reach_the_diff_or_the_hash(tmp_path: Path) -> None:
    base = minimal(
        params={"temperature": 0, "extra": {"api_key": "sk-first-secret-value-123"}},
        api_base="https://user:hunter2pass@proxy.example/v1",
    )
    cand = minimal(
        params={"temperature": 0.5, "extra": {"api_key": "sk-second-secret-value-456"}},
        api_base="https://user:other-pass@proxy.example/v1",
    )
    found = audit(tmp_path, base, cand)
    f = found["model_version"]
    assert f.changed_fields == ["params.temperature"]  # key rotation is not a model change
    text = repr(f.to_dict())
    for secret in ("sk-first", "sk-second", "hunter2pass", "other-pass"):
        assert secret not in text
    assert "-params.temperature: 0" in f.diff and "+params.temperature: 0.5" in f.diff


def test_non_secret_keys_that_look_alike_are_fingerprinted(tmp_path: Path) -> None:
    base = minimal(
        policy={"redact_secrets": True}, params={"temperature": 0, "extra": {"eos_token": "</s>"}}
    )
    cand = minimal(
        policy={"redact_secrets": False},
        params={"temperature": 0, "extra": {"eos_token": "<|end|>"}},
    )
    found = audit(tmp_path, base, cand)
    assert found["policy_version"].changed_fields == ["policy.redact_secrets"]
    assert found["model_version"].changed_fields == ["params.extra.eos_token"]


def test_finding_to_dict_is_json_ready(tmp_path: Path) -> None:
    import json

    found = audit(tmp_path, minimal(), minimal(policy={"strict_json": True}))
    d = found["policy_version"].to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {
        "label",
        "status",
        "baseline_label",
        "candidate_label",
        "changed_fields",
        "diff",
    }


def test_shipped_example_audits_cleanly() -> None:
    root = Path(__file__).resolve().parent.parent
    b = load_variant(root / "evals" / "baseline.yaml")
    c = load_variant(root / "evals" / "candidate.yaml")
    statuses = {f.label: f.status for f in label_audit(b, c)}
    assert "hidden_edit" not in statuses.values()
    assert statuses["policy_version"] == "bumped"
    r = rule_by_name(audit_rules(label_audit(b, c)), "label_prompt_version")
    assert r.status == "pass"  # the example bumps prompt_version while editing only policy values


def test_few_shot_examples_feed_prompt_version(tmp_path: Path) -> None:
    """Adding a few-shot turn under the same prompt_version is a hidden prompt edit."""
    import yaml

    from evalrun.project.config import load_variant
    from evalrun.project.fingerprint import label_audit

    base = {"name": "b", "model": "openai/x", "prompt": {"system": "s", "user": "{{ q }}"},
            "versions": {"model_version": "m", "prompt_version": "p", "retrieval_version": "none", "policy_version": "none"}}
    cand = yaml.safe_load(yaml.safe_dump(base))
    cand["prompt"]["examples"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "b.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "evals" / "c.yaml").write_text(yaml.safe_dump(cand))
    findings = {f.label: f for f in label_audit(load_variant(tmp_path / "evals" / "b.yaml"), load_variant(tmp_path / "evals" / "c.yaml"))}
    assert findings["prompt_version"].status == "hidden_edit"
    assert any(k.startswith("prompt.examples") for k in findings["prompt_version"].changed_fields)
    assert "hello" in findings["prompt_version"].diff
