"""The divergence guard (rlvr/guard.py): non-finite updates are skipped and stop the run after N in a row, a run
with no learning signal warns then stops, non-finite weights are refused at load and never saved."""

import copy
import logging
import math

import pytest
import torch
from accelerate import Accelerator
from helpers import metrics_lines, rollout_batch, run_train
from safetensors.torch import load_file, save_file

from rlvr.config import AlgoConfig, LearnerConfig, OptimConfig
from rlvr.guard import RunDiverged, RunGuard, nonfinite_tensors
from rlvr.learner import Learner

FINE = {"learner/nonfinite_steps": 0, "loss/policy": 0.1, "groups/zero_std_frac": 0.5}
NAN_STEP = {**FINE, "learner/nonfinite_steps": 2, "loss/policy": math.nan}
NO_SIGNAL = {**FINE, "groups/zero_std_frac": 1.0, "reward/mean": 0.0, "response/truncated_frac": 1.0}


def test_nonfinite_tensors_names_each_tensor_with_a_nan_or_an_infinity():
    named = [("a", torch.ones(3)), ("b", torch.tensor([1.0, math.nan])), ("c", torch.tensor([math.inf])),
             ("ids", torch.tensor([1, 2]))]  # fmt: skip
    assert nonfinite_tensors(named) == ["b", "c"]


def test_non_finite_steps_in_a_row_stop_the_run_naming_the_lr():
    guard = RunGuard(3, None, None, lr=1000.0)
    for step, metrics in enumerate([NAN_STEP, NAN_STEP, FINE, NAN_STEP, NAN_STEP], start=1):
        guard.observe(step, metrics)  # a finite step in between starts the count again
    with pytest.raises(RunDiverged, match=r"step 6: 3 steps in a row .* optim.lr too high \(now 1000\)"):
        guard.observe(6, NAN_STEP)


def test_no_signal_warns_then_stops(caplog):
    guard = RunGuard(3, 2, 4, lr=1e-3)
    with caplog.at_level(logging.WARNING, logger="rlvr.guard"):
        guard.observe(1, NO_SIGNAL)
        assert not caplog.records
        guard.observe(2, NO_SIGNAL)
        assert "2 steps in a row with no learning signal" in caplog.text
        guard.observe(3, NO_SIGNAL)
    with pytest.raises(RunDiverged, match=r"step 4: 4 steps .* truncated 100%.*no_signal_max_steps=4"):
        guard.observe(4, NO_SIGNAL)
    guard = RunGuard(3, 2, 4, lr=1e-3)
    for step in range(1, 10):  # a step with signal every third one: never stops
        guard.observe(step, FINE if step % 3 == 0 else NO_SIGNAL)


def test_guard_counts_resume_exactly():
    guard = RunGuard(3, None, 5, lr=1e-3)
    guard.observe(1, NAN_STEP)
    guard.observe(2, NO_SIGNAL)
    restored = RunGuard(3, None, 5, lr=1e-3)
    restored.load_state_dict(guard.state_dict())
    assert (restored.nonfinite_run, restored.no_signal_run) == (0, 1)


def test_a_non_finite_gradient_skips_the_optimizer_step(tiny_model, tokenizer):
    """NaN advantages give a NaN loss and gradient in every mini-batch: no weight moves, each skip is counted;
    the same batch with finite advantages moves them."""
    batch = rollout_batch(tokenizer, n=8)
    algo = AlgoConfig(loss_agg="token_mean", group_size=2, minibatch_prompts=2)
    learner = Learner(copy.deepcopy(tiny_model), Accelerator(cpu=True), algo, OptimConfig(lr=1e-2),
                      LearnerConfig(micro_batch_size=8), 1.0, 10)  # fmt: skip
    before = {k: v.clone() for k, v in learner.unwrapped.state_dict().items()}
    bad = copy.copy(batch)
    bad.advantages = batch.advantages.clone()
    bad.advantages[0] = math.nan
    metrics = learner.update(bad).metrics
    assert metrics["learner/nonfinite_steps"] == 1  # the first of two mini-batches holds the NaN
    assert any(not torch.equal(before[k], v) for k, v in learner.unwrapped.state_dict().items())  # the second
    fresh = Learner(copy.deepcopy(tiny_model), Accelerator(cpu=True), algo, OptimConfig(lr=1e-2),
                    LearnerConfig(micro_batch_size=8), 1.0, 10)  # fmt: skip
    bad.advantages[:] = math.nan
    metrics = fresh.update(bad).metrics
    assert metrics["learner/nonfinite_steps"] == 2 and math.isnan(metrics["grad/norm"])
    assert all(torch.equal(before[k], v) for k, v in fresh.unwrapped.state_dict().items())


# ---- as a user meets it: the real trainer ---------------------------------------------------------------


def _nan_model(tiny_cache, tmp_path):
    """A copy of the test cache's model dir with one NaN in one weight."""
    import shutil

    model = tmp_path / "nan-model"
    shutil.copytree(tiny_cache / "tiny-addition" / "model", model)
    weights = load_file(model / "model.safetensors")
    name = sorted(weights)[3]
    weights[name].view(-1)[0] = math.nan
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    return model, name


def test_a_model_with_a_nan_weight_is_refused_before_training(tiny_cache, tmp_path):
    model, name = _nan_model(tiny_cache, tmp_path)
    out = tmp_path / "run"
    proc = run_train(tiny_cache, out, "model.builtin=null", f"model.path={model}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"model.path: the weights in {model} hold NaN or infinite values: {name}" in proc.stderr
    assert not (out / "checkpoints").exists()


def test_lr_typed_1e3_stops_the_run_before_any_broken_checkpoint(tiny_cache, tmp_path):
    """optim.lr=1e3 (for 1e-3) ruins the policy in its first steps: the run exits 1 within the guard's bounds,
    naming the lr, and every checkpoint it wrote holds finite weights."""
    out = tmp_path / "run"
    proc = run_train(
        tiny_cache, out, "optim.lr=1e3", "trainer.total_steps=60", "trainer.no_signal_max_steps=5", "trainer.save_every=1", "trainer.keep_last=2",
        "eval.every=0", check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "rlvr-train: error: step" in proc.stderr and "optim.lr (now 1000)" in proc.stderr
    steps = [m["step"] for m in metrics_lines(out)]
    assert max(steps) <= 8  # the no-signal bound (5 steps in a row) past the first ruined steps
    checkpoints = sorted((out / "checkpoints").glob("step_*"))
    assert checkpoints
    for ckpt in checkpoints:
        weights = load_file(ckpt / "policy" / "model.safetensors")
        assert not nonfinite_tensors(weights.items()), ckpt


def test_the_hf_sampler_names_nan_probabilities(tiny_model, tokenizer):
    """Not torch.multinomial's "probability tensor contains either inf, nan or element < 0"."""
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.hf import HFRolloutEngine

    with torch.no_grad():
        tiny_model.model.norm.weight[0] = math.nan
    engine = HFRolloutEngine(tiny_model, tokenizer)
    with pytest.raises(RunDiverged, match="next-token probabilities hold NaN while sampling"):
        engine.generate([[5, 6, 7]], 2, SamplingParams(1.0, 1.0, 0, 4, False), seed=0)
