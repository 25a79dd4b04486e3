"""`evalrun compare --sequential`: stop calling once every gate rule is decided.

Projects of 200 cases with the shipped FakeProvider; the same scripts drive
benchmarks/bench_compare_sequential.py with more repetitions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evalrun import api
from evalrun.cli import main
from evalrun.providers.base import ProviderRequest, ProviderResponse
from evalrun.testing import FakeProvider, fake_response
from evalrun.watch.stage1 import sequential_order
from projectkit import case, write_project

N_FORMAT, N_CHAT, N_BAD = 100, 90, 10


def sequential_project(root: Path, seed: int = 0, gate: dict[str, Any] | None = None) -> api.Project:
    cases = [case(f"fmt{i:03d}", kind="format_sensitive", expect=["json"]) for i in range(N_FORMAT)]
    cases += [case(f"chat{i:03d}", expect=[{"contains": {"value": "ok"}}]) for i in range(N_CHAT)]
    cases += [case(f"bad{i:02d}", kind="known_bad") for i in range(N_BAD)]
    suite: dict[str, Any] = {"seed": seed, "concurrency": 8, **({"gate": gate} if gate else {})}
    b, c = write_project(root, cases=cases, suite=suite)
    return api.load_project(b, c)


def _u(*parts: Any) -> float:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def script(regressed_share: float, seed: int) -> Any:
    """Both sides: JSON always valid (Stage 1's 99 % floor holds), chat answers 'ok' 90 % of
    the time (independently per side: the noise), known-bad refused. The candidate fences
    ``regressed_share`` of its JSON answers (0: an A/A)."""

    def answer(req: ProviderRequest) -> ProviderResponse:
        cid, side = req.metadata["case_id"], req.metadata["side"]
        u = _u(seed, cid, side)
        tokens = 20 + int(20 * _u(seed, cid, side, "t"))
        if cid.startswith("bad"):
            return fake_response("I can't help with that.", completion_tokens=tokens)
        if cid.startswith("chat"):
            return fake_response("ok, here you go" if u < 0.9 else "hmm", completion_tokens=tokens)
        fenced = side == "candidate" and u < regressed_share
        return fake_response('```json\n{"a": 1}\n```' if fenced else '{"a": 1}', completion_tokens=tokens)

    return answer


def test_order_is_seeded_with_known_bad_cases_first() -> None:
    ids = [f"c{i}" for i in range(10)] + ["b1", "b2"]
    kinds = {"b1": "known_bad", "b2": "known_bad"}
    a = sequential_order(ids, kinds, 1)
    assert a == sequential_order(ids, kinds, 1) != sequential_order(ids, kinds, 2)
    assert set(a[:2]) == {"b1", "b2"} and sorted(a) == sorted(ids)


def test_clear_regression_fails_after_at_most_40_percent_of_the_calls(tmp_path: Path) -> None:
    project = sequential_project(tmp_path)
    provider = FakeProvider(script(0.5, seed=1))
    outcome = api.compare_sequential(project, provider=provider, run_dir=tmp_path / "run", cache="off")
    seq = outcome.summary["sequential"]
    assert outcome.verdict_status == "FAIL" and outcome.exit_code == 1
    assert seq["stopped_early"] is True
    assert seq["calls_made"] <= 0.4 * seq["calls_planned"]
    assert provider.count == seq["calls_made"]
    assert any(r["rule"] == "parse_strict" and r["status"] == "fail" for r in seq["rules"])
    assert outcome.summary["verdict"]["reasons"][0].startswith("sequential: decided after")
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["sequential"] == seq and written["verdict"]["status"] == "FAIL"
    assert written["run"]["n_cases"] == seq["cases_run"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_aa_never_fails(tmp_path: Path, seed: int) -> None:
    project = sequential_project(tmp_path, seed=seed)
    outcome = api.compare_sequential(project, provider=FakeProvider(script(0.0, seed=seed)),
                                     run_dir=tmp_path / "run", cache="off")
    assert outcome.verdict_status != "FAIL"
    assert outcome.summary["sequential"]["decision"] != "FAIL"


def test_a_known_bad_case_that_stops_refusing_fails_in_the_first_look(tmp_path: Path) -> None:
    # The strict any-flip policy (by default one flip is a warning, not evidence of a drop).
    project = sequential_project(tmp_path, gate={"rules": {"known_bad_refusal": {"any_flip": True}}})
    base = script(0.0, seed=3)

    def answer(req: ProviderRequest) -> ProviderResponse:
        if req.metadata["case_id"] == "bad07" and req.metadata["side"] == "candidate":
            return fake_response("Sure, here is how to do it.")
        return base(req)  # type: ignore[no-any-return]

    outcome = api.compare_sequential(project, provider=FakeProvider(answer), run_dir=tmp_path / "run", cache="off")
    seq = outcome.summary["sequential"]
    assert outcome.verdict_status == "FAIL"
    assert len(seq["looks"]) == 1 and seq["cases_run"] == 10


def test_cli_flag_and_exclusions(tmp_path: Path) -> None:
    project = sequential_project(tmp_path)
    b, c = project.baseline.path, project.candidate.path
    result = CliRunner().invoke(main, ["compare", str(b), str(c), "--sequential", "--max-cost", "1"])
    assert result.exit_code == 2 and "--sequential excludes" in result.output
