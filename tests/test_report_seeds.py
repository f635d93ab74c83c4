"""rlvr-report on a sweep with several seeds per setting: settings grouped without the seed, numbers over seeds.

The sweep is hand-made (`rlvr-train -m algo.clip.eps_high=0.2,0.28 trainer.seed=0,1,2`, 16 steps) with numbers
chosen so that every aggregate is computed by hand below. d = seed - 1 (-1, 0, 1), so over the three seeds
x + c*d has mean x and sample std |c| (sqrt((c^2 + 0 + c^2) / 2)).

eps_high 0.2 ("A"): entropy/mean 1.0 + 0.1d - 0.05(t - 1) at steps t = 1..14, then 0.30 + 0.1d (the minimum)
  and 0.32 + 0.1d (the last); the collapse warning fires at step 10 + 2d; evaluated at 0, 1, 2, 3, 4, 8, 12, 16.
  The evaluations at 0..3 lie on R = b - a*exp(H) with a = 0.1, b = 0.9 + 0.05d, paired as the trainer pairs
  them: eval/pass@1 at step s with entropy/mean at step s + 1. The early window is steps <= 16/4 = 4; the
  evaluation at step 4 (far off the line, 0.1) would pair with step 5's entropy, outside it. Ceiling b - a.
eps_high 0.28 ("B"): entropy/mean 1.2 + 0.2d - 0.04(t - 1), falling to 0.6 + 0.2d at step 16; the warning fires
  at step 6 (seed 0) and 14 (seed 1), never in seed 2; evaluated every 4 steps: in steps 0..4 only one pair
  (eval 0, entropy 1), too few for a fit.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_report import _write_job  # a sweep job dir: .hydra/overrides.yaml and config.yaml

from rlvr.cli.report import FIGURES, SEEDS_FIGURE, SEEDS_HEADING, load_runs, main
from rlvr.metrics.sinks import JsonlSink
from rlvr.report.plots import PAIRED_FIGURE, plot_paired_differences
from rlvr.report.seeds import (
    early_law_fit,
    group_by_setting,
    paired_differences,
    seed_band,
    seed_report,
    spread,
)

TOTAL_STEPS = 16
SEEDS = (0, 1, 2)


def _setting_a(seed: int) -> dict[int, dict]:
    d = seed - 1
    lines: dict[int, dict] = {0: {}}
    for t in range(1, TOTAL_STEPS + 1):
        h = {15: 0.30 + 0.1 * d, 16: 0.32 + 0.1 * d}.get(t, 1.0 + 0.1 * d - 0.05 * (t - 1))
        lines[t] = {"entropy/mean": h, "entropy/collapse_warning": int(t == 10 + 2 * d)}
    a, b = 0.1, 0.9 + 0.05 * d
    for s in (0, 1, 2, 3):
        r = b - a * math.exp(lines[s + 1]["entropy/mean"])
        lines[s].update({"eval/pass@1": r, "eval/pass@4": r + 0.2})
    later = {4: 0.1, 8: 0.6, 12: 0.65, 16: 0.7 + 0.03 * d}
    for s, r in later.items():
        lines[s].update({"eval/pass@1": r, "eval/pass@4": r + 0.2})
    lines[16]["eval/pass@4"] = 0.9 + 0.02 * d
    return lines


def _setting_b(seed: int) -> dict[int, dict]:
    d = seed - 1
    fires = {0: 6, 1: 14}.get(seed)
    lines: dict[int, dict] = {0: {}}
    for t in range(1, TOTAL_STEPS + 1):
        h = 1.2 + 0.2 * d - 0.04 * (t - 1)
        lines[t] = {"entropy/mean": h, "entropy/collapse_warning": int(t == fires)}
    for s in range(0, TOTAL_STEPS + 1, 4):
        r = 0.1 + 0.025 * s + 0.1 * d * s / TOTAL_STEPS  # 0.5 + 0.1d at step 16
        lines[s].update({"eval/pass@1": r, "eval/pass@4": r + 0.3})
    return lines


def _write_seed_job(sweep: Path, num: int, eps_high: str, seed: int, lines: dict[int, dict]) -> None:
    """A job of the sweep: Hydra's overrides, config.yaml with trainer.seed, the metrics lines in step order."""
    overrides = [f"algo.clip.eps_high={eps_high}", f"trainer.seed={seed}"]
    job = sweep / f"{num}_{','.join(overrides)}"
    _write_job(job, overrides, total_steps=TOTAL_STEPS, metrics=False)
    config = json.loads((job / "config.yaml").read_text())
    config["trainer"]["seed"] = seed  # the resolved config holds every key; the helper writes only a few
    (job / "config.yaml").write_text(json.dumps(config))
    sink = JsonlSink(job / "metrics.jsonl")
    for step in sorted(lines):
        sink.log(step, lines[step])
    sink.close()


def _write_sweep(sweep: Path, seeds=SEEDS) -> None:
    """The seed loop outside, eps_high inside: the runs of a setting are not adjacent in the job order."""
    num = 0
    for seed in seeds:
        for eps_high, setting in (("0.2", _setting_a), ("0.28", _setting_b)):
            _write_seed_job(sweep, num, eps_high, seed, setting(seed))
            num += 1


def test_spread_is_mean_and_sample_std_of_the_finite_values():
    s = spread([0.1, 0.2, 0.3, None, math.nan])  # mean 0.2, std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert (s.mean, s.std, s.n) == (pytest.approx(0.2), pytest.approx(0.1), 3)
    one = spread([4.0])
    assert one.mean == 4.0 and math.isnan(one.std) and one.n == 1
    assert spread([None, math.nan]) is None


def test_seed_band_averages_over_seeds_at_each_step():
    # 3 seeds x 3 steps, values = 3 * seed + step: per step (over seeds, axis 0) the mean is 3 + step, min
    # step, max 6 + step; over the wrong axis (per seed) it would be 1, 4, 7 with the same shape
    steps = np.array([0.0, 1.0, 2.0])
    band = seed_band([(steps, 3.0 * seed + steps) for seed in range(3)])
    assert band.steps.tolist() == [0, 1, 2] and band.n == 3
    assert band.mean.tolist() == pytest.approx([3, 4, 5])
    assert band.low.tolist() == pytest.approx([0, 1, 2])
    assert band.high.tolist() == pytest.approx([6, 7, 8])


def test_seed_band_keeps_the_steps_every_seed_has():
    # a seed that crashed after step 2 and a NaN at step 4 in another: only steps 1 and 2 are in all three
    # step 1: 0, 2, 4 -> mean 2, low 0, high 4; step 2: 3, 4, 8 -> mean 5, low 3, high 8
    curves = [
        (np.array([1, 2, 3, 4]), np.array([0.0, 3.0, 6.0, 1.0])),
        (np.array([1, 2]), np.array([2.0, 4.0])),
        (np.array([1, 2, 3, 4]), np.array([4.0, 8.0, 9.0, math.nan])),
        (np.array([1, 2]), np.array([math.nan, math.nan])),  # never logged it: left out, not an empty band
    ]
    band = seed_band(curves)
    assert band.steps.tolist() == [1, 2] and band.n == 3
    assert band.mean.tolist() == pytest.approx([2, 5])
    assert (band.low.tolist(), band.high.tolist()) == ([0, 3], [4, 8])
    assert seed_band([(np.array([1]), np.array([1.0])), (np.array([2]), np.array([1.0]))]) is None


def test_early_law_fit_pairs_each_evaluation_with_the_next_steps_entropy():
    # the module's example: x = exp(H) = 1, 2, 3 with R = 0.5, 0.3, 0.1 on R = -0.2x + 0.7: ceiling -0.2 + 0.7 = 0.5
    # evaluations at steps 0, 1, 2 meet the entropies of steps 1, 2, 3; horizon 12 keeps steps <= 3, so the
    # evaluation at step 3 (0.9, off the line) and step 4's entropy (its partner) are not fitted
    steps = [0, 1, 2, 3, 4]
    entropy = [math.nan, math.log(1), math.log(2), math.log(3), math.log(4)]
    pass_at_1 = [0.5, 0.3, 0.1, 0.9, math.nan]
    fit = early_law_fit(steps, entropy, pass_at_1, horizon=12)
    assert (fit.a, fit.b, fit.n) == (pytest.approx(0.2), pytest.approx(0.7), 3)
    assert fit.ceiling == pytest.approx(0.5)
    # horizon 8 keeps steps 0..2: two pairs, too few for a fit
    assert early_law_fit(steps, entropy, pass_at_1, horizon=8) is None


def test_settings_grouped_without_the_seed_and_their_numbers(tmp_path):
    sweep = tmp_path / "sweep"
    _write_sweep(sweep)
    runs = load_runs([sweep])

    groups = group_by_setting(runs)
    assert [g.label for g in groups] == ["algo.clip.eps_high=0.2", "algo.clip.eps_high=0.28"]
    assert [g.seeds for g in groups] == [[0, 1, 2], [0, 1, 2]]
    report = seed_report(runs)
    assert report.pass_k_key == "eval/pass@4"
    a, b = report.summaries

    # A: final entropy 0.32 + 0.1d, minimum (step 15) 0.30 + 0.1d
    assert (a.final_entropy.mean, a.final_entropy.std, a.final_entropy.n) == (
        pytest.approx(0.32),
        pytest.approx(0.1),
        3,
    )
    assert (a.min_entropy.mean, a.min_entropy.std) == (pytest.approx(0.30), pytest.approx(0.1))
    # warning at steps 8, 10, 12: mean 10, std 2, in all three seeds
    assert (a.collapse_step.mean, a.collapse_step.std) == (pytest.approx(10), pytest.approx(2))
    assert (a.collapse_fired, a.collapse_logged) == (3, 3)
    # final pass@1 0.7 + 0.03d, pass@4 0.9 + 0.02d; the early fit recovers a = 0.1, b = 0.9 + 0.05d exactly:
    # ceiling b - a = 0.8 + 0.05d
    assert (a.final_pass1.mean, a.final_pass1.std) == (pytest.approx(0.7), pytest.approx(0.03))
    assert (a.final_passk.mean, a.final_passk.std) == (pytest.approx(0.9), pytest.approx(0.02))
    assert (a.early_ceiling.mean, a.early_ceiling.std, a.early_ceiling.n) == (
        pytest.approx(0.8),
        pytest.approx(0.05),
        3,
    )

    # B: entropy still falling at step 16: final = minimum = 1.2 + 0.2d - 0.6 = 0.6 + 0.2d
    assert (b.final_entropy.mean, b.final_entropy.std) == (pytest.approx(0.6), pytest.approx(0.2))
    assert (b.min_entropy.mean, b.min_entropy.std) == (pytest.approx(0.6), pytest.approx(0.2))
    # warning at steps 6 and 14 (mean 10, std sqrt((16 + 16) / 1) = 5.657), not in seed 2
    assert (b.collapse_step.mean, b.collapse_step.std) == (pytest.approx(10), pytest.approx(math.sqrt(32)))
    assert (b.collapse_fired, b.collapse_logged) == (2, 3)
    assert (b.final_pass1.mean, b.final_pass1.std) == (pytest.approx(0.5), pytest.approx(0.1))
    assert (b.final_passk.mean, b.final_passk.std) == (pytest.approx(0.8), pytest.approx(0.1))
    assert b.early_ceiling is None

    # A's entropy band, step by step over its three seeds (not over B's runs, not over steps): mean
    # 1.0 - 0.05(t - 1) at t <= 14, the seeds 0.1 either side
    band = seed_band([run.series("entropy/mean") for run in groups[0].runs])
    t = np.arange(1, 15)
    assert band.steps.tolist() == list(range(1, 17)) and band.n == 3
    assert band.mean[:14].tolist() == pytest.approx((1.0 - 0.05 * (t - 1)).tolist())
    assert band.low[:14].tolist() == pytest.approx((0.9 - 0.05 * (t - 1)).tolist())
    assert band.high[:14].tolist() == pytest.approx((1.1 - 0.05 * (t - 1)).tolist())
    assert (band.mean[-1], band.low[-1], band.high[-1]) == (
        pytest.approx(0.32),
        pytest.approx(0.22),
        pytest.approx(0.42),
    )
    # B's pass@1 only where B evaluated; at step 16: 0.4, 0.5, 0.6
    band = seed_band([run.series("eval/pass@1") for run in groups[1].runs])
    assert band.steps.tolist() == [0, 4, 8, 12, 16]
    assert (band.mean[-1], band.low[-1], band.high[-1]) == (
        pytest.approx(0.5),
        pytest.approx(0.4),
        pytest.approx(0.6),
    )


def test_two_settings_paired_by_seed_with_their_intervals(tmp_path):
    # B - A per seed, d = -1, 0, 1: pass@1 (0.5 + 0.1d) - (0.7 + 0.03d) = -0.2 + 0.07d; pass@4 (0.8 + 0.1d) -
    # (0.9 + 0.02d) = -0.1 + 0.08d; entropy (0.6 + 0.2d) - (0.32 + 0.1d) = 0.28 + 0.1d. Sample std of c*d is |c|,
    # so each half-width is t(0.975, 2) * |c| / sqrt(3) = 4.302653 * c / 1.732051: 0.173890, 0.198731, 0.248414
    sweep = tmp_path / "sweep"
    _write_sweep(sweep)
    report = seed_report(load_runs([sweep]))
    got = {pm.metric: pm for pm in paired_differences(report)}
    assert list(got) == ["eval/pass@1", "eval/pass@4", "entropy/mean"]
    for metric, mean, c in (
        ("eval/pass@1", -0.2, 0.07),
        ("eval/pass@4", -0.1, 0.08),
        ("entropy/mean", 0.28, 0.1),
    ):
        pm = got[metric]
        assert pm.seeds == [0, 1, 2] and pm.interval.n == 3
        assert pm.diffs == pytest.approx([mean - c, mean, mean + c], abs=1e-9)
        half = 4.302653 * c / math.sqrt(3)
        assert pm.interval.low == pytest.approx(mean - half, abs=1e-5), metric
        assert pm.interval.high == pytest.approx(mean + half, abs=1e-5), metric
    # pass@1's interval (-0.374, -0.026) excludes 0; pass@4's (-0.299, 0.099) does not
    assert got["eval/pass@1"].interval.high < 0 < got["eval/pass@4"].interval.high

    path = tmp_path / PAIRED_FIGURE
    assert plot_paired_differences(report, path) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_differences_need_two_settings_and_common_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    _write_sweep(sweep)
    _write_seed_job(sweep, 6, "0.3", 0, _setting_b(0))  # a third setting: no pairing
    report = seed_report(load_runs([sweep]))
    assert paired_differences(report) is None
    assert not plot_paired_differences(report, tmp_path / PAIRED_FIGURE)
    assert not (tmp_path / PAIRED_FIGURE).exists()
    # setting A under seeds 0, 1, 2 and B under 1, 2, 3 (B's seed 3 as its seed 2): seeds 1 and 2 pair
    other = tmp_path / "other"
    for num, seed in enumerate(SEEDS):
        _write_seed_job(other, num, "0.2", seed, _setting_a(seed))
        _write_seed_job(other, 10 + num, "0.28", seed + 1, _setting_b(seed))
    pm = paired_differences(seed_report(load_runs([other])))[0]
    assert pm.seeds == [1, 2] and pm.interval.n == 2
    assert pm.diffs == pytest.approx([(0.4) - (0.7), (0.5) - (0.73)], abs=1e-9)


SEEDS_HEADER = (
    "| algo.clip.eps_high | seeds | entropy/mean final | entropy/mean min | collapse warning step "
    "| eval/pass@1 final | law ceiling, first 25% of steps | eval/pass@4 final |"
)
SEEDS_ROWS = [
    "| 0.2 | 3 (0, 1, 2) | 0.32 ± 0.1 | 0.3 ± 0.1 | 10 ± 2 (fired in 3 of 3) | 0.7 ± 0.03 | 0.8 ± 0.05 | 0.9 ± 0.02 |",
    "| 0.28 | 3 (0, 1, 2) | 0.6 ± 0.2 | 0.6 ± 0.2 | 10 ± 5.657 (fired in 2 of 3) | 0.5 ± 0.1 | n/a | 0.8 ± 0.1 |",
]


def test_cli_prints_and_writes_the_seeds_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _write_sweep(sweep)

    assert main([str(sweep)]) == 0

    printed = capsys.readouterr().out
    out = sweep / "report"
    summary = (out / "summary.md").read_text()
    section = summary[
        summary.index(SEEDS_HEADING + "\n") : summary.index("\n## ", summary.index(SEEDS_HEADING) + 1)
    ]
    for text in (section, printed):
        assert SEEDS_HEADER in text
        assert all(row in text for row in SEEDS_ROWS)
    assert f"![{SEEDS_FIGURE}]({SEEDS_FIGURE})" in summary
    assert (out / SEEDS_FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / SEEDS_FIGURE) in printed.split()
    # two settings: their paired differences are drawn and listed too
    assert f"![{PAIRED_FIGURE}]({PAIRED_FIGURE})" in summary
    assert (out / PAIRED_FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / PAIRED_FIGURE) in printed.split()
    for name in (*FIGURES, "summary.md"):
        assert (out / name).stat().st_size > 0, name


def test_one_seed_per_setting_gives_the_per_run_report(tmp_path, capsys):
    # eps_high 0.2 under seed 0, eps_high 0.28 under seed 1: two seeds in the sweep, one per setting
    sweep = tmp_path / "sweep"
    _write_seed_job(sweep, 0, "0.2", 0, _setting_a(0))
    _write_seed_job(sweep, 1, "0.28", 1, _setting_b(1))
    assert seed_report(load_runs([sweep])) is None

    assert main([str(sweep)]) == 0

    printed = capsys.readouterr().out
    out = sweep / "report"
    summary = (out / "summary.md").read_text()
    headings = [line for line in summary.splitlines() if line.startswith("#")]
    run_headings = [
        "## algo.clip.eps_high=0.2, trainer.seed=0",
        "## algo.clip.eps_high=0.28, trainer.seed=1",
    ]
    assert headings == ["# rlvr report", "## Runs", *run_headings, "## Figures"]
    assert SEEDS_HEADING not in printed and "law ceiling, first" not in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "summary.md"])


def test_repeats_of_one_seed_are_not_a_seed_sweep(tmp_path):
    # one setting twice under the same seed (a rerun), the other once: nothing to aggregate over seeds
    sweep = tmp_path / "sweep"
    _write_seed_job(sweep, 0, "0.2", 0, _setting_a(0))
    _write_seed_job(sweep, 1, "0.2", 0, _setting_a(0))
    _write_seed_job(sweep, 2, "0.28", 0, _setting_b(0))
    assert seed_report(load_runs([sweep])) is None
