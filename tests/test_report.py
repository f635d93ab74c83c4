import json
import math
from pathlib import Path

import pytest
import torch

from rlvr.cli.report import FIGURES, main, read_metrics
from rlvr.metrics.entropy_stats import entropy_stats, write_entropy_edges
from rlvr.metrics.sinks import JsonlSink


def _write_run(run_dir: Path, steps: int = 20, seed: int = 0, speed: float = 1.0) -> None:
    """A synthetic run: accuracy rises while entropy collapses; eval every 5 steps, each paired with the next
    step's entropy for the entropy-law; the fit (a 0.5, b 0.9) logged from the third point on."""
    g = torch.Generator().manual_seed(seed)
    write_entropy_edges(run_dir)
    sink = JsonlSink(run_dir / "metrics.jsonl")
    points = 0
    for step in range(steps):
        t = step / (steps - 1)
        # log-normal per-token entropies whose median falls from ~0.5 to ~0.005 nats
        log_h = torch.randn(2000, generator=g) * 1.5 + math.log(0.5) - 4.6 * t * speed
        stats = entropy_stats(torch.exp(log_h))
        metrics = {
            "reward/mean": 0.2 + 0.5 * t * speed,
            "acc/mean": 0.15 + 0.5 * t * speed,
            "response/len_mean": 40 + 10 * t,
            **stats,
            "entropy/above_threshold_frac": 0.3 - 0.2 * t * speed,
            "entropy/correct_mean": 0.9 * stats["entropy/mean"],
            "entropy/incorrect_mean": 1.1 * stats["entropy/mean"],
            "cov/mean": 0.05 + 0.01 * t,
            "cov/top0.2pct_mean": 3.0 + t,
            "entropy/collapse_warning": int(step == 15),
            "clip/low_frac": 0.01 + 0.01 * t * speed,
            "clip/high_frac": 0.002 + 0.004 * t * speed,
            "kl/ref": float("nan") if step == 0 else 0.001 * step,
            "timing/step_s": 2.0,
        }
        if step % 5 == 0 and step > 0:  # the evaluation at step - 1 meets this step's entropy
            points += 1
            h = stats["entropy/mean"]
            metrics.update(
                {
                    "entropy_law/point_step": step - 1,
                    "entropy_law/point_entropy": h,
                    "entropy_law/point_pass@1": -0.5 * math.exp(h) + 0.9,
                }
            )
            if points >= 3:
                metrics.update(
                    {
                        "entropy_law/a": 0.5,
                        "entropy_law/b": 0.9,
                        "entropy_law/ceiling": 0.4,
                        "entropy_law/r2": 1.0,
                        "entropy_law/n_points": points,
                    }
                )
        if step % 5 == 4:
            metrics["eval/pass@1"] = 0.2 + 0.4 * t * speed
            metrics["eval/pass@8"] = 0.5 + 0.3 * t * speed
        if step == 7:
            del metrics["clip/low_frac"]  # keys may be missing on some steps
        sink.log(step, metrics)
    sink.close()


def test_report_two_runs(tmp_path, capsys):
    a, b = tmp_path / "grpo", tmp_path / "dapo"
    _write_run(a, seed=0, speed=1.0)
    _write_run(b, seed=1, speed=0.6)
    with open(b / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "acc/m')  # a crash mid-line must not break the report

    assert main([str(a), str(b)]) == 0

    out = a / "report"
    printed = capsys.readouterr().out.split()
    assert set(FIGURES) >= {"reward.png", "entropy.png", "entropy_hist.png", "clip.png"}
    assert set(FIGURES) >= {"passk.png", "entropy_law.png", "entropy_outcome.png", "covariance.png"}
    for name in (*FIGURES, "summary.md"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in printed
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = (out / "summary.md").read_text()
    assert "## grpo" in summary and "## dapo" in summary
    assert "| steps logged | 20 (step 0 to 19) |" in summary
    assert "| acc/mean first / last / best | 0.15 / 0.65 / 0.65 (step 19) |" in summary
    assert "entropy/mean first / last / min" in summary
    assert "| eval/pass@1 last (step 19) | 0.6 (first 0.2842, best 0.6 at step 19) |" in summary
    # the last law fit logged (step 15, 3 points), its ceiling, and the step the collapse warning fired
    assert "| entropy law R = −a·exp(H) + b | a = 0.5, b = 0.9, R² = 1, 3 points |" in summary
    assert "| entropy law ceiling (predicted pass@1 at H = 0) | 0.4 |" in summary
    assert "| entropy collapse warning | step 15 |" in summary
    # 3 pairs: a quarter of them is one early pair, too few to fit
    assert "| entropy law prediction (fit on the first 25% of 3 pairs) | not tested (" in summary
    assert "| cov/mean last (step 19) | 0.06 |" in summary
    assert "entropy/correct_mean last (step 19)" in summary
    assert summary.index("eval/pass@1 last") < summary.index("eval/pass@8 last")
    assert "| unparseable lines skipped | 1 |" in summary


def test_report_tests_the_law_on_later_evaluations(tmp_path):
    # 12 pairs; the first quarter (3) on R = -0.2 exp(H) + 0.7 at exp(H) = 3, 2.5, 2 (R = 0.1, 0.2, 0.3). The 9
    # later evaluations stay at the last early value at exp(H) = 1.5, where the law predicts 0.4: law MAE 0.1,
    # naive (0.3 carried forward) 0; the early fit's ceiling -0.2 + 0.7 = 0.5 is labelled an extrapolation.
    xs = [3.0, 2.5, 2.0] + [1.5] * 9
    rs = [-0.2 * x + 0.7 for x in xs[:3]]
    rs += [rs[-1]] * 9
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for i, (x, r) in enumerate(zip(xs, rs)):
            step = 10 * i + 1
            point = {"entropy_law/point_step": step - 1, "entropy_law/point_entropy": math.log(x)}
            f.write(
                json.dumps(
                    {"step": step, "entropy/mean": math.log(x), **point, "entropy_law/point_pass@1": r}
                )
            )
            f.write("\n")
    assert main([str(tmp_path)]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert (
        "| entropy law prediction (fit on the first 25% of 12 pairs) | law prediction MAE 0.1 vs naive 0 "
        "(9 later evaluations); its ceiling at H = 0, 0.5, is an extrapolation |"
    ) in summary


def test_report_out_dir_and_sparse_metrics(tmp_path):
    run = tmp_path / "sparse"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "reward/mean": 0.1})
        + "\n"
        + json.dumps({"step": 1, "reward/mean": None})
        + "\n"
    )
    out = tmp_path / "elsewhere"
    assert main([str(run), "--out", str(out)]) == 0
    for name in (*FIGURES, "summary.md"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "| acc/mean | not logged |" in summary
    assert "| entropy law | not fitted (0 points; needs 3) |" in summary
    assert not (run / "report").exists()


def test_report_missing_metrics(tmp_path):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2


def test_read_metrics_later_line_wins(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "acc/mean": 0.1}\n{"step": 0, "acc/mean": 0.0}\n{"step": 1, "acc/mean": 0.2}\n'
    )
    records, skipped = read_metrics(path)
    assert records == [{"step": 0, "acc/mean": 0.0}, {"step": 1, "acc/mean": 0.2}] and skipped == 0


# ---- sweeps -------------------------------------------------------------------------------------------


def _write_job(job_dir: Path, overrides: list[str], total_steps: int | None, metrics: bool = True) -> None:
    """A sweep job dir as rlvr-train -m leaves it: Hydra's .hydra/overrides.yaml, config.yaml, metrics."""
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if total_steps is not None:
        values = dict(o.split("=", 1) for o in overrides)
        config = {
            "trainer": {"total_steps": total_steps, "output_dir": str(job_dir)},
            "algo": {"clip": {"eps_high": float(values["algo.clip.eps_high"])}},
        }
        (job_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    if metrics:
        _write_run(job_dir, seed=0)


def test_report_on_a_sweep_dir(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    common = ["experiment=quickstart"]
    grid = [("0.2", "0"), ("0.28", "0"), ("0.2", "0.001"), ("0.28", "0.001")]
    jobs = []
    for num, (eps, coef) in enumerate(grid):
        overrides = [*common, f"algo.clip.eps_high={eps}", f"algo.kl.coef={coef}"]
        name = f"{[0, 1, 2, 10][num]}_" + ",".join(sorted(overrides))
        jobs.append((sweep / ("later" if num == 3 else "") / name, overrides))
    _write_job(jobs[0][0], jobs[0][1], total_steps=19)
    _write_job(jobs[1][0], jobs[1][1], total_steps=19)
    _write_job(
        jobs[2][0], jobs[2][1], total_steps=None, metrics=False
    )  # failed before its config was written
    (jobs[2][0] / "error.txt").write_text("Traceback ...\nValueError: boom\n")
    _write_job(jobs[3][0], jobs[3][1], total_steps=40)  # stopped (or still running) at step 19 of 40
    _write_run(sweep / ".submitit" / "1234")  # launcher files are not runs
    (sweep / "multirun.yaml").write_text("hydra: {}\n")

    assert main([str(sweep)]) == 0

    printed = capsys.readouterr().out
    out = sweep / "report"
    table = (out / "summary.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "status" not in line]
    rows = [r for r in rows if not r.startswith("| ---") and r.count("|") == 10]  # the runs table only
    # the same synthetic metrics in each run: entropy/mean falls to 0.01552 at the last step, its minimum
    assert rows == [
        "| 0 | 0.2 | 0 | done | 19/19 | 0.65 | 0.01552 | 0.01552 | 0.6 |",
        "| 1 | 0.28 | 0 | done | 19/19 | 0.65 | 0.01552 | 0.01552 | 0.6 |",
        "| 2 | 0.2 | 0.001 | failed (see error.txt) | 0 | n/a | n/a | n/a | n/a |",
        "| later/10 | 0.28 | 0.001 | incomplete | 19/40 | 0.65 | 0.01552 | 0.01552 | 0.6 |",
    ]
    header = (
        "| run | algo.clip.eps_high | algo.kl.coef | status | steps | acc/mean final | entropy/mean final |"
    )
    assert header in table and header in printed
    assert all(row in printed for row in rows)
    assert "## algo.clip.eps_high=0.28, algo.kl.coef=0.001" in table  # runs are labelled by the swept values
    for name in (*FIGURES, "summary.md"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_swept_values_from_configs_without_hydra_records(tmp_path, capsys):
    runs = []
    for name, coef in (("low", 0.0), ("high", 0.01)):
        run = tmp_path / name
        _write_run(run, steps=5)
        config = {"trainer": {"output_dir": str(run), "total_steps": 4}, "algo": {"kl": {"coef": coef}}}
        (run / "config.yaml").write_text(json.dumps(config))
        runs.append(str(run))
    assert main(runs) == 0
    printed = capsys.readouterr().out
    assert "| run | algo.kl.coef | status |" in printed  # trainer.output_dir differs too, but is never swept
    assert "| low | 0.0 | done | 4/4 |" in printed and "| high | 0.01 | done | 4/4 |" in printed


def test_a_sweep_of_many_runs_draws_its_legends_beside_the_curves(tmp_path):
    """18 runs (6 settings x 3 seeds): the entries go beside the axes, the figure widened for them, instead of
    covering the curves and squeezing the axes to nothing; the per-run p10-p90 bands are left out."""
    from PIL import Image

    sweep = tmp_path / "sweep"
    for i in range(18):
        _write_job(sweep / f"{i}_x", [f"algo.clip.eps_high=0.{20 + i}"], total_steps=20)
    assert main([str(sweep)]) == 0
    width, _ = Image.open(sweep / "report" / "entropy.png").size
    assert width > 8 * 110 * 1.3  # 8 inches at 110 dpi, widened by the legend's column
    few = tmp_path / "few"
    for i in range(2):
        _write_job(few / f"{i}_x", [f"algo.clip.eps_high=0.{20 + i}"], total_steps=20)
    assert main([str(few)]) == 0
    assert Image.open(few / "report" / "entropy.png").size[0] == 8 * 110


def test_compute_axis_places_each_value_at_the_tokens_generated_by_its_step(tmp_path):
    """compute.png's x: the baseline evaluation (step 0) at 0 tokens, step s at rollout/gen_tokens_total of s;
    a step that logged no total (a run from before the key) is left out."""
    from rlvr.report.plots import _at_compute, plot_compute
    from rlvr.report.runs import Run

    records = [
        {"step": 0, "eval/pass@1": 0.2},
        {"step": 1, "rollout/gen_tokens_total": 100, "entropy/mean": 1.0},
        {"step": 2, "rollout/gen_tokens_total": 250, "entropy/mean": 0.8, "eval/pass@1": 0.5},
        {"step": 3, "entropy/mean": 0.7},  # no total: not placed
    ]
    run = Run(path=tmp_path, label="r", records=records)
    tokens, values = _at_compute(run, "eval/pass@1")
    assert tokens.tolist() == [0.0, 250.0] and values.tolist() == [0.2, 0.5]
    tokens, values = _at_compute(run, "entropy/mean")
    assert tokens.tolist() == [100.0, 250.0] and values.tolist() == [1.0, 0.8]
    plot_compute([run], tmp_path / "compute.png")
    assert (tmp_path / "compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
