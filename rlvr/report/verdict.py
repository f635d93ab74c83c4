"""The entropy lab's decision rule (docs/ENTROPY_LAB.md, issue 23): a claim is a one-factor contrast between two
arms run under the same seeds, judged on the paired per-seed differences.

For the seeds that both arms have, d_i = treatment_i - control_i; the mean paired difference d̄ gets the 95%
interval d̄ ± t(0.975, n - 1) · s / sqrt(n) (s the sample std of the d_i, Student's t with n - 1 degrees of
freedom). Then, in this order:

* ``not tested``: the contrast's mechanism check was inactive (its measured value is below its threshold, e.g.
  the upper clip binds on too few tokens for clip-higher to matter); the interval is still reported;
* ``reproduced``: the interval excludes 0 in the paper's direction;
* ``contradicted``: it excludes 0 in the other direction;
* ``no effect``: it lies strictly inside ± the minimal effect stated in advance;
* ``inconclusive``: anything else (fewer than 2 pairs included: no interval).

An interval that excludes 0 and also lies inside ± the minimal effect reads ``reproduced``, as the issue's
order of the rules has it: the minimal effect decides only between "no effect" and "inconclusive".

Pure numbers in, numbers out; scipy is not a dependency, so the t quantiles are a table (degrees of freedom
1..30, to 9 significant digits) and, past 30, the Cornish-Fisher expansion around the normal quantile (error
below 1e-6 there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
NO_EFFECT = "no effect"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"

# t(0.975, df) for df = 1..30: the two-sided 95% quantiles of Student's t
T975 = (
    12.7062047, 4.30265273, 3.18244631, 2.77644511, 2.57058184, 2.44691185, 2.36462425, 2.30600414,
    2.26215716, 2.22813885, 2.20098516, 2.17881283, 2.16036866, 2.14478669, 2.13144955, 2.11990530,
    2.10981558, 2.10092204, 2.09302405, 2.08596345, 2.07961384, 2.07387307, 2.06865761, 2.06389856,
    2.05953855, 2.05552944, 2.05183052, 2.04840714, 2.04522964, 2.04227246,
)  # fmt: skip
_Z975 = 1.959963984540054  # the normal quantile at 0.975


def t_quantile_975(df: int) -> float:
    """Student's t quantile at 0.975 with ``df`` degrees of freedom (the half-width factor of a 95% interval).

    Example: df 2 -> 4.303; df 1 -> 12.71; df 60 -> 2.000 (the expansion: z + (z^3 + z) / (4 df) + ...).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Interval:
    """The mean paired difference and its 95% interval (NaN bounds with fewer than 2 differences)."""

    n: int
    mean: float
    low: float
    high: float


def paired_interval(diffs: Sequence[float]) -> Interval:
    """Mean of the paired differences with its 95% Student-t interval.

    diffs: [n] per-seed differences treatment - control. Example: 1, 2, 3 -> mean 2, s = 1, t(0.975, 2) =
    4.303, half-width 4.303 / sqrt(3) = 2.484: (-0.484, 4.484).
    """
    n = len(diffs)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = sum(diffs) / n
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, mean - half, mean + half)


@dataclass(frozen=True)
class Contrast:
    """A pre-registered claim: ``treatment - control`` on ``metric`` is expected to have the sign
    ``direction`` (+1: the paper's remedy raises it; -1: lowers it); ``minimal_effect`` (> 0, the metric's
    units) is the smallest difference that would matter; the claim counts only when ``mechanism_metric``'s
    measured value reaches ``mechanism_threshold`` (None, None: no mechanism to check, as for the controls)."""

    name: str
    metric: str
    direction: int
    minimal_effect: float
    mechanism_metric: str | None = None
    mechanism_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"contrast {self.name!r}: direction must be +1 or -1, got {self.direction}")
        if not self.minimal_effect > 0:
            raise ValueError(f"contrast {self.name!r}: minimal_effect must be > 0, got {self.minimal_effect}")
        if (self.mechanism_metric is None) != (self.mechanism_threshold is None):
            raise ValueError(
                f"contrast {self.name!r}: mechanism_metric and mechanism_threshold go together, got "
                f"{self.mechanism_metric!r} and {self.mechanism_threshold!r}"
            )


@dataclass(frozen=True)
class VerdictRow:
    """One contrast's line in the lab's table."""

    name: str
    metric: str
    n: int  # seeds paired
    mean_diff: float
    ci_low: float
    ci_high: float
    mechanism_value: float | None  # the measured value of the contrast's mechanism_metric (None: no check)
    verdict: str


def decide(contrast: Contrast, interval: Interval, mechanism_value: float | None) -> str:
    """The verdict of the module docstring's rule, for an interval already computed."""
    if contrast.mechanism_threshold is not None and not (
        mechanism_value is not None and mechanism_value >= contrast.mechanism_threshold
    ):
        return NOT_TESTED
    lo, hi = interval.low, interval.high
    if interval.n < 2 or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    signed = sorted((contrast.direction * lo, contrast.direction * hi))  # the paper's direction made positive
    if signed[0] > 0:
        return REPRODUCED
    if signed[1] < 0:
        return CONTRADICTED
    if -contrast.minimal_effect < lo and hi < contrast.minimal_effect:
        return NO_EFFECT
    return INCONCLUSIVE


def paired_diffs(
    treatment: Mapping[int, float | None], control: Mapping[int, float | None]
) -> tuple[list[int], list[float]]:
    """The seeds both arms have a finite value for, in increasing order, and treatment - control at each."""
    seeds = sorted(
        s
        for s in set(treatment) & set(control)
        if all(v is not None and math.isfinite(v) for v in (treatment[s], control[s]))
    )
    return seeds, [treatment[s] - control[s] for s in seeds]


def judge(
    contrast: Contrast,
    treatment: Mapping[int, float | None],
    control: Mapping[int, float | None],
    mechanism_value: float | None = None,
) -> VerdictRow:
    """The contrast's row: per-seed values of ``contrast.metric`` in each arm ({seed: value}; seeds missing from
    one arm, or None/NaN, are left out of the pairs), and the measured mechanism value (e.g. the treatment
    arm's mean ``clip/high_frac``) when the contrast has a mechanism check."""
    _, diffs = paired_diffs(treatment, control)
    interval = paired_interval(diffs)
    return VerdictRow(
        contrast.name,
        contrast.metric,
        interval.n,
        interval.mean,
        interval.low,
        interval.high,
        mechanism_value,
        decide(contrast, interval, mechanism_value),
    )
