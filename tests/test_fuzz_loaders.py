"""Fuzz the loaders: any file content gives a valid model or a ``UserInputError``.

Arbitrary YAML-ish text, arbitrary bytes, arbitrary YAML documents and mutated valid
configs / case files go through ``evalrun.project.config.load_variant``, ``load_suite``,
``evalrun.project.cases.load_case_file`` and ``evalrun.api.load_project``. Any other exception is
a bug (the CLI would print a traceback instead of one line and exit 1 instead of 2).

The bugs fuzzing found (PyYAML constructor errors, mixed-type keys, deep nesting, NUL bytes
in paths) are fixed and pinned by the regression tests at the bottom.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalrun import api
from evalrun.errors import UserInputError
from evalrun.project.cases import load_case_file
from evalrun.project.config import load_suite, load_variant

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI gate must not be flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

LABELS = {"model_version": "m1", "prompt_version": "p1", "retrieval_version": "none", "policy_version": "none"}
VALID_VARIANT: dict[str, Any] = {
    "name": "baseline",
    "suite": "suite.yaml",
    "model": "openai/fuzz-model",
    "api_base": "http://127.0.0.1:9/v1",
    "api_key_env": "FUZZ_KEY",
    "params": {"temperature": 0, "max_tokens": 64, "seed": 7, "stop": ["\n\n"],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    "prompt": {"system_file": "prompts/system.j2", "user": "{{ question }}"},
    "timeout_s": 5,
    "pricing": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
    "versions": dict(LABELS),
    "retrieval": {"k": 3},
    "policy": {"strict": True},
    "rollout": {"change": "fuzz", "canary_cohorts": ["c1"]},
}
VALID_SUITE: dict[str, Any] = {
    "name": "fuzz",
    "cases": ["../cases"],
    "samples": 1,
    "concurrency": 2,
    "max_attempts": 2,
    "backoff": {"initial_s": 0.01, "max_s": 0.05, "multiplier": 2},
    "report_dir": "../reports",
    "seed": 0,
    "max_response_chars": 1000,
    "gate": {"alpha": 0.05, "on_inconclusive": "fail", "max_error_rate": 0.01,
             "critical_cohorts": ["c1"], "rules": {"pass_rate": {"margin": -0.05}, "cost_ratio": {"enabled": False}}},
}
VALID_CASES: dict[str, Any] = {
    "defaults": {"cohort": "c1", "tags": ["t"]},
    "cases": [
        {"id": "a1", "kind": "representative", "vars": {"question": "q1"},
         "expect": [{"contains": {"value": "x"}}, "json", {"regex": {"pattern": "^a", "flags": "i"}}]},
        {"id": "a2", "kind": "format_sensitive", "vars": {"question": "q2"},
         "expect": [{"json_schema": {"schema_file": "schemas/s.json"}}, {"max_chars": {"limit": 50}}]},
        {"id": "a3", "kind": "known_bad", "cohort": "c2",
         "messages": [{"role": "user", "content": "hi"}], "expect": [{"tool_call": {"name": "f", "required": False}}]},
    ],
}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}

def _expect_model_or_user_error(fn: Callable[[], object]) -> None:
    try:
        result = fn()
    except UserInputError as exc:
        assert str(exc).strip(), "a UserInputError must say what is wrong"
        return
    assert result is not None


# --------------------------------------------------------------------------- strategies

# No surrogates (not writable as UTF-8). NUL stays in: paths with NUL bytes are a fixed bug.
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
_SCALARS = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | _TEXT
    | st.sampled_from(["", "none", "~", "null", "yes", "../cases", "../../../../etc", "/etc/hostname",
                       "schemas/s.json", "{{ question }}", "{{ nope }}", "{% if %}", "([a-z", "local/x"])
)
# String keys only: mixed-type keys are a known bug (tested below).
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)

_YAML_BITS = st.sampled_from([
    "name: x", "model: m", "cases:", "cases: [../cases]", "- ", "  ", "\n", "\t", "[", "]", "{", "}", ": ", ", ",
    "&a ", "*a", "!!binary ", "!!set ", "!!str ", "!!int ", "!!float ", "!!timestamp ", "!!omap ", "? ", "---",
    "...", "%YAML 1.1", "#", "'", '"', "|", ">", "id: a1", "kind: known_bad", "cohort: c", "vars: {q: 1}",
    "expect: [json]", "versions:", "prompt: {user: hi}", "defaults:", "\ufeff", "é", "\u2028", "<<: *a", "2001-12-14",
    "0x1F", "1e400", ".nan", "-.inf", "null", "~", "=",
])
YAMLISH = st.lists(_YAML_BITS | _TEXT, max_size=30).map("".join)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """``valid`` with 1–3 random mutations: delete, replace, add an unknown key, re-type."""
    doc: Any = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap", "stringify", "empty"]))
        new: Any
        if op == "replace":
            new = draw(_VALUES)
        elif op == "wrap":
            new = [_get(doc, path)]
        elif op == "stringify":
            new = json.dumps(_get(doc, path))
        elif op == "empty":
            new = type(_get(doc, path))() if isinstance(_get(doc, path), dict | list | str) else None
        if not path:  # the document itself
            doc = draw(_VALUES) if op in ("replace", "delete") else new if op != "add" else doc
            continue
        parent = _get(doc, path[:-1])
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "add":
            target = _get(doc, path)
            if isinstance(target, dict):
                target[draw(_TEXT)] = draw(_VALUES)
            elif isinstance(target, list):
                target.append(draw(_VALUES))
        else:
            parent[key] = new
    return doc


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder whose files each example overwrites."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "evals" / "prompts").mkdir(parents=True)
    (root / "evals" / "prompts" / "system.j2").write_text("You are terse. {{ case.id }}", encoding="utf-8")
    (root / "cases" / "schemas").mkdir(parents=True)
    (root / "cases" / "schemas" / "s.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    return root


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _all_loaders(workdir: Path, content: str | bytes) -> None:
    variant = _write(workdir / "evals" / "fuzz_variant.yaml", content)
    suite = _write(workdir / "evals" / "fuzz_suite.yaml", content)
    cases = _write(workdir / "cases" / "fuzz_cases.yaml", content)
    _expect_model_or_user_error(lambda: load_variant(variant))
    _expect_model_or_user_error(lambda: load_suite(suite))
    _expect_model_or_user_error(lambda: load_case_file(cases))
    cases.unlink()


# --------------------------------------------------------------------------- fuzz tests


@FUZZ
@given(text=YAMLISH)
def test_yamlish_text(workdir: Path, text: str) -> None:
    _all_loaders(workdir, text)


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(workdir: Path, data: bytes) -> None:
    _all_loaders(workdir, data)


@FUZZ
@given(doc=_VALUES)
def test_arbitrary_documents(workdir: Path, doc: Any) -> None:
    _all_loaders(workdir, _dump(doc))


@pytest.mark.slow
@FUZZ
@given(doc=mutated(VALID_VARIANT))
def test_mutated_variant(workdir: Path, doc: Any) -> None:
    path = _write(workdir / "evals" / "fuzz_variant.yaml", _dump(doc))
    _expect_model_or_user_error(lambda: load_variant(path))


@FUZZ
@given(doc=mutated(VALID_SUITE))
def test_mutated_suite(workdir: Path, doc: Any) -> None:
    path = _write(workdir / "evals" / "fuzz_suite.yaml", _dump(doc))
    _expect_model_or_user_error(lambda: load_suite(path))


@FUZZ
@given(doc=mutated(VALID_CASES), jsonl=st.booleans())
def test_mutated_case_file(workdir: Path, doc: Any, jsonl: bool) -> None:
    if jsonl:
        cases = doc.get("cases") if isinstance(doc, dict) else doc
        lines = [json.dumps(c) for c in cases] if isinstance(cases, list) else [json.dumps(cases)]
        path = _write(workdir / "cases" / "fuzz_cases.jsonl", "\n".join(lines) + "\n")
    else:
        path = _write(workdir / "cases" / "fuzz_cases.yaml", _dump(doc))
    try:
        _expect_model_or_user_error(lambda: load_case_file(path))
    finally:
        path.unlink()


@FUZZ
@given(
    which=st.sampled_from(["baseline", "candidate", "suite", "cases"]),
    data=st.data(),
)
@pytest.mark.slow
def test_mutated_project(workdir: Path, which: str, data: st.DataObject) -> None:
    """One of the four files of a valid project mutated: load_project validates it all."""
    docs: dict[str, Any] = {
        "baseline": VALID_VARIANT,
        "candidate": {**VALID_VARIANT, "name": "candidate"},
        "suite": VALID_SUITE,
        "cases": VALID_CASES,
    }
    docs[which] = data.draw(mutated(docs[which]), label=which)
    evals = workdir / "evals"
    b = _write(evals / "baseline.yaml", _dump(docs["baseline"]))
    c = _write(evals / "candidate.yaml", _dump(docs["candidate"]))
    _write(evals / "suite.yaml", _dump(docs["suite"]))
    _write(workdir / "cases" / "cases.yaml", _dump(docs["cases"]))
    _expect_model_or_user_error(lambda: api.load_project(b, c))


def test_valid_seeds_load(workdir: Path) -> None:
    """The seeds the mutations start from are valid (otherwise the fuzz proves little)."""
    evals = workdir / "evals"
    b = _write(evals / "baseline.yaml", _dump(VALID_VARIANT))
    c = _write(evals / "candidate.yaml", _dump({**VALID_VARIANT, "name": "candidate"}))
    _write(evals / "suite.yaml", _dump(VALID_SUITE))
    _write(workdir / "cases" / "cases.yaml", _dump(VALID_CASES))
    project = api.load_project(b, c)
    assert [case.id for case in project.cases] == ["a1", "a2", "a3"]


# --------------------------------------------------------------------------- regressions (found by fuzzing, fixed)


def test_regression_mixed_key_types_case_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "cases.yaml", "1: one\nextra: two\ncases: []\n")
    with pytest.raises(UserInputError):
        load_case_file(path)


def test_regression_mixed_key_types_gate_rules(tmp_path: Path) -> None:
    path = _write(tmp_path / "suite.yaml", "cases: [x]\ngate:\n  rules:\n    bogus: {}\n    5: {}\n")
    with pytest.raises(UserInputError):
        load_suite(path)


@pytest.mark.parametrize(
    "text",
    [
        "cases: " + "[" * 3000 + "]" * 3000,  # RecursionError
        "cases: [x]\nseed: !!int many",  # ValueError
        "cases: [x]\nseed: !!int ",  # IndexError
        "cases: [x]\nname: !!timestamp soon",  # AttributeError
        "cases: [x]\nname: !!bool maybe",  # KeyError
        "cases: [x]\nname: 2023-02-30",  # ValueError: an impossible date, no tag needed
    ],
    ids=["deep-nesting", "int-tag", "empty-int-tag", "timestamp-tag", "bool-tag", "impossible-date"],
)
def test_regression_yaml_errors_escape(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "suite.yaml", text + "\n")
    with pytest.raises(UserInputError):
        load_suite(path)


def test_regression_deeply_nested_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "cases.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UserInputError):
        load_case_file(path)


def test_regression_nul_byte_in_path(tmp_path: Path) -> None:
    doc = {**VALID_VARIANT, "prompt": {"system_file": "prompts/a\x00b.j2", "user": "hi"}}
    path = _write(tmp_path / "variant.yaml", _dump(doc))
    with pytest.raises(UserInputError):
        load_variant(path)
