"""The report's figures: each ``plot_*(runs, path)`` draws every run into one PNG (a colour per run).

``FIGURES`` names the files every report has, in the order ``write_report`` draws them; a figure whose
metrics no run has is still written, saying so, so that file set is fixed. ``SEEDS_FIGURE`` is drawn only for a
sweep with several seeds per setting (``rlvr.report.seeds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlvr.report.lab import verdicts
from rlvr.report.runs import Run, pass_k_sort
from rlvr.report.seeds import SeedReport, paired_differences, seed_band
from rlvr.report.tables import fmt

FIGURES = (
    "reward.png",
    "entropy.png",
    "entropy_hist.png",
    "entropy_outcome.png",
    "passk.png",
    "entropy_law.png",
    "covariance.png",
    "clip.png",
    "sweep.png",
    "compute.png",
)
SEEDS_FIGURE = "seeds_curves.png"
PAIRED_FIGURE = "seeds_paired.png"
LAB_FIGURE = "lab_verdicts.png"  # drawn only for an entropy-lab sweep (rlvr.report.lab)
_METRIC_STYLES = ("-", "--", ":", "-.")


def _new_figure(nrows: int = 1, height: float = 4.0, step_axis: bool = True):
    from matplotlib.figure import Figure  # the OO API: no pyplot global state, Agg canvas
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, 1, squeeze=False)[:, 0]
    for ax in axes:
        if step_axis:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers
    return fig, axes


def _finish(fig, path: Path, ax=None, title: str = "", ylabel: str = "", xlabel: str = "step") -> None:
    """Every figure's ending: the last panel's title and axis labels (with `ax`), then the PNG at 110 dpi."""
    if ax is not None:
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.savefig(path, dpi=110)


_MAX_INSIDE = 8  # legend entries drawn inside the axes; more go beside them, smaller, the figure widened
_BANDS_UP_TO = 6  # runs whose p10-p90 bands are drawn: past that they cover each other


def _legend(ax) -> None:
    """The axes' legend: inside when short, else beside the axes in columns of 25 entries (a sweep of 18 runs
    has dozens: inside, they would cover the curves and squeeze the axes to nothing)."""
    n = len(ax.get_legend_handles_labels()[0])
    if n <= _MAX_INSIDE:
        ax.legend(fontsize="small")
        return
    ncols = (n + 24) // 25
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, ncols=ncols)
    fig = ax.figure
    fig.set_figwidth(max(fig.get_figwidth(), 8 + 3.6 * ncols))


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in metrics.jsonl", ha="center", va="center", transform=ax.transAxes)


def _plot_lines(ax, runs: Sequence[Run], keys: Sequence[str], marker_keys: Sequence[str] = ()) -> bool:
    """Overlay keys (line style per key, colour per run); returns whether anything was drawn."""
    drawn = False
    many = len(runs) > 1
    for run, color in zip(runs, _colors(len(runs))):
        for i, key in enumerate((*keys, *marker_keys)):
            steps, values = run.series(key)
            if len(steps) == 0:
                continue
            label = f"{run.label}: {key}" if many else key
            if key in marker_keys:
                ax.plot(steps, values, linestyle=":", marker="o", markersize=4, color=color, label=label)
            else:
                ax.plot(
                    steps, values, linestyle=_METRIC_STYLES[i % len(_METRIC_STYLES)], color=color, label=label
                )
            drawn = True
    if drawn:
        _legend(ax)
        ax.grid(alpha=0.3)
    return drawn


def plot_reward(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    if not _plot_lines(ax, runs, ["reward/mean", "acc/mean"], marker_keys=["eval/pass@1"]):
        _no_data(ax, "reward/mean or acc/mean")
    _finish(fig, path, ax, title="Reward and accuracy", ylabel="mean reward; accuracy (fraction correct)")


def plot_entropy(runs: Sequence[Run], path: Path) -> None:
    fig, (ax, ax_frac) = _new_figure(nrows=2, height=3.4)
    drawn = False
    many = len(runs) > 1
    for run, color in zip(runs, _colors(len(runs))):
        steps, mean = run.series("entropy/mean")
        if len(steps) == 0:
            continue
        label = f"{run.label}: " if many else ""
        ax.plot(steps, mean, color=color, label=f"{label}entropy/mean")
        band = [dict(zip(*run.series(k))) for k in ("entropy/p10", "entropy/p90")]
        band_steps = sorted(set(band[0]) & set(band[1]))
        if band_steps and len(runs) <= _BANDS_UP_TO:
            ax.fill_between(
                band_steps,
                [band[0][s] for s in band_steps],
                [band[1][s] for s in band_steps],
                color=color,
                alpha=0.2,
                linewidth=0,
                label=f"{label}p10–p90",
            )
        warn_steps, warned = run.series("entropy/collapse_warning")
        for s in warn_steps[warned > 0]:
            warning = f"{label}collapse warning (step {s:g})" if len(runs) <= _BANDS_UP_TO else None
            ax.axvline(s, color=color, linestyle="--", linewidth=1, label=warning)
        drawn = True
    if drawn:
        _legend(ax)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    else:
        _no_data(ax, "entropy/mean")
    ax.set(title="Policy entropy per token", xlabel="step", ylabel="entropy (nats)")

    if not _plot_lines(ax_frac, runs, ["entropy/above_threshold_frac"]):
        _no_data(ax_frac, "entropy/above_threshold_frac")
    thresholds = {r.entropy_threshold for r in runs}
    threshold = (
        f"{next(iter(thresholds)):g} nats" if len(thresholds) == 1 and None not in thresholds else None
    )
    _finish(
        fig,
        path,
        ax_frac,
        title=f"High-entropy tokens: entropy > {threshold or 'monitor.entropy_threshold'}",
        ylabel="fraction of response tokens",
    )


def _step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell boundaries for a heat map column per step: midpoints between steps."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])


def plot_entropy_hist(runs: Sequence[Run], path: Path) -> None:
    from matplotlib.colors import LogNorm

    fig, axes = _new_figure(nrows=len(runs), height=3.6)
    norm = LogNorm(vmin=1e-4, vmax=1.0)
    mesh = None
    for run, ax in zip(runs, axes):
        n_bins = len(run.hist_edges) - 1
        rows = [
            (r["step"], r["entropy/hist"])
            for r in run.records
            if isinstance(r.get("entropy/hist"), list) and len(r["entropy/hist"]) == n_bins
        ]
        ax.set(title=f"Entropy distribution: {run.label}", xlabel="step")
        if not rows:
            _no_data(ax, f"entropy/hist with {n_bins} bins")
            continue
        steps = np.array([s for s, _ in rows], dtype=float)
        counts = np.array([[c or 0 for c in h] for _, h in rows], dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        frac = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        y_edges = np.array(run.hist_edges, dtype=float)
        # A log axis cannot show 0: draw the [0, e1) bin one log-step below e1.
        if y_edges[0] <= 0:
            y_edges[0] = y_edges[1] ** 2 / y_edges[2]
        mesh = ax.pcolormesh(
            _step_edges(steps), y_edges, np.ma.masked_less_equal(frac.T, 0), norm=norm, cmap="viridis"
        )
        ax.set_yscale("log")
        ax.set_facecolor("#f0f0f0")  # bins with no tokens
        bottom = f"; bottom row = [0, {run.hist_edges[1]:g})" if run.hist_edges[0] <= 0 else ""
        ax.set_ylabel(f"entropy (nats, log{bottom})", fontsize="small")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), label="fraction of the step's tokens (grey: none)")
    _finish(fig, path)


def plot_clip(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    keys = ["clip/low_frac", "clip/high_frac", "cov/selected_frac"]
    if not _plot_lines(ax, runs, keys):
        _no_data(ax, "clip/low_frac or clip/high_frac")
    else:
        values = np.concatenate([r.series(k)[1] for r in runs for k in keys])
        peak = float(np.nanmax(values)) if (~np.isnan(values)).any() else 0.0
        ax.set_ylim(0, 1.1 * peak if peak > 0 else 0.01)  # fractions: nothing below 0
        if peak == 0:
            ax.text(
                0.5,
                0.6,
                "no token clipped at any step\n(with one optimizer step per batch, every ratio is 1)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    cov = any("cov/selected_frac" in r.metric_keys() for r in runs)
    title = "PPO ratio clipping" + (" and Clip-Cov/KL-Cov token selection" if cov else "")
    ylabel = "fraction of tokens clipped" + (" / selected" if cov else "")
    _finish(fig, path, ax, title=title, ylabel=ylabel)


def plot_entropy_outcome(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    if not _plot_lines(ax, runs, ["entropy/correct_mean", "entropy/incorrect_mean"]):
        _no_data(ax, "entropy/correct_mean or entropy/incorrect_mean")
    _finish(
        fig, path, ax, title="Entropy of correct vs incorrect responses", ylabel="mean token entropy (nats)"
    )


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_passk(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    keys = sorted({k for r in runs for k in r.pass_k_keys()}, key=pass_k_sort)
    many = len(runs) > 1
    # one run: a colour per k; several: a colour per run and a marker per k
    colors = _colors(len(runs) if many else len(keys))
    drawn = False
    for ri, run in enumerate(runs):
        for ki, key in enumerate(keys):
            steps, values = run.series(key)
            if len(steps) == 0:
                continue
            k = key.removeprefix("eval/")
            ax.plot(
                steps,
                values,
                color=colors[ri] if many else colors[ki],
                marker=_MARKERS[ki % len(_MARKERS)],
                markersize=4,
                linestyle="-" if ki == 0 else "--",
                label=f"{run.label}: {k}" if many else k,
            )
            drawn = True
    if drawn:
        _legend(ax)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    else:
        _no_data(ax, "eval/pass@k")
    _finish(fig, path, ax, title="Held-out pass@1 vs pass@k", ylabel="pass@k (fraction of held-out prompts)")


def plot_entropy_law(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure(step_axis=False)
    drawn = False
    many = len(runs) > 1
    h_max = 0.0
    for run, color in zip(runs, _colors(len(runs))):
        _, h = run.series("entropy_law/point_entropy")
        _, r = run.series("entropy_law/point_pass@1")
        if len(h) == 0 or len(h) != len(r):
            continue
        label = f"{run.label}: " if many else ""
        ax.scatter(h, r, color=color, s=24, zorder=3, label=f"{label}(mean entropy, held-out pass@1)")
        _, evaluated = run.series("entropy_law/point_step")
        if len(evaluated) == len(h):
            for hi, ri, si in zip(h, r, evaluated):
                ax.annotate(
                    f"{si:g}", (hi, ri), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color
                )
        h_max = max(h_max, float(np.nanmax(h)))
        fit = run.law_fit()
        if fit is not None:
            grid = np.linspace(0.0, 1.15 * float(np.nanmax(h)), 200)
            ax.plot(
                grid,
                -fit.a * np.exp(grid) + fit.b,
                color=color,
                label=f"{label}fit R = −{fit.a:.3g}·exp(H) + {fit.b:.3g}  (R² {fmt(fit.r2)}, {fit.n} points)",
            )
            ax.axhline(
                fit.ceiling,
                color=color,
                linestyle="--",
                linewidth=1,
                label=f"{label}ceiling (H = 0): {fit.ceiling:.3g}",
            )
        drawn = True
    if drawn:
        ax.set_xlim(left=0, right=1.2 * h_max if h_max > 0 else None)
        _legend(ax)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, "entropy_law/point_entropy (needs eval.every > 0 with eval/pass@1)")
    _finish(
        fig,
        path,
        ax,
        title="Entropy–performance law: R = −a·exp(H) + b (points labelled by evaluated step)",
        xlabel="mean token entropy H of the evaluated policy (nats)",
        ylabel="held-out pass@1 R (fraction)",
    )


def plot_covariance(runs: Sequence[Run], path: Path) -> None:
    fig, (ax, ax_top) = _new_figure(nrows=2, height=3.4)
    top_keys = sorted({k for r in runs for k in r.metric_keys() if k.startswith("cov/top")})
    if not _plot_lines(ax, runs, ["cov/mean"]):
        _no_data(ax, "cov/mean")
    else:
        ax.axhline(0, color="black", linewidth=0.8)
    ax.set(
        title="Covariance of token log-prob and advantage (> 0 drives entropy down)",
        xlabel="step",
        ylabel="cov(log p, A) (nats × advantage)",
    )
    if not _plot_lines(ax_top, runs, top_keys):
        _no_data(ax_top, "cov/top0.2pct_mean")
    _finish(
        fig,
        path,
        ax_top,
        title="Mean of the top 0.2% per-token centred products (the tokens Clip-Cov/KL-Cov act on)",
        ylabel="(log p − mean)·(A − mean) (nats × advantage)",
    )


def plot_sweep(runs: Sequence[Run], path: Path) -> None:
    """Every run's reward and entropy curves in one figure, a colour (and past 10 runs a dash) per run."""
    fig, (ax_reward, ax_entropy) = _new_figure(nrows=2, height=3.4)
    reward_keys, handles = set(), {}
    for i, (run, color) in enumerate(zip(runs, _colors(len(runs)))):
        # earlier runs drawn wider: runs whose curves coincide (a setting without effect) show as nested bands
        width = 1.5 + 2.0 * (len(runs) - 1 - i) / max(len(runs) - 1, 1)
        style = dict(color=color, linewidth=width, linestyle=_METRIC_STYLES[(i // 10) % len(_METRIC_STYLES)])
        key = "acc/mean" if "acc/mean" in run.metric_keys() else "reward/mean"
        for ax, k in ((ax_reward, key), (ax_entropy, "entropy/mean")):
            steps, values = run.series(k)
            if len(steps) == 0:
                continue
            reward_keys.update([key] if ax is ax_reward else [])
            marker = "o" if len(steps) <= 30 else None  # a short run's few points stay visible
            (line,) = ax.plot(steps, values, marker=marker, markersize=3, **style)
            handles.setdefault(run.label, line)
    for ax, what in ((ax_reward, "acc/mean or reward/mean"), (ax_entropy, "entropy/mean")):
        if ax.lines:
            ax.grid(alpha=0.3)
        else:
            _no_data(ax, what)
    if ax_entropy.lines:
        ax_entropy.set_ylim(bottom=0)
    reward = " or ".join(sorted(reward_keys)) or "acc/mean"
    keys = list(runs[0].swept) if runs else []
    ax_reward.set(
        title=f"{len(runs)} run{'s' * (len(runs) != 1)}" + (f", by {', '.join(keys)}" if keys else ""),
        xlabel="step",
        ylabel=f"{reward}\n(fraction correct)" if reward == "acc/mean" else reward,
    )
    ax_entropy.set(xlabel="step", ylabel="entropy/mean (nats per token)")
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=1 if len(handles) < 4 else 2,
            fontsize="small",
        )
    _finish(fig, path)


def _at_compute(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """`key`'s values against the tokens generated up to the end of their step (rollout/gen_tokens_total; 0 at
    step 0, the baseline evaluation); steps without the total are left out."""
    steps, totals = run.series("rollout/gen_tokens_total")
    total_at = {0: 0.0, **dict(zip(steps.tolist(), totals.tolist()))}
    steps, values = run.series(key)
    kept = [i for i, s in enumerate(steps.tolist()) if s in total_at]
    return np.array([total_at[steps[i]] for i in kept]), values[kept]


def plot_compute(runs: Sequence[Run], path: Path) -> None:
    """Held-out pass@1 and mean entropy against the tokens generated so far: runs compared at equal generation
    compute, not at equal steps (dynamic sampling's refill rounds make a step cost more)."""
    fig, (ax_eval, ax_entropy) = _new_figure(nrows=2, height=3.4, step_axis=False)
    for ax, key in ((ax_eval, "eval/pass@1"), (ax_entropy, "entropy/mean")):
        for run, color in zip(runs, _colors(len(runs))):
            tokens, values = _at_compute(run, key)
            if len(tokens):
                ax.plot(tokens, values, marker="o" if key.startswith("eval/") else None, markersize=3,
                        color=color, label=run.label)  # fmt: skip
        if ax.lines:
            ax.grid(alpha=0.3)
            _legend(ax)
        else:
            _no_data(ax, f"{key} with rollout/gen_tokens_total")
    ax_eval.set(title="At equal generation compute", xlabel="tokens generated", ylabel="eval/pass@1")
    _finish(fig, path, ax_entropy, ylabel="entropy/mean (nats per token)", xlabel="tokens generated")


def plot_seed_curves(report: SeedReport, path: Path) -> None:
    """Held-out pass@1, pass@K (largest K) and entropy/mean per setting: the mean over its seeds as a line, the
    lowest to the highest seed as a band, a colour per setting; over the steps every seed of it logged."""
    keys = ["eval/pass@1", report.pass_k_key, "entropy/mean"]
    fig, axes = _new_figure(nrows=len(keys), height=3.2)
    colors = _colors(len(report.groups))
    for ax, key in zip(axes, keys):
        drawn = False
        for group, color in zip(report.groups, colors):
            band = seed_band([run.series(key) for run in group.runs]) if key is not None else None
            if band is None:
                continue
            marker = "o" if len(band.steps) <= 30 else None  # sparse evaluations stay visible
            ax.plot(
                band.steps,
                band.mean,
                color=color,
                marker=marker,
                markersize=3,
                label=f"{group.label} ({band.n})",
            )
            ax.fill_between(band.steps, band.low, band.high, color=color, alpha=0.2, linewidth=0)
            drawn = True
        if drawn:
            ax.legend(fontsize="small", title="setting (seeds)", title_fontsize="small")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
        else:
            _no_data(ax, key or "eval/pass@k with k > 1")
        ax.set(
            title=f"{key or 'eval/pass@k'}: mean over seeds, band from the lowest to the highest seed",
            xlabel="step",
            ylabel="nats per token" if key == "entropy/mean" else "fraction of held-out prompts",
        )
    _finish(fig, path)


def plot_paired_differences(report: SeedReport, path: Path) -> bool:
    """For a sweep of two settings (``rlvr.report.seeds.paired_differences``): per final metric, a dot per seed
    at its paired difference (second setting - first) and the mean with its 95% interval, beside the line at 0
    that the decision rule asks the interval to exclude. Returns False (nothing written) unless there are two
    settings."""
    paired = paired_differences(report)
    if paired is None:
        return False
    first, second = (g.label for g in report.groups)
    fig, axes = _new_figure(nrows=len(paired), height=2.2, step_axis=False)
    for ax, pm in zip(axes, paired):
        ax.axvline(0.0, color="grey", linewidth=1)
        if not pm.diffs:
            _no_data(ax, f"{pm.metric} in both settings under one seed")
        ax.scatter(pm.diffs, range(len(pm.diffs)), color="tab:blue", zorder=3)
        iv = pm.interval
        if iv.n >= 2:
            ax.errorbar(
                [iv.mean], [len(pm.diffs)], xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="D",
                color="tab:red", capsize=4, zorder=3,
            )  # fmt: skip
        ax.set_yticks(range(len(pm.diffs) + 1), [*(f"seed {s}" for s in pm.seeds), "mean, 95% CI"])
        ax.grid(alpha=0.3, axis="x")
        ci = f"[{fmt(iv.low)}, {fmt(iv.high)}]" if iv.n >= 2 else "n/a"
        ax.set(title=f"{pm.metric} final: mean {fmt(iv.mean)}, 95% CI {ci}, n {iv.n}")
    axes[-1].set_xlabel(f"paired difference, ({second}) - ({first})")
    _finish(fig, path)
    return True


def plot_lab_verdicts(runs: Sequence[Run], path: Path) -> bool:
    """The entropy lab's contrasts (``rlvr.report.lab.verdicts``), a panel each: a dot per seed at its paired
    difference, the mean with its 95% interval, the band of ± the minimal effect and the line at 0, titled with
    the verdict. Returns False (nothing written) when no contrast's two arms ran."""
    rows = verdicts(runs)
    if not rows:
        return False
    fig, axes = _new_figure(nrows=len(rows), height=1.6, step_axis=False)
    for ax, (lc, row, diffs) in zip(axes, rows):
        m = lc.contrast.minimal_effect
        ax.axvspan(-m, m, color="grey", alpha=0.15)
        ax.axvline(0.0, color="grey", linewidth=1)
        ax.scatter(diffs, [0] * len(diffs), color="tab:blue", zorder=3)
        if row.n >= 2:
            ax.errorbar(
                [row.mean_diff], [1], xerr=[[row.mean_diff - row.ci_low], [row.ci_high - row.mean_diff]], fmt="D",
                color="tab:red", capsize=4, zorder=3,
            )  # fmt: skip
        ax.set_yticks([0, 1], ["seeds", "mean, 95% CI"])
        ax.set_ylim(-0.7, 1.7)
        ax.grid(alpha=0.3, axis="x")
        ax.set_title(
            f"{lc.contrast.name} ({lc.treatment} − {lc.control}, {lc.contrast.metric}): {row.verdict}",
            fontsize=9,
        )
    _finish(fig, path)
    return True
