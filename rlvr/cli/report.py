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
* ``compute.png``         eval/pass@1 and entropy/mean against rollout/gen_tokens_total: runs at equal
  generation compute (a dynamic-sampling step generates more than a plain one)
* ``summary.md``          the runs table (also printed): the swept values, status, steps, final accuracy,
  final and minimum entropy, final pass@1; then a table per run: steps, first/last/best accuracy and
  pass@k, first/last/min entropy, correct/incorrect entropy, covariance, the law fit and its ceiling, the
  collapse warning

Several runs are overlaid in the same figures. The swept values are the override keys whose values differ
between the runs (from each run's ``.hydra/overrides.yaml``, else from the resolved ``config.yaml``); runs
are labelled by them, or by directory name when there are none.
A figure whose metrics no run has is still written, saying so, so the file set is fixed.

A sweep that repeats a setting under several seeds (runs whose swept values other than ``trainer.seed`` are
equal, with at least two different ``trainer.seed`` in their config.yaml; ``rlvr.report.seeds``) gets, besides:

* ``seeds_curves.png``    per setting, eval/pass@1, eval/pass@K for the largest K and entropy/mean: the mean
  over its seeds and the band from the lowest to the highest seed, over the steps every seed logged
* ``seeds_paired.png``    with exactly two settings: per final metric, each seed's paired difference (second
  setting - first), their mean and its 95% interval (``rlvr.report.verdict``'s rule), and the line at 0
* ``summary.md``, section ``## Over seeds`` (also printed): a row per setting with mean ± std over its seeds
  (sample std) of the final and minimum entropy/mean, the step the collapse warning (entropy/collapse_warning)
  first fired and in how many seeds ("never" when in none), the final eval/pass@1 beside the ceiling b - a
  (pass@1 at zero entropy) of R = -a exp(H) + b fitted on the first 25% of each run's steps ("n/a" with fewer
  than 3 points there), and the final eval/pass@K

An entropy-lab sweep (runs whose overrides name ``lab=<arm>``; docs/ENTROPY_LAB.md) also gets the section
``## Lab verdicts`` (each pre-registered contrast of ``rlvr.report.lab`` whose two arms ran, judged by
``rlvr.report.verdict``'s rule; the narrowing table; the entropy law's prediction error per arm) and
``lab_verdicts.png`` (per contrast, the per-seed paired differences, their mean and 95% interval, the minimal
effect's band and the line at 0).

The figures are drawn in ``rlvr.report.plots``, the tables made in ``rlvr.report.tables`` from the runs that
``rlvr.report.runs`` loads; this module writes them and is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rlvr.report.lab import lab_section
from rlvr.report.plots import (
    FIGURES,
    LAB_FIGURE,
    PAIRED_FIGURE,
    SEEDS_FIGURE,
    plot_clip,
    plot_compute,
    plot_covariance,
    plot_entropy,
    plot_entropy_hist,
    plot_entropy_law,
    plot_entropy_outcome,
    plot_lab_verdicts,
    plot_paired_differences,
    plot_passk,
    plot_reward,
    plot_seed_curves,
    plot_sweep,
)
from rlvr.report.runs import (
    Run,
    find_run_dirs,
    label_by_swept_values,
    load_run,
    load_runs,
    read_metrics,
    swept_keys,
)
from rlvr.report.seeds import SeedReport, seed_report
from rlvr.report.tables import runs_table, seeds_table, summarize_run

__all__ = [
    "FIGURES",
    "SEEDS_FIGURE",
    "SEEDS_HEADING",
    "Run",
    "find_run_dirs",
    "label_by_swept_values",
    "load_run",
    "load_runs",
    "main",
    "make_report",
    "plot_clip",
    "plot_compute",
    "plot_covariance",
    "plot_entropy",
    "plot_entropy_hist",
    "plot_entropy_law",
    "plot_entropy_outcome",
    "plot_passk",
    "plot_reward",
    "plot_seed_curves",
    "plot_sweep",
    "read_metrics",
    "runs_table",
    "seeds_section",
    "seeds_table",
    "summarize_run",
    "swept_keys",
    "write_report",
    "write_summary",
]

SEEDS_HEADING = "## Over seeds"


def seeds_section(seeds: SeedReport) -> str:
    """The summary.md section of a sweep with repeated seeds: what the columns mean, then the table."""
    return (
        f"{SEEDS_HEADING}\n\n"
        "A row per setting (the swept values other than trainer.seed): mean ± sample std over its seeds, "
        '"(n of N)" where only n of its N seeds have the number. The collapse warning\'s step is over the seeds '
        "where it fired. The law ceiling is b - a, the pass@1 that R = -a·exp(H) + b predicts at zero entropy, "
        "fitted on each seed's (entropy/mean, eval/pass@1) pairs of its first 25% of steps (n/a: fewer than 3 "
        f"pairs there). Curves: {SEEDS_FIGURE}.\n\n{seeds_table(seeds)}"
    )


def write_summary(
    runs: Sequence[Run], path: Path, seeds: SeedReport | None = None, paired: bool = False
) -> None:
    """summary.md: the runs table, the entropy lab's verdicts for a lab sweep, the seeds section when ``seeds``
    is given, a table per run, the figures (``paired``: the two settings' paired differences were drawn)."""
    lab = lab_section(runs, LAB_FIGURE)
    figures = [*FIGURES, *([SEEDS_FIGURE] if seeds is not None else []), *([PAIRED_FIGURE] if paired else [])]
    figures += [LAB_FIGURE] if lab is not None else []
    parts = ["# rlvr report", "", f"Runs: {'; '.join(r.label for r in runs)}", ""]
    parts += ["## Runs", "", runs_table(runs)]
    parts += [lab] if lab is not None else []
    parts += [seeds_section(seeds)] if seeds is not None else []
    parts += [summarize_run(run) for run in runs]
    parts += ["## Figures", ""] + [f"![{name}]({name})\n" for name in figures]
    path.write_text("\n".join(parts))


def make_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """Write the figures and summary.md for the runs at or below ``run_dirs``; returns their paths."""
    runs = load_runs(run_dirs)
    return write_report(runs, Path(out) if out is not None else Path(run_dirs[0]) / "report")


def write_report(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    """Write the figures and summary.md of ``runs`` to ``out_dir`` (and the seeds figure and section when a
    setting ran under several seeds); returns the paths written."""
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
        plot_compute,
    )
    for name, plot in zip(FIGURES, plots, strict=True):
        plot(runs, out_dir / name)
        written.append(out_dir / name)
    seeds = seed_report(runs)
    if seeds is not None:
        plot_seed_curves(seeds, out_dir / SEEDS_FIGURE)
        written.append(out_dir / SEEDS_FIGURE)
        if plot_paired_differences(seeds, out_dir / PAIRED_FIGURE):
            written.append(out_dir / PAIRED_FIGURE)
    if plot_lab_verdicts(runs, out_dir / LAB_FIGURE):
        written.append(out_dir / LAB_FIGURE)
    write_summary(runs, out_dir / "summary.md", seeds, paired=PAIRED_FIGURE in {p.name for p in written})
    written.append(out_dir / "summary.md")
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.run_dirs)
    except FileNotFoundError as e:
        parser.error(str(e))
    written = write_report(
        runs, Path(args.out) if args.out is not None else Path(args.run_dirs[0]) / "report"
    )
    print(runs_table(runs))
    seeds = seed_report(runs)
    if seeds is not None:
        print(f"{SEEDS_HEADING} (mean ± std)\n")
        print(seeds_table(seeds))
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
