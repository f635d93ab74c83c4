"""The entropy observatory end to end: `rlvr-train` (quickstart, hf rollout) -> metrics.jsonl step lines, the
wandb offline run read back, resume keeping the entropy-law points, and `rlvr-report` on the run."""

import json
import subprocess

import numpy as np
import pytest
from helpers import BIN, metrics_lines, run_train
from test_metrics_sinks import _history_rows, _wandb_records

from rlvr.metrics.entropy_stats import ENTROPY_HIST_EDGES

ENTROPY_KEYS = {
    "entropy/mean", "entropy/p10", "entropy/p50", "entropy/p90", "entropy/p99", "entropy/hist",
    "entropy/top20_mean", "entropy/above_threshold_frac", "entropy/correct_mean", "entropy/incorrect_mean",
    "entropy/collapse_warning",
}  # fmt: skip
COV_KEYS = {"cov/mean", "cov/top0.2pct_mean"}
LAW_KEYS = {"entropy_law/a", "entropy_law/b", "entropy_law/ceiling", "entropy_law/r2", "entropy_law/n_points"}
POINT_KEYS = {"entropy_law/point_step", "entropy_law/point_entropy", "entropy_law/point_pass@1"}


# wandb offline, and no system-metrics sampling on a shared 2-core box
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB__DISABLE_STATS": "true"}


def _train(cache, out, *overrides):
    overrides = ("rollout.backend=hf", "data.eval_max_prompts=16", "trainer.progress_bar=false", *overrides)
    return run_train(cache, out, *overrides, env=WANDB_ENV)


@pytest.fixture(scope="module")
def run(tiny_cache, tmp_path_factory):
    """4 steps, evaluated every step (pass@1 at steps 0..4), wandb offline, samples every 2 steps, a checkpoint
    at step 4; then resumed to step 6."""
    out = tmp_path_factory.mktemp("observatory") / "run"
    common = ["eval.every=1", "trainer.samples_every=2", "logger=wandb"]
    first = _train(tiny_cache, out, "trainer.total_steps=4", "trainer.save_every=4", *common)
    lines = metrics_lines(out)
    _train(tiny_cache, out, "trainer.total_steps=6", *common)
    return out, lines, metrics_lines(out), first


def test_every_step_line_holds_entropy_covariance_and_law_keys(run):
    out, lines, _, _ = run
    assert [d["step"] for d in lines] == [0, 1, 2, 3, 4]
    for d in lines[1:]:
        assert set(d) >= ENTROPY_KEYS | COV_KEYS | POINT_KEYS, (ENTROPY_KEYS | COV_KEYS | POINT_KEYS) - set(d)
        assert 0 <= d["entropy/above_threshold_frac"] <= 1
        assert d["entropy/collapse_warning"] in (0, 1)
        # the evaluation of step s is paired with the entropy measured at step s + 1 (the same policy)
        assert d["entropy_law/point_step"] == d["step"] - 1
        assert d["entropy_law/point_entropy"] == d["entropy/mean"]
        assert d["entropy_law/point_pass@1"] == lines[d["step"] - 1]["eval/pass@1"]
    # fitted from the third point on, and then on every step
    assert not LAW_KEYS & set(lines[1]) and not LAW_KEYS & set(lines[2])
    for d in lines[3:]:
        assert set(d) >= LAW_KEYS
        assert d["entropy_law/ceiling"] == pytest.approx(d["entropy_law/b"] - d["entropy_law/a"])
    assert [d["entropy_law/n_points"] for d in lines[3:]] == [3, 4]


def test_resume_keeps_the_law_points(run):
    out, _, resumed, _ = run
    assert [d["step"] for d in resumed] == [0, 1, 2, 3, 4, 5, 6]
    # the evaluation at step 4 was pending in the checkpoint; step 5 pairs it, so the count goes on
    assert resumed[5]["entropy_law/point_step"] == 4
    assert [d["entropy_law/n_points"] for d in resumed[3:]] == [3, 4, 5, 6]


def test_wandb_offline_run_holds_histograms_samples_and_config(run):
    out, lines, _, _ = run
    (wandb_file,) = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))[:1]  # the first of the two sessions
    records = _wandb_records(wandb_file)
    rows = _history_rows(records)
    assert set(rows) >= {1, 2, 3, 4}
    for step in (1, 2, 3, 4):
        h = rows[step]["entropy/hist"]
        assert h["_type"] == "histogram"
        assert h["values"] == lines[step]["entropy/hist"]
        np.testing.assert_allclose(h["bins"], ENTROPY_HIST_EDGES)
        assert rows[step]["cov/mean"] == pytest.approx(lines[step]["cov/mean"])
    assert rows[4]["entropy_law/ceiling"] == pytest.approx(lines[4]["entropy_law/ceiling"])
    for step in (2, 4):  # trainer.samples_every=2
        table = rows[step]["samples"]
        assert table["_type"] == "table-file" and 1 <= table["nrows"] <= 8
    assert "samples" not in rows[1]
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in header.config.update}
    assert config["monitor"]["entropy_threshold"] == 0.672 and config["algo"]["name"] == "dapo"


def test_report_on_the_run(run):
    out, *_ = run
    report = subprocess.run([str(BIN / "rlvr-report"), str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    from rlvr.cli.report import FIGURES

    for name in (*FIGURES, "summary.md"):
        assert (out / "report" / name).stat().st_size > 0, name
    summary = (out / "report" / "summary.md").read_text()
    assert "entropy law ceiling (predicted pass@1 at H = 0)" in summary
    assert "6 points" in summary
