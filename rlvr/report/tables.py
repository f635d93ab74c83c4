"""The report's markdown tables: the runs table (a row per run), a table per run, and the seeds table (a row
per setting, mean ± std over its seeds)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from rlvr.errors import ERROR_FILENAME
from rlvr.metrics.entropy_law import law_prediction
from rlvr.report.runs import Run
from rlvr.report.seeds import EARLY_FRACTION, SeedReport, SettingSummary, Spread


def fmt(v: float | None) -> str:
    """A number to 4 significant digits; "n/a" for None or NaN."""
    return "n/a" if v is None or math.isnan(v) else f"{v:.4g}"


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
            f"| {key} first / last / {extreme} | {fmt(v[0])} / {fmt(v[-1])} / {fmt(v[i])} (step {int(s[i])}) |"
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
                f"| {key} last (step {int(s[-1])}) | {fmt(v[-1])} "
                f"(first {fmt(v[0])}, best {fmt(v[i])} at step {int(s[i])}) |"
            )

    def last_value(key: str, what: str) -> None:
        last = run.last(key)
        if last is not None:
            lines.append(f"| {what} (step {last[0]}) | {fmt(last[1])} |")

    last_value("entropy/above_threshold_frac", "entropy/above_threshold_frac last")
    last_value("entropy/correct_mean", "entropy/correct_mean last")
    last_value("entropy/incorrect_mean", "entropy/incorrect_mean last")
    last_value("cov/mean", "cov/mean last")
    _, cov = run.series("cov/mean")
    if (~np.isnan(cov)).any():
        lines.append(f"| cov/mean average over steps | {fmt(float(np.nanmean(cov)))} |")
    fit = run.law_fit()
    if fit is not None:
        lines.append(
            f"| entropy law R = −a·exp(H) + b | a = {fmt(fit.a)}, b = {fmt(fit.b)}, "
            f"R² = {fmt(fit.r2)}, {fit.n} points |"
        )
        lines.append(f"| entropy law ceiling (predicted pass@1 at H = 0) | {fmt(fit.ceiling)} |")
    else:
        _, h = run.series("entropy_law/point_entropy")
        lines.append(f"| entropy law | not fitted ({len(h)} points; needs 3) |")
    lines.append(law_prediction_row(run))
    warn_steps, warned = run.series("entropy/collapse_warning")
    if len(warn_steps):
        fired = warn_steps[warned > 0]
        lines.append(
            f"| entropy collapse warning | {'step ' + str(int(fired[0])) if len(fired) else 'never fired'} |"
        )
    if run.skipped_lines:
        lines.append(f"| unparseable lines skipped | {run.skipped_lines} |")
    return "\n".join(lines) + "\n"


def law_pairs(run: Run) -> list[tuple[float, float]]:
    """The (entropy, pass@1) pairs the trainer logged (``entropy_law/point_entropy``, ``entropy_law/point_pass@1``,
    written together on one step), in step order."""
    return [
        (r["entropy_law/point_entropy"], r["entropy_law/point_pass@1"])
        for r in run.records
        if isinstance(r.get("entropy_law/point_entropy"), (int, float))
        and isinstance(r.get("entropy_law/point_pass@1"), (int, float))
    ]


def law_prediction_row(run: Run) -> str:
    """The law tested as its authors test it (``rlvr.metrics.entropy_law.law_prediction``) on the (entropy,
    pass@1) pairs the trainer logged (``entropy_law/point_entropy``, ``entropy_law/point_pass@1``), in step
    order: the first EARLY_FRACTION of them fitted, each later one predicted at its own entropy."""
    pairs = law_pairs(run)
    what = f"entropy law prediction (fit on the first {EARLY_FRACTION:.0%} of {len(pairs)} pairs)"
    got = law_prediction([h for h, _ in pairs], [r for _, r in pairs], EARLY_FRACTION)
    if got is None:
        return f"| {what} | not tested (needs 3 early pairs with a spread in entropy, and a later one) |"
    return (
        f"| {what} | law prediction MAE {fmt(got.law_mae)} vs naive {fmt(got.naive_mae)} ({got.n_later} later "
        f"evaluations); its ceiling at H = 0, {fmt(got.ceiling_extrapolated)}, is an extrapolation |"
    )


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
                fmt(final["acc/mean"][1]) if final["acc/mean"] else "n/a",
                fmt(final["entropy/mean"][1]) if final["entropy/mean"] else "n/a",
                fmt(float(ok.min())) if len(ok) else "n/a",
                fmt(final["eval/pass@1"][1]) if final["eval/pass@1"] else "n/a",
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


def _mean_std(s: Spread) -> str:
    """Mean ± std; the mean alone for one seed (no spread to show)."""
    return fmt(s.mean) if s.n == 1 else f"{fmt(s.mean)} ± {fmt(s.std)}"


def _spread_cell(s: Spread | None, seeds: int) -> str:
    """Mean ± std, with "(n of N)" when only n of the setting's N seeds have the number."""
    if s is None:
        return "n/a"
    return _mean_std(s) if s.n == seeds else f"{_mean_std(s)} ({s.n} of {seeds})"


def _collapse_cell(summary: SettingSummary) -> str:
    """The warning's step, mean ± std over the seeds where it fired, and in how many of the seeds that logged it
    it fired."""
    if summary.collapse_logged == 0:
        return "n/a"
    if summary.collapse_fired == 0:
        return "never"
    return (
        f"{_mean_std(summary.collapse_step)} (fired in {summary.collapse_fired} of {summary.collapse_logged})"
    )


def seeds_table(report: SeedReport) -> str:
    """A markdown table, a row per setting: its swept values (trainer.seed aside), its seeds, and mean ± std
    over them of the final and minimum entropy, the collapse warning's step, the final pass@1 beside the
    entropy-law ceiling fitted on the first quarter of each run, and the final pass@K for the largest K."""
    keys = list(report.groups[0].values) or ["setting"]
    header = [
        *keys,
        "seeds",
        "entropy/mean final",
        "entropy/mean min",
        "collapse warning step",
        "eval/pass@1 final",
        f"law ceiling, first {EARLY_FRACTION:.0%} of steps",
    ]
    if report.pass_k_key is not None:
        header.append(f"{report.pass_k_key} final")
    rows = [header, ["---"] * len(header)]
    for group, summary in zip(report.groups, report.summaries):
        n = len(group.runs)
        seeds = ", ".join("n/a" if s is None else str(s) for s in group.seeds)
        row = [
            *(list(group.values.values()) or ["all runs"]),
            f"{n} ({seeds})",
            _spread_cell(summary.final_entropy, n),
            _spread_cell(summary.min_entropy, n),
            _collapse_cell(summary),
            _spread_cell(summary.final_pass1, n),
            _spread_cell(summary.early_ceiling, n),
        ]
        if report.pass_k_key is not None:
            row.append(_spread_cell(summary.final_passk, n))
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
