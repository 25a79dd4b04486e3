"""A variant may spread its calls over several deployments with a litellm Router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.openai_server import OpenAIServer, Reply

from evalrun import api
from projectkit import case, variant, write_project

pytestmark = pytest.mark.network


def test_router_spreads_calls_over_deployments_and_keys_stay_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALRUN_KEY_EU", "sk-evalrun-EU-key-0000001")
    monkeypatch.setenv("EVALRUN_KEY_US", "sk-evalrun-US-key-0000002")
    with OpenAIServer() as eu, OpenAIServer() as us:
        eu.behaviour = lambda req, n: Reply(content='{"from": "eu"}', prompt_tokens=11, completion_tokens=3)
        us.behaviour = lambda req, n: Reply(content='{"from": "us"}', prompt_tokens=11, completion_tokens=3)
        router = {
            "routing_strategy": "simple-shuffle",
            "deployments": [
                {"model": "openai/gpt-4o-mini", "api_base": eu.base_url, "api_key_env": "EVALRUN_KEY_EU", "rpm": 600},
                {"model": "openai/gpt-4o-mini", "api_base": us.base_url, "api_key_env": "EVALRUN_KEY_US", "rpm": 600},
            ],
        }
        common = {"model": "shop-gpt", "router": router, "params": {"max_tokens": 20}, "timeout_s": 5}
        cases = [case(f"c{i:02d}", kind="format_sensitive", expect=["json"]) for i in range(20)]
        b, c = write_project(tmp_path, cases=cases, baseline=variant("baseline", **common),
                             candidate=variant("candidate", **common))
        outcome = api.compare(api.load_project(b, c), run_dir=tmp_path / "run", cache="off")
        assert eu.count + us.count == 40
        assert eu.count > 0 and us.count > 0  # both deployments served
        assert set(eu.authorizations) == {"Bearer sk-evalrun-EU-key-0000001"}
        assert set(us.authorizations) == {"Bearer sk-evalrun-US-key-0000002"}
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().split("\n") if x]
    assert all(r["error_kind"] is None and r["cost_status"] == "priced" for r in rows)
    assert outcome.summary["metrics"][1]["baseline"]["value"] == 1.0  # strict parse
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert "sk-evalrun-EU" not in text and "sk-evalrun-US" not in text, f


def test_router_deployment_key_missing_is_could_not_measure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALRUN_KEY_NOPE", raising=False)
    router = {"deployments": [{"model": "openai/x", "api_base": "http://127.0.0.1:9/v1", "api_key_env": "EVALRUN_KEY_NOPE"}]}
    b, c = write_project(tmp_path, baseline=variant("baseline", model="grp", router=router))
    from evalrun.errors import CouldNotMeasureError

    with pytest.raises(CouldNotMeasureError) as info:
        api.check_environment(api.load_project(b, c))
    assert "router.deployments[0].api_key_env" in str(info.value)
