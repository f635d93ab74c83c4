"""Seed aggregation: a sweep that runs each setting under several ``trainer.seed`` values.

A *setting* is a run's values of the swept keys (``rlvr.report.runs.swept_keys``) other than ``trainer.seed``;
the runs that share them are that setting's seeds (``group_by_setting``). The seed report applies when some
setting has runs with at least two different seeds (``seed_report`` returns None otherwise, and the report is
the per-run one alone). One seed's curve says little about a setting: these numbers say how far seeds spread.

Per run (``run_numbers``): the final and minimum ``entropy/mean``; the first step at which the collapse warning
fired (``entropy/collapse_warning``, 1 on that step and 0 on every other: rlvr/metrics/collapse.py); the final
``eval/pass@1`` and ``eval/pass@K`` for the largest K present; and the ceiling of the entropy law fitted on the
first quarter of the run (``early_law_fit``). Per setting (``summarize_setting``): each as mean ± std over the
seeds (``spread``); per step, a curve's mean over seeds with its min-max band (``seed_band``).

Everything below is numbers in, numbers out; the table is ``rlvr.report.tables.seeds_table``, the figure
``rlvr.report.plots.plot_seed_curves``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# EARLY_FRACTION: the law is fitted on the steps up to this fraction of the run (a pair fraction in the per-run test)
from rlvr.metrics.entropy_law import EARLY_FRACTION, EntropyLawFit, EntropyLawTracker
from rlvr.report.runs import Run, pass_k_sort, swept_keys, value_of
from rlvr.report.verdict import Interval, paired_diffs, paired_interval

SEED_KEY = "trainer.seed"
COLLAPSE_KEY = "entropy/collapse_warning"


# ---- settings and their seeds ----------------------------------------------------------------------------


@dataclass
class SettingGroup:
    """The runs of one setting: ``values`` are the swept keys other than trainer.seed, with this setting's
    values (empty when only the seed was swept)."""

    values: dict[str, str]
    runs: list[Run]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "all runs"

    @property
    def seeds(self) -> list[int | None]:
        return [run_seed(run) for run in self.runs]


def run_seed(run: Run) -> int | None:
    """``trainer.seed`` from the run's config.yaml; None without a readable config or an integer seed."""
    seed = run.config.get(SEED_KEY) if run.config is not None else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def group_by_setting(runs: Sequence[Run]) -> list[SettingGroup]:
    """The runs grouped by their swept values other than trainer.seed, groups in order of their first run."""
    keys = [k for k in swept_keys(runs) if k != SEED_KEY]
    groups: dict[tuple[str, ...], SettingGroup] = {}
    for run in runs:
        values = {k: value_of(run, k) for k in keys}
        groups.setdefault(tuple(values.values()), SettingGroup(values, [])).runs.append(run)
    return list(groups.values())


def has_seed_repeats(groups: Sequence[SettingGroup]) -> bool:
    """Whether some setting ran under at least two different seeds."""
    return any(len({s for s in g.seeds if s is not None}) >= 2 for g in groups)


def largest_pass_k(runs: Sequence[Run]) -> str | None:
    """The ``eval/pass@K`` key with the largest K > 1 that any run logged, or None."""
    keys = {k for run in runs for k in run.pass_k_keys() if k.rsplit("@", 1)[-1].isdigit()}
    keys.discard("eval/pass@1")
    return max(keys, key=pass_k_sort) if keys else None


# ---- numbers over seeds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One number over a setting's seeds: mean, sample standard deviation (ddof 1: NaN for one seed) and the
    count of seeds that had the number."""

    mean: float
    std: float
    n: int


def spread(values: Iterable[float | None]) -> Spread | None:
    """Mean ± std of the finite values (None and NaN are seeds without the number); None when there are none.

    Example: 0.1, 0.2, 0.3 -> mean 0.2, std sqrt((0.01 + 0 + 0.01) / 2) = 0.1, n 3.
    """
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(finite) == 0:
        return None
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return Spread(float(finite.mean()), std, len(finite))


@dataclass(frozen=True)
class Band:
    """A curve averaged over seeds, step by step, with the lowest and highest seed at each step."""

    steps: np.ndarray  # [S] the steps at which every averaged seed has a value
    mean: np.ndarray  # [S] mean over seeds
    low: np.ndarray  # [S] minimum over seeds
    high: np.ndarray  # [S] maximum over seeds
    n: int  # seeds averaged


def seed_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> Band | None:
    """Mean and min-max over seeds of one metric; curves: per seed, (steps [S_i], values [S_i]).

    Only steps at which every seed has a finite value are kept, so each point of the mean is over the same
    seeds (a crashed or shorter run cuts the band at its last step) and the band never jumps where a seed is
    missing. A seed with no finite value at all (a run that failed before logging it) is left out. None when
    no seed or no common step remains.

    Example: seeds (steps 1, 2, 3; 0, 3, 6), (1, 2; 2, 4), (1, 2, 3; 4, 8, 9) -> steps 1, 2; mean 2, 5; low
    0, 3; high 4, 8; n 3.
    """
    by_step = [
        {float(s): float(v) for s, v in zip(steps, values) if math.isfinite(v)} for steps, values in curves
    ]
    by_step = [c for c in by_step if c]
    if not by_step:
        return None
    common = sorted(set.intersection(*(set(c) for c in by_step)))
    if not common:
        return None
    table = np.array([[c[s] for s in common] for c in by_step])  # [seeds, steps]
    return Band(np.array(common), table.mean(axis=0), table.min(axis=0), table.max(axis=0), len(by_step))


def first_fired_step(steps: np.ndarray, warnings: np.ndarray) -> int | None:
    """The first step whose collapse warning is set (> 0); None when it never fired.

    steps: [S]; warnings: [S] the logged ``entropy/collapse_warning`` (1 on the step it fires, else 0).
    """
    fired = np.asarray(steps)[np.asarray(warnings) > 0]
    return int(fired[0]) if len(fired) else None


def early_law_fit(
    steps: Sequence[int],
    entropy: Sequence[float],
    pass_at_1: Sequence[float],
    horizon: float,
    fraction: float = EARLY_FRACTION,
) -> EntropyLawFit | None:
    """The entropy law R = -a exp(H) + b fitted on the steps up to ``fraction * horizon`` of a run.

    steps: [S] logged steps, increasing; entropy: [S] ``entropy/mean`` (NaN where not logged); pass_at_1: [S]
    ``eval/pass@1`` (NaN where not evaluated); horizon: the run's last step (trainer.total_steps).
    The points are paired as the trainer pairs them (``EntropyLawTracker`` replays the steps: the evaluation at
    step s meets the entropy of step s + 1, whose rollouts that same policy sampled), so an evaluation at the
    window's last step has no partner and is not fitted. The fit is ``fit_entropy_law``'s; its ``ceiling``
    is the module's, the predicted pass@1 at zero entropy, b - a. None with fewer than 3 pairs (or no spread
    in entropy): an early window too short or too sparsely evaluated for a fit.

    Example: horizon 16 keeps steps 0..4; evaluations at 0..4 and entropies at 1..4 pair (H1, R0) ... (H4, R3).
    """
    tracker = EntropyLawTracker()
    for step, h, r in zip(steps, entropy, pass_at_1):
        if step > fraction * horizon:
            break
        tracker.observe_entropy(float(h))  # NaN: not logged at this step, no pair formed
        tracker.observe_eval(int(step), float(r))
    return tracker.fit()


# ---- per run, per setting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNumbers:
    """The numbers of one seed that the seeds table aggregates (None: not logged, or no fit)."""

    final_entropy: float | None
    min_entropy: float | None
    collapse_logged: bool  # the run logged entropy/collapse_warning at all
    collapse_step: int | None  # the step the warning fired; None when it did not
    final_pass1: float | None
    final_passk: float | None
    early_ceiling: float | None


def _on_steps(run: Run, key: str, steps: Sequence[int]) -> np.ndarray:
    """``key``'s value at each of ``steps`` (NaN where it is not logged)."""
    logged = dict(zip(*run.series(key)))
    return np.array([logged.get(float(s), math.nan) for s in steps], dtype=float)


def _last_value(run: Run, key: str | None) -> float | None:
    last = run.last(key) if key is not None else None
    return last[1] if last is not None else None


def run_numbers(run: Run, pass_k_key: str | None) -> RunNumbers:
    """One run's numbers. The early law window is a quarter of trainer.total_steps when the config has it (so
    a crashed seed is fitted on the same steps as its siblings), else of its last logged step."""
    _, h = run.series("entropy/mean")
    h = h[~np.isnan(h)]
    warn_steps, warned = run.series(COLLAPSE_KEY)
    steps = [r["step"] for r in run.records]
    horizon = run.total_steps if run.total_steps is not None else (steps[-1] if steps else 0)
    fit = early_law_fit(
        steps, _on_steps(run, "entropy/mean", steps), _on_steps(run, "eval/pass@1", steps), horizon
    )
    return RunNumbers(
        final_entropy=float(h[-1]) if len(h) else None,
        min_entropy=float(h.min()) if len(h) else None,
        collapse_logged=len(warn_steps) > 0,
        collapse_step=first_fired_step(warn_steps, warned),
        final_pass1=_last_value(run, "eval/pass@1"),
        final_passk=_last_value(run, pass_k_key),
        early_ceiling=fit.ceiling if fit is not None else None,
    )


@dataclass(frozen=True)
class SettingSummary:
    """One setting's numbers over its seeds."""

    final_entropy: Spread | None
    min_entropy: Spread | None
    collapse_step: Spread | None  # over the seeds where the warning fired
    collapse_fired: int  # seeds where the warning fired
    collapse_logged: int  # seeds that logged the warning at all
    final_pass1: Spread | None
    final_passk: Spread | None
    early_ceiling: Spread | None


def summarize_setting(numbers: Sequence[RunNumbers]) -> SettingSummary:
    """Each number of ``RunNumbers`` as mean ± std over the seeds that have it."""
    fired = [n.collapse_step for n in numbers if n.collapse_step is not None]
    return SettingSummary(
        final_entropy=spread(n.final_entropy for n in numbers),
        min_entropy=spread(n.min_entropy for n in numbers),
        collapse_step=spread(fired),
        collapse_fired=len(fired),
        collapse_logged=sum(n.collapse_logged for n in numbers),
        final_pass1=spread(n.final_pass1 for n in numbers),
        final_passk=spread(n.final_passk for n in numbers),
        early_ceiling=spread(n.early_ceiling for n in numbers),
    )


@dataclass
class SeedReport:
    """The settings of a sweep with repeated seeds, each with its summary; ``pass_k_key`` is the largest-K
    ``eval/pass@K`` (None when only pass@1 was evaluated)."""

    groups: list[SettingGroup]
    summaries: list[SettingSummary]
    pass_k_key: str | None


def seed_report(runs: Sequence[Run]) -> SeedReport | None:
    """The seed aggregation of ``runs``, or None when no setting has two different seeds."""
    groups = group_by_setting(runs)
    if not has_seed_repeats(groups):
        return None
    pass_k_key = largest_pass_k(runs)
    summaries = [summarize_setting([run_numbers(r, pass_k_key) for r in g.runs]) for g in groups]
    return SeedReport(groups, summaries, pass_k_key)


# ---- two settings, paired by seed --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedMetric:
    """One final number of two settings paired by seed: ``diffs[i]`` is the second setting's value minus the
    first's under ``seeds[i]``; ``interval`` their mean with its 95% Student-t interval."""

    metric: str
    seeds: list[int]
    diffs: list[float]
    interval: Interval


def paired_differences(report: SeedReport) -> list[PairedMetric] | None:
    """For a sweep of exactly two settings: the final eval/pass@1, eval/pass@K (largest K) and entropy/mean,
    each as per-seed differences (second setting - first, in the order of their first runs) with their mean
    and 95% interval (``rlvr.report.verdict``); seeds that only one setting ran, or where a value is missing,
    are left out. None unless there are exactly two settings."""
    if len(report.groups) != 2:
        return None
    fields = [
        ("eval/pass@1", "final_pass1"),
        (report.pass_k_key, "final_passk"),
        ("entropy/mean", "final_entropy"),
    ]
    per_setting = [
        {run_seed(run): run_numbers(run, report.pass_k_key) for run in g.runs if run_seed(run) is not None}
        for g in report.groups
    ]
    out = []
    for metric, attr in fields:
        if metric is None:
            continue
        first, second = ({s: getattr(n, attr) for s, n in numbers.items()} for numbers in per_setting)
        seeds, diffs = paired_diffs(second, first)
        out.append(PairedMetric(metric, seeds, diffs, paired_interval(diffs)))
    return out
