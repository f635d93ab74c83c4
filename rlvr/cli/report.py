"""``rlvr-report RUN_DIR|SWEEP_DIR [...] [--out DIR]``: plots and a summary of training runs.

Each argument is a run directory (it holds ``metrics.jsonl``) or a directory with run directories below it,
nested or not, e.g. a sweep (``rlvr-train -m ...``); a Hydra job dir whose run failed or has not logged a
step yet is a run too. Reads each run's ``metrics.jsonl`` and writes to ``<first argument>/report/`` (or
``--out``):

* ``reward.png``          reward/mean and acc/mean vs step (and eval/pass@1 where evaluated)
* ``entropy.png``         entropy/mean with its p10-p90 band (collapse warning marked); below, the
  fraction of tokens above monitor.entropy_threshold
* ``entropy_hist.png``    heat map of the entropy histogram over steps, one panel per run
* ``entropy_outcome.png`` mean token entropy of correct vs incorrect responses
* ``passk.png``           held-out pass@1 and pass@k vs step (eval/pass@K for every K)
* ``entropy_law.png``     the (entropy, pass@1) points, the fitted R = -a exp(H) + b and its ceiling
* ``covariance.png``      logp-advantage covariance: cov/mean and the mean of its top 0.2%
* ``clip.png``            clip/low_frac and clip/high_frac (and cov/selected_frac with Clip-Cov/KL-Cov)
* ``sweep.png``           every run's reward (acc/mean, else reward/mean) and entropy/mean in one figure
* ``summary.md``          the runs table (also printed): the swept values, status, steps, final accuracy,
  final and minimum entropy, final pass@1; then a table per run: steps, first/last/best accuracy and
  pass@k, first/last/min entropy, correct/incorrect entropy, covariance, the law fit and its ceiling, the
  collapse warning

Several runs are overlaid in the same figures. The swept values are the override keys whose values differ
between the runs (from each run's ``.hydra/overrides.yaml``, else from the resolved ``config.yaml``); runs
are labelled by them, or by directory name when there are none.
A figure whose metrics no run has is still written, saying so, so the file set is fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.metrics.entropy_law import EntropyLawFit
from rlvr.metrics.entropy_stats import ENTROPY_EDGES_FILENAME, ENTROPY_HIST_EDGES
from rlvr.train import ERROR_FILENAME

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
)
_METRIC_STYLES = ("-", "--", ":", "-.")


@dataclass
class Run:
    """One run's metrics: records sorted by step, one per step (the last written wins)."""

    path: Path
    label: str
    records: list[dict[str, Any]]
    hist_edges: list[float] = field(default_factory=lambda: list(ENTROPY_HIST_EDGES))
    skipped_lines: int = 0
    entropy_threshold: float | None = None  # monitor.entropy_threshold from the run's config.yaml
    name: str = ""  # the directory, relative to the sweep dir it was found in
    total_steps: int | None = None  # trainer.total_steps from the run's config.yaml
    failed: bool = False  # the run left an error.txt (rlvr-train writes it when a run fails)
    overrides: dict[str, str] | None = None  # .hydra/overrides.yaml as {key: value as typed}
    config: dict[str, Any] | None = None  # config.yaml flattened to {"a.b.c": value}
    swept: dict[str, str] = field(
        default_factory=dict
    )  # this run's values of the keys that differ between runs

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) where ``key`` is a number (null, i.e. NaN, kept as NaN to show a gap)."""
        steps, values = [], []
        for r in self.records:
            if key not in r:
                continue
            v = r[key]
            if v is None:
                v = math.nan
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            steps.append(r["step"])
            values.append(float(v))
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)

    def metric_keys(self) -> set[str]:
        return {k for r in self.records for k in r}

    def last(self, key: str) -> tuple[int, float] | None:
        """(step, value) of the last finite value of ``key``, or None."""
        steps, values = self.series(key)
        ok = np.flatnonzero(~np.isnan(values))
        return (int(steps[ok[-1]]), float(values[ok[-1]])) if len(ok) else None

    def pass_k_keys(self) -> list[str]:
        return sorted((k for k in self.metric_keys() if k.startswith("eval/pass@")), key=_pass_k_sort)

    def law_fit(self) -> EntropyLawFit | None:
        """The last entropy-law fit the trainer logged."""
        last = {k: self.last(f"entropy_law/{k}") for k in ("a", "b", "r2", "n_points")}
        if last["a"] is None or last["b"] is None:
            return None
        r2 = last["r2"][1] if last["r2"] else math.nan
        n = int(last["n_points"][1]) if last["n_points"] else 0
        return EntropyLawFit(a=last["a"][1], b=last["b"][1], r2=r2, n=n)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse metrics.jsonl; returns (records sorted by step, number of unparseable lines skipped)."""
    by_step: dict[int, dict[str, Any]] = {}
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                skipped += 1  # e.g. a partial last line after a crash
                continue
            record["step"] = step
            by_step[step] = record  # a resumed run that was not truncated: the later line wins
    return [by_step[s] for s in sorted(by_step)], skipped


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    # e.g. Hydra multirun dirs named 0, 1, ... under different sweeps
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _is_run_dir(path: Path) -> bool:
    return (
        (path / "metrics.jsonl").is_file()
        or (path / ERROR_FILENAME).is_file()
        or (path / ".hydra" / "overrides.yaml").is_file()  # a Hydra job that has not logged a step (yet)
    )


def _natural_key(path: Path) -> list:
    """Sort key: digit runs by value, so that sweep job 10_... comes after 9_..."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` if it is a run dir, else the run dirs below it (not below a run dir, not in hidden dirs such
    as .submitit/), in natural order of their paths."""
    if _is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if d != root and _is_run_dir(d):
            found.append(d)
            dirnames.clear()
            continue
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root)))


def load_run(run_dir: Path, label: str) -> Run:
    records, skipped = (
        read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else ([], 0)
    )
    run = Run(path=run_dir, label=label, name=label, records=records, skipped_lines=skipped)
    edges_file = run_dir / ENTROPY_EDGES_FILENAME
    if edges_file.exists():
        run.hist_edges = [float(e) for e in json.loads(edges_file.read_text())["entropy/hist"]]
    run.config = _flat_config(run_dir / "config.yaml")
    if run.config is not None:
        run.entropy_threshold = run.config.get("monitor.entropy_threshold")
        total = run.config.get("trainer.total_steps")
        run.total_steps = total if isinstance(total, int) else None
    run.overrides = _read_overrides(run_dir / ".hydra" / "overrides.yaml")
    run.failed = (run_dir / ERROR_FILENAME).is_file()
    return run


def load_runs(dirs: Sequence[str | Path]) -> list[Run]:
    """Every run of the arguments (run dirs or dirs holding them), labelled by their swept values."""
    found: list[tuple[Path, str]] = []
    for d in map(Path, dirs):
        run_dirs = find_run_dirs(d) if d.is_dir() else []
        if not run_dirs:
            raise FileNotFoundError(
                f"{d / 'metrics.jsonl'} not found, nor any run dir below {d} (is it a run or sweep directory?)"
            )
        if run_dirs == [d]:
            found.append((d, ""))
        else:
            prefix = f"{d.resolve().name}/" if len(dirs) > 1 else ""
            found += [(r, prefix + r.relative_to(d).as_posix()) for r in run_dirs]
    plain = _labels([p.resolve() for p, name in found if not name])
    names = [name or plain.pop(0) for _, name in found]
    runs = [load_run(p, name) for (p, _), name in zip(found, names)]
    label_by_swept_values(runs)
    return runs


def _read_overrides(path: Path) -> dict[str, str] | None:
    """Hydra's record of a run's command-line overrides, as {key: value as typed}; None if absent."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a report must not fail on a damaged file
        return None
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value if sep else "(deleted)"  # +key=v adds, ~key deletes
    return overrides


def _flat_config(path: Path) -> dict[str, Any] | None:
    """The run's resolved config.yaml as {"a.b.c": value}; None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a report must not fail on a damaged config
        return None
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


_NOT_SWEPT = {"trainer.output_dir"}  # differs between the runs of any comparison; the run column shows it


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The keys whose values differ between runs: the keys of each run's overrides, in the order they were
    typed, if every run has them, else every key of the configs."""
    if len(runs) < 2:
        return []
    by_overrides = all(r.overrides is not None for r in runs)
    if not by_overrides and not all(r.config is not None for r in runs):
        return []
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(r.overrides if by_overrides else r.config))
    return [k for k in keys if k not in _NOT_SWEPT and len({_value_of(r, k) for r in runs}) > 1]


def _value_of(run: Run, key: str) -> str:
    """The value the run used (its resolved config: 0 and 0.0 typed are the same 0.0), else as typed (a config
    group such as algo=dapo, or a run without config.yaml)."""
    if run.config is not None and key in run.config:
        return _as_text(run.config[key])
    if run.overrides is not None and key in run.overrides:
        return run.overrides[key]
    return "n/a"


def label_by_swept_values(runs: Sequence[Run]) -> list[str]:
    """Set each run's ``swept`` values and label ("key=value, ..."; the directory name when nothing differs)."""
    keys = swept_keys(runs)
    for run in runs:
        run.swept = {k: _value_of(run, k) for k in keys}
    labels = [", ".join(f"{k}={v}" for k, v in run.swept.items()) for run in runs]
    if keys and len(set(labels)) == len(labels):
        for run, label in zip(runs, labels):
            run.label = label
    return keys


def _new_figure(nrows: int = 1, height: float = 4.0, step_axis: bool = True):
    from matplotlib.figure import Figure  # the OO API: no pyplot global state, Agg canvas
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, 1, squeeze=False)[:, 0]
    for ax in axes:
        if step_axis:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers
    return fig, axes


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
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return drawn


def plot_reward(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    if not _plot_lines(ax, runs, ["reward/mean", "acc/mean"], marker_keys=["eval/pass@1"]):
        _no_data(ax, "reward/mean or acc/mean")
    ax.set(title="Reward and accuracy", xlabel="step", ylabel="mean reward; accuracy (fraction correct)")
    fig.savefig(path, dpi=110)


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
        if band_steps:
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
            ax.axvline(
                s, color=color, linestyle="--", linewidth=1, label=f"{label}collapse warning (step {s:g})"
            )
        drawn = True
    if drawn:
        ax.legend(fontsize="small")
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
    ax_frac.set(
        title=f"High-entropy tokens: entropy > {threshold or 'monitor.entropy_threshold'}",
        xlabel="step",
        ylabel="fraction of response tokens",
    )
    fig.savefig(path, dpi=110)


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
    fig.savefig(path, dpi=110)


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
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    fig.savefig(path, dpi=110)


def plot_entropy_outcome(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    if not _plot_lines(ax, runs, ["entropy/correct_mean", "entropy/incorrect_mean"]):
        _no_data(ax, "entropy/correct_mean or entropy/incorrect_mean")
    ax.set(
        title="Entropy of correct vs incorrect responses",
        xlabel="step",
        ylabel="mean token entropy (nats)",
    )
    fig.savefig(path, dpi=110)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_passk(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    keys = sorted({k for r in runs for k in r.pass_k_keys()}, key=_pass_k_sort)
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
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    else:
        _no_data(ax, "eval/pass@k")
    ax.set(
        title="Held-out pass@1 vs pass@k",
        xlabel="step",
        ylabel="pass@k (fraction of held-out prompts)",
    )
    fig.savefig(path, dpi=110)


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
                label=f"{label}fit R = −{fit.a:.3g}·exp(H) + {fit.b:.3g}  (R² {_fmt(fit.r2)}, {fit.n} points)",
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
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, "entropy_law/point_entropy (needs eval.every > 0 with eval/pass@1)")
    ax.set(
        title="Entropy–performance law: R = −a·exp(H) + b (points labelled by evaluated step)",
        xlabel="mean token entropy H of the evaluated policy (nats)",
        ylabel="held-out pass@1 R (fraction)",
    )
    fig.savefig(path, dpi=110)


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
    ax_top.set(
        title="Mean of the top 0.2% per-token centred products (the tokens Clip-Cov/KL-Cov act on)",
        xlabel="step",
        ylabel="(log p − mean)·(A − mean) (nats × advantage)",
    )
    fig.savefig(path, dpi=110)


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
    fig.savefig(path, dpi=110)


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.4g}"


def _pass_k_sort(key: str) -> tuple[int, str]:
    tail = key.rsplit("@", 1)[-1]
    return (int(tail), key) if tail.isdigit() else (sys.maxsize, key)


def summarize_run(run: Run) -> str:
    lines = [f"## {run.label}", "", f"`{run.path}`", "", "| metric | value |", "| --- | --- |"]
    steps = [r["step"] for r in run.records]
    if not steps:
        lines.append("| steps | none logged |")
        return "\n".join(lines) + "\n"
    lines.append(f"| steps logged | {len(steps)} (step {steps[0]} to {steps[-1]}) |")

    def first_last_extreme(key: str, extreme: str) -> None:
        s, v = run.series(key)
        ok = ~np.isnan(v)
        if not ok.any():
            lines.append(f"| {key} | not logged |")
            return
        s, v = s[ok], v[ok]
        i = int(np.argmax(v) if extreme == "best" else np.argmin(v))
        lines.append(
            f"| {key} first / last / {extreme} | {_fmt(v[0])} / {_fmt(v[-1])} / {_fmt(v[i])} (step {int(s[i])}) |"
        )

    first_last_extreme("acc/mean", "best")
    first_last_extreme("entropy/mean", "min")
    for key in run.pass_k_keys():
        s, v = run.series(key)
        ok = ~np.isnan(v)
        if ok.any():
            s, v = s[ok], v[ok]
            i = int(np.argmax(v))
            lines.append(
                f"| {key} last (step {int(s[-1])}) | {_fmt(v[-1])} "
                f"(first {_fmt(v[0])}, best {_fmt(v[i])} at step {int(s[i])}) |"
            )

    def last_value(key: str, what: str) -> None:
        last = run.last(key)
        if last is not None:
            lines.append(f"| {what} (step {last[0]}) | {_fmt(last[1])} |")

    last_value("entropy/above_threshold_frac", "entropy/above_threshold_frac last")
    last_value("entropy/correct_mean", "entropy/correct_mean last")
    last_value("entropy/incorrect_mean", "entropy/incorrect_mean last")
    last_value("cov/mean", "cov/mean last")
    _, cov = run.series("cov/mean")
    if (~np.isnan(cov)).any():
        lines.append(f"| cov/mean average over steps | {_fmt(float(np.nanmean(cov)))} |")
    fit = run.law_fit()
    if fit is not None:
        lines.append(
            f"| entropy law R = −a·exp(H) + b | a = {_fmt(fit.a)}, b = {_fmt(fit.b)}, "
            f"R² = {_fmt(fit.r2)}, {fit.n} points |"
        )
        lines.append(f"| entropy law ceiling (predicted pass@1 at H = 0) | {_fmt(fit.ceiling)} |")
    else:
        _, h = run.series("entropy_law/point_entropy")
        lines.append(f"| entropy law | not fitted ({len(h)} points; needs 3) |")
    warn_steps, warned = run.series("entropy/collapse_warning")
    if len(warn_steps):
        fired = warn_steps[warned > 0]
        lines.append(
            f"| entropy collapse warning | {'step ' + str(int(fired[0])) if len(fired) else 'never fired'} |"
        )
    if run.skipped_lines:
        lines.append(f"| unparseable lines skipped | {run.skipped_lines} |")
    return "\n".join(lines) + "\n"


def _status(run: Run) -> str:
    if run.failed:
        return f"failed (see {ERROR_FILENAME})"
    last = run.records[-1]["step"] if run.records else 0
    if run.total_steps is None:
        return "n/a"
    return "done" if last >= run.total_steps else "incomplete"


def _short_names(names: Sequence[str]) -> list[str]:
    """Sweep job dirs are named <job number>_<overrides> (configs/config.yaml): the table shows the number
    (after the parent path, if any), as the swept values stand beside it; other names stay whole."""
    parts = [n.rpartition("/") for n in names]  # (parent, "/" or "", leaf)
    numbers = [re.match(r"(\d+)_", leaf) for _, _, leaf in parts]
    if all(numbers):
        short = [f"{parent}{sep}{m.group(1)}" for (parent, sep, _), m in zip(parts, numbers)]
        if len(set(short)) == len(short):
            return short
    return list(names)


def runs_table(runs: Sequence[Run]) -> str:
    """A markdown table, a row per run: the swept values, status, steps, final accuracy, final and minimum
    entropy, final pass@1."""
    keys = list(runs[0].swept) if runs else []
    names = _short_names([run.name for run in runs])
    header = ["run", *keys, "status", "steps", "acc/mean final", "entropy/mean final", "entropy/mean min"]
    header.append("eval/pass@1 final")
    rows = [header, ["---"] * len(header)]
    for run, name in zip(runs, names):
        last_step = run.records[-1]["step"] if run.records else 0
        steps = f"{last_step}/{run.total_steps}" if run.total_steps is not None else str(last_step)
        _, entropy = run.series("entropy/mean")
        ok = entropy[~np.isnan(entropy)]
        final = {k: run.last(k) for k in ("acc/mean", "entropy/mean", "eval/pass@1")}
        rows.append(
            [
                name,
                *(run.swept[k] for k in keys),
                _status(run),
                steps,
                _fmt(final["acc/mean"][1]) if final["acc/mean"] else "n/a",
                _fmt(final["entropy/mean"][1]) if final["entropy/mean"] else "n/a",
                _fmt(float(ok.min())) if len(ok) else "n/a",
                _fmt(final["eval/pass@1"][1]) if final["eval/pass@1"] else "n/a",
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


def write_summary(runs: Sequence[Run], path: Path) -> None:
    parts = ["# rlvr report", "", f"Runs: {'; '.join(r.label for r in runs)}", ""]
    parts += ["## Runs", "", runs_table(runs)]
    parts += [summarize_run(run) for run in runs]
    parts += ["## Figures", ""] + [f"![{name}]({name})\n" for name in FIGURES]
    path.write_text("\n".join(parts))


def make_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """Write the figures and summary.md for the runs at or below ``run_dirs``; returns their paths."""
    runs = load_runs(run_dirs)
    return write_report(runs, Path(out) if out is not None else Path(run_dirs[0]) / "report")


def write_report(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)

    written = []
    plots = (
        plot_reward,
        plot_entropy,
        plot_entropy_hist,
        plot_entropy_outcome,
        plot_passk,
        plot_entropy_law,
        plot_covariance,
        plot_clip,
        plot_sweep,
    )
    for name, plot in zip(FIGURES, plots, strict=True):
        plot(runs, out_dir / name)
        written.append(out_dir / name)
    write_summary(runs, out_dir / "summary.md")
    written.append(out_dir / "summary.md")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlvr-report",
        description="Plot and summarize rlvr runs (several runs, e.g. those of a sweep dir, are overlaid).",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directory with metrics.jsonl, or a directory with run dirs below it (e.g. a sweep)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: <first RUN_DIR>/report)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.run_dirs)
    except FileNotFoundError as e:
        parser.error(str(e))
    written = write_report(
        runs, Path(args.out) if args.out is not None else Path(args.run_dirs[0]) / "report"
    )
    print(runs_table(runs))
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
