"""The learner's mechanism metrics, worked by hand (clip fractions over all response tokens, the KL term's share of
the gradient), and ProRL's reset of Adam."""

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from helpers import rollout_batch
from margins import within

from rlvr import algo
from rlvr import learner as learner_module
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, EntropyMaskConfig, KLConfig, LearnerConfig, OptimConfig
from rlvr.learner import Learner


def _learner(model, lr=1e-2, micro_batch_size=3, **algo_overrides) -> Learner:
    algo_cfg = AlgoConfig(**{"group_size": 2, "loss_agg": "token_mean", **algo_overrides})
    optim = OptimConfig(lr=lr, max_grad_norm=1e9)
    return Learner(model, Accelerator(cpu=True), algo_cfg, optim, LearnerConfig(micro_batch_size), 1.0, 10)


def _with_advantages(batch: RolloutBatch, advantages: list[float]) -> RolloutBatch:
    adv = torch.tensor(advantages)
    return RolloutBatch(batch.input_ids, batch.attention_mask, batch.response_mask, adv, batch.rollout_logp)


@pytest.mark.parametrize(("top_frac", "want"), [(None, 1.0), (0.2, 3 / 11)])
def test_clip_fractions_count_over_all_response_tokens(tiny_model, tokenizer, monkeypatch, top_frac, want):
    """Every token marked clipped (a spy on the PPO loss): the fraction is the clipped policy-gradient tokens over
    ALL response tokens and epochs. rollout_batch(n=4) has 11 response tokens; the forking-token mask keeps
    ceil(0.2 * 11) = 3, so (3 * 2 epochs) / (11 * 2) = 3/11. Over the kept tokens (the old definition) it read 1
    either way: the same absolute rate looked 1/0.2 = 5x higher under the mask."""
    ppo_clip_loss = algo.ppo_clip_loss

    def all_clipped(*args):
        loss, info = ppo_clip_loss(*args)
        return loss, {**info, "clipped_low": torch.ones_like(info["clipped_low"])}

    monkeypatch.setattr(algo, "ppo_clip_loss", all_clipped)
    mask = EntropyMaskConfig(top_frac=top_frac)
    metrics = (
        _learner(copy.deepcopy(tiny_model), ppo_epochs=2, entropy_mask=mask)
        .update(rollout_batch(tokenizer, n=4))
        .metrics
    )
    assert metrics["clip/low_frac"] == pytest.approx(want, rel=1e-12)
    assert metrics["learner/pg_token_frac"] == pytest.approx(want, rel=1e-12)


def test_kl_grad_share_by_hand(tiny_model, tokenizer):
    """One optimizer step (ratio 1), token_mean over the N = 11 tokens of lengths 1, 3, 5, 2, A = 1, -1, 0.5, -0.5
    and the k1 estimator (logp - ref_logp, d/dlogp = 1), in micro-batches of 3 sequences:
      d PG / d logp_t = -A_i / N       -> ||.||^2 = sum_i |o_i| A_i^2 / N^2 = (1 + 3 + 1.25 + 0.5) / 121 = 5.75 / 121
      d (beta KL) / d logp_t = beta / N -> ||.||^2 = beta^2 * 11 / 121
    so kl/grad_share = beta * sqrt(11 / 5.75) = 0.1 * 1.3831 = 0.13831."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [1.0, -1.0, 0.5, -0.5])
    learner = _learner(copy.deepcopy(tiny_model), kl=KLConfig(coef=0.1, estimator="k1"))
    metrics = learner.update(batch).metrics
    want = 0.1 * math.sqrt(11 / 5.75)
    within(abs(metrics["kl/grad_share"] - want) / want, 1e-5, "kl/grad_share")
    assert "kl/grad_share" not in _learner(copy.deepcopy(tiny_model)).update(batch).metrics  # no reference


def test_kl_grad_share_does_not_change_the_update(tiny_model, tokenizer, monkeypatch):
    """The measurement only reads the graph: the same weights, bit for bit, with it and without it."""
    batch = rollout_batch(tokenizer, n=8)
    kl = KLConfig(coef=0.1)
    measured = _learner(copy.deepcopy(tiny_model), num_minibatches=2, kl=kl)
    measured.update(batch)
    measured.update(batch)
    monkeypatch.setattr(learner_module, "_add_grad_sq", lambda *args: None)
    plain = _learner(copy.deepcopy(tiny_model), num_minibatches=2, kl=kl)
    plain.update(batch)
    plain.update(batch)
    for p, q in zip(measured.unwrapped.parameters(), plain.unwrapped.parameters()):
        assert torch.equal(p, q)


def test_prorl_reset_restarts_adam(tiny_model, tokenizer):
    """ProRL (Liu et al. 2025, Sec. 2.3.1) reinitialises the optimizer states at each reference reset: after
    `reset_reference()` with algo.kl.reset_optimizer, Adam's step counts and moments are gone (a fresh AdamW's
    empty state), and the next step is the one a fresh optimizer makes from the same weights and reference."""
    batch, kl = rollout_batch(tokenizer, n=8), KLConfig(coef=0.1, reset_optimizer=True)
    learner = _learner(copy.deepcopy(tiny_model), num_minibatches=2, kl=kl)
    learner.update(batch)
    learner.update(batch)
    state = learner.optimizer.state
    assert state and all(s["step"].item() == 4 for s in state.values())  # 2 updates x 2 mini-batches
    learner.reset_reference()
    assert len(learner.optimizer.state) == 0
    fresh = _learner(copy.deepcopy(learner.unwrapped), num_minibatches=2, kl=kl)
    assert len(fresh.optimizer.state) == 0
    other = rollout_batch(tokenizer, n=8, seed=1)
    learner.update(other)
    fresh.update(other)
    for p, q in zip(learner.unwrapped.parameters(), fresh.unwrapped.parameters()):
        assert torch.equal(p, q)
    for s, t in zip(learner.optimizer.state.values(), fresh.optimizer.state.values()):
        assert s["step"].item() == t["step"].item() == 2
        assert torch.equal(s["exp_avg"], t["exp_avg"]) and torch.equal(s["exp_avg_sq"], t["exp_avg_sq"])
    # without reset_optimizer the moments survive the reset
    kept = _learner(copy.deepcopy(tiny_model), num_minibatches=2, kl=KLConfig(coef=0.1))
    kept.update(batch)
    kept.reset_reference()
    assert all(s["step"].item() == 2 for s in kept.optimizer.state.values())
