"""Measure the embedded model (local/smollm2, SmolLM2-135M) as a judge on the bundled calibration set.

Run: ``python benchmarks/judge_agreement.py`` (needs the ``[local]`` extra; no network, no key).

For each prompt variant the model grades the 40 rubric items of
``src/evalrun/judging/data/shop_assistant_calibration.yaml`` (temperature 0, seeded) and the
script prints its agreement with the human labels — accuracy, Cohen's κ, sensitivity,
specificity and Youden's J, each with its 90 % interval — the judge errors, whether the
default reliability policy would let its rules decide, and what the Rogan–Gladen
correction can make of it. Then the bundled pairwise prompt on the 12 pairwise items, in
both orders: agreement with the human preferences and the position-bias rate.

Variants (``--variants``):

* ``bundled`` — the shipped rubric prompt, free-form answer;
* ``bundled+schema`` — the same prompt with ``response_format`` set to the shipped answer
  schema (``reason`` before ``verdict``; llama.cpp constrains decoding with a grammar);
* ``verdict-first+schema`` — the same, with ``verdict`` before ``reason`` in the schema;
* ``fewshot+schema`` — ``benchmarks/judge_prompts/rubric_fewshot.j2`` (two worked examples,
  loaded as a user template) with the shipped schema.

``--json PATH`` writes every answer for closer reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalrun.judging import (
    BUNDLED_CALIBRATION,
    JudgeError,
    JudgeTemplate,
    PairOutcome,
    RubricVerdict,
    answer_schema,
    combine_orders,
    corrected_rate,
    load_calibration,
    load_template,
    parse_pairwise_answer,
    parse_rubric_answer,
    position_bias,
    render_pairwise_both,
    render_rubric,
    response_format,
    rubric_reliability,
    score_pairwise_calibration,
    score_rubric_calibration,
)
from evalrun.judging.agreement import Estimate
from evalrun.providers import local
from evalrun.providers.base import ProviderRequest

HERE = Path(__file__).resolve().parent
MODEL = "local/smollm2"
PARAMS: dict[str, Any] = {"temperature": 0, "seed": 7, "max_tokens": 80}


def _verdict_first_schema() -> dict[str, Any]:
    schema = answer_schema("rubric")
    props = schema["properties"]
    return {**schema, "properties": {"verdict": props["verdict"], "reason": props["reason"]},
            "required": ["verdict", "reason"]}


VARIANTS: dict[str, tuple[Callable[[], JudgeTemplate], dict[str, Any] | None]] = {
    "bundled": (lambda: load_template("rubric"), None),
    "bundled+schema": (lambda: load_template("rubric"), response_format(answer_schema("rubric"))),
    "verdict-first+schema": (lambda: load_template("rubric"), response_format(_verdict_first_schema())),
    "fewshot+schema": (lambda: load_template("rubric", HERE / "judge_prompts" / "rubric_fewshot.j2"),
                       response_format(answer_schema("rubric"))),
}


def _fmt(est: Estimate, pct: bool = True) -> str:
    if est.value is None or est.ci_low is None or est.ci_high is None:
        return "n/a"
    if pct:
        return f"{est.value * 100:5.1f}% [{est.ci_low * 100:5.1f}, {est.ci_high * 100:5.1f}]"
    return f"{est.value:+.2f} [{est.ci_low:+.2f}, {est.ci_high:+.2f}]"


def main() -> int:
    """Run the measurement and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names")
    parser.add_argument("--no-pairwise", action="store_true", help="skip the pairwise measurement")
    parser.add_argument("--json", type=Path, help="write every judge answer to this file")
    args = parser.parse_args()
    if not local.local_extra_available():
        print("the [local] extra is not installed: pip install -e '.[local]'", file=sys.stderr)
        return 2
    provider = local.LocalProvider()  # the embedded model's own provider (no litellm)

    cal = load_calibration(BUNDLED_CALIBRATION)
    passed = sum(i.human_passed for i in cal.rubric)
    print(f"calibration set: {len(cal.rubric)} rubric items ({passed} pass, {len(cal.rubric) - passed} fail), "
          f"{len(cal.pairwise)} pairwise items; judge {MODEL}, params {PARAMS}")
    records: list[dict[str, Any]] = []

    def ask(messages: list[dict[str, str]], fmt: dict[str, Any] | None) -> tuple[str, str | None, float]:
        started = time.monotonic()
        extra = {"response_format": fmt} if fmt is not None else {}
        request = ProviderRequest(model=MODEL, messages=list(messages), params={**PARAMS, **extra}, timeout_s=300)
        answer = asyncio.run(provider.complete(request))
        return answer.output or "", answer.finish_reason, time.monotonic() - started

    summary: list[tuple[str, float, float]] = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        make, fmt = VARIANTS[name]
        template = make()
        verdicts: dict[str, list[RubricVerdict | JudgeError]] = {}
        seconds = 0.0
        for item in cal.rubric:
            text, finish, took = ask(render_rubric(template, criteria=item.criteria, input=item.input,
                                                   output=item.output), fmt)
            seconds += took
            verdict = parse_rubric_answer(text, finish_reason=finish)
            verdicts[item.id] = [verdict]
            records.append({"variant": name, "item": item.id, "human": item.human, "answer": text,
                            "parsed": verdict.passed if isinstance(verdict, RubricVerdict) else
                            f"error: {verdict.reason}"})
        scored = score_rubric_calibration(cal.rubric, verdicts)
        a = scored.agreement
        reliability = rubric_reliability(a, calibration_errors=scored.errors)
        print(f"\n== {name}  ({seconds / len(cal.rubric):.2f} s per judge call)")
        print(f"  judge errors      {scored.errors} of {len(cal.rubric)}"
              + (f" ({', '.join(scored.error_ids[:4])}{'…' if scored.errors > 4 else ''})" if scored.errors else ""))
        print(f"  confusion         human pass: judge pass {a.true_pass:.0f}, fail {a.false_fail:.0f}; "
              f"human fail: judge pass {a.false_pass:.0f}, fail {a.true_fail:.0f}")
        print(f"  judge pass rate   {(a.judge_pass_rate or 0) * 100:.1f}% (humans: {(a.human_pass_rate or 0) * 100:.1f}%)")
        print(f"  accuracy          {_fmt(a.accuracy)}")
        print(f"  sensitivity       {_fmt(a.sensitivity)}")
        print(f"  specificity       {_fmt(a.specificity)}")
        print(f"  Cohen's kappa     {_fmt(a.kappa, pct=False)}")
        print(f"  Youden's J        {_fmt(a.youden, pct=False)}")
        print(f"  reliability       {reliability.status}: may PASS {reliability.may_pass}, may FAIL "
              f"{reliability.may_fail}" + (f"\n                    ({reliability.reason})" if reliability.reason else ""))
        rates = a.error_rates()
        if rates is not None:
            demo = corrected_rate([1.0] * 32 + [0.0] * 32, rates)
            bound = f"[{demo.ci_low * 100:.0f}%, {demo.ci_high * 100:.0f}%]" if demo.bounded else "unbounded ([0%, 100%])"
            est = "none (J ≤ 0)" if demo.estimate is None else f"{demo.estimate * 100:.0f}%"
            print(f"  correction demo   an apparent 50% of 64 cases -> corrected {est}, interval {bound}")
        summary.append((name, a.youden.value if a.youden.value is not None else -9.0,
                        a.accuracy.value if a.accuracy.value is not None else 0.0))

    if summary:
        best = max(summary, key=lambda s: (s[1], s[2]))
        print(f"\nbest variant by Youden's J (then accuracy): {best[0]} (J {best[1]:+.2f}, accuracy {best[2] * 100:.1f}%)")

    if not args.no_pairwise:
        template = load_template("pairwise")
        fmt = response_format(answer_schema("pairwise"))
        outcomes: dict[str, list[PairOutcome | JudgeError]] = {}
        seconds = 0.0
        for item in cal.pairwise:
            answers = {}
            for order, messages in render_pairwise_both(template, criteria=item.criteria, input=item.input,
                                                        baseline=item.output_a, candidate=item.output_b).items():
                text, finish, took = ask(messages, fmt)
                seconds += took
                answers[order] = parse_pairwise_answer(text, order=order, finish_reason=finish)
                records.append({"variant": "pairwise+schema", "item": item.id, "order": order, "human": item.human,
                                "answer": text})
            outcomes[item.id] = [combine_orders(answers["baseline_first"], answers["candidate_first"])]
        scored_pairs = score_pairwise_calibration(cal.pairwise, outcomes)
        usable = [o for v in outcomes.values() for o in v if isinstance(o, PairOutcome)]
        bias = position_bias(usable)
        pa = scored_pairs.agreement
        print(f"\n== pairwise (bundled prompt + schema, both orders; {seconds / (2 * len(cal.pairwise)):.2f} s per call)")
        print(f"  judge errors      {scored_pairs.errors} of {len(cal.pairwise)} pairs")
        print(f"  accuracy          {_fmt(pa.accuracy)}  (baseline / candidate / tie, vs the human preference)")
        print(f"  Cohen's kappa     {_fmt(pa.kappa, pct=False)}")
        if bias.rate is not None:
            print(f"  position bias     {bias.inconsistent} of {bias.pairs} pairs order-inconsistent "
                  f"({bias.rate * 100:.0f}% [{bias.ci_low * 100:.0f}, {bias.ci_high * 100:.0f}]); contradictory "
                  f"{bias.contradictory}: first position {bias.prefers_first}, second {bias.prefers_second}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"\nanswers written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
