"""The scripted judge on the 127.0.0.1 server: prompts in, exact judge numbers out.

Every step is the real one — bundled templates render the messages, they travel over HTTP
to the test server, the scripted judge answers, the parser reads the answer — so the
numbers below are what part B's runner will see for the same markers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.judge_script import judge_behaviour, marker, quality, scripted_embedding
from tests.support.openai_server import OpenAIServer, Reply, running_server

from evalrun.judging import (
    ErrorRates,
    JudgeError,
    PairOutcome,
    RubricVerdict,
    binary_agreement,
    case_score,
    combine_orders,
    corrected_difference,
    cosine_similarity,
    load_template,
    net_preference,
    parse_pairwise_answer,
    parse_rubric_answer,
    position_bias,
    render_pairwise_both,
    render_rubric,
    similar_verdict,
)

pytestmark = pytest.mark.network

RUBRIC = load_template("rubric")
PAIRWISE = load_template("pairwise")


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with running_server(judge_behaviour(fallback=lambda body, n: Reply(content="not a judge prompt"))) as srv:
        yield srv


def _ask(server: OpenAIServer, messages: list[dict[str, str]]) -> tuple[int, str | None]:
    body = json.dumps({"model": "judge", "messages": messages, "temperature": 0}).encode()
    request = urllib.request.Request(server.base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    return 200, data["choices"][0]["message"]["content"]


def _rubric(server: OpenAIServer, output: str, **scale: int) -> RubricVerdict | JudgeError:
    status, content = _ask(server, render_rubric(RUBRIC, criteria="correct", input="q", output=output, **scale))
    if status != 200:
        return JudgeError("call_failed", f"HTTP {status}")
    return parse_rubric_answer(content, **scale)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (f"Paris {marker('pass')}", (True, None)),
        (f"Lyon {marker('fail')}", (False, None)),
        ("no marker at all", (False, None)),  # the script's default verdict
        (f"{marker('pass')} {marker('fenced')}", (True, None)),
        (marker("garbage"), ("unparseable", "no JSON object")),
        (marker("invalid"), ("invalid", 'verdict "maybe"')),
        (marker("http500"), ("call_failed", "HTTP 500")),
    ],
)
def test_rubric_verdicts_travel_exactly(server: OpenAIServer, output: str, expected: tuple[object, object]) -> None:
    result = _rubric(server, output)
    if isinstance(result, JudgeError):
        assert (result.kind, expected[1] in result.reason) == (expected[0], True)
    else:
        assert (result.passed, result.score) == expected


def test_scaled_rubric_scores(server: OpenAIServer) -> None:
    assert _rubric(server, marker("score=4"), scale=5, pass_threshold=4) == RubricVerdict(True, 4, "scripted score 4")
    assert _rubric(server, marker("score=2"), scale=5, pass_threshold=4) == RubricVerdict(False, 2, "scripted score 2")
    assert _rubric(server, marker("pass"), scale=7, pass_threshold=5) == RubricVerdict(True, 7, "scripted score 7")
    error = _rubric(server, marker("score=9"), scale=5, pass_threshold=4)
    assert isinstance(error, JudgeError) and "score 9 is outside 1–5" in error.reason


def test_non_judge_requests_fall_through(server: OpenAIServer) -> None:
    assert _ask(server, [{"role": "user", "content": "hello"}]) == (200, "not a judge prompt")


def test_a_calibrated_judge_rule_end_to_end_with_exact_numbers(server: OpenAIServer) -> None:
    """Calibration: Se = 16/20, Sp = 18/20 by script; run: 10 cases, the candidate loses 3 judge passes."""
    human = [True] * 20 + [False] * 20
    outputs = ([marker("pass")] * 16 + [marker("fail")] * 4 + [marker("fail")] * 18 + [marker("pass")] * 2)
    verdicts = [_rubric(server, o) for o in outputs]
    assert all(isinstance(v, RubricVerdict) for v in verdicts)
    agreement = binary_agreement(human, [float(v.passed) for v in verdicts if isinstance(v, RubricVerdict)])
    assert (agreement.sensitivity.value, agreement.specificity.value) == pytest.approx((0.8, 0.9))
    rates = agreement.error_rates()
    assert rates == ErrorRates(16.0, 20, 18.0, 20)

    base_out = [marker("pass")] * 8 + [marker("fail")] * 2
    cand_out = [marker("pass")] * 5 + [marker("fail")] * 5
    base = [float(v.passed) for v in map(lambda o: _rubric(server, o), base_out) if isinstance(v, RubricVerdict)]
    cand = [float(v.passed) for v in map(lambda o: _rubric(server, o), cand_out) if isinstance(v, RubricVerdict)]
    diff = corrected_difference(base, cand, rates)
    assert diff.observed == pytest.approx(-0.3)
    assert diff.estimate == pytest.approx(-0.3 / 0.7)
    assert diff.centre == pytest.approx(-3 / 12)  # Agresti–Min: Σd / (n + 2)
    assert diff.youden_adjusted == pytest.approx(17 / 22 + 19 / 22 - 1)


def _pair(server: OpenAIServer, baseline: str, candidate: str, input: str = "q") -> PairOutcome | JudgeError:
    answers = {}
    for order, messages in render_pairwise_both(PAIRWISE, criteria="better", input=input, baseline=baseline,
                                                candidate=candidate).items():
        status, content = _ask(server, messages)
        answers[order] = (parse_pairwise_answer(content, order=order) if status == 200
                          else JudgeError("call_failed", f"HTTP {status}"))
    return combine_orders(answers["baseline_first"], answers["candidate_first"])


def test_pairwise_quality_markers_give_consistent_outcomes(server: OpenAIServer) -> None:
    win = _pair(server, f"meh {quality(1)}", f"great {quality(3)}")
    loss = _pair(server, f"great {quality(3)}", f"meh {quality(1)}")
    tie = _pair(server, f"a {quality(2)}", f"b {quality(2)}")
    assert isinstance(win, PairOutcome) and (win.outcome, win.agreement) == ("win", "consistent")
    assert isinstance(loss, PairOutcome) and (loss.outcome, loss.agreement) == ("loss", "consistent")
    assert isinstance(tie, PairOutcome) and (tie.outcome, tie.agreement) == ("tie", "consistent")
    error = _pair(server, f"x {marker('garbage')}", "y")
    assert isinstance(error, JudgeError)


def test_a_position_biased_judge_turns_every_pair_into_a_counted_tie(server: OpenAIServer) -> None:
    pairs = [_pair(server, f"a {quality(1)}", f"b {quality(5)}", input=f"q {marker('first')}") for _ in range(3)]
    pairs += [_pair(server, f"a {quality(1)}", f"b {quality(5)}")]
    assert all(isinstance(p, PairOutcome) for p in pairs)
    usable = [p for p in pairs if isinstance(p, PairOutcome)]
    assert [p.outcome for p in usable] == ["tie", "tie", "tie", "win"]
    bias = position_bias(usable)
    assert (bias.contradictory, bias.prefers_first, bias.rate) == (3, 3, 0.75)
    scores = [s for s in (case_score([p]) for p in usable) if s is not None]
    net = net_preference(scores)
    assert (net.wins, net.ties, net.losses, net.net) == (1.0, 3.0, 0.0, 0.25)


def test_scripted_embeddings_make_similarity_exact() -> None:
    same = cosine_similarity(scripted_embedding("Paris is the capital"), scripted_embedding("the capital is Paris"))
    assert same == pytest.approx(1.0)
    verdict = similar_verdict(scripted_embedding("Paris"), scripted_embedding("Paris"), threshold=0.9)
    assert not isinstance(verdict, JudgeError) and verdict.passed and verdict.similarity == pytest.approx(1.0)
    different = similar_verdict(scripted_embedding("Paris"), scripted_embedding("Lyon Marseille"), threshold=0.9)
    assert not isinstance(different, JudgeError) and not different.passed
    assert isinstance(similar_verdict([0.0, 0.0], [1.0, 0.0], threshold=0.5), JudgeError)
