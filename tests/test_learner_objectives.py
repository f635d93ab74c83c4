"""Learner.update against the papers' objectives, with numbers worked by hand: the 80/20 normaliser, the Dr. GRPO
constant, mini-batches of whole groups and what is logged over them, and a clip that acts."""

import copy

import pytest
import torch
from accelerate import Accelerator
from helpers import rollout_batch

from rlvr import algo
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, ClipConfig, EntropyMaskConfig, LearnerConfig, OptimConfig
from rlvr.learner import Learner
from rlvr.microbatch import minibatch_indices


def _learner(model, lr=1e-2, max_new_tokens=None, **algo_overrides) -> Learner:
    algo_cfg = AlgoConfig(**{"group_size": 2, "loss_agg": "token_mean", **algo_overrides})
    optim = OptimConfig(lr=lr, max_grad_norm=1e9, eps=1.0)
    learner_cfg = LearnerConfig(micro_batch_size=3)
    return Learner(
        model, Accelerator(cpu=True), algo_cfg, optim, learner_cfg, 1.0, 10, max_new_tokens=max_new_tokens
    )


def _with_advantages(batch: RolloutBatch, advantages: list[float]) -> RolloutBatch:
    return RolloutBatch(
        batch.input_ids,
        batch.attention_mask,
        batch.response_mask,
        torch.tensor(advantages),
        batch.rollout_logp,
    )


# rollout_batch(n=4): response lengths 1, 3, 5, 2 -> 11 response tokens. With one optimizer step every ratio is 1,
# so each token's policy loss is -A of its sequence.
LENGTHS = [1, 3, 5, 2]


def test_forking_token_loss_keeps_the_all_token_normaliser(tiny_model, tokenizer):
    """Wang et al. 2025: (1 / sum_i |o_i|) sum_i sum_t I[H >= tau] * (...), the indicator inside DAPO's token-level
    sum. top 20% of 11 tokens = ceil(2.2) = 3 tokens; with A = 1 everywhere the loss is -3/11. Normalising by the
    kept tokens (the old learner) gave -3/3 = -1, a policy gradient 11/3 times too large (5x at scale)."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [1.0, 1.0, 1.0, 1.0])
    assert batch.response_mask.sum(-1).tolist() == LENGTHS
    learner = _learner(copy.deepcopy(tiny_model), entropy_mask=EntropyMaskConfig(top_frac=0.2))
    metrics = learner.update(batch).metrics
    assert metrics["learner/pg_token_frac"] == pytest.approx(3 / 11)
    assert metrics["loss/policy"] == pytest.approx(-3 / 11, rel=1e-6)


def test_forking_token_loss_per_sequence_mean_divides_by_each_whole_response(tiny_model, tokenizer):
    """GRPO's per-sequence mean with the mask inside: -(1/4) sum_i k_i / |o_i|, k_i the kept tokens of row i (which
    rows keep them depends on the model's entropies: read back from the update's pre-pass). The old learner divided
    each row by its kept tokens and counted only rows that kept one: -1 whatever the mask."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [1.0, 1.0, 1.0, 1.0])
    learner = _learner(
        copy.deepcopy(tiny_model),
        loss_agg="seq_mean_token_mean",
        entropy_mask=EntropyMaskConfig(top_frac=0.2),
    )
    result = learner.update(batch)
    kept = algo.top_entropy_mask(result.entropy, batch.response_mask, 0.2).sum(-1).tolist()
    assert sum(kept) == 3
    expected = -sum(k / n for k, n in zip(kept, LENGTHS)) / 4
    assert result.metrics["loss/policy"] == pytest.approx(expected, rel=1e-6)
    assert expected > -1.0


def test_dr_grpo_divides_by_the_generation_budget(tiny_model, tokenizer):
    """Dr. GRPO: sum_i sum_t (-A_i) / (max_new_tokens * n_seq). A = 1, -1, 0.5, 0 over 1, 3, 5, 2 tokens and a
    budget of 8: -(1 - 3 + 2.5 + 0) / (8 * 4) = -0.015625. The old learner divided by the batch's padded width
    (prompt included), which changes from batch to batch."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [1.0, -1.0, 0.5, 0.0])
    learner = _learner(copy.deepcopy(tiny_model), max_new_tokens=8, loss_agg="seq_mean_token_sum_norm")
    metrics = learner.update(batch).metrics
    assert metrics["loss/policy"] == pytest.approx(-0.015625, rel=1e-6)
    assert batch.input_ids.shape[1] != 8
    with pytest.raises(ValueError, match="generation budget"):
        _learner(copy.deepcopy(tiny_model), loss_agg="seq_mean_token_sum_norm").update(batch)


@pytest.mark.parametrize(
    ("n_groups", "minibatch_prompts", "num_minibatches", "sizes"),
    [
        (32, 8, 1, [8, 8, 8, 8]),  # the quickstart's full batch
        (27, 8, 1, [7, 7, 7, 6]),  # dynamic sampling ran out of rounds: 4 steps, as even as can be
        (9, 8, 1, [5, 4]),  # not 8 + a remnant of 1
        (3, 8, 1, [3]),
        (5, None, 4, [2, 1, 1, 1]),
        (3, None, 4, [1, 1, 1]),  # never a mini-batch without a group
        (6, None, 1, [6]),
    ],
)
def test_minibatches_are_whole_groups_split_evenly(n_groups, minibatch_prompts, num_minibatches, sizes):
    got = minibatch_indices(n_groups, 3, minibatch_prompts, num_minibatches)
    assert [len(mb) // 3 for mb in got] == sizes
    assert torch.equal(torch.cat(got), torch.arange(n_groups * 3))  # every sequence once, in order
    assert all(len(mb) % 3 == 0 and mb[0] % 3 == 0 for mb in got)  # whole groups


def test_logged_loss_is_the_mean_over_optimizer_steps(tiny_model, tokenizer):
    """4 rows in groups of 2, two mini-batches (rows 0-1: 1 + 3 tokens; rows 2-3: 5 + 2), A = 1: each step's
    token-mean loss is -1 while the ratios stay 1 (lr 1e-9 barely moves them). Logged: their mean, -1 (the old
    learner logged the sum, -2)."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [1.0, 1.0, 1.0, 1.0])
    learner = _learner(copy.deepcopy(tiny_model), lr=1e-9, minibatch_prompts=1)
    metrics = learner.update(batch).metrics
    assert metrics["learner/minibatches"] == 2
    assert metrics["loss/policy"] == pytest.approx(-1.0, rel=1e-5)


def test_clip_higher_changes_the_update_once_the_policy_moves(tiny_model, tokenizer):
    """With several optimizer steps a batch the ratios leave 1 and the clip acts: eps_high 0.2 and 0.28 give
    different clip fractions and different weights. With one step a batch they give the same update."""
    batch = rollout_batch(tokenizer, n=8)
    weights, clip_high = {}, {}
    for steps, eps_high in ((4, 0.2), (4, 0.28), (1, 0.2), (1, 0.28)):
        learner = _learner(
            copy.deepcopy(tiny_model), lr=3e-2, minibatch_prompts=4 // steps, clip=ClipConfig(0.2, eps_high)
        )
        metrics = learner.update(batch).metrics
        clip_high[steps, eps_high] = metrics["clip/high_frac"] + metrics["clip/low_frac"]
        weights[steps, eps_high] = torch.cat([p.detach().flatten() for p in learner.unwrapped.parameters()])
    assert clip_high[4, 0.2] > clip_high[4, 0.28] >= 0 and clip_high[4, 0.2] > 0
    assert not torch.equal(weights[4, 0.2], weights[4, 0.28])
    assert clip_high[1, 0.2] == clip_high[1, 0.28] == 0
    assert torch.equal(weights[1, 0.2], weights[1, 0.28])


def test_a_batch_of_partial_groups_is_refused(tiny_model, tokenizer):
    learner = _learner(copy.deepcopy(tiny_model), group_size=4)
    with pytest.raises(ValueError, match="whole groups of algo.group_size=4"):
        learner.update(rollout_batch(tokenizer, n=6))
