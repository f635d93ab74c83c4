"""Clip-Cov and KL-Cov wired into Learner.update: selection over the mini-batch, effect on loss and weights."""

import copy

import pytest
import torch
from accelerate import Accelerator
from helpers import rollout_batch

from rlvr import algo, sharded
from rlvr.config import AlgoConfig, CovConfig, LearnerConfig, OptimConfig
from rlvr.learner import Learner, response_logp_entropy


def _learner(model, cov: CovConfig, **algo_overrides):
    algo_cfg = AlgoConfig(**{"loss_agg": "token_mean", "group_size": 4, "cov": cov, **algo_overrides})
    optim = OptimConfig(
        lr=1e-2, max_grad_norm=1e9, eps=1.0
    )  # eps 1: the step is proportional to the gradient
    return Learner(model, Accelerator(cpu=True), algo_cfg, optim, LearnerConfig(micro_batch_size=3), 1.0, 10)


def _moved(learner, model) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(learner.unwrapped.parameters(), model.parameters()))


def test_clip_cov_of_every_token_removes_the_whole_gradient(tiny_model, tokenizer):
    # bounds that hold every covariance and a fraction of 1: every token is selected, the loss is 0
    everything = CovConfig(mode="clip_cov", clip_frac=1.0, clip_bound_low=-1e9, clip_bound_high=1e9)
    learner = _learner(copy.deepcopy(tiny_model), everything)
    metrics = learner.update(rollout_batch(tokenizer, n=8)).metrics
    assert metrics["cov/selected_frac"] == 1.0
    assert metrics["loss/policy"] == 0.0 and metrics["grad/norm"] == 0.0
    assert not _moved(learner, tiny_model)


def test_clip_cov_selects_the_defined_tokens_of_the_batch(tiny_model, tokenizer, monkeypatch):
    """The learner hands clip_cov_select (rlvr.sharded's: over every rank's rows) the covariance of the policy
    before the update over the batch's 24 response tokens; with the paper's fraction 2e-4 that is
    max(1, floor(0.0048)) = 1 token."""
    batch = rollout_batch(tokenizer, n=8)
    seen = {}
    real = sharded.clip_cov_select

    def spy(cov, mask, *args, **kwargs):
        seen["cov"], seen["mask"] = cov, mask
        seen["selected"] = real(cov, mask, *args, **kwargs)
        return seen["selected"]

    monkeypatch.setattr(sharded, "clip_cov_select", spy)
    learner = _learner(copy.deepcopy(tiny_model), CovConfig(mode="clip_cov", clip_bound_low=-1e9))
    result = learner.update(batch)
    with torch.no_grad():
        logp, _ = response_logp_entropy(
            tiny_model, batch.input_ids, batch.attention_mask, batch.response_mask, 1.0, 4096
        )
    want = algo.token_covariance(logp, batch.advantages, batch.response_mask)
    torch.testing.assert_close(seen["cov"], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(seen["mask"], batch.response_mask) and int(batch.response_mask.sum()) == 24
    assert int(seen["selected"].sum()) == 1
    assert result.metrics["cov/selected_frac"] == pytest.approx(1 / 24)
    torch.testing.assert_close(result.logp, logp, rtol=1e-5, atol=1e-6)


def test_kl_cov_selection_is_per_mini_batch_and_penalises_from_the_second_step(
    tiny_model, tokenizer, monkeypatch
):
    """Two mini-batches of 4 rows: each selects among its own tokens. In the first optimizer step the policy is
    still the rollout policy (|logp - old| = 0); the second mini-batch is seen after one step, so its selected
    tokens carry a positive |logp - old_logp|."""
    batch = rollout_batch(tokenizer, n=8)
    masks = []
    real = sharded.kl_cov_select

    def spy(cov, mask, k_frac, rows, n_rows):
        masks.append(mask)
        return real(cov, mask, k_frac, rows, n_rows)

    monkeypatch.setattr(sharded, "kl_cov_select", spy)
    learner = _learner(copy.deepcopy(tiny_model), CovConfig(mode="kl_cov", kl_frac=0.25), num_minibatches=2)
    metrics = learner.update(batch).metrics
    # rows 0-3 hold 1+3+5+2 = 11 tokens -> floor(0.25 * 11) = 2; rows 4-7 hold 4+1+3+5 = 13 -> 3
    assert [int(m.sum()) for m in masks] == [11, 13]
    assert metrics["cov/selected_frac"] == pytest.approx(5 / 24)
    assert metrics["cov/kl_abs_mean"] > 0
    assert metrics["clip/low_frac"] == metrics["clip/high_frac"] == 0.0  # KL-Cov does not clip


def test_kl_cov_with_one_step_is_the_plain_policy_gradient(tiny_model, tokenizer):
    """With one optimizer step per batch every ratio is 1, so PPO's clip is inactive and KL-Cov's penalty is 0:
    the update equals the plain one."""
    batch = rollout_batch(tokenizer, n=8)
    plain = _learner(copy.deepcopy(tiny_model), CovConfig())
    kl_cov = _learner(copy.deepcopy(tiny_model), CovConfig(mode="kl_cov", kl_frac=0.5))
    m_plain = plain.update(batch).metrics
    m_kl = kl_cov.update(batch).metrics
    assert m_kl["cov/kl_abs_mean"] == 0.0
    assert m_kl["loss/policy"] == pytest.approx(m_plain["loss/policy"], rel=1e-5)
    for p, q in zip(plain.unwrapped.parameters(), kl_cov.unwrapped.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_clip_cov_draw_follows_the_seed(tiny_model, tokenizer):
    # every token a candidate, 0.2 of 24 -> 4 drawn: the same seed removes the same tokens, another seed others
    batch = rollout_batch(tokenizer, n=8)
    cov = CovConfig(mode="clip_cov", clip_frac=0.2, clip_bound_low=-1e9, clip_bound_high=1e9)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        learner = _learner(copy.deepcopy(tiny_model), cov)
        metrics = learner.update(batch, seed=seed).metrics
        assert metrics["cov/selected_frac"] == pytest.approx(4 / 24)
        runs[name] = [p.detach().clone() for p in learner.unwrapped.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(runs["a"], runs["b"]))
    assert not all(torch.equal(p, q) for p, q in zip(runs["a"], runs["c"]))
