"""Seeded simulations of the judge statistics: coverage and error rates, with more repetitions than the tests.

Run: ``python benchmarks/judge_coverage.py [--reps N]`` (pure numpy; ~3 min at the default).

Prints four tables (nominal two-sided confidence 90 %, the gate's 1 − 2α at α = 0.05):

1. one side's corrected pass rate — coverage of the true rate: evalrun's interval (Lang &
   Reiczigel) against three alternatives implemented here for comparison only — Fieller's
   interval for (q + Sp − 1)/(Se + Sp − 1) on the same adjusted counts, a parametric
   percentile bootstrap drawn from them, and the textbook Rogan–Gladen Wald (``delta``);
2. the paired corrected difference (same judge on both sides, cases correlated, K judge
   samples per output) — coverage of Δ_true; how often a true regression of exactly the
   margin (10 points) PASSes non-inferiority (must be ≤ 5 %); how often an unchanged
   candidate FAILs (≤ 5 %); and how often the *uncorrected* judge rule PASSes that
   regression;
3. agreement intervals at calibration sizes — κ (ours: Jeffreys–Dirichlet; plain Wald) and
   Youden's J (Newcombe);
4. pairwise net preference — A/A FAIL rate with and without position bias, and the power
   to find a real net loss.

Monte Carlo standard error of a coverage near 0.90 is sqrt(0.09/reps) (0.0067 at 2,000).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np

from evalrun.judging import (
    ErrorRates,
    PairOutcome,
    binary_agreement,
    case_score,
    combine_orders,
    corrected_difference,
    corrected_rate,
    net_preference,
    parse_pairwise_answer,
)
from evalrun.judging._proportion import adjusted, z_two_sided
from evalrun.judging.agreement import kappa_variance
from evalrun.judging.correction import _fieller

CONFIDENCE = 0.90
MARGIN = 0.10


def _judge(rng: np.random.Generator, truth: np.ndarray, se: float, sp: float, samples: int) -> np.ndarray:
    return rng.binomial(samples, np.where(truth, se, 1 - sp)) / samples


def _delta(shares: np.ndarray, rates: ErrorRates, z: float) -> tuple[float, float]:
    """The textbook Rogan–Gladen Wald interval (plug-in variances)."""
    n, q = shares.size, float(np.mean(shares))
    se, sp = rates.sensitivity, rates.specificity
    j = se + sp - 1.0
    if j <= 0.0:
        return 0.0, 1.0
    p = (q + sp - 1.0) / j
    var = (q * (1 - q) / n + p * p * se * (1 - se) / rates.human_pass
           + (1 - p) ** 2 * sp * (1 - sp) / rates.human_fail) / (j * j)
    return max(0.0, p - z * math.sqrt(var)), min(1.0, p + z * math.sqrt(var))


def _fieller_rate(shares: np.ndarray, rates: ErrorRates, z: float) -> tuple[float, float]:
    """Fieller's interval for (q + Sp − 1)/(Se + Sp − 1), the numerator and denominator sharing Sp."""
    q, v_q = adjusted(float(np.sum(shares)), shares.size, z * z)
    se, v_se, sp, v_sp = rates.adjusted()
    low, high = _fieller(q + sp - 1.0, se + sp - 1.0, v_q + v_sp, v_se + v_sp, v_sp, z)
    if low is None or high is None:
        return 0.0, 1.0
    return max(0.0, low), min(1.0, high)


def _bootstrap(rng: np.random.Generator, shares: np.ndarray, rates: ErrorRates, z: float) -> tuple[float, float]:
    """Parametric percentile bootstrap drawn from the adjusted estimates (1,000 replicates)."""
    n = shares.size
    q0, _ = adjusted(float(np.sum(shares)), n, z * z)
    se0, _, sp0, _ = rates.adjusted()
    q = rng.binomial(n, q0, 1000) / n
    se = rng.binomial(rates.human_pass, se0, 1000) / rates.human_pass
    sp = rng.binomial(rates.human_fail, sp0, 1000) / rates.human_fail
    j = se + sp - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(j > 0.0, np.clip((q + sp - 1.0) / j, 0.0, 1.0), np.nan)
    tail = (1.0 - CONFIDENCE) / 2.0
    return (float(np.quantile(np.where(np.isnan(p), 0.0, p), tail)),
            float(np.quantile(np.where(np.isnan(p), 1.0, p), 1.0 - tail)))


def rate_table(rng: np.random.Generator, reps: int) -> None:
    """Table 1: corrected rate coverage, evalrun's interval against the alternatives."""
    methods = ("lang_reiczigel", "fieller", "bootstrap", "delta")
    z = z_two_sided(CONFIDENCE)
    print("\n1. corrected pass rate of one side: coverage of the true rate (nominal 0.90)")
    print(f"{'p':>5} {'Se':>5} {'Sp':>5} {'n':>4} {'cal':>7} " + " ".join(f"{m:>15}" for m in methods))
    worst = dict.fromkeys(methods, 1.0)
    for p, (se, sp), n, cal in itertools.product((0.05, 0.3, 0.6, 0.9), ((0.9, 0.9), (0.95, 0.75), (0.8, 0.95)),
                                                 (64, 300), (20, 60)):
        hits = dict.fromkeys(methods, 0)
        for _ in range(reps):
            shares = _judge(rng, rng.random(n) < p, se, sp, 1)
            rates = ErrorRates(rng.binomial(cal, se), cal, rng.binomial(cal, sp), cal)
            ours = corrected_rate(shares, rates, confidence=CONFIDENCE)
            intervals = {
                "lang_reiczigel": (ours.ci_low, ours.ci_high),
                "fieller": _fieller_rate(shares, rates, z),
                "bootstrap": _bootstrap(rng, shares, rates, z),
                "delta": _delta(shares, rates, z),
            }
            for m, (low, high) in intervals.items():
                hits[m] += low <= p <= high  # type: ignore[operator]
        print(f"{p:>5} {se:>5} {sp:>5} {n:>4} {cal:>3}+{cal:<3} " + " ".join(f"{hits[m] / reps:>15.3f}" for m in methods))
        for m in methods:
            worst[m] = min(worst[m], hits[m] / reps)
    print("lowest: " + ", ".join(f"{m} {v:.3f}" for m, v in worst.items()))


def _paired(rng: np.random.Generator, n: int, p_base: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    discordant = 0.2
    p10, p01 = (discordant - delta) / 2, (discordant + delta) / 2
    p11 = p_base - p10
    cell = rng.choice(4, size=n, p=[p11, p10, p01, 1 - p11 - p10 - p01])
    return cell <= 1, (cell == 0) | (cell == 2)


def difference_table(rng: np.random.Generator, reps: int) -> None:
    """Table 2: the paired corrected difference."""
    print(f"\n2. paired corrected difference (Fieller): true Δ = −{MARGIN:g} (exactly the margin) and Δ = 0")
    print(f"{'p_base':>6} {'Se':>5} {'Sp':>5} {'n':>4} {'cal':>7} {'K':>2} {'coverage':>9} {'NI pass':>8} "
          f"{'A/A FAIL':>9} {'uncorrected NI pass':>20}")
    worst = {"coverage": 1.0, "ni": 0.0, "aa": 0.0}
    for pb, (se, sp), n, cal, k in itertools.product((0.5, 0.85), ((0.9, 0.9), (0.95, 0.75), (0.75, 0.75)),
                                                     (64, 300), (20, 60), (1, 3)):
        cover = ni = aa = naive = 0
        for _ in range(reps):
            rates = ErrorRates(rng.binomial(cal, se), cal, rng.binomial(cal, sp), cal)
            base, cand = _paired(rng, n, pb, -MARGIN)
            jb, jc = _judge(rng, base, se, sp, k), _judge(rng, cand, se, sp, k)
            diff = corrected_difference(jb, jc, rates, confidence=CONFIDENCE)
            cover += diff.ci_low <= -MARGIN <= diff.ci_high  # type: ignore[operator]
            ni += diff.ci_low > -MARGIN  # type: ignore[operator]
            naive += corrected_difference(jb, jc, None, confidence=CONFIDENCE).ci_low > -MARGIN  # type: ignore[operator]
            b0, c0 = _paired(rng, n, pb, 0.0)
            p0 = corrected_difference(_judge(rng, b0, se, sp, k), _judge(rng, c0, se, sp, k), rates).p_value(0.0)
            aa += p0 is not None and p0 < 0.05
        row = (cover / reps, ni / reps, aa / reps, naive / reps)
        worst = {"coverage": min(worst["coverage"], row[0]), "ni": max(worst["ni"], row[1]),
                 "aa": max(worst["aa"], row[2])}
        print(f"{pb:>6} {se:>5} {sp:>5} {n:>4} {cal:>3}+{cal:<3} {k:>2} {row[0]:>9.3f} {row[1]:>8.3f} "
              f"{row[2]:>9.3f} {row[3]:>20.3f}")
    print(f"lowest coverage {worst['coverage']:.3f}; highest NI pass at the margin {worst['ni']:.3f}; "
          f"highest A/A FAIL {worst['aa']:.3f}")


def agreement_table(rng: np.random.Generator, reps: int) -> None:
    """Table 3: κ and J interval coverage at calibration sizes."""
    print("\n3. agreement intervals: coverage of the true κ and J (nominal 0.90)")
    print(f"{'prev':>5} {'Se':>5} {'Sp':>5} {'n':>4} {'true κ':>7} {'κ ours':>7} {'κ Wald':>7} {'J Newcombe':>11}")
    z = z_two_sided(CONFIDENCE)
    lows = [1.0, 1.0, 1.0]
    for prev, se, sp, n in itertools.product((0.5, 0.25), (0.97, 0.8), (0.95, 0.7), (40, 100)):
        p = np.array([[prev * se, prev * (1 - se)], [(1 - prev) * (1 - sp), (1 - prev) * sp]])
        p_e = float(np.sum(p.sum(1) * p.sum(0)))
        true_kappa, true_j = (np.trace(p) - p_e) / (1 - p_e), se + sp - 1
        ours = wald = youden = total = 0
        for _ in range(reps):
            tp, fn, fp, tn = (int(c) for c in rng.multinomial(n, p.ravel()))
            a = binary_agreement([True] * (tp + fn) + [False] * (fp + tn),
                                 [1.0] * tp + [0.0] * fn + [1.0] * fp + [0.0] * tn, confidence=CONFIDENCE)
            k, var = kappa_variance(np.array([[tp, fn], [fp, tn]], dtype=float))
            if a.kappa.value is None or a.youden.value is None or k is None or var is None:
                continue
            total += 1
            ours += a.kappa.ci_low <= true_kappa <= a.kappa.ci_high  # type: ignore[operator]
            wald += k - z * var**0.5 <= true_kappa <= k + z * var**0.5
            youden += a.youden.ci_low <= true_j <= a.youden.ci_high  # type: ignore[operator]
        row = (ours / total, wald / total, youden / total)
        lows = [min(a, b) for a, b in zip(lows, row, strict=True)]
        print(f"{prev:>5} {se:>5} {sp:>5} {n:>4} {true_kappa:>7.2f} {row[0]:>7.3f} {row[1]:>7.3f} {row[2]:>11.3f}")
    print(f"lowest: κ ours {lows[0]:.3f}, κ Wald {lows[1]:.3f}, J Newcombe {lows[2]:.3f}")


def _pair(first: str, second: str) -> PairOutcome:
    pair = combine_orders(parse_pairwise_answer(f'{{"winner": "{first}"}}', order="baseline_first"),
                          parse_pairwise_answer(f'{{"winner": "{second}"}}', order="candidate_first"))
    assert isinstance(pair, PairOutcome)
    return pair


def _net_p(rng: np.random.Generator, n: int, p_win: float, p_loss: float, bias: float, k: int) -> float | None:
    truth = rng.choice(3, size=n, p=[p_win, p_loss, 1 - p_win - p_loss])
    scores = []
    for t in truth:
        pairs = []
        for _ in range(k):
            answers = []
            for candidate_is_a in (False, True):
                if rng.random() < bias:
                    answers.append("A")
                elif t == 2:
                    answers.append("tie")
                else:
                    answers.append("A" if (t == 0) == candidate_is_a else "B")
            pairs.append(_pair(*answers))
        score = case_score(pairs)
        assert score is not None
        scores.append(score)
    return net_preference(scores, confidence=CONFIDENCE).p_value(0.0)


def pairwise_table(rng: np.random.Generator, reps: int) -> None:
    """Table 4: pairwise net preference error rates."""
    print("\n4. pairwise net preference: FAIL rate (net evidently below 0, p < 0.05)")
    print(f"{'n':>4} {'K':>2} {'bias':>5} {'A/A (20/20/60)':>15} {'net loss (10/40/50)':>20}")
    for n, k, bias in itertools.product((30, 100), (1, 3), (0.0, 0.4)):
        aa = sum((p := _net_p(rng, n, 0.2, 0.2, bias, k)) is not None and p < 0.05 for _ in range(reps))
        loss = sum((p := _net_p(rng, n, 0.1, 0.4, bias, k)) is not None and p < 0.05 for _ in range(reps // 4))
        print(f"{n:>4} {k:>2} {bias:>5} {aa / reps:>15.3f} {loss / (reps // 4):>20.3f}")


def main() -> int:
    """Run every table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=2000, help="repetitions per configuration")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--tables", default="1,2,3,4")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    print(f"reps {args.reps} per configuration, seed {args.seed}, confidence {CONFIDENCE}")
    tables = {"1": rate_table, "2": difference_table, "3": agreement_table, "4": pairwise_table}
    for key in args.tables.split(","):
        tables[key.strip()](rng, args.reps)
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
