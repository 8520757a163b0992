"""Exact samplers and noise mechanisms (rewriter.mechanisms).

Statistical tests draw from `random.Random` with fixed seeds, so each one
passes or fails the same way on every run. Each docstring states the false
alarm rate: the probability that a correct sampler fails the test, over the
choice of seed. With 1e-4 per test and about 40 such tests, a correct
implementation fails some seed with probability below 0.5%; a failure after
a change to the samplers is a real signal, not flakiness.
"""

from __future__ import annotations

import functools
import math
import random
import secrets
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from pgshroud.rewriter import mechanisms
from pgshroud.rewriter.mechanisms import (
    SYSTEM_RNG,
    DiscreteGaussian,
    DiscreteLaplace,
    SystemRng,
    bernoulli_exp,
    float_up,
    grid_sensitivity,
    margin_of_error,
    release_real,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    sample_geometric_exp,
    zcdp_to_approx_dp,
)

ALPHA = 1e-4  # false alarm rate of each statistical test
Z_TWO_SIDED = stats.norm.isf(ALPHA / 2)  # 3.89

N = 100_000

# (parameter, seed): small, non-integer, float-derived and large scales.
LAPLACE_SCALES = {
    "1/3": (Fraction(1, 3), 11),
    "for_epsilon(0.3)": (DiscreteLaplace.for_epsilon(0.3, 1).scale, 12),
    "40": (Fraction(40), 13),
}
GAUSSIAN_SIGMA2 = {
    "1/5": (Fraction(1, 5), 21),
    "3/2": (Fraction(3, 2), 22),
    "250": (Fraction(250), 23),
}


@functools.cache
def laplace_draws(name: str) -> np.ndarray:
    scale, seed = LAPLACE_SCALES[name]
    rng = random.Random(seed)
    return np.array([sample_discrete_laplace(scale, rng) for _ in range(N)])


@functools.cache
def gaussian_draws(name: str) -> np.ndarray:
    sigma2, seed = GAUSSIAN_SIGMA2[name]
    rng = random.Random(seed)
    return np.array([sample_discrete_gaussian(sigma2, rng) for _ in range(N)])


def laplace_pmf(scale: Fraction) -> tuple[np.ndarray, np.ndarray]:
    a = 1 / float(scale)
    reach = math.ceil(80 / a) + 5  # tail mass beyond is below exp(-80)
    xs = np.arange(-reach, reach + 1)
    return xs, stats.dlaplace.pmf(xs, a)


def gaussian_pmf(sigma2: Fraction) -> tuple[np.ndarray, np.ndarray]:
    s2 = float(sigma2)
    reach = math.ceil(14 * math.sqrt(s2)) + 5  # tail mass beyond is below exp(-98)
    xs = np.arange(-reach, reach + 1)
    weights = np.exp(-(xs.astype(float) ** 2) / (2 * s2))
    return xs, weights / weights.sum()


def merged_chisquare(samples: np.ndarray, xs: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square p-value of `samples` against `pmf` on `xs`.

    Bins are merged left to right until each expects at least 5 draws;
    a short last bin joins the one before it. Draws outside xs (mass below
    1e-30) land in the end bins.
    """
    n = len(samples)
    clipped = np.clip(samples, xs[0], xs[-1])
    observed_by_x = np.bincount(clipped - xs[0], minlength=len(xs))
    expected, observed = [], []
    acc_e = acc_o = 0.0
    for e, o in zip(pmf * n, observed_by_x):
        acc_e += e
        acc_o += o
        if acc_e >= 5:
            expected.append(acc_e)
            observed.append(acc_o)
            acc_e = acc_o = 0.0
    expected[-1] += acc_e
    observed[-1] += acc_o
    expected = np.array(expected)
    expected *= n / expected.sum()
    assert len(expected) >= 2
    return stats.chisquare(observed, expected).pvalue


# --- samplers -------------------------------------------------------------

@pytest.mark.parametrize("name", LAPLACE_SCALES)
def test_discrete_laplace_fits_its_pmf(name):
    """Chi-square goodness of fit, 100k draws; false alarm rate 1e-4."""
    scale, _ = LAPLACE_SCALES[name]
    xs, pmf = laplace_pmf(scale)
    assert merged_chisquare(laplace_draws(name), xs, pmf) >= ALPHA


@pytest.mark.parametrize("name", GAUSSIAN_SIGMA2)
def test_discrete_gaussian_fits_its_pmf(name):
    """Chi-square goodness of fit, 100k draws; false alarm rate 1e-4."""
    sigma2, _ = GAUSSIAN_SIGMA2[name]
    xs, pmf = gaussian_pmf(sigma2)
    assert merged_chisquare(gaussian_draws(name), xs, pmf) >= ALPHA


@pytest.mark.parametrize("gamma", [Fraction(1, 3), Fraction(2), Fraction(7, 5)])
def test_geometric_fits_its_pmf(gamma):
    """Chi-square goodness of fit, 30k draws; false alarm rate 1e-4."""
    rng = random.Random(31 + gamma.numerator)
    draws = np.array([sample_geometric_exp(gamma, rng) for _ in range(30_000)])
    assert draws.min() >= 0
    q = math.exp(-float(gamma))
    xs = np.arange(0, math.ceil(80 / float(gamma)) + 5)
    assert merged_chisquare(draws, xs, (1 - q) * q**xs) >= ALPHA


def _moments(xs: np.ndarray, pmf: np.ndarray) -> tuple[float, float]:
    variance = float(np.sum(pmf * xs.astype(float) ** 2))
    fourth = float(np.sum(pmf * xs.astype(float) ** 4))
    return variance, fourth


def _check_mean_and_variance(draws: np.ndarray, xs: np.ndarray, pmf: np.ndarray) -> None:
    n = len(draws)
    variance, fourth = _moments(xs, pmf)
    mean_z = draws.mean() / math.sqrt(variance / n)
    assert abs(mean_z) < Z_TWO_SIDED
    sample_variance = np.mean(draws.astype(float) ** 2)  # the mean is known to be 0
    variance_z = (sample_variance - variance) / math.sqrt((fourth - variance**2) / n)
    assert abs(variance_z) < Z_TWO_SIDED


@pytest.mark.parametrize("name", LAPLACE_SCALES)
def test_discrete_laplace_mean_and_variance(name):
    """z-tests of mean 0 and of the exact variance 2q/(1-q)**2, 100k draws.

    False alarm rate about 2e-4 (two z-tests at 1e-4, normal approximation).
    """
    scale, _ = LAPLACE_SCALES[name]
    q = math.exp(-1 / float(scale))
    xs, pmf = laplace_pmf(scale)
    assert _moments(xs, pmf)[0] == pytest.approx(2 * q / (1 - q) ** 2, rel=1e-9)
    _check_mean_and_variance(laplace_draws(name), xs, pmf)


@pytest.mark.parametrize("name", GAUSSIAN_SIGMA2)
def test_discrete_gaussian_mean_and_variance(name):
    """z-tests of mean 0 and of the exact variance (below sigma2), 100k draws.

    False alarm rate about 2e-4 (two z-tests at 1e-4, normal approximation).
    """
    sigma2, _ = GAUSSIAN_SIGMA2[name]
    xs, pmf = gaussian_pmf(sigma2)
    assert _moments(xs, pmf)[0] <= float(sigma2) * (1 + 1e-12)  # below sigma2 (CKS 2020)
    _check_mean_and_variance(gaussian_draws(name), xs, pmf)


@pytest.mark.parametrize("draws", [
    pytest.param(lambda name=name: laplace_draws(name), id=f"laplace-{name}") for name in LAPLACE_SCALES
] + [
    pytest.param(lambda name=name: gaussian_draws(name), id=f"gaussian-{name}") for name in GAUSSIAN_SIGMA2
])
def test_samplers_are_symmetric(draws):
    """Sign and mirror symmetry on 100k draws; false alarm rate about 2e-4.

    Among nonzero draws the positives are Binomial(n, 1/2) (exact binomial
    test at 1e-4), and |x| has the same histogram on both sides (chi-square
    test of homogeneity at 1e-4).
    """
    values = draws()
    positive, nonzero = int((values > 0).sum()), int((values != 0).sum())
    assert stats.binomtest(positive, nonzero, 0.5).pvalue >= ALPHA
    # And the shape is mirrored: |x| has the same histogram on both sides.
    upper = np.bincount(values[values > 0])
    lower = np.bincount(-values[values < 0], minlength=len(upper))[: len(upper)]
    enough = upper + lower >= 10
    assert stats.chi2_contingency(np.vstack([upper[enough], lower[enough]]))[1] >= ALPHA


@pytest.mark.parametrize("gamma", [Fraction(1, 10), Fraction(1, 2), Fraction(1), Fraction(3, 2),
                                   Fraction(10, 3), Fraction(7)])
def test_bernoulli_exp_frequency(gamma):
    """Exact two-sided binomial test of the frequency against exp(-gamma), 40k draws.

    False alarm rate 1e-4.
    """
    rng = random.Random(41 + gamma.numerator * 7 + gamma.denominator)
    hits = sum(bernoulli_exp(gamma, rng) for _ in range(40_000))
    assert stats.binomtest(hits, 40_000, math.exp(-float(gamma))).pvalue >= ALPHA


def test_bernoulli_exp_of_zero_is_certain():
    class NoRandomness:
        def getrandbits(self, k):
            raise AssertionError("exp(0) = 1 needs no randomness")

    assert all(bernoulli_exp(0, NoRandomness()) for _ in range(10))
    assert bernoulli_exp(Fraction(0, 5), NoRandomness())


def test_samplers_take_only_exact_rationals():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        bernoulli_exp(Fraction(-1, 2))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        sample_discrete_laplace(-1)
    with pytest.raises(ValueError, match="sigma2 must be >= 0"):
        sample_discrete_gaussian(Fraction(-1))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        sample_geometric_exp(0)
    with pytest.raises(ValueError, match="finite"):
        sample_discrete_laplace(math.nan)
    with pytest.raises(ValueError, match="finite"):
        sample_discrete_gaussian(math.inf)
    with pytest.raises(TypeError):
        sample_discrete_laplace("1")
    with pytest.raises(TypeError):
        sample_discrete_laplace(True)
    assert sample_discrete_laplace(0) == 0
    assert sample_discrete_gaussian(0) == 0


# --- the production source of randomness ----------------------------------

def test_default_rng_is_the_os_csprng(monkeypatch):
    """Without an rng argument every draw goes through secrets.randbits."""
    assert isinstance(SYSTEM_RNG, SystemRng)
    assert not hasattr(SYSTEM_RNG, "seed")
    assert "random" not in vars(mechanisms)  # the module never imports random

    calls = []
    real = secrets.randbits

    def counting(k):
        calls.append(k)
        return real(k)

    monkeypatch.setattr(secrets, "randbits", counting)
    for draw in (
        lambda: sample_discrete_laplace(Fraction(5, 2)),
        lambda: sample_discrete_gaussian(Fraction(9)),
        lambda: bernoulli_exp(Fraction(1, 2)),
        lambda: sample_geometric_exp(Fraction(1, 3)),
        lambda: DiscreteLaplace(Fraction(3)).release(10),
        lambda: DiscreteGaussian(Fraction(3)).release(10),
        lambda: release_real(1.25, Fraction(1, 4), DiscreteLaplace(Fraction(2))),
    ):
        before = len(calls)
        draw()
        assert len(calls) > before


def test_seeded_rng_reproduces_and_system_rng_does_not():
    first = [sample_discrete_laplace(10, random.Random(5)) for _ in range(3)]
    assert first == [sample_discrete_laplace(10, random.Random(5)) for _ in range(3)]
    assert len({sample_discrete_laplace(10**6) for _ in range(20)}) > 1


# --- privacy maps ---------------------------------------------------------

def test_laplace_map_and_check_boundary():
    mech = DiscreteLaplace(Fraction(2))
    assert mech.map(3) == Fraction(3, 2)
    assert mech.check(3, Fraction(3, 2))
    assert not mech.check(3, Fraction(3, 2) - Fraction(1, 10**30))
    assert mech.check(3, 1.5)
    assert not mech.check(3, math.nextafter(1.5, 0))
    assert mech.check(3, math.inf)


def test_laplace_for_epsilon_spends_exactly_epsilon():
    mech = DiscreteLaplace.for_epsilon(0.1, 1)
    assert mech.map(1) == Fraction(0.1)  # the float the ledger charges, exactly
    assert mech.check(1, 0.1)
    assert not mech.check(1, math.nextafter(0.1, 0))
    assert float_up(mech.map(1)) == 0.1
    assert DiscreteLaplace.for_epsilon(Fraction(1, 2), 3).scale == 6
    assert DiscreteLaplace.for_epsilon(1, 3).map(2) == Fraction(2, 3)


def test_gaussian_map_and_check_boundary():
    mech = DiscreteGaussian.for_rho(Fraction(1, 2), 2)
    assert mech.sigma2 == 4
    assert mech.map(2) == Fraction(1, 2)
    assert mech.check(2, Fraction(1, 2))
    assert not mech.check(2, Fraction(1, 2) - Fraction(1, 10**30))
    assert mech.map(Fraction(1, 2)) == Fraction(1, 32)
    # A vector over k partitions, each moving by 1, costs k * map(1).
    assert 5 * mech.map(1) == Fraction(5, 8)
    fl = DiscreteGaussian.for_rho(0.05, 3)
    assert fl.check(3, 0.05) and not fl.check(3, math.nextafter(0.05, 0))


def test_float_up_never_understates():
    third = Fraction(1, 3)
    up = float_up(third)
    assert Fraction(up) >= third and Fraction(math.nextafter(up, 0)) < third
    assert float_up(Fraction(1, 2)) == 0.5
    assert float_up(Fraction(10**400)) == math.inf
    assert float_up(math.inf) == math.inf


@pytest.mark.parametrize("cls", [DiscreteLaplace, DiscreteGaussian])
def test_zero_sensitivity_and_zero_scale(cls):
    noiseless = cls(Fraction(0))
    assert noiseless.map(0) == 0 and noiseless.check(0, 0)
    assert noiseless.map(1) == math.inf
    assert not noiseless.check(1, 10**9)
    assert noiseless.release(17) == 17
    noisy = cls(Fraction(5))
    assert noisy.map(0) == 0
    assert noisy.check(0, 0)


def test_budget_constructors_at_zero():
    assert DiscreteLaplace.for_epsilon(0, 0).scale == 0
    assert DiscreteGaussian.for_rho(0, 0).sigma2 == 0
    assert DiscreteLaplace.for_epsilon(1, 0).map(0) == 0
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        DiscreteLaplace.for_epsilon(0, 1)
    with pytest.raises(ValueError, match="rho must be > 0"):
        DiscreteGaussian.for_rho(0, 1)


def test_negative_and_nonfinite_inputs_are_refused():
    with pytest.raises(ValueError, match="scale must be >= 0"):
        DiscreteLaplace(Fraction(-1))
    with pytest.raises(ValueError, match="sigma2 must be >= 0"):
        DiscreteGaussian(-2.0)
    with pytest.raises(ValueError, match="sensitivity must be >= 0"):
        DiscreteLaplace(Fraction(1)).map(-1)
    with pytest.raises(ValueError, match="sensitivity must be >= 0"):
        DiscreteGaussian(Fraction(1)).check(-1, 1)
    with pytest.raises(ValueError, match="bound must be >= 0"):
        DiscreteLaplace(Fraction(1)).check(1, -0.5)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        DiscreteLaplace.for_epsilon(-1, 1)
    with pytest.raises(ValueError, match="finite"):
        DiscreteLaplace(Fraction(1)).map(math.nan)
    with pytest.raises(TypeError):
        DiscreteLaplace(Fraction(1)).release(1.5)


def test_float_parameters_convert_exactly():
    assert DiscreteLaplace(0.5).scale == Fraction(1, 2)
    assert DiscreteGaussian(0.1).sigma2 == Fraction(0.1)
    assert DiscreteLaplace(0.5) == DiscreteLaplace(Fraction(1, 2))


# --- zCDP to (epsilon, delta) -------------------------------------------

def _cks_infimum(rho: float, delta: float) -> float:
    def objective(u):
        alpha = 1 + math.exp(u)
        return alpha * rho + math.log1p(-1 / alpha) + (-math.log(delta) - math.log(alpha)) / (alpha - 1)

    return optimize.minimize_scalar(objective, bounds=(-30, 30), method="bounded",
                                    options={"xatol": 1e-12}).fun


@pytest.mark.parametrize("rho,delta", [(0.5, 1e-5), (Fraction(1, 1000), 1e-10), (0.01, 1e-6),
                                       (2.0, 1e-3), (50.0, 1e-9), (1e-8, 1e-7)])
def test_zcdp_conversion_is_the_tighter_bound_rounded_up(rho, delta):
    eps = zcdp_to_approx_dp(rho, delta)
    standard = float(rho) + 2 * math.sqrt(float(rho) * math.log(1 / delta))
    assert eps <= standard * (1 + 1e-12)
    best = min(_cks_infimum(float(rho), delta), standard)
    assert best * (1 - 1e-9) <= eps <= best * (1 + 1e-6)


def test_zcdp_conversion_edges():
    assert zcdp_to_approx_dp(0, 1e-6) == 0.0
    assert zcdp_to_approx_dp(math.inf, 1e-6) == math.inf
    assert zcdp_to_approx_dp(0.1, 1e-6) < zcdp_to_approx_dp(0.2, 1e-6)
    assert zcdp_to_approx_dp(0.1, 1e-6) > zcdp_to_approx_dp(0.1, 1e-3)
    # The textbook example: 0.5-zCDP at delta 1e-5 is under 5 (Bun-Steinke gives 5.30).
    assert 4.7 < zcdp_to_approx_dp(0.5, 1e-5) < 4.75
    for delta in (0, 1, -1e-5, 2):
        with pytest.raises(ValueError, match="delta must be in"):
            zcdp_to_approx_dp(0.5, delta)
    with pytest.raises(ValueError, match="rho must be >= 0"):
        zcdp_to_approx_dp(-0.1, 1e-6)


# --- real values on a grid --------------------------------------------------

def test_release_real_rounds_half_up_on_the_grid():
    exact = DiscreteLaplace(Fraction(0))
    assert release_real(2.5, 1, exact) == 3
    assert release_real(-2.5, 1, exact) == -2
    assert release_real(0.3, Fraction(1, 10), exact) == Fraction(3, 10)
    assert release_real(Fraction(7, 8), Fraction(1, 4), exact) == 1
    assert release_real(123, Fraction(1, 100), exact) == 123


def test_release_real_answers_on_the_grid():
    rng = random.Random(7)
    g = Fraction(1, 20)
    mech = DiscreteLaplace.for_epsilon(1, grid_sensitivity(Fraction(1, 2), g))
    answers = {release_real(10.0, g, mech, rng) for _ in range(200)}
    assert len(answers) > 10
    assert all(isinstance(a, Fraction) and (a / g).denominator == 1 for a in answers)


def test_release_real_refuses_nonfinite_values():
    mech = DiscreteLaplace(Fraction(1))
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            release_real(bad, Fraction(1, 10), mech)
    with pytest.raises(ValueError, match="granularity must be > 0"):
        release_real(1.0, 0, mech)


def test_grid_sensitivity_bounds_the_rounded_change():
    assert grid_sensitivity(1, Fraction(1, 4)) == 4
    assert grid_sensitivity(1, Fraction(3, 10)) == 4
    assert grid_sensitivity(0, Fraction(1, 10)) == 0
    rng = random.Random(3)
    exact = DiscreteLaplace(Fraction(0))
    for _ in range(2000):
        g = Fraction(rng.randint(1, 50), rng.randint(1, 50))
        bound = Fraction(rng.randint(0, 200), rng.randint(1, 20))
        x = Fraction(rng.randint(-10**6, 10**6), rng.randint(1, 1000))
        # Half-grid points are where a banker's rounding would break the bound.
        if rng.random() < 0.3:
            x = (rng.randint(-100, 100) + Fraction(1, 2)) * g
        moved = x + bound * rng.choice([-1, 1, Fraction(rng.randint(0, 100), 100)])
        change = abs(release_real(moved, g, exact) - release_real(x, g, exact)) / g
        assert change <= grid_sensitivity(bound, g)


# --- margins of error -------------------------------------------------------

@pytest.mark.parametrize("scale", [Fraction(1, 3), Fraction(1), Fraction(10), Fraction(1234, 7)])
@pytest.mark.parametrize("confidence", [0.5, 0.95, 0.999])
def test_laplace_margin_is_the_exact_quantile(scale, confidence):
    m = margin_of_error(DiscreteLaplace(scale), confidence)
    a = 1 / float(scale)
    inside = lambda k: stats.dlaplace.cdf(k, a) - stats.dlaplace.cdf(-k - 1, a)
    assert inside(m) >= confidence
    assert m == 0 or inside(m - 1) < confidence


@pytest.mark.parametrize("sigma2", [Fraction(1, 5), Fraction(1), Fraction(10), Fraction(1000),
                                    Fraction(10**6)])
def test_gaussian_margin_is_the_exact_quantile(sigma2):
    m = margin_of_error(DiscreteGaussian(sigma2))
    xs, pmf = gaussian_pmf(sigma2)
    inside = lambda k: pmf[np.abs(xs) <= k].sum()
    assert inside(m) >= 0.95
    assert m == 0 or inside(m - 1) < 0.95


@pytest.mark.parametrize("sigma2", [Fraction(10**6 + 1), Fraction(4 * 10**6), Fraction(10**7, 3)])
def test_gaussian_margin_bound_is_tight_for_large_sigma(sigma2):
    m = margin_of_error(DiscreteGaussian(sigma2))
    xs, pmf = gaussian_pmf(sigma2)
    cdf_abs = np.cumsum(np.bincount(np.abs(xs), weights=pmf))
    exact = int(np.searchsorted(cdf_abs, 0.95))
    assert exact <= m <= exact + 1


@pytest.mark.parametrize("kind,name", [("laplace", n) for n in LAPLACE_SCALES]
                         + [("gaussian", n) for n in GAUSSIAN_SIGMA2])
def test_margin_covers_about_95_percent_of_draws(kind, name):
    """Coverage of the 95% margin on 100k draws, exact binomial test against the
    exact coverage P(|X| <= m); false alarm rate 1e-4."""
    if kind == "laplace":
        param, _ = LAPLACE_SCALES[name]
        mech, draws, (xs, pmf) = DiscreteLaplace(param), laplace_draws(name), laplace_pmf(param)
    else:
        param, _ = GAUSSIAN_SIGMA2[name]
        mech, draws, (xs, pmf) = DiscreteGaussian(param), gaussian_draws(name), gaussian_pmf(param)
    m = margin_of_error(mech)
    coverage = float(pmf[np.abs(xs) <= m].sum())
    assert coverage >= 0.95
    assert stats.binomtest(int((np.abs(draws) <= m).sum()), len(draws), coverage).pvalue >= ALPHA


def test_margin_edges():
    assert margin_of_error(DiscreteLaplace(Fraction(0))) == 0
    assert margin_of_error(DiscreteGaussian(Fraction(0))) == 0
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence must be in"):
            margin_of_error(DiscreteLaplace(Fraction(1)), bad)
    gaussian, laplace = DiscreteGaussian(Fraction(4)), DiscreteLaplace(Fraction(4))
    assert margin_of_error(gaussian, 1 - 1e-11) > margin_of_error(gaussian, 0.999)
    with pytest.raises(ValueError, match="too close to 1"):
        margin_of_error(gaussian, 1 - 1e-13)
    assert margin_of_error(laplace, 1 - 1e-13) > margin_of_error(laplace, 0.999)


# --- extreme parameters return promptly -------------------------------------

# Each runs in a child process with a deadline, so that a regression to a
# loop over the parameter fails the test instead of hanging the suite.
# (expression, what it must print: a value's prefix, or "refused")
EXTREMES = [
    # epsilon 1e-30 at sensitivity 50: the margin once searched step by step
    ("margin_of_error(DiscreteLaplace.for_epsilon(Fraction(1, 10**30), 50))", "14978661367769950"),
    # (1 - 0.95 is 0.05000000000000004 from the float: ln(2 / that) = 2.995732273553990105...)
    ("margin_of_error(DiscreteLaplace(Fraction(10**40)))", "2995732273553990105"),
    ("margin_of_error(DiscreteLaplace(Fraction(10**41)))", "refused"),
    ("margin_of_error(DiscreteLaplace(Fraction(10**1000)))", "refused"),
    ("margin_of_error(DiscreteLaplace(Fraction(1, 10**30)))", "0"),
    ("margin_of_error(DiscreteGaussian(Fraction(10**80)))", "1959963984976"),
    ("margin_of_error(DiscreteGaussian(Fraction(10**300)))", "refused"),
    ("margin_of_error(DiscreteGaussian(Fraction(1, 10**30)))", "0"),
    ("threshold_for(DiscreteLaplace(Fraction(10**40)), Fraction(1, 10**400), 5)", "9219503279294924"),
    ("threshold_for(DiscreteLaplace(Fraction(1, 10**30)), Fraction(1, 10**400), 5)", "2"),
    ("threshold_for(DiscreteLaplace(Fraction(10**400)), Fraction(1, 10**12), 5)", "2854731184780270"),
    ("threshold_for(DiscreteGaussian(Fraction(10**30)), Fraction(1, 10**400), 5)", "refused"),
    ("threshold_for(DiscreteGaussian(Fraction(1, 10**30)), Fraction(1, 10**250), 5)", "2"),
    ("TruncatedGeometricSelection(Fraction(1, 10**30), Fraction(1, 10**12), 5)", "refused"),
    ("DiscreteLaplace.for_epsilon(Fraction(1, 10**30), 50).sample(random.Random(1)) != 0.5", "True"),
    ("DiscreteLaplace(Fraction(1, 10**30)).sample(random.Random(1))", "0"),
    ("sample_discrete_gaussian(Fraction(10**60), random.Random(1)) != 0.5", "True"),
    ("zcdp_to_approx_dp(Fraction(10**400), Fraction(1, 10**400))", "inf"),
    ("zcdp_to_approx_dp(Fraction(1, 10**400), Fraction(1, 10**400))", "6.06970851754"),
]


@pytest.mark.parametrize("expression,expected", EXTREMES, ids=[e for e, _ in EXTREMES])
def test_extreme_parameters_return_promptly(expression, expected):
    """Every loop over a parameter an analyst or a policy chooses (epsilon,
    delta, bounds and with them scales) ends in closed form or a bounded
    search, or refuses: each of these returns within seconds."""
    code = ("import random\nfrom fractions import Fraction\n"
            "from pgshroud.rewriter.mechanisms import *\nfrom pgshroud.rewriter.partition_selection import *\n"
            f"try:\n    print({expression})\nexcept (ValueError, OverflowError):\n    print('refused')\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, cwd=root, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(expected), done.stdout


# --- an auditor that catches a mis-calibrated mechanism -------------------

def _epsilon_lower_bound(at_zero: np.ndarray, at_one: np.ndarray, min_count: int = 500) -> float:
    """A lower confidence bound on max_x |log P(M(0) = x) / P(M(1) = x)|.

    For each bin with at least min_count draws on both sides, log(c0/c1) has
    standard error about sqrt(1/c0 + 1/c1); subtracting z times that, with z
    Bonferroni-corrected over the bins for a total one-sided level of 1e-4,
    bounds that bin's true |log ratio| from below with probability >= 1 - 1e-4
    jointly (normal approximation).
    """
    lo = min(at_zero.min(), at_one.min())
    c0 = np.bincount(at_zero - lo)
    c1 = np.bincount(at_one - lo, minlength=len(c0))
    c0 = np.pad(c0, (0, len(c1) - len(c0)))
    usable = (c0 >= min_count) & (c1 >= min_count)
    assert usable.sum() >= 3
    c0, c1 = c0[usable].astype(float), c1[usable].astype(float)
    z = stats.norm.isf(ALPHA / (2 * len(c0)))
    return float(np.max(np.abs(np.log(c0 / c1)) - z * np.sqrt(1 / c0 + 1 / c1)))


def test_empirical_epsilon_catches_a_mechanism_scaled_for_half_the_sensitivity():
    """Neighbouring inputs 0 and 1 (sensitivity 1) at epsilon = 1, 50k draws each.

    The real mechanism's lower bound stays at or below epsilon except with
    probability 1e-4 (Bonferroni over bins, normal approximation). The broken
    one (scale for sensitivity 1/2, true epsilon 2) must exceed epsilon; its
    bound lands near 1.9, so a miss would need a deviation of ~25 standard
    errors.
    """
    epsilon, n = 1, 50_000
    real = DiscreteLaplace.for_epsilon(epsilon, 1)
    broken = DiscreteLaplace.for_epsilon(epsilon, Fraction(1, 2))
    rng = random.Random(99)
    for mech, should_exceed in ((real, False), (broken, True)):
        at_zero = np.array([mech.release(0, rng) for _ in range(n)])
        at_one = np.array([mech.release(1, rng) for _ in range(n)])
        bound = _epsilon_lower_bound(at_zero, at_one)
        assert (bound > epsilon) is should_exceed, (mech, bound)
