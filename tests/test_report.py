import json
import math
from pathlib import Path

import pytest
import torch

from rlvr.cli.report import main, read_metrics
from rlvr.metrics.entropy_stats import entropy_stats, write_entropy_edges
from rlvr.metrics.sinks import JsonlSink


def _write_run(run_dir: Path, steps: int = 20, seed: int = 0, speed: float = 1.0) -> None:
    """A synthetic run: accuracy rises while entropy collapses; eval every 5 steps."""
    g = torch.Generator().manual_seed(seed)
    write_entropy_edges(run_dir)
    sink = JsonlSink(run_dir / "metrics.jsonl")
    for step in range(steps):
        t = step / (steps - 1)
        # log-normal per-token entropies whose median falls from ~0.5 to ~0.005 nats
        log_h = torch.randn(2000, generator=g) * 1.5 + math.log(0.5) - 4.6 * t * speed
        metrics = {
            "reward/mean": 0.2 + 0.5 * t * speed,
            "acc/mean": 0.15 + 0.5 * t * speed,
            "response/len_mean": 40 + 10 * t,
            **entropy_stats(torch.exp(log_h)),
            "clip/low_frac": 0.01 + 0.01 * t * speed,
            "clip/high_frac": 0.002 + 0.004 * t * speed,
            "kl/ref": float("nan") if step == 0 else 0.001 * step,
            "timing/step_s": 2.0,
        }
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
    for name in ("reward.png", "entropy.png", "entropy_hist.png", "clip.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in printed
    for name in ("reward.png", "entropy.png", "entropy_hist.png", "clip.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = (out / "summary.md").read_text()
    assert "## grpo" in summary and "## dapo" in summary
    assert "| steps logged | 20 (step 0 to 19) |" in summary
    assert "| acc/mean first / last / best | 0.15 / 0.65 / 0.65 (step 19) |" in summary
    assert "entropy/mean first / last / min" in summary
    assert "| eval/pass@1 last (step 19) | 0.6 |" in summary
    assert summary.index("eval/pass@1 last") < summary.index("eval/pass@8 last")
    assert "| unparseable lines skipped | 1 |" in summary


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
    for name in ("reward.png", "entropy.png", "entropy_hist.png", "clip.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "| acc/mean | not logged |" in summary
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
