"""The run's statistics never import scipy.stats, and give exactly what scipy.stats gives.

``scipy.stats`` costs ~45 MB of memory and ~0.4 s of start-up in every run; evalrun needs
three of its functions (t.ppf, binom.cdf/sf, binomtest), which are thin wrappers around
``scipy.special``. ``evalrun.analysis.stats`` calls the same special functions with the
same support rules; these tests compare the results bit for bit over the whole range a
run meets.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binom, binomtest
from scipy.stats import t as t_dist

from evalrun.analysis import stats


def test_binomial_test_equals_scipy_bit_for_bit() -> None:
    for n in range(1, 161):
        for k in range(n + 1):
            assert stats.binom_test_two_sided(k, n) == binomtest(k, n, 0.5).pvalue, (k, n)
    for n in (257, 1000, 4099, 10_000):
        for k in sorted({0, 1, n // 3, n // 2 - 1, n // 2, n // 2 + 1, n - 1, n}):
            assert stats.binom_test_two_sided(k, n) == binomtest(k, n, 0.5).pvalue, (k, n)
    for p in (0.1, 0.37):
        for n in (7, 50):
            for k in range(n + 1):
                assert stats.binom_test_two_sided(k, n, p) == binomtest(k, n, p).pvalue, (k, n, p)


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 1 - 2 * 0.025])
def test_t_quantile_equals_scipy(confidence: float) -> None:
    for df in [*range(1, 200), 500, 1000, 9999, 100_000]:
        assert stats._t_two_sided(confidence, df) == float(t_dist.ppf(0.5 + 0.5 * confidence, df))


def test_binomial_tails_equal_scipy() -> None:
    for n in (2, 3, 10, 99, 1000, 20_000):
        for q in (0.01, 0.5, 0.9, 0.95, 0.99):
            j = np.arange(n)
            ours = [stats._binom_cdf(float(x), n, q) for x in j[:: max(1, n // 97)]]
            assert ours == list(binom.cdf(j[:: max(1, n // 97)], n, q))
            assert [stats._binom_sf(float(x), n, q) for x in j[:: max(1, n // 97)]] == list(
                binom.sf(j[:: max(1, n // 97)], n, q))
            # order_statistic_ranks evaluates both tails over the whole support at once.
            from scipy.special import _ufuncs

            full = np.arange(n).astype(np.float64)
            assert np.array_equal(np.clip(_ufuncs._binom_cdf(full, n, q), 0, 1), binom.cdf(np.arange(n), n, q))
            assert np.array_equal(np.clip(_ufuncs._binom_sf(full, n, q), 0, 1), binom.sf(np.arange(n), n, q))


def test_the_statistics_of_a_run_never_load_scipy_stats() -> None:
    code = (
        "import sys, numpy as np\n"
        "from evalrun.analysis import stats\n"
        "stats.paired_binary(np.array([1,0,1,1,0]*20, bool), np.array([1,1,0,1,1]*20, bool), 0.9)\n"
        "stats._t_two_sided(0.9, 30); stats.order_statistic_ranks(200, 0.95, 0.9)\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
