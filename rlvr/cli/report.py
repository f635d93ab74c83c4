"""``rlvr-report RUN_DIR [RUN_DIR ...] [--out DIR]``: plots and a summary of training runs.

Reads each run's ``metrics.jsonl`` and writes to ``<first run dir>/report/`` (or ``--out``):

* ``reward.png``       reward/mean and acc/mean vs step (and eval/pass@1 where evaluated)
* ``entropy.png``      entropy/mean with its p10-p90 band
* ``entropy_hist.png`` heat map of the entropy histogram over steps, one panel per run
* ``clip.png``         clip/low_frac and clip/high_frac
* ``summary.md``       a table per run: steps, first/last/best accuracy, first/last/min
  entropy, last pass@k

Several run directories are overlaid in the same figures, labelled by directory name.
A figure whose metrics no run has is still written, saying so, so the file set is fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.metrics.entropy_stats import ENTROPY_EDGES_FILENAME, ENTROPY_HIST_EDGES

FIGURES = ("reward.png", "entropy.png", "entropy_hist.png", "clip.png")
_METRIC_STYLES = ("-", "--", ":", "-.")


@dataclass
class Run:
    """One run's metrics: records sorted by step, one per step (the last written wins)."""

    path: Path
    label: str
    records: list[dict[str, Any]]
    hist_edges: list[float] = field(default_factory=lambda: list(ENTROPY_HIST_EDGES))
    skipped_lines: int = 0

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


def load_run(run_dir: Path, label: str) -> Run:
    records, skipped = read_metrics(run_dir / "metrics.jsonl")
    run = Run(path=run_dir, label=label, records=records, skipped_lines=skipped)
    edges_file = run_dir / ENTROPY_EDGES_FILENAME
    if edges_file.exists():
        run.hist_edges = [float(e) for e in json.loads(edges_file.read_text())["entropy/hist"]]
    return run


def _new_figure(nrows: int = 1, height: float = 4.0):
    from matplotlib.figure import Figure  # the OO API: no pyplot global state, Agg canvas
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, 1, squeeze=False)[:, 0]
    for ax in axes:
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
    fig, (ax,) = _new_figure()
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
        drawn = True
    if drawn:
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    else:
        _no_data(ax, "entropy/mean")
    ax.set(title="Policy entropy per token", xlabel="step", ylabel="entropy (nats)")
    fig.savefig(path, dpi=110)


def _step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell boundaries for a heat map column per step: midpoints between steps."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mid = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mid[0]], mid, [2 * steps[-1] - mid[-1]]])


def plot_entropy_hist(runs: Sequence[Run], path: Path) -> None:
    from matplotlib.colors import LogNorm

    fig, axes = _new_figure(nrows=len(runs), height=3.2)
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
        fig.colorbar(mesh, ax=list(axes), label="fraction of tokens in the step (log; grey = none)")
    fig.savefig(path, dpi=110)


def plot_clip(runs: Sequence[Run], path: Path) -> None:
    fig, (ax,) = _new_figure()
    if not _plot_lines(ax, runs, ["clip/low_frac", "clip/high_frac"]):
        _no_data(ax, "clip/low_frac or clip/high_frac")
    ax.set(title="PPO ratio clipping", xlabel="step", ylabel="fraction of tokens clipped")
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
    for key in sorted((k for k in run.metric_keys() if k.startswith("eval/pass@")), key=_pass_k_sort):
        s, v = run.series(key)
        if len(s):
            lines.append(f"| {key} last (step {int(s[-1])}) | {_fmt(v[-1])} |")
    if run.skipped_lines:
        lines.append(f"| unparseable lines skipped | {run.skipped_lines} |")
    return "\n".join(lines) + "\n"


def write_summary(runs: Sequence[Run], path: Path) -> None:
    parts = ["# rlvr report", "", f"Runs: {', '.join(r.label for r in runs)}", ""]
    parts += [summarize_run(run) for run in runs]
    parts += ["## Figures", ""] + [f"![{name}]({name})\n" for name in FIGURES]
    path.write_text("\n".join(parts))


def make_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """Write the figures and summary.md; returns their paths."""
    paths = [Path(d) for d in run_dirs]
    for p in paths:
        if not (p / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"{p / 'metrics.jsonl'} not found (is {p} a run directory?)")
    runs = [load_run(p, label) for p, label in zip(paths, _labels([p.resolve() for p in paths]))]
    out_dir = Path(out) if out is not None else paths[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)

    written = []
    for name, plot in zip(FIGURES, (plot_reward, plot_entropy, plot_entropy_hist, plot_clip)):
        plot(runs, out_dir / name)
        written.append(out_dir / name)
    write_summary(runs, out_dir / "summary.md")
    written.append(out_dir / "summary.md")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlvr-report", description="Plot and summarize rlvr runs (several run dirs are overlaid)."
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory with metrics.jsonl")
    parser.add_argument("--out", default=None, help="output directory (default: <first RUN_DIR>/report)")
    args = parser.parse_args(argv)
    try:
        written = make_report(args.run_dirs, args.out)
    except FileNotFoundError as e:
        parser.error(str(e))
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
