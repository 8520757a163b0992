"""Private partition selection: which group keys a release may show.

A GROUP BY over keys that the policy does not declare public discloses
people through the keys themselves (Korolova et al. 2009): a group that
exists only because one person is in it must not appear for sure. Each
partition is kept at random, with a probability that depends only on the
exact number of distinct privacy units in it, after contribution bounding
has limited every unit to at most `max_partitions` partitions. A partition
with no units is never in the upstream answer and is never released.

Two strategies:

* `TruncatedGeometricSelection`: the optimal keep probabilities of
  Desfontaines, Voss, Gipson and Mandayam, "Differentially private
  partition selection" (PoPETs 2022, Theorem 1; Google's
  PreaggPartitionSelection). It costs (epsilon, delta) and releases no
  count; the counts are released separately, with their own charge.
* `NoisyThresholdSelection`: a partition is kept when its unit count plus
  the same discrete Laplace or Gaussian noise that releases the count
  reaches `threshold_for(...)`. The noisy count is both the released
  count and the selection, so selection adds only delta to the count's
  cost.

Delta accounting, for both. Neighbouring inputs differ by one privacy unit
u, which is in at most k = max_partitions partitions.

* Truncated geometric: every partition is decided independently by an
  (epsilon/k, delta/k)-DP rule of its own unit count, and u moves at most
  k of those counts by one. Basic composition (Dwork and Roth, Theorem
  3.16) gives (epsilon, delta). (Kairouz, Oh and Viswanath's optimal
  composition would allow 1 - (1 - delta)**(1/k) per partition; the gain
  is of order delta**2 and not worth a harder proof.)
* Noisy threshold: partitions that hold u and others change count by one;
  that is the count mechanism's own loss, k * mechanism.map(1) (L1 = k for
  Laplace, L2**2 = k for Gaussian). Partitions that exist only because of
  u have count 1 on one side and are absent on the other: the bad event is
  that one of them is kept, and the threshold makes each such keep at most
  delta/k likely, so at most delta by the union bound. Laplace: the release
  is (k*map(1), delta)-DP. Gaussian: it is delta-approximate
  (k*map(1))-zCDP (approximate zCDP, Bun and Steinke 2016), which is
  (zcdp_to_approx_dp(rho, delta'), delta' + delta)-DP for any delta'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from pgshroud.rewriter.mechanisms import (
    SYSTEM_RNG,
    DiscreteGaussian,
    DiscreteLaplace,
    Loss,
    Number,
    Rng,
    as_fraction,
    discrete_gaussian_tail_bound,
    discrete_laplace_tail_bound,
    exp_lower,
    smallest_satisfying,
)

__all__ = ["NoisyThresholdSelection", "TruncatedGeometricSelection", "threshold_for"]

# Keep probabilities are fixed-point numbers with this many fractional bits,
# always rounded down from the exact recurrence (see _build).
_BITS = 128
_ONE = 1 << _BITS

# Refuse parameters whose probabilities take longer than this to reach 1:
# the table would be large and slow to build. Such budgets are far too small
# for partition selection to keep anything useful anyway.
MAX_TABLE = 1_000_000

# The smallest delta per partition a Gaussian threshold is computed for.
_GAUSSIAN_SMALLEST = Fraction(1, 10**290)


def _units(n_units: int) -> int:
    if isinstance(n_units, bool) or not isinstance(n_units, int):
        raise TypeError(f"n_units must be an int, got {type(n_units).__name__}")
    if n_units < 0:
        raise ValueError(f"n_units must be >= 0, got {n_units}")
    return n_units


def _positive_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _delta(delta: Number) -> Fraction:
    d = as_fraction(delta, "delta")
    if not 0 < d < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return d


@dataclass(frozen=True)
class TruncatedGeometricSelection:
    """Keep a partition of n units with the optimal probability p(n).

    With e = epsilon/k and d = delta/k per partition (k = max_partitions),
    p(0) = 0 and p(n) = min(exp(e)*p(n-1) + d, 1 - exp(-e)*(1 - p(n-1) - d), 1):
    the largest sequence with p(n+1) <= exp(e)*p(n) + d and
    1 - p(n) <= exp(e)*(1 - p(n+1)) + d for all n (DVGM 2022, Theorem 1).
    The reverse inequalities hold because p is non-decreasing.

    The table of p up to its first 1 is built when the object is made
    (thousands of entries for usual budgets; parameters needing more than
    MAX_TABLE are refused). p is computed in 128-bit fixed point, with
    exp(e) replaced by a rational lower bound and every operation rounded
    down. Rounding p(n+1) down only
    tightens the inequalities between n and n+1, and the next step starts
    from the stored value, so the stored sequence satisfies them exactly
    for the true exp(e). keep_probability returns that stored value, and
    should_keep draws Bernoulli of it exactly.
    """

    epsilon: Fraction
    delta: Fraction
    max_partitions: int = 1
    _table: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        eps = as_fraction(self.epsilon, "epsilon")
        if eps <= 0:
            raise ValueError(f"epsilon must be > 0 for partition selection, got {self.epsilon!r}")
        d = _delta(self.delta)
        k = _positive_count(self.max_partitions, "max_partitions")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", d)
        e, dk = eps / k, d / k
        steps = self._estimated_length(float(e), float(dk))
        if steps > MAX_TABLE:
            raise ValueError(
                f"epsilon={float(eps):g}, delta={float(d):g} over {k} partitions per unit would keep "
                f"partitions only with about {steps:.3g} units; raise epsilon or delta, lower "
                "max_partitions, or declare the group keys public"
            )
        e_fixed = math.floor(exp_lower(e) * _ONE)  # <= exp(e) * 2**128
        d_fixed = math.floor(dk * _ONE)
        if d_fixed == 0:
            raise ValueError(f"delta/max_partitions = {float(dk):g} is below 2**-128")
        object.__setattr__(self, "_table", self._build(e_fixed, d_fixed))

    @staticmethod
    def _estimated_length(e: float, d: float) -> float:
        # Crossovers of DVGM's closed form (Google's PreaggPartitionSelection):
        # p grows geometrically to about 1/2, then 1 - p shrinks geometrically.
        if e == 0 or d == 0:  # underflowed: far beyond any table
            return math.inf
        first = 1 + math.log1p(math.tanh(e / 2) * (1 / d - 1)) / e
        # log1p(expm1(e)/d) <= e + log1p(1/d), which cannot overflow.
        second = (math.log1p(math.expm1(e) / d) if e < 50 else e + math.log1p(1 / d)) / e
        return first + second + 1

    @staticmethod
    def _build(e: int, d: int) -> tuple[int, ...]:
        """p(0), p(1), ... up to the first 1, in fixed point (e, d scaled by 2**128)."""
        table = [0]
        while table[-1] < _ONE:
            p = table[-1]
            grow = (e * p >> _BITS) + d  # floor(exp(e)*p) + d, rounded down
            rest = _ONE - p - d
            if rest <= 0:
                shrink = _ONE
            else:
                # 1 - (1 - p - d)/exp(e); dividing by the lower bound on
                # exp(e) and rounding the quotient up rounds the result down.
                shrink = _ONE - -(-(rest << _BITS) // e)
            table.append(min(grow, shrink, _ONE))
        return tuple(table)

    def _fixed(self, n_units: int) -> int:
        n = _units(n_units)
        table = self._table
        return table[n] if n < len(table) else _ONE

    def keep_probability(self, n_units: int) -> Fraction:
        """p(n_units), exactly as should_keep uses it."""
        return Fraction(self._fixed(n_units), _ONE)

    def should_keep(self, n_units: int, rng: Rng | None = None) -> bool:
        """Keep with probability p(n_units); never keeps an empty partition."""
        p = self._fixed(n_units)
        if p == 0:
            return False
        if p == _ONE:
            return True
        return (rng or SYSTEM_RNG).getrandbits(_BITS) < p

    @property
    def always_kept_from(self) -> int:
        """The smallest n with p(n) = 1."""
        return len(self._table) - 1


CountMechanism = DiscreteLaplace | DiscreteGaussian


def _tail_upper(mechanism: CountMechanism, t: int) -> Decimal | float:
    if isinstance(mechanism, DiscreteLaplace):
        return discrete_laplace_tail_bound(mechanism.scale, t)
    if t <= 0:
        return 1.0
    return discrete_gaussian_tail_bound(float(mechanism.sigma2), t)


def threshold_for(mechanism: CountMechanism, delta: Number, max_partitions: int) -> int:
    """The smallest threshold tau with max_partitions * P(1 + noise >= tau) <= delta.

    `mechanism` adds noise to each partition's count of distinct units. A
    partition is kept when its noisy count is >= tau; a partition that one
    unit alone creates is then kept with probability at most
    delta/max_partitions, and the units' partitions with at most delta in
    all. For discrete Laplace the tail is the closed form bounded in
    60-digit decimals, so tau is the exact minimum; for discrete Gaussian it
    is `discrete_gaussian_tail_bound`, and tau may be one more than the
    exact minimum.
    """
    d = _delta(delta)
    k = _positive_count(max_partitions, "max_partitions")
    # The spread is exact: a float of a huge scale would overflow.
    if isinstance(mechanism, DiscreteLaplace):
        if mechanism.scale == 0:
            raise ValueError("a noiseless count cannot select partitions: the scale must be > 0")
        spread = math.ceil(mechanism.scale)
    elif isinstance(mechanism, DiscreteGaussian):
        if mechanism.sigma2 == 0:
            raise ValueError("a noiseless count cannot select partitions: sigma2 must be > 0")
        spread = math.isqrt(math.ceil(mechanism.sigma2)) + 1
    else:
        raise TypeError(f"no threshold for {type(mechanism).__name__}")
    allowed = d / k
    if isinstance(mechanism, DiscreteGaussian) and allowed < _GAUSSIAN_SMALLEST:
        # The Gaussian tail bound is evaluated in doubles, which underflow to 0
        # before the tail does: the threshold would be too low.
        raise ValueError(f"delta/max_partitions = {float(allowed):.3g} is below what a Gaussian threshold "
                         "can be computed for")

    def ok(t: int) -> bool:  # noise >= t happens with probability <= delta/k
        return _tail_upper(mechanism, t) <= allowed

    # ok() is monotone in t: steps logarithmic in tau / spread, which
    # delta's floor keeps small (tau is about spread * ln(max_partitions / delta)).
    return smallest_satisfying(ok, max(1, spread)) + 1  # keep iff 1 + noise >= tau, i.e. noise >= tau - 1


@dataclass(frozen=True)
class NoisyThresholdSelection:
    """Release a partition's noisy unit count only if it reaches the threshold.

    The count mechanism is per partition (sensitivity 1 in each partition);
    the count vector's loss is `count_loss()` = max_partitions * map(1), an
    epsilon for DiscreteLaplace and a rho for DiscreteGaussian, and
    selection adds `delta` (see the module docstring).
    """

    mechanism: CountMechanism
    delta: Fraction
    max_partitions: int = 1
    threshold: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", _delta(self.delta))
        object.__setattr__(self, "threshold", threshold_for(self.mechanism, self.delta, self.max_partitions))

    def count_loss(self) -> Loss:
        return self.max_partitions * self.mechanism.map(1)

    def select(self, n_units: int, rng: Rng | None = None) -> int | None:
        """The noisy count if the partition is kept, else None."""
        n = _units(n_units)
        if n == 0:
            return None
        noisy = self.mechanism.release(n, rng)
        return noisy if noisy >= self.threshold else None

    def should_keep(self, n_units: int, rng: Rng | None = None) -> bool:
        return self.select(n_units, rng) is not None
