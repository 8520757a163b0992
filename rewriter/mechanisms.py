"""Exact noise for differentially private releases.

Samplers follow Canonne, Kamath and Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020; arXiv:2004.00010), Algorithms 1-3.
They use only integer arithmetic and uniform integers, so no floating-point
rounding ever touches a released value (Mironov 2012: the low bits of
floating-point Laplace noise reveal the true value).

Randomness comes from an `Rng`: anything with `getrandbits(k)`. Production
code passes nothing and gets `SYSTEM_RNG`, which reads `secrets.randbits`,
the operating system's CSPRNG. Tests pass `random.Random(seed)` so that a
statistical test fails or passes the same way on every run, with a false
alarm rate fixed when the test is written. A seeded generator must never
reach a release: its outputs are predictable from the seed (or from 624
outputs of the Mersenne Twister), and noise an analyst can predict is noise
they can subtract.

Mechanisms are frozen dataclasses in OpenDP's vocabulary: `map(d_in)` is the
privacy loss for an input distance (the sensitivity), `check(d_in, d_out)`
says whether that loss is within a bound. Losses are exact Fractions; convert
them with `float_up`, which rounds toward the larger (conservative) loss.

Running time is not constant: the samplers loop a random number of times,
and the number of loops depends on the noise drawn (Jin et al., "Are We
There Yet? Timing and Floating-Point Attacks on Differential Privacy
Systems", 2022). Noise does not depend on the data, so callers can draw it
with `sample()` before the upstream answer arrives and add it afterwards;
whoever releases should not let sampling time show in response time.
"""

from __future__ import annotations

import math
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from typing import ClassVar, Protocol

from pgshroud.policies.accounting import (
    DOWN,
    UP,
    Number,
    as_fraction,
    decimal_down,
    decimal_up,
    float_up,
    nonnegative,
    zcdp_to_approx_dp,
)

__all__ = [
    "SYSTEM_RNG",
    "DiscreteGaussian",
    "DiscreteLaplace",
    "Loss",
    "Mechanism",
    "Number",
    "Rng",
    "SystemRng",
    "as_fraction",
    "bernoulli_exp",
    "discrete_gaussian_tail_bound",
    "discrete_laplace_tail_bound",
    "float_up",
    "grid_sensitivity",
    "margin_of_error",
    "release_real",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_geometric_exp",
    "zcdp_to_approx_dp",
]

Loss = Fraction | float  # a Fraction, or math.inf


class Rng(Protocol):
    """A source of uniform random bits: `getrandbits(k)` in [0, 2**k)."""

    def getrandbits(self, k: int, /) -> int: ...


class SystemRng:
    """The production source: `secrets.randbits`, read from the OS CSPRNG.

    It cannot be seeded. `secrets.randbits` is looked up on each call, so the
    module stays the one place randomness comes from.
    """

    __slots__ = ()

    def getrandbits(self, k: int, /) -> int:
        return secrets.randbits(k)

    def __repr__(self) -> str:
        return "SystemRng()"


SYSTEM_RNG = SystemRng()


# --- exact arithmetic helpers ---------------------------------------------
# Exact numbers, `float_up` and the directed-rounding contexts UP and DOWN are the accounting rules'
# (policies.accounting), which convert losses the same way; the zCDP conversion is theirs too.

def _exp_up(x: Fraction) -> Decimal:
    return UP.next_plus(UP.exp(decimal_up(x)))


def _exp_down(x: Fraction) -> Decimal:
    return DOWN.next_minus(DOWN.exp(decimal_down(x)))


def exp_lower(x: Fraction) -> Fraction:
    """A rational lower bound on exp(x), within about 1e-58 relative."""
    return Fraction(_exp_down(x))


def exp_upper(x: Fraction) -> Fraction:
    """A rational upper bound on exp(x), within about 1e-58 relative."""
    return Fraction(_exp_up(x))


# --- samplers (Canonne, Kamath, Steinke 2020) -----------------------------

def _randbelow(rng: Rng, n: int) -> int:
    """Uniform in [0, n) by rejection from getrandbits: exact, no modulo bias."""
    k = (n - 1).bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


def _bernoulli_exp_le1(num: int, den: int, rng: Rng) -> bool:
    """Bernoulli(exp(-num/den)) for 0 <= num <= den: CKS Algorithm 1, first part."""
    if num == 0:
        return True
    getrandbits = rng.getrandbits
    k = 1
    # Draw A_k ~ Bernoulli(gamma/k) until one is 0; P(k ends odd) = exp(-gamma).
    while True:
        # A uniform draw from [0, den*k), inlined from _randbelow.
        n = den * k
        bits = (n - 1).bit_length()
        r = getrandbits(bits)
        while r >= n:
            r = getrandbits(bits)
        if r >= num:
            return k % 2 == 1
        k += 1


def _bernoulli_exp(num: int, den: int, rng: Rng) -> bool:
    """Bernoulli(exp(-num/den)) for num >= 0, den >= 1: CKS Algorithm 1."""
    # exp(-gamma) = exp(-1)**floor(gamma) * exp(-(gamma - floor(gamma))).
    while num > den:
        if not _bernoulli_exp_le1(1, 1, rng):
            return False
        num -= den
    return _bernoulli_exp_le1(num, den, rng)


def _geometric_exp(num: int, den: int, rng: Rng) -> int:
    """X >= 0 with P(X = k) proportional to exp(-k*num/den), num, den >= 1.

    CKS Algorithm 2's core: U + den*V is geometric with ratio exp(-1/den)
    (U uniform on [0, den) accepted with probability exp(-U/den), V geometric
    with ratio exp(-1)); dividing by num and flooring gives ratio
    exp(-num/den).
    """
    while True:
        u = _randbelow(rng, den)
        if _bernoulli_exp(u, den, rng):
            break
    v = 0
    while _bernoulli_exp_le1(1, 1, rng):
        v += 1
    return (u + den * v) // num


def _discrete_laplace(num: int, den: int, rng: Rng) -> int:
    """P(x) proportional to exp(-|x|*num/den): scale den/num."""
    while True:
        magnitude = _geometric_exp(num, den, rng)
        negative = rng.getrandbits(1)
        if negative and magnitude == 0:
            continue  # otherwise 0 would be drawn twice as often as it should
        return -magnitude if negative else magnitude


def _discrete_gaussian(a: int, b: int, rng: Rng) -> int:
    """P(x) proportional to exp(-x**2/(2*sigma2)), sigma2 = a/b > 0: CKS Algorithm 3."""
    t = math.isqrt(a // b) + 1  # floor(sigma) + 1
    while True:
        y = _discrete_laplace(1, t, rng)
        # Accept with probability exp(-(|y| - sigma2/t)**2 / (2*sigma2)), i.e.
        # gamma = (|y|*b*t - a)**2 / (2*a*b*t**2) in integers.
        if _bernoulli_exp((abs(y) * b * t - a) ** 2, 2 * a * b * t * t, rng):
            return y


def bernoulli_exp(gamma: Number, rng: Rng | None = None) -> bool:
    """True with probability exp(-gamma), exactly, for rational gamma >= 0."""
    g = nonnegative(gamma, "gamma")
    return _bernoulli_exp(g.numerator, g.denominator, rng or SYSTEM_RNG)


def sample_geometric_exp(gamma: Number, rng: Rng | None = None) -> int:
    """X >= 0 with P(X = k) = (1 - exp(-gamma)) * exp(-gamma*k), gamma > 0."""
    g = nonnegative(gamma, "gamma")
    if g == 0:
        raise ValueError("gamma must be > 0: a geometric with ratio exp(0) = 1 does not exist")
    return _geometric_exp(g.numerator, g.denominator, rng or SYSTEM_RNG)


def sample_discrete_laplace(scale: Number, rng: Rng | None = None) -> int:
    """An integer with P(x) proportional to exp(-|x|/scale); 0 when scale is 0."""
    s = nonnegative(scale, "scale")
    if s == 0:
        return 0
    # 1/scale = denominator/numerator.
    return _discrete_laplace(s.denominator, s.numerator, rng or SYSTEM_RNG)


def sample_discrete_gaussian(sigma2: Number, rng: Rng | None = None) -> int:
    """An integer with P(x) proportional to exp(-x**2/(2*sigma2)); 0 when sigma2 is 0."""
    s = nonnegative(sigma2, "sigma2")
    if s == 0:
        return 0
    return _discrete_gaussian(s.numerator, s.denominator, rng or SYSTEM_RNG)


# --- mechanisms -----------------------------------------------------------

class Mechanism(Protocol):
    """An additive integer noise mechanism with its privacy map."""

    measure: ClassVar[str]

    def sample(self, rng: Rng | None = None) -> int: ...

    def release(self, value: int, rng: Rng | None = None) -> int: ...

    def map(self, sensitivity: Number) -> Loss: ...

    def check(self, sensitivity: Number, bound: Number) -> bool: ...


def _check(loss: Loss, bound: Number) -> bool:
    if isinstance(bound, float) and math.isinf(bound) and bound > 0:
        return True
    return loss <= nonnegative(bound, "bound")


@dataclass(frozen=True)
class DiscreteLaplace:
    """Adds integer noise with P(z) proportional to exp(-|z|/scale).

    Pure differential privacy: an integer query with L1 sensitivity d_in is
    epsilon-DP for epsilon = d_in/scale. A scale of 0 adds no noise: zero
    sensitivity then costs 0, any other sensitivity costs math.inf.
    """

    scale: Fraction
    measure: ClassVar[str] = "MaxDivergence"  # pure epsilon

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", nonnegative(self.scale, "scale"))

    @classmethod
    def for_epsilon(cls, epsilon: Number, sensitivity: Number) -> DiscreteLaplace:
        """The mechanism whose loss at `sensitivity` is exactly `epsilon`."""
        eps = nonnegative(epsilon, "epsilon")
        sens = nonnegative(sensitivity, "sensitivity")
        if eps == 0:
            if sens == 0:
                return cls(Fraction(0))
            raise ValueError(
                "epsilon must be > 0 for a nonzero sensitivity: no finite scale gives epsilon = 0"
            )
        return cls(sens / eps)

    def sample(self, rng: Rng | None = None) -> int:
        return sample_discrete_laplace(self.scale, rng)

    def release(self, value: int, rng: Rng | None = None) -> int:
        return operator.index(value) + self.sample(rng)

    def map(self, sensitivity: Number) -> Loss:
        """epsilon = sensitivity/scale, exactly (math.inf for scale 0)."""
        sens = nonnegative(sensitivity, "sensitivity")
        if sens == 0:
            return Fraction(0)
        if self.scale == 0:
            return math.inf
        return sens / self.scale

    def check(self, sensitivity: Number, bound: Number) -> bool:
        """Whether the loss at `sensitivity` is at most `bound` (an epsilon)."""
        return _check(self.map(sensitivity), bound)


@dataclass(frozen=True)
class DiscreteGaussian:
    """Adds integer noise with P(z) proportional to exp(-z**2/(2*sigma2)).

    Zero-concentrated DP (Bun and Steinke 2016; for the discrete Gaussian,
    Canonne, Kamath and Steinke 2020): an
    integer query with L2 sensitivity d_in is rho-zCDP for
    rho = d_in**2/(2*sigma2). Sensitivities are rational: for a vector of k
    partitions each moving by at most c, the loss is k * map(c) (that is,
    map(c*sqrt(k)) without rounding sqrt(k)).
    """

    sigma2: Fraction
    measure: ClassVar[str] = "ZeroConcentratedDivergence"  # rho

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma2", nonnegative(self.sigma2, "sigma2"))

    @classmethod
    def for_rho(cls, rho: Number, sensitivity: Number) -> DiscreteGaussian:
        """The mechanism whose loss at `sensitivity` is exactly `rho`."""
        r = nonnegative(rho, "rho")
        sens = nonnegative(sensitivity, "sensitivity")
        if r == 0:
            if sens == 0:
                return cls(Fraction(0))
            raise ValueError("rho must be > 0 for a nonzero sensitivity: no finite sigma gives rho = 0")
        return cls(sens * sens / (2 * r))

    def sample(self, rng: Rng | None = None) -> int:
        return sample_discrete_gaussian(self.sigma2, rng)

    def release(self, value: int, rng: Rng | None = None) -> int:
        return operator.index(value) + self.sample(rng)

    def map(self, sensitivity: Number) -> Loss:
        """rho = sensitivity**2/(2*sigma2), exactly (math.inf for sigma2 0)."""
        sens = nonnegative(sensitivity, "sensitivity")
        if sens == 0:
            return Fraction(0)
        if self.sigma2 == 0:
            return math.inf
        return sens * sens / (2 * self.sigma2)

    def check(self, sensitivity: Number, bound: Number) -> bool:
        """Whether the loss at `sensitivity` is at most `bound` (a rho)."""
        return _check(self.map(sensitivity), bound)


# --- real values on a grid ------------------------------------------------

def grid_sensitivity(sensitivity: Number, granularity: Number) -> int:
    """The integer sensitivity of round(value/granularity): ceil(sensitivity/granularity).

    Rounding half up (floor(x + 1/2)) is monotone and commutes with adding an
    integer, so if the value moves by at most d the rounded value moves by at
    most ceil(d/granularity). Choose a granularity that divides the
    sensitivity to lose nothing to the ceiling.
    """
    sens = nonnegative(sensitivity, "sensitivity")
    g = as_fraction(granularity, "granularity")
    if g <= 0:
        raise ValueError(f"granularity must be > 0, got {granularity!r}")
    return math.ceil(sens / g)


def release_real(
    value: Number, granularity: Number, mechanism: Mechanism, rng: Rng | None = None
) -> Fraction:
    """Release a real value on the grid granularity*Z.

    The value is rounded half up to the nearest grid point, the grid index is
    released by `mechanism`, and the noisy index is mapped back: the answer
    is an exact multiple of `granularity`. The mechanism must be calibrated
    to the grid: a value with sensitivity d has index sensitivity
    `grid_sensitivity(d, granularity)`. Refining the grid by a factor f
    multiplies the index sensitivity (and so the scale needed for the same
    loss) by f, leaving the noise in value units the same; the grid only
    fixes how finely answers are printed.

    The sensitivity must hold for the value as computed. A floating-point
    sum of clamped terms can move by more than the clamp bound (the summation
    order rounds differently), so compute sums upstream in integers or
    numeric, ideally of contributions already rounded to the grid. NaN and
    infinities are refused with ValueError; the caller must keep them from
    arising out of data (an error is itself a release).
    """
    v = as_fraction(value, "value")
    g = as_fraction(granularity, "granularity")
    if g <= 0:
        raise ValueError(f"granularity must be > 0, got {granularity!r}")
    index = math.floor(v / g + Fraction(1, 2))
    return mechanism.release(index, rng) * g


# --- margins of error -----------------------------------------------------

def smallest_satisfying(ok: Callable[[int], bool], guess: int, low: int | None = None) -> int:
    """The smallest n (>= low, if given) with ok(n), for an ok that is False
    up to some n and True from there on: a galloping search from `guess`,
    in about 2*log2(|answer - guess| + 2) calls of ok, so that a rough guess
    costs a few more calls and never a loop as long as the answer is large."""
    if low is not None:
        guess = max(guess, low)
    if ok(guess):
        hi, step = guess, 1
        while (low is None or hi - step >= low) and ok(hi - step):
            hi, step = hi - step, step * 2
        lo = hi - step if low is None else max(hi - step, low - 1)  # ok(lo) is False, or lo is below low
    else:
        lo, step = guess, 1
        while not ok(lo + step):
            lo, step = lo + step, step * 2
        hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _inverse_erfc(y: float) -> float:
    """x with erfc(x) close to y, for 0 < y < 1: a starting point only, by
    bisection in doubles (erfc is decreasing; 80 halvings of [0, 40])."""
    lo, hi = 0.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if math.erfc(mid) > y:
            lo = mid
        else:
            hi = mid
    return hi


_EXACT_GAUSSIAN_SIGMA2 = 10**6  # above this, margins use a tail bound (sigma > 1000)
# Margins are computed in 60-digit decimals and doubles: past this scale
# they could not pin the quantile down (and no answer with such noise says
# anything), so they are refused rather than searched for at length.
_MAX_MARGIN_SCALE = 10**40


def _laplace_tail_above(scale: Fraction, m: int) -> Decimal:
    """P(|Z| > m) = 2*q**(m+1)/(1+q), q = exp(-1/scale), in 60-digit decimals."""
    q = UP.exp(decimal_up(-1 / scale))
    return UP.divide(UP.multiply(2, UP.exp(decimal_up(-(m + 1) / scale))), UP.add(1, q))


def discrete_laplace_tail_bound(scale: Fraction, t: int) -> Decimal:
    """An upper bound on P(Z >= t), Z discrete Laplace with this scale > 0.

    P(Z >= t) = q**t/(1+q) for t >= 1 and 1 - q**(1-t)/(1+q) for t <= 0,
    q = exp(-1/scale), bounded in 60-digit decimals rounded upward. It stays
    a decimal: where q**t underflows (1e-10**18), a Fraction of it would be
    an integer of 10**18 digits.
    """
    if t >= 1:
        return UP.divide(_exp_up(-t / scale), DOWN.add(1, _exp_down(-1 / scale)))
    return UP.subtract(1, DOWN.divide(_exp_down(-(1 - t) / scale), UP.add(1, _exp_up(-1 / scale))))


def discrete_gaussian_tail_bound(sigma2: float, m: int) -> float:
    """An upper bound on P(X >= m), m >= 0, X discrete Gaussian.

    With f(x) = exp(-x**2/(2*sigma2)): the sum of f over x >= m is at most
    f(m) + the integral of f from m, and the normaliser, by Poisson
    summation sqrt(2*pi*sigma2) * sum_k exp(-2*pi**2*sigma2*k**2), is at
    least sqrt(2*pi*sigma2). Hence P(X >= m) <= Q(m/sigma) + f(m)/sqrt(2*pi*sigma2).
    Evaluated in floats with a 1e-9 relative margin over libm's error.
    """
    sigma = math.sqrt(sigma2)
    gaussian_tail = 0.5 * math.erfc(m / (sigma * math.sqrt(2)))
    head = math.exp(-m * m / (2 * sigma2)) / math.sqrt(2 * math.pi * sigma2)
    return (gaussian_tail + head) * (1 + 1e-9)


def _gaussian_weights(sigma2: float) -> list[float]:
    """exp(-x**2/(2*sigma2)) for x = 0, 1, ... until negligible (< 1e-30 of the mass):
    about sqrt(138*sigma2) of them, 12,000 at the largest sigma2 margins sum exactly."""
    weights = []
    x = 0
    while True:
        w = math.exp(-x * x / (2 * sigma2))
        weights.append(w)
        if w < 1e-30 and x * x > 2 * sigma2:
            return weights
        x += 1


def margin_of_error(mechanism: Mechanism, confidence: float = 0.95) -> int:
    """The smallest integer m with P(|noise| <= m) >= confidence.

    For DiscreteLaplace this is the exact quantile, from the closed form
    P(|Z| > m) = 2*q**(m+1)/(1+q), q = exp(-1/scale), evaluated in 60-digit
    decimals. For DiscreteGaussian with sigma2 <= 1e6 it is the exact
    quantile from summing the pmf in doubles (with a 1e-12 guard toward the
    wider margin); above that it is the smallest m allowed by
    `discrete_gaussian_tail_bound`, in practice at most one more than the
    exact quantile. Margins are in units of the mechanism's integers; multiply by
    the granularity for `release_real`. Every step is bounded: a scale above
    1e40 (sigma above 1e40) raises ValueError.
    """
    c = as_fraction(confidence, "confidence")
    if not 0 < c < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(mechanism, DiscreteLaplace):
        scale = mechanism.scale
        if scale == 0:
            return 0
        if scale > _MAX_MARGIN_SCALE:
            raise ValueError(f"a noise scale of {float(scale):.3g} is beyond any useful margin of error")
        target = decimal_down(1 - c)
        # The closed form 2*q**(m+1)/(1+q) = 1-c solved in 60-digit decimals
        # is within a few units of m up to the largest scale (a search by
        # single steps from a float guess would not end for a scale of 1e30);
        # the galloping search settles it in a few evaluations.
        q = UP.exp(decimal_up(-1 / scale))
        log_ratio = UP.ln(UP.divide(2, UP.multiply(decimal_down(1 - c), UP.add(1, q))))
        guess = int(UP.multiply(decimal_up(scale), log_ratio).to_integral_value(ROUND_CEILING)) - 1
        return smallest_satisfying(lambda m: _laplace_tail_above(scale, m) <= target, guess, 0)
    if isinstance(mechanism, DiscreteGaussian):
        sigma2 = mechanism.sigma2
        if sigma2 == 0:
            return 0
        if sigma2 > _MAX_MARGIN_SCALE**2:
            raise ValueError(f"a noise variance of {float(sigma2):.3g} is beyond any useful margin of error")
        want = float(c)
        s2 = float(sigma2)
        allowed = 1 - want - 1e-12
        if allowed <= 0:
            raise ValueError(
                f"confidence {confidence!r} is too close to 1 for a Gaussian margin in doubles"
            )
        if sigma2 <= _EXACT_GAUSSIAN_SIGMA2:
            weights = _gaussian_weights(s2)
            total = weights[0] + 2 * math.fsum(weights[1:])
            inside = weights[0]
            for m in range(len(weights) - 1):
                if inside / total >= want + 1e-12:
                    return m
                inside += 2 * weights[m + 1]
            # Reached only when the mass left out is below double precision.
        # P(|X| > m) = 2*P(X >= m+1); the smallest m the bound admits, near
        # the Gaussian's own quantile.
        guess = math.ceil(math.sqrt(s2) * math.sqrt(2) * _inverse_erfc(allowed))
        return smallest_satisfying(lambda m: 2 * discrete_gaussian_tail_bound(s2, m + 1) <= allowed, guess, 0)
    raise TypeError(f"no margin of error for {type(mechanism).__name__}")
