"""summary.json has a shipped JSON Schema, typed models, and real outputs obey both."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest
from tests.projectkit import case, variant, write_project

from evalrun import api
from evalrun.analysis.summary_model import (
    SUMMARY_FORMAT_VERSION,
    Summary,
    shipped_schema_text,
    summary_schema,
)
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.testing import FakeProvider, fake_response


def test_the_shipped_schema_is_the_models_schema() -> None:
    """src/evalrun/schemas/summary.schema.json is regenerated whenever the models change."""
    assert json.loads(shipped_schema_text()) == summary_schema()


def _script(req: ProviderRequest) -> ProviderResponse | ProviderError:
    meta = req.metadata
    k, side = int(meta["case_id"][1:]), meta["side"]
    rng = random.Random(f"{k}{side}{meta['sample']}")
    if k % 7 == 0 and side == "candidate" and meta["sample"] == 1:
        return ProviderError("server_error", "boom", retryable=False)
    if meta["kind"] == "known_bad":
        text = "I can't help with that." if side == "candidate" or k % 2 else "Sure, here is how"
    elif meta["kind"] == "format_sensitive":
        text = '{"a": 1}' if side == "candidate" or rng.random() < 0.5 else 'here: {"a": 1}'
    else:
        text = "ok" if rng.random() < 0.9 else "I can't help with that."
    return fake_response(text, prompt_tokens=10 + k, completion_tokens=5 + k % 5, cost_usd=0.001 * (1 + k % 3),
                         cost_status="priced")


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """summary.json of real compares: K = 2 with a critical cohort and errors; an A/A run; a
    sequential run; a run whose only model is unpriced and nothing measures a format."""
    root = tmp_path_factory.mktemp("schema")
    kinds = ("representative", "known_bad", "format_sensitive")
    cases = [case(f"c{i:02d}", kind=kinds[i % 3], cohort=f"co{i % 3}",
                  **({"expect": [{"json_schema": {"schema": {"type": "object"}}}]} if i % 3 == 2 else {}))
             for i in range(24)]
    cand = variant("candidate", prompt={"system": "v2", "user": "{{ question }}"})
    out = []
    b, c = write_project(root / "k2", cases=cases, candidate=cand,
                         suite={"samples": 2, "gate": {"critical_cohorts": ["co1"], "max_error_rate": 0.5}})
    out.append(api.compare(api.load_project(b, c), provider=FakeProvider(_script), run_dir=root / "k2" / "run",
                           cache="off").summary)
    out.append(api.compare(api.load_project(b, b), provider=FakeProvider(_script), run_dir=root / "k2" / "aa",
                           cache="off").summary)
    out.append(api.compare_sequential(api.load_project(b, c), provider=FakeProvider(_script),
                                      run_dir=root / "k2" / "seq", cache="off", look_every=6).summary)
    b2, c2 = write_project(root / "plain", cases=[case(f"p{i}") for i in range(3)])
    out.append(api.compare(api.load_project(b2, c2), provider=FakeProvider(), run_dir=root / "plain" / "run",
                           cache="off").summary)
    return out


def test_real_summaries_validate_against_the_shipped_schema(summaries: list[dict[str, Any]]) -> None:
    schema = json.loads(shipped_schema_text())
    validator = jsonschema.Draft202012Validator(schema)
    for summary in summaries:
        errors = sorted(validator.iter_errors(summary), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # The runs cover the optional parts of the shape: K > 1 (flaky cases), a critical cohort,
    # errors by kind, the sequential block, an A/A run.
    assert summaries[0]["flaky"] and summaries[0]["slices"]["cohort"]["co1"]["critical"]
    assert summaries[0]["calls"]["candidate"]["errors_by_kind"] == {"server_error": 4}
    assert "sequential" in summaries[2] and summaries[1]["run"]["aa_mode"]


def test_the_typed_summary_round_trips_exactly(summaries: list[dict[str, Any]]) -> None:
    for summary in summaries:
        typed = Summary.of(summary)
        assert typed.to_json() == summary
        assert typed.format_version == SUMMARY_FORMAT_VERSION
        assert typed.verdict.status == summary["verdict"]["status"]


def test_schema_drift_is_caught(summaries: list[dict[str, Any]]) -> None:
    """A field the models do not know (or a wrong type) fails validation, in the schema and the models."""
    drifted = json.loads(json.dumps(summaries[0]))
    drifted["metrics"][0]["surprise"] = 1
    validator = jsonschema.Draft202012Validator(json.loads(shipped_schema_text()))
    assert list(validator.iter_errors(drifted))
    with pytest.raises(ValueError, match="surprise"):
        Summary.of(drifted)
    wrong = json.loads(json.dumps(summaries[0]))
    wrong["verdict"]["status"] = "MAYBE"
    assert list(validator.iter_errors(wrong))
