"""The entropy lab's pre-registered design (docs/ENTROPY_LAB.md) as code, and its verdicts from a sweep's runs.

Every arm is the base recipe (configs/experiment/lab.yaml) with one setting changed (configs/lab/<arm>.yaml); a
contrast compares two arms under the same seeds on one run statistic (STATS) with ``rlvr.report.verdict``'s rule,
and counts only when its mechanism check (a STATS value of one arm, averaged over its seeds) reaches its
threshold. SHORT arms are what `make lab` runs; `make lab-long` runs every arm.

Also from the same runs: whether training narrows the policy (pass@32 at the end against the starting model's,
per held-out subset, paired by seed; Yue et al. 2025) and the entropy law tested by prediction per arm
(``rlvr.metrics.entropy_law.law_prediction``: fitted on the first 25% of evaluations, each later one predicted
at its own entropy, against the last early value carried forward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rlvr.metrics.entropy_law import EARLY_FRACTION, law_prediction
from rlvr.report.runs import Run, value_of
from rlvr.report.seeds import run_seed
from rlvr.report.tables import fmt, law_pairs
from rlvr.report.verdict import Contrast, Interval, VerdictRow, judge, paired_diffs, paired_interval

ARM_KEY = "lab"
LAST_STEPS = 10  # the late window of "entropy, last 10 steps"
SUBSETS = ("carry", "nocarry")  # the held-out sets of configs/experiment/lab.yaml
LARGE_K = 32


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the finite values (None and NaN left out); None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _values(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = run.series(key)
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def auc(key: str) -> Callable[[Run], float | None]:
    """The mean of `key` over the evaluations after step 0: the area under its curve per evaluation, which
    rewards getting there sooner as well as getting there."""

    def f(run: Run) -> float | None:
        steps, values = _values(run, key)
        return _mean(list(values[steps > 0]))

    return f


def last(key: str, n: int = LAST_STEPS) -> Callable[[Run], float | None]:
    """The mean of `key` over the run's last n logged values."""
    return lambda run: _mean(list(_values(run, key)[1][-n:]))


def run_mean(key: str) -> Callable[[Run], float | None]:
    """The mean of `key` over every step that logged it."""
    return lambda run: _mean(list(_values(run, key)[1]))


def run_median(key: str) -> Callable[[Run], float | None]:
    """The median of `key` over every step that logged it: for an unbounded ratio whose mean one step can make."""
    return lambda run: float(np.median(v)) if len(v := _values(run, key)[1]) else None


def ratio(
    num: Callable[[Run], float | None], den: Callable[[Run], float | None]
) -> Callable[[Run], float | None]:
    def f(run: Run) -> float | None:
        a, b = num(run), den(run)
        return a / b if a is not None and b else None

    return f


PASS1_AUC = "pass@1 AUC"
ENTROPY_LATE = "entropy, last 10 steps"
STATS: dict[str, Callable[[Run], float | None]] = {
    PASS1_AUC: auc("eval/pass@1"),
    ENTROPY_LATE: last("entropy/mean"),
    "clip/high_frac, run mean": run_mean("clip/high_frac"),
    "fork entropy ratio": ratio(run_mean("entropy/top20_mean"), run_mean("entropy/bottom80_mean")),
    "groups/zero_std_frac, run mean": run_mean("groups/zero_std_frac"),
    "response length max/mean": ratio(run_mean("response/len_max"), run_mean("response/len_mean")),
    "cov/selected_frac, run mean": run_mean("cov/selected_frac"),
    # the median: k3's exp term makes single-step spikes (one step of 143 in the beta sweep made a mean of 3.6)
    "kl/grad_share, run median": run_median("kl/grad_share"),
}


@dataclass(frozen=True)
class LabContrast:
    """A claim as two arms, the paper it comes from, and which arm's statistic its mechanism check reads."""

    contrast: Contrast
    treatment: str
    control: str
    source: str
    role: str = "claim"  # claim | positive control | negative control
    mechanism_arm: str | None = None


def _c(
    name, metric, direction, minimal, treatment, control, source, role="claim", mech=None, arm=None, at=None
):
    return LabContrast(
        Contrast(name, metric, direction, minimal, mech, at), treatment, control, source, role, arm
    )


PASS1_MIN, ENTROPY_MIN = 0.03, 0.01  # the minimal effects: pass@1 AUC (absolute), entropy (nats)
CONTRASTS: tuple[LabContrast, ...] = (
    _c("entropy bonus keeps entropy up", ENTROPY_LATE, +1, ENTROPY_MIN, "entropy_bonus", "base",
       "verl entropy_coeff; every entropy paper's baseline", "positive control"),
    _c("another evaluation seed changes nothing", PASS1_AUC, +1, PASS1_MIN, "eval_seed", "base",
       "none: a different sampler stream for the evaluation only", "negative control"),
    _c("clip-higher keeps entropy up", ENTROPY_LATE, +1, ENTROPY_MIN, "clip_higher", "base",
       "DAPO (Yu et al. 2025) Fig. 2b", mech="clip/high_frac, run mean", arm="base", at=0.001),
    _c("clip-higher raises accuracy", PASS1_AUC, +1, PASS1_MIN, "clip_higher", "base",
       "DAPO Fig. 2a", mech="clip/high_frac, run mean", arm="base", at=0.001),
    _c("top-20% tokens match or beat all tokens", PASS1_AUC, +1, PASS1_MIN, "top20", "base",
       "Wang et al. 2025 Table 1, Fig. 6", mech="fork entropy ratio", arm="base", at=3.0),
    _c("bottom-80% tokens fall behind all tokens", PASS1_AUC, -1, PASS1_MIN, "bottom80", "base",
       "Wang et al. 2025 Table 1", mech="fork entropy ratio", arm="base", at=3.0),
    _c("dynamic sampling raises accuracy", PASS1_AUC, +1, PASS1_MIN, "dynamic_sampling", "base",
       "DAPO Fig. 6", mech="groups/zero_std_frac, run mean", arm="base", at=0.1),
    _c("sequence-mean loss falls behind token-mean", PASS1_AUC, -1, PASS1_MIN, "seq_mean", "base",
       "DAPO Fig. 4, Table 1", mech="response length max/mean", arm="base", at=1.5),
    _c("Clip-Cov keeps entropy up", ENTROPY_LATE, +1, ENTROPY_MIN, "clip_cov", "no_clip",
       "Cui et al. 2025 Fig. 7", mech="cov/selected_frac, run mean", arm="clip_cov", at=1.0e-4),
    _c("KL-Cov keeps entropy up", ENTROPY_LATE, +1, ENTROPY_MIN, "kl_cov", "base",
       "Cui et al. 2025 Fig. 7", mech="cov/selected_frac, run mean", arm="kl_cov", at=1.0e-3),
    _c("reference resets raise accuracy", PASS1_AUC, +1, PASS1_MIN, "kl_reset", "kl",
       "ProRL (Liu et al. 2025) Sec. 3", mech="kl/grad_share, run median", arm="kl", at=0.05),
)  # fmt: skip
SHORT = ("base", "clip_higher", "top20", "bottom80", "entropy_bonus", "eval_seed")


def by_arm(runs: Sequence[Run]) -> dict[str, dict[int, Run]]:
    """{arm: {seed: run}} of the runs that name a lab arm and a seed."""
    out: dict[str, dict[int, Run]] = {}
    for run in runs:
        arm, seed = value_of(run, ARM_KEY), run_seed(run)
        if arm != "n/a" and seed is not None:
            out.setdefault(arm, {})[seed] = run
    return out


def arm_stat(arms: dict[str, dict[int, Run]], arm: str, stat: str) -> dict[int, float | None]:
    return {seed: STATS[stat](run) for seed, run in arms.get(arm, {}).items()}


def verdicts(runs: Sequence[Run]) -> list[tuple[LabContrast, VerdictRow, list[float]]]:
    """Each contrast whose two arms both ran: its row by the decision rule and its per-seed differences."""
    arms = by_arm(runs)
    out = []
    for lc in CONTRASTS:
        if lc.treatment not in arms or lc.control not in arms:
            continue
        c = lc.contrast
        treated, control = arm_stat(arms, lc.treatment, c.metric), arm_stat(arms, lc.control, c.metric)
        mechanism = None
        if c.mechanism_metric is not None:
            mechanism = _mean(list(arm_stat(arms, lc.mechanism_arm, c.mechanism_metric).values()))
        out.append((lc, judge(c, treated, control, mechanism), paired_diffs(treated, control)[1]))
    return out


@dataclass(frozen=True)
class Narrowing:
    """pass@LARGE_K on one held-out subset: the starting model's (step 0) and the run's last evaluation, mean over
    seeds, and the paired end - start difference with its 95% interval."""

    arm: str
    subset: str
    start: float | None
    end: float | None
    change: Interval

    @property
    def narrows(self) -> bool:
        return self.change.n >= 2 and self.change.high < 0


def narrowing(runs: Sequence[Run]) -> list[Narrowing]:
    out = []
    for arm, seeds in by_arm(runs).items():
        for subset in SUBSETS:
            key = f"eval/{subset}/pass@{LARGE_K}"
            start, end = {}, {}
            for seed, run in seeds.items():
                steps, values = _values(run, key)
                if len(values) >= 2 and steps[0] == 0:
                    start[seed], end[seed] = float(values[0]), float(values[-1])
            if start:
                _, diffs = paired_diffs(end, start)
                out.append(
                    Narrowing(arm, subset, _mean(start.values()), _mean(end.values()), paired_interval(diffs))
                )
    return out


@dataclass(frozen=True)
class LawScore:
    """The entropy law's prediction error per arm: mean over seeds of the law's and the naive MAE, and in how
    many seeds the law did better."""

    arm: str
    seeds: int
    law_mae: float | None
    naive_mae: float | None
    law_wins: int


def law_scores(runs: Sequence[Run]) -> list[LawScore]:
    out = []
    for arm, seeds in by_arm(runs).items():
        got = []
        for run in seeds.values():
            pairs = law_pairs(run)
            p = law_prediction([h for h, _ in pairs], [r for _, r in pairs], EARLY_FRACTION)
            if p is not None:
                got.append(p)
        out.append(
            LawScore(arm, len(got), _mean([p.law_mae for p in got]), _mean([p.naive_mae for p in got]),
                     sum(p.law_mae < p.naive_mae for p in got))
        )  # fmt: skip
    return out


# ---- summary.md ---------------------------------------------------------------------------------------------

LAB_HEADING = "## Lab verdicts"


def lab_section(runs: Sequence[Run], figure: str) -> str | None:
    """The lab's part of summary.md: the verdicts, the narrowing table and the law's prediction error; None when
    no two arms ran."""
    rows = verdicts(runs)
    if not rows:
        return None
    lines = [
        LAB_HEADING, "",
        "Each contrast of docs/ENTROPY_LAB.md's design whose two arms ran: the paired difference treatment − "
        "control over the seeds both ran, its 95% interval, the mechanism check's measured value, and the "
        f"verdict by rlvr.report.verdict's rule. Figure: {figure}.", "",
        "| role | contrast | treatment − control | statistic | n | mean diff | 95% CI | minimal effect | "
        "mechanism (arm: value, threshold) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for lc, row, _ in rows:
        c = lc.contrast
        mech = "none" if c.mechanism_metric is None else (
            f"{lc.mechanism_arm}: {c.mechanism_metric} {fmt(row.mechanism_value)} (≥ {c.mechanism_threshold:g})"
        )  # fmt: skip
        lines.append(
            f"| {lc.role} | {c.name} | {lc.treatment} − {lc.control} | {c.metric} | {row.n} | {fmt(row.mean_diff)} | "
            f"[{fmt(row.ci_low)}, {fmt(row.ci_high)}] | ±{c.minimal_effect:g} | {mech} | **{row.verdict}** |"
        )
    lines += ["", f"### Narrowing: pass@{LARGE_K} at the last evaluation against step 0", "",
              "| arm | subset | start | end | end − start (n, 95% CI) | narrows |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for n in narrowing(runs):
        iv = n.change
        lines.append(
            f"| {n.arm} | {n.subset} | {fmt(n.start)} | {fmt(n.end)} | {fmt(iv.mean)} ({iv.n}, [{fmt(iv.low)}, "
            f"{fmt(iv.high)}]) | {'yes' if n.narrows else 'no'} |"
        )
    lines += ["", "### The entropy law, tested by prediction", "",
              "| arm | seeds | law MAE | naive MAE (last early value) | seeds where the law did better |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for s in law_scores(runs):
        lines.append(
            f"| {s.arm} | {s.seeds} | {fmt(s.law_mae)} | {fmt(s.naive_mae)} | {s.law_wins} of {s.seeds} |"
        )
    return "\n".join(lines) + "\n"
