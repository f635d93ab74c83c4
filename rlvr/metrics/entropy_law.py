"""The entropy–performance law of Cui et al. 2025: R = -a * exp(H) + b.

Across RL training, held-out accuracy R and mean policy entropy H trade off along this curve: performance is
bought by spending entropy, so the accuracy when entropy is exhausted (H = 0) is the predicted ceiling
``-a + b``. The fit is linear in (a, b) given x = exp(H), so ordinary least squares has a closed form:

    slope = sum((x - mean x)(R - mean R)) / sum((x - mean x)^2),   a = -slope,   b = mean R - slope * mean x

Pairs: an evaluation at step s measures the policy after s updates; the rollouts of step s + 1 are sampled
from that same policy, so their mean token entropy is paired with the evaluation at step s (the evaluation
waits, ``pending``, for the next step's entropy). The last evaluation of a run has no later step and is not
paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_POINTS = 3


@dataclass(frozen=True)
class EntropyLawFit:
    a: float
    b: float
    r2: float  # coefficient of determination of R on exp(H); NaN when every R is equal
    n: int  # points fitted

    @property
    def ceiling(self) -> float:
        """Predicted performance at zero entropy: -a * exp(0) + b."""
        return -self.a + self.b

    def predict(self, entropy: float) -> float:
        return -self.a * math.exp(entropy) + self.b

    def metrics(self) -> dict[str, float]:
        return {
            "entropy_law/a": self.a,
            "entropy_law/b": self.b,
            "entropy_law/ceiling": self.ceiling,
            "entropy_law/r2": self.r2,
            "entropy_law/n_points": self.n,
        }


def fit_entropy_law(entropy: Sequence[float], performance: Sequence[float]) -> EntropyLawFit | None:
    """Least-squares fit of performance = -a * exp(entropy) + b.

    entropy: [n] mean token entropies (nats); performance: [n] accuracies (e.g. held-out pass@1).
    Returns None with fewer than ``MIN_POINTS`` (3) points or when all entropies are equal (no slope).

    Example: H = ln 1, ln 2, ln 3 (x = 1, 2, 3) and R = 0.5, 0.3, 0.1 lie on R = -0.2 x + 0.7:
    a = 0.2, b = 0.7, ceiling = 0.5, r2 = 1.
    """
    if len(entropy) != len(performance):
        raise ValueError(
            f"entropy and performance must have one length, got {len(entropy)} and {len(performance)}"
        )
    n = len(entropy)
    if n < MIN_POINTS:
        return None
    x = [math.exp(h) for h in entropy]
    r = [float(v) for v in performance]
    mx, mr = sum(x) / n, sum(r) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    if sxx <= 1e-12 * max(mx * mx, 1e-300) * n:
        return None
    slope = sum((xi - mx) * (ri - mr) for xi, ri in zip(x, r)) / sxx
    b = mr - slope * mx
    ss_res = sum((ri - (b + slope * xi)) ** 2 for xi, ri in zip(x, r))
    ss_tot = sum((ri - mr) ** 2 for ri in r)
    # equal R's leave rounding noise in ss_tot; relative to the scale of R that is zero
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 1e-12 * sum(ri * ri for ri in r) else math.nan
    return EntropyLawFit(a=-slope, b=b, r2=r2, n=n)


EARLY_FRACTION = 0.25
"""The share of a run's (entropy, pass@1) pairs that ``law_prediction`` fits on; the later ones are predicted."""


@dataclass(frozen=True)
class LawPrediction:
    """The law tested as Cui et al. test it: fitted on a run's early evaluations, it predicts each later one
    from the entropy that later evaluation actually had. ``law_mae``: mean |R - predicted R| over the later
    evaluations; ``naive_mae``: the same for the last early value carried forward. The law predicts something
    only where ``law_mae`` is below ``naive_mae``. ``fit.ceiling`` (R at H = 0) is an extrapolation past every
    entropy the run reached, not a test: see ``ceiling_extrapolated``."""

    fit: EntropyLawFit  # on the early points
    n_early: int
    n_later: int
    law_mae: float
    naive_mae: float

    @property
    def ceiling_extrapolated(self) -> float:
        """The early fit's R at H = 0: an extrapolation (no run reaches zero entropy)."""
        return self.fit.ceiling


def law_prediction(
    entropy: Sequence[float], performance: Sequence[float], early_fraction: float = EARLY_FRACTION
) -> LawPrediction | None:
    """Fit R = -a exp(H) + b on the first ``ceil(early_fraction * n)`` pairs and predict the rest.

    entropy: [n] mean token entropy paired with each evaluation, in the order of the run; performance: [n]
    pass@1. None with fewer than 3 early pairs, no later pair, or an early fit without a slope.

    Example: R = -0.2 exp(H) + 0.7 at H = ln 3, ln 2.5, ln 2 (early: 0.1, 0.2, 0.3) and ln 1.5, ln 1.2
    (later: 0.4, 0.46); early_fraction 0.6 -> 3 early. The fit recovers a = 0.2, b = 0.7 and predicts the later
    points exactly (law_mae 0); carrying 0.3 forward misses by 0.1 and 0.16 (naive_mae 0.13).
    """
    if len(entropy) != len(performance):
        raise ValueError(
            f"entropy and performance must have one length, got {len(entropy)} and {len(performance)}"
        )
    if not 0.0 < early_fraction < 1.0:
        raise ValueError(f"early_fraction must be in (0, 1), got {early_fraction}")
    n = len(entropy)
    k = math.ceil(round(early_fraction * n, 9))  # round(): 0.3 * 10 = 3.0000000000000004 is 3, not 4
    if k < MIN_POINTS or k >= n:
        return None
    fit = fit_entropy_law(entropy[:k], performance[:k])
    if fit is None:
        return None
    later = list(zip(entropy[k:], performance[k:]))
    law = sum(abs(r - fit.predict(h)) for h, r in later) / len(later)
    naive = sum(abs(r - performance[k - 1]) for _, r in later) / len(later)
    return LawPrediction(fit, k, len(later), law, naive)


class EntropyLawTracker:
    """Accumulates (entropy, pass@1) pairs during training and refits the law as they arrive.

    Trainer state: ``state_dict()`` goes into every checkpoint and ``load_state_dict`` restores it, so a
    resumed run keeps its points.
    """

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []  # (evaluated step, mean entropy, pass@1)
        self.pending: tuple[int, float] | None = None  # (evaluated step, pass@1) waiting for its entropy
        self._fit: EntropyLawFit | None = None

    def observe_eval(self, step: int, performance: float | None) -> None:
        """An evaluation of the policy after ``step`` updates scored ``performance`` (pass@1)."""
        if performance is None or not math.isfinite(performance):
            return
        self.pending = (int(step), float(performance))

    def observe_entropy(self, mean_entropy: float | None) -> dict[str, float]:
        """The mean token entropy of this step's rollouts; returns the metrics to log at this step.

        When an evaluation is pending it is paired with this entropy (logged as ``entropy_law/point_step``, the
        evaluated step, ``entropy_law/point_entropy`` and ``entropy_law/point_pass@1``) and the law is refitted. The fit's keys (``entropy_law/a``, ``/b``,
        ``/ceiling``, ``/r2``, ``/n_points``) are returned every step once there are 3 points.
        """
        out: dict[str, float] = {}
        if self.pending is not None and mean_entropy is not None and math.isfinite(mean_entropy):
            step, perf = self.pending
            self.points.append((step, float(mean_entropy), perf))
            self.pending = None
            self._fit = None
            out["entropy_law/point_step"] = step
            out["entropy_law/point_entropy"] = float(mean_entropy)
            out["entropy_law/point_pass@1"] = perf
        fit = self.fit()
        if fit is not None:
            out.update(fit.metrics())
        return out

    def fit(self) -> EntropyLawFit | None:
        if self._fit is None and len(self.points) >= MIN_POINTS:
            self._fit = fit_entropy_law([h for _, h, _ in self.points], [r for _, _, r in self.points])
        return self._fit

    def state_dict(self) -> dict[str, Any]:
        return {
            "points": [list(p) for p in self.points],
            "pending": list(self.pending) if self.pending else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [(int(s), float(h), float(r)) for s, h, r in state.get("points", [])]
        pending = state.get("pending")
        self.pending = (int(pending[0]), float(pending[1])) if pending else None
        self._fit = None
