"""End to end through the real command: `rlvr-train` on a freshly built tiny model, then resume, then report."""

import json
import subprocess

from helpers import BIN, RLVR_TRAIN, metrics_lines, run_train, train_env

CONTRACT_STEP_KEYS = {
    "reward/mean", "acc/mean", "response/len_mean", "response/truncated_frac", "groups/zero_std_frac",
    "entropy/mean", "entropy/p10", "entropy/p50", "entropy/p90", "entropy/p99", "entropy/hist", "entropy/top20_mean",
    "clip/low_frac", "clip/high_frac", "loss/policy", "grad/norm", "lr", "timing/rollout_s", "timing/verify_s",
    "timing/learner_s", "timing/sync_s", "timing/step_s", "throughput/gen_tokens_per_s", "throughput/learner_tokens_per_s",
    "rollout/gen_tokens", "rollout/gen_tokens_total", "entropy/bottom80_mean", "sync/bytes",
}  # fmt: skip


WANDB_OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _train(cache, out, *overrides, check=True):
    """rlvr-train on the hf backend, evaluating on 16 held-out prompts, wandb (if asked for) offline."""
    overrides = ("rollout.backend=hf", "data.eval_max_prompts=16", "trainer.progress_bar=false", *overrides)
    return run_train(cache, out, *overrides, env=WANDB_OFFLINE, check=check)


def test_train_resume_report(tiny_cache, tmp_path):
    out = tmp_path / "run"
    _train(
        tiny_cache,
        out,
        "trainer.total_steps=3",
        "eval.every=2",
        "trainer.samples_every=1",
        "trainer.save_every=3",
        "logger=wandb",
    )
    lines = metrics_lines(out)
    assert [d["step"] for d in lines] == [0, 1, 2, 3]
    assert set(lines[0]) == {"step", "eval/pass@1", "eval/pass@4", "timing/eval_s"}  # the baseline evaluation
    for d in lines[1:]:
        assert set(d) >= CONTRACT_STEP_KEYS, CONTRACT_STEP_KEYS - set(d)
        assert sum(d["entropy/hist"]) > 0
    # the quickstart's 4 optimizer steps a batch move the policy off the sampler's: the clip acts
    assert sum(d["clip/low_frac"] + d["clip/high_frac"] > 0 for d in lines[1:]) >= 2
    assert "eval/pass@1" in lines[2] and "eval/pass@1" in lines[3]  # every 2 steps and at the end
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert (out / "config.yaml").exists() and (out / "samples" / "step_000002.jsonl").exists()
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))

    proc = _train(tiny_cache, out, "trainer.total_steps=5", "eval.every=2")
    assert "resumed from" in proc.stderr + proc.stdout
    resumed = metrics_lines(out)
    assert [d["step"] for d in resumed] == [0, 1, 2, 3, 4, 5]
    # compute counted across the restart: each step's running total is the sum of the steps' tokens so far
    per_step = [d["rollout/gen_tokens"] for d in resumed[1:]]
    assert [d["rollout/gen_tokens_total"] for d in resumed[1:]] == [sum(per_step[: i + 1]) for i in range(5)]
    assert min(per_step) > 0

    report = subprocess.run([str(BIN / "rlvr-report"), str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    for name in ("reward.png", "entropy.png", "entropy_hist.png", "clip.png", "summary.md"):
        assert (out / "report" / name).stat().st_size > 0

    ckpt = out / "checkpoints" / "step_000005"
    cmd = [str(BIN / "rlvr-eval"), str(ckpt), "--data", str(tiny_cache / "tiny-addition" / "eval.jsonl")]
    cmd += ["--max-prompts", "8", "--k", "1", "2", "--max-new-tokens", "8"]
    evaluated = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["eval/prompts"] == 8 and 0 <= result["eval/pass@1"] <= result["eval/pass@2"] <= 1

    # the exported Hugging Face dir loads in vLLM (a separate process: its own engine)
    exported = tmp_path / "exported"
    assert subprocess.run([str(BIN / "rlvr-export"), str(out), str(exported)], timeout=120).returncode == 0
    cmd = [
        str(BIN / "rlvr-eval"),
        str(exported),
        "--backend",
        "vllm",
        "--data",
        str(tiny_cache / "tiny-addition" / "eval.jsonl"),
    ]
    cmd += ["--max-prompts", "4", "--k", "1", "--max-new-tokens", "8"]
    evaluated = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["eval/prompts"] == 4


def test_kl_with_reference_reset_is_checkpointed(tiny_cache, tmp_path):
    out = tmp_path / "kl"
    run = ("algo=prorl", "algo.kl.reset_every=2", "trainer.total_steps=3", "eval.every=0",
           "algo.dynamic_sampling.enabled=false")  # fmt: skip
    _train(tiny_cache, out, *run)
    lines = metrics_lines(out)
    assert [d["ref/resets"] for d in lines] == [0, 1, 1]
    assert all("kl/ref" in d for d in lines)
    assert (out / "checkpoints" / "step_000003" / "reference" / "model.safetensors").exists()
    # the same experiment with trainer.resume=never refuses to overwrite the run
    proc = _train(tiny_cache, out, *run, "trainer.total_steps=4", "trainer.resume=never", check=False)
    assert proc.returncode == 2
    assert "trainer.resume: 'never', but" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]


def test_reference_reset_on_plateau_survives_a_restart(tiny_cache, tmp_path):
    # lr 1e-9 leaves the weights as they are, and every evaluation draws with the same seed: eval/pass@1 stays
    # equal to its best (no improvement). Patience 2, evaluations at steps 0 (the best), 1, 2 -> reset at 2;
    # after the restart at 3, 4 -> reset at 4 only if the count (2 stale at the reset, then 0) was restored.
    out = tmp_path / "plateau"
    common = ["algo.kl.coef=0.001", "algo.kl.reset_on_plateau=2", "eval.every=1", "data.eval_max_prompts=4"]
    common += ["optim.lr=1e-9", "trainer.prompts_per_step=8"]
    _train(tiny_cache, out, *common, "trainer.total_steps=2")
    _train(tiny_cache, out, *common, "trainer.total_steps=4")
    lines = metrics_lines(out)
    assert [d["step"] for d in lines] == [0, 1, 2, 3, 4]
    assert len({d["eval/pass@1"] for d in lines}) == 1  # flat, as intended
    assert [d["ref/resets"] for d in lines[1:]] == [0, 1, 1, 2]
    assert (out / "checkpoints" / "step_000002" / "reference" / "model.safetensors").exists()


def test_clip_higher_changes_the_run(tiny_cache, tmp_path):
    """Two runs that differ only in algo.clip.eps_high: with several optimizer steps a batch (8 prompts in
    mini-batches of 2) the policy leaves the sampler's within a step, eps_high 0.2 clips more tokens than 0.28,
    and the next step samples from different policies. (With one step a batch the two were the same run.)"""
    common = [
        "trainer.total_steps=3",
        "eval.every=0",
        "trainer.prompts_per_step=8",
        "algo.minibatch_prompts=2",
    ]
    # a rate at which step 1's 4 optimizer steps move ratios past 1.2 (the quickstart's warms up), on every group
    # (the test model answers 1% right: dynamic sampling would keep 2 groups, 1 mini-batch)
    common += ["optim.lr=3e-3", "optim.warmup_steps=0", "algo.dynamic_sampling.enabled=false"]
    low, high = tmp_path / "low", tmp_path / "high"
    _train(tiny_cache, low, *common, "algo.clip.eps_high=0.2")
    _train(tiny_cache, high, *common, "algo.clip.eps_high=0.28")
    low, high = metrics_lines(low), metrics_lines(high)
    assert [d["learner/minibatches"] for d in low] == [4, 4, 4]
    assert low[0]["entropy/mean"] == high[0]["entropy/mean"]  # the same starting policy
    # where a positive-advantage token's ratio passes 1.2 (step 1 of this model has none: its one group with
    # signal is all wrong), 0.2 clips it and 0.28 may not; the policies part, and so do later steps' entropies
    assert any(a["clip/high_frac"] > b["clip/high_frac"] for a, b in zip(low, high))
    assert [d["entropy/mean"] for d in low] != [d["entropy/mean"] for d in high]


def test_sweep_2x2_and_its_report(tiny_cache, tmp_path):
    sweep = tmp_path / "sweep"
    env = train_env(tiny_cache, WANDB_MODE="disabled")
    cmd = [
        str(RLVR_TRAIN),
        "-m",
        "experiment=quickstart",
        "rollout.backend=hf",
        "trainer.total_steps=2",
    ]
    cmd += ["eval.every=0", "trainer.prompts_per_step=8", "trainer.progress_bar=false"]
    cmd += ["algo.clip.eps_high=0.2,0.28", "algo.kl.coef=0,0.001", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from omegaconf import OmegaConf

    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in runs] == ["0", "1", "2", "3"]
    seen = set()
    for run in runs:
        assert [d["step"] for d in metrics_lines(run)] == [1, 2]
        cfg = OmegaConf.load(run / "config.yaml")
        overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        swept = [f"algo.clip.eps_high={cfg.algo.clip.eps_high:g}", f"algo.kl.coef={cfg.algo.kl.coef:g}"]
        assert set(swept) <= set(overrides) and set(swept) <= set(run.name.split("_", 1)[1].split(","))
        assert cfg.trainer.output_dir == str(run)
        seen.add((cfg.algo.clip.eps_high, cfg.algo.kl.coef))
    assert seen == {(0.2, 0.0), (0.2, 0.001), (0.28, 0.0), (0.28, 0.001)}
    assert (sweep / "multirun.yaml").exists()

    report = subprocess.run(
        [str(BIN / "rlvr-report"), str(sweep)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| run | algo.clip.eps_high | algo.kl.coef | status | steps | acc/mean final |")
    assert [r.split(" | ")[:5] for r in rows[1:]] == [
        ["| 0", "0.2", "0.0", "done", "2/2"],  # the values used, from each run's config.yaml
        ["| 1", "0.2", "0.001", "done", "2/2"],
        ["| 2", "0.28", "0.0", "done", "2/2"],
        ["| 3", "0.28", "0.001", "done", "2/2"],
    ]
    assert "| 3 | 0.28 | 0.001 | done | 2/2 |" in (sweep / "report" / "summary.md").read_text()
    assert (sweep / "report" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ignore_eos_forces_every_completion_to_max_new_tokens(tiny_cache, two_step_run, tmp_path):
    """rollout.ignore_eos (benchmarks): the tiny policy answers in ~6 tokens and stops (in the shared reference
    run, at max_new_tokens 8, 0.6% of step 1's completions are truncated); forced, every completion is
    max_new_tokens long and truncated."""
    assert metrics_lines(two_step_run)[0]["response/truncated_frac"] < 0.5
    out = tmp_path / "forced"
    common = ("rollout.backend=hf", "trainer.total_steps=1", "eval.every=0", "rollout.max_new_tokens=12")
    run_train(tiny_cache, out, *common, "rollout.ignore_eos=true")
    (line,) = metrics_lines(out)
    assert line["response/len_mean"] == line["response/len_max"] == 12
    assert line["response/truncated_frac"] == 1.0
