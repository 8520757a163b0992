"""Private partition selection (rewriter.partition_selection).

The privacy inequalities are checked exactly, in Fractions, with a lower
bound on exp(epsilon) computed here independently of the module. The
statistical tests use seeded `random.Random` and state their false alarm
rate (the chance a correct implementation fails, over seeds) in each
docstring.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from pgshroud.rewriter.mechanisms import DiscreteGaussian, DiscreteLaplace
from pgshroud.rewriter.partition_selection import (
    NoisyThresholdSelection,
    TruncatedGeometricSelection,
    threshold_for,
)

ALPHA = 1e-4

CONFIGS = [
    (1.0, 1e-5, 1),
    (0.1, 1e-7, 10),
    (5.0, 0.01, 1),
    (0.5, 1e-6, 3),
    (Fraction(1, 3), Fraction(1, 10**9), 2),
    (20.0, 1e-10, 1),
]
IDS = [f"eps={float(e):g},delta={float(d):g},k={k}" for e, d, k in CONFIGS]


def exp_below(x: Fraction) -> Fraction:
    """A rational <= exp(x) for x >= 0, independent of the module's decimals.

    A partial sum of exp's Taylor series has only positive terms, so it is
    below exp(x); summing until the terms drop under 1e-80 of the total makes
    it tighter than the module's own bound (about 1e-58 relative), as it must
    be for the optimal probabilities to pass.
    """
    assert x >= 0
    total, term, i = Fraction(0), Fraction(1), 0
    while term > total * Fraction(1, 10**80) or i <= x:
        total += term
        i += 1
        term = term * x / i
    return total


class NoRandomness:
    def getrandbits(self, k):
        raise AssertionError("an empty or certain partition needs no randomness")


@pytest.mark.parametrize("epsilon,delta,k", CONFIGS, ids=IDS)
def test_keep_probability_shape(epsilon, delta, k):
    selection = TruncatedGeometricSelection(epsilon, delta, k)
    top = selection.always_kept_from
    ps = [selection.keep_probability(n) for n in range(top + 3)]
    assert ps[0] == 0
    assert all(isinstance(p, Fraction) and 0 <= p <= 1 for p in ps)
    assert all(a <= b for a, b in itertools.pairwise(ps))
    assert ps[top] == 1 and ps[top - 1] < 1
    assert ps[top + 2] == 1 and selection.keep_probability(10**12) == 1
    assert ps[1] == Fraction(math.floor(Fraction(delta) / k * 2**128), 2**128)


@pytest.mark.parametrize("epsilon,delta,k", CONFIGS, ids=IDS)
def test_keep_probability_is_epsilon_delta_private_per_partition(epsilon, delta, k):
    """All four (epsilon/k, delta/k) inequalities between n and n+1, for every n, exactly."""
    selection = TruncatedGeometricSelection(epsilon, delta, k)
    e = exp_below(Fraction(epsilon) / k)
    d = Fraction(delta) / k
    ps = [selection.keep_probability(n) for n in range(selection.always_kept_from + 2)]
    for p, q in itertools.pairwise(ps):  # p = p(n), q = p(n+1)
        assert q <= e * p + d  # keeping: adding a unit
        assert p <= e * q + d  # keeping: removing a unit
        assert 1 - p <= e * (1 - q) + d  # dropping: adding a unit
        assert 1 - q <= e * (1 - p) + d  # dropping: removing a unit


def _dvgm_closed_form(epsilon: float, delta: float, n: int) -> float:
    """DVGM 2022 Theorem 1 as Google's PreaggPartitionSelection writes it."""
    c1 = 1 + math.floor(math.log1p(math.tanh(epsilon / 2) * (1 / delta - 1)) / epsilon)

    def p(m: float) -> float:
        if m == 0:
            return 0.0
        if m <= c1:
            return math.expm1(m * epsilon) / math.expm1(epsilon) * delta
        pc = p(c1)
        return min(1.0, pc - (1 - pc + delta / math.expm1(epsilon)) * math.expm1(-(m - c1) * epsilon))

    return p(n)


@pytest.mark.parametrize("epsilon,delta,k", CONFIGS, ids=IDS)
def test_keep_probability_is_the_optimal_one(epsilon, delta, k):
    """Within rounding of DVGM's closed form: the fixed point only ever rounds down."""
    selection = TruncatedGeometricSelection(epsilon, delta, k)
    e, d = float(epsilon) / k, float(delta) / k
    for n in range(selection.always_kept_from + 2):
        ours, theirs = float(selection.keep_probability(n)), _dvgm_closed_form(e, d, n)
        assert ours <= theirs * (1 + 1e-9) + 1e-15
        assert ours >= theirs * (1 - 1e-9) - 1e-15 or theirs >= 1 - 1e-9 and ours >= 1 - 2e-9


@pytest.mark.parametrize("n", [4, 6, 7, 8])
def test_keep_frequencies_match_keep_probability(n):
    """Exact two-sided binomial test of 20k draws at each n; false alarm rate 1e-4 per n."""
    selection = TruncatedGeometricSelection(1, 1e-3, 1)
    p = selection.keep_probability(n)
    assert 0.01 < p < 0.99
    rng = random.Random(500 + n)
    kept = sum(selection.should_keep(n, rng) for _ in range(20_000))
    assert stats.binomtest(kept, 20_000, float(p)).pvalue >= ALPHA


def test_empty_partitions_are_never_kept():
    selection = TruncatedGeometricSelection(10, 0.5, 1)
    assert selection.keep_probability(0) == 0
    assert not any(selection.should_keep(0, NoRandomness()) for _ in range(100))
    assert selection.should_keep(selection.always_kept_from, NoRandomness())
    threshold = NoisyThresholdSelection(DiscreteLaplace(Fraction(1, 10)), 0.5, 1)
    assert threshold.select(0, NoRandomness()) is None
    assert not threshold.should_keep(0, NoRandomness())


def test_default_rng_draws_from_secrets(monkeypatch):
    import secrets

    calls = []
    real = secrets.randbits
    monkeypatch.setattr(secrets, "randbits", lambda k: calls.append(k) or real(k))
    selection = TruncatedGeometricSelection(1, 1e-3, 1)
    selection.should_keep(5)
    NoisyThresholdSelection(DiscreteLaplace(Fraction(2)), 1e-3).should_keep(5)
    assert len(calls) >= 2


def test_selection_refuses_bad_parameters():
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        TruncatedGeometricSelection(0, 1e-6)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        TruncatedGeometricSelection(-1, 1e-6)
    for delta in (0, 1, -1e-6, 1.5):
        with pytest.raises(ValueError, match="delta must be in"):
            TruncatedGeometricSelection(1, delta)
        with pytest.raises(ValueError, match="delta must be in"):
            threshold_for(DiscreteLaplace(Fraction(1)), delta, 1)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_partitions"):
            TruncatedGeometricSelection(1, 1e-6, k)
        with pytest.raises(ValueError, match="max_partitions"):
            threshold_for(DiscreteLaplace(Fraction(1)), 1e-6, k)
    with pytest.raises(ValueError, match="declare the group keys public"):
        TruncatedGeometricSelection(0.001, 1e-12, 100)
    selection = TruncatedGeometricSelection(1, 1e-6)
    with pytest.raises(ValueError, match="n_units must be >= 0"):
        selection.keep_probability(-1)
    with pytest.raises(TypeError):
        selection.should_keep(2.0)
    with pytest.raises(ValueError, match="noiseless"):
        threshold_for(DiscreteLaplace(Fraction(0)), 1e-6, 1)
    with pytest.raises(ValueError, match="noiseless"):
        threshold_for(DiscreteGaussian(Fraction(0)), 1e-6, 1)


def test_budget_splits_over_partitions():
    """k partitions per unit: each partition gets epsilon/k and delta/k."""
    one = TruncatedGeometricSelection(Fraction(1, 5), Fraction(1, 10**6), 1)
    four = TruncatedGeometricSelection(Fraction(4, 5), Fraction(4, 10**6), 4)
    assert one.always_kept_from == four.always_kept_from
    assert all(one.keep_probability(n) == four.keep_probability(n) for n in range(one.always_kept_from + 1))


# --- noisy thresholds -------------------------------------------------------

def laplace_tail(scale: Fraction, t: int) -> float:
    """P(Z >= t) for the discrete Laplace, from scipy."""
    return float(stats.dlaplace.sf(t - 1, 1 / float(scale)))


def gaussian_tail(sigma2: Fraction, t: int) -> float:
    s2 = float(sigma2)
    reach = math.ceil(40 * math.sqrt(s2)) + 40
    xs = np.arange(-reach, reach + 1)
    weights = np.exp(-(xs.astype(float) ** 2) / (2 * s2))
    return float(weights[xs >= t].sum() / weights.sum())


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(1), Fraction(10), Fraction(1000, 3)])
@pytest.mark.parametrize("delta,k", [(1e-6, 1), (1e-6, 10), (1e-9, 3), (0.05, 1), (0.6, 1)])
def test_laplace_threshold_is_the_smallest_valid_one(scale, delta, k):
    tau = threshold_for(DiscreteLaplace(scale), delta, k)
    assert k * laplace_tail(scale, tau - 1) <= delta * (1 + 1e-12)
    assert k * laplace_tail(scale, tau - 2) > delta * (1 - 1e-12)


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(1), Fraction(50), Fraction(10**4)])
@pytest.mark.parametrize("delta,k", [(1e-6, 1), (1e-6, 10), (1e-9, 3), (0.05, 1)])
def test_gaussian_threshold_is_valid_and_nearly_smallest(sigma2, delta, k):
    tau = threshold_for(DiscreteGaussian(sigma2), delta, k)
    assert k * gaussian_tail(sigma2, tau - 1) <= delta
    # The tail bound may cost one step over the exact minimum, not two.
    assert k * gaussian_tail(sigma2, tau - 3) > delta


def test_thresholds_grow_as_delta_shrinks_and_partitions_grow():
    for mech in (DiscreteLaplace(Fraction(5)), DiscreteGaussian(Fraction(25))):
        taus = [threshold_for(mech, d, 1) for d in (1e-2, 1e-4, 1e-6, 1e-8)]
        assert taus == sorted(taus) and taus[0] < taus[-1]
        taus = [threshold_for(mech, 1e-6, k) for k in (1, 10, 100, 1000)]
        assert taus == sorted(taus) and taus[0] < taus[-1]


@pytest.mark.parametrize("mech", [DiscreteLaplace(Fraction(2)), DiscreteGaussian(Fraction(4))])
def test_single_unit_partitions_are_kept_at_most_delta_of_the_time(mech):
    """A partition of one unit, 40k draws: keep frequency against the exact
    P(noise >= tau - 1) <= delta by an exact two-sided binomial test; false
    alarm rate 1e-4."""
    delta = 0.05
    selection = NoisyThresholdSelection(mech, delta, 1)
    if isinstance(mech, DiscreteLaplace):
        p = laplace_tail(mech.scale, selection.threshold - 1)
    else:
        p = gaussian_tail(mech.sigma2, selection.threshold - 1)
    assert p <= delta
    rng = random.Random(77)
    kept = sum(selection.should_keep(1, rng) for _ in range(40_000))
    assert stats.binomtest(kept, 40_000, p).pvalue >= ALPHA


def test_noisy_threshold_releases_the_noisy_count_it_tested():
    mech = DiscreteLaplace.for_epsilon(1, 3)
    selection = NoisyThresholdSelection(mech, 1e-6, 3)
    assert selection.count_loss() == 3 * mech.map(1) == 1
    rng = random.Random(8)
    released = [selection.select(selection.threshold + 10, rng) for _ in range(500)]
    assert all(r is None or r >= selection.threshold for r in released)
    assert sum(r is not None for r in released) > 400
    gauss = NoisyThresholdSelection(DiscreteGaussian.for_rho(Fraction(1, 2), 1), 1e-6, 4)
    assert gauss.count_loss() == 2  # rho over 4 partitions: 4 * 1/2
