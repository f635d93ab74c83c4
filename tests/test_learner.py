import copy
import math

import pytest
import torch
from accelerate import Accelerator
from helpers import max_rel_error, rollout_batch
from margins import within

from rlvr.algo import entropy_from_logits, logprobs_from_logits
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, KLConfig, LearnerConfig, OptimConfig, RolloutConfig
from rlvr.learner import Learner, lr_factor, response_logp_entropy
from rlvr.objectives import sampler_correction


def _plain(model, batch, temperature):
    """Reference: full logits for every position, then log-softmax and entropy, in the model's dtype."""
    logits = (
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / temperature
    )
    logp = torch.zeros(batch.input_ids.shape, dtype=logits.dtype)
    ent = torch.zeros(batch.input_ids.shape, dtype=logits.dtype)
    logp[:, 1:] = logprobs_from_logits(logits, batch.input_ids[:, 1:]).to(logits.dtype)
    ent[:, 1:] = entropy_from_logits(logits).detach().to(logits.dtype)
    mask = batch.response_mask
    return logp * mask, ent * mask


@pytest.mark.parametrize("chunk_size", [3, 7, 4096])  # 3 and 7 do not divide the 18 response tokens
def test_chunked_logp_entropy_and_grads_equal_plain(tiny_model, tokenizer, chunk_size):
    """Chunked float32 against the plain computation in float64. Measured on an AMD EPYC: logp and entropy
    1e-6 nats apart, every parameter gradient within 1.3e-6 of its largest element, as plain float32 is; a
    chunk that lost or repeated a token would be off by O(1)."""
    batch = rollout_batch(tokenizer, n=6)
    exact = copy.deepcopy(tiny_model).double()
    w = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))

    logp, ent = response_logp_entropy(
        tiny_model, batch.input_ids, batch.attention_mask, batch.response_mask, 0.7, chunk_size
    )
    ref_logp, ref_ent = _plain(exact, batch, 0.7)
    within((logp.double() - ref_logp).abs().max(), 5e-5, "logp")  # nats; log-probs of about -5.5
    within((ent.double() - ref_ent).abs().max(), 5e-5, "entropy")
    assert (logp[~batch.response_mask] == 0).all()

    (logp * w).sum().backward()
    (ref_logp * w.double()).sum().backward()
    for (name, p), q in zip(tiny_model.named_parameters(), exact.parameters()):
        within(max_rel_error(p.grad, q.grad), 2e-5, name)


def test_lr_factor_warmup_then_cosine():
    # warm-up 4 steps: (step+1)/4 -> 0.25, 0.5, 0.75, 1.0; then cosine over the remaining 4 steps:
    # step 6 is progress 2/4 -> 0.5 * (1 + cos(pi/2)) = 0.5
    assert [lr_factor(s, 4, 8, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(6, 4, 8, "cosine") == pytest.approx(0.5)
    assert lr_factor(8, 4, 8, "cosine") == pytest.approx(0.0)
    assert lr_factor(100, 0, 8, "constant") == 1.0


def _learner(model, micro_batch_size, adam_eps=1e-8, tis_cap=None, is_mode=None, **algo_overrides):
    # groups of 2: every test batch (4, 6, 8 rows) holds whole groups, the mini-batches split between them
    algo = AlgoConfig(**{"loss_agg": "token_mean", "group_size": 2, **algo_overrides})
    optim = OptimConfig(lr=1e-2, max_grad_norm=1e9, eps=adam_eps)
    learner_cfg = LearnerConfig(micro_batch_size=micro_batch_size)
    correction = sampler_correction(RolloutConfig(tis_cap=tis_cap, is_mode=is_mode))
    return Learner(model, Accelerator(cpu=True), algo, optim, learner_cfg, 1.0, 10, is_correction=correction)


def test_update_is_independent_of_micro_batch_size(tiny_model, tokenizer):
    """Gradient accumulation with full-batch loss weights gives the same step as one big batch."""
    batch = rollout_batch(tokenizer, n=8)
    # Adam's first step is lr * sign(g) where |g| >> eps, which would turn rounding noise in near-zero gradients
    # into full-size differences; a large eps makes the step proportional to g, so equal steps mean equal grads.
    a = _learner(copy.deepcopy(tiny_model), micro_batch_size=8, adam_eps=1.0)
    b = _learner(copy.deepcopy(tiny_model), micro_batch_size=3, adam_eps=1.0)
    ma = a.update(batch).metrics
    mb = b.update(batch).metrics
    assert ma["loss/policy"] == pytest.approx(mb["loss/policy"], rel=1e-5)
    assert ma["grad/norm"] == pytest.approx(mb["grad/norm"], rel=1e-4)
    # float32 rounding, ~1e-7 of each tensor's largest weight; a micro-batch that lost or double-counted
    # sequences moves the weights by lr * its share of the gradient, 1e-3 of them
    for (name, p), q in zip(a.unwrapped.named_parameters(), b.unwrapped.parameters()):
        within(max_rel_error(p.detach(), q.detach()), 1e-5, name)
    changed = any(not torch.equal(p, q) for p, q in zip(a.unwrapped.parameters(), tiny_model.parameters()))
    assert changed, "the update must move the weights"


def test_several_updates_per_batch_use_old_logprobs(tiny_model, tokenizer):
    """With mu=2 the second pass sees ratios != 1, so the clip statistics can become non-zero, and the
    returned 'before' tensors are the policy before any update (equal to a fresh forward of the old model)."""
    batch = rollout_batch(tokenizer, n=8)
    learner = _learner(copy.deepcopy(tiny_model), micro_batch_size=4, ppo_epochs=2, num_minibatches=2)
    result = learner.update(batch)
    ref_logp, ref_ent = _plain(tiny_model, batch, 1.0)
    torch.testing.assert_close(result.logp, ref_logp.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.entropy, ref_ent, rtol=1e-5, atol=1e-6)
    # lr 1e-2 moves ratios past 1 +- 0.2
    assert result.metrics["clip/low_frac"] + result.metrics["clip/high_frac"] > 0


def test_kl_reference_and_reset(tiny_model, tokenizer):
    batch = rollout_batch(tokenizer, n=4)
    learner = _learner(copy.deepcopy(tiny_model), micro_batch_size=4, kl=KLConfig(coef=0.1))
    first = learner.update(batch).metrics
    assert first["kl/ref"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first step
    second = learner.update(batch).metrics
    assert second["kl/ref"] > 1e-6  # the policy moved away from the reference
    learner.reset_reference()
    for p, q in zip(learner.reference.parameters(), learner.unwrapped.parameters()):
        assert torch.equal(p, q)
    assert not any(p.requires_grad for p in learner.reference.parameters())


def _with_rollout_logp(batch: RolloutBatch, model, shift: float = 0.0) -> RolloutBatch:
    """The batch with the sampler's logprobs set to the model's own, minus `shift` on response tokens."""
    with torch.no_grad():
        logp, _ = response_logp_entropy(
            model, batch.input_ids, batch.attention_mask, batch.response_mask, 1.0, 4096
        )
    rollout_logp = logp - shift * batch.response_mask
    return RolloutBatch(
        batch.input_ids, batch.attention_mask, batch.response_mask, batch.advantages, rollout_logp
    )


def test_tis_with_matching_rollout_logprobs_changes_nothing(tiny_model, tokenizer):
    batch = _with_rollout_logp(rollout_batch(tokenizer, n=8), tiny_model)
    plain = _learner(copy.deepcopy(tiny_model), micro_batch_size=3, adam_eps=1.0)
    tis = _learner(copy.deepcopy(tiny_model), micro_batch_size=3, adam_eps=1.0, tis_cap=2.0)
    m_plain = plain.update(batch).metrics
    m_tis = tis.update(batch).metrics
    assert "rollout/tis_weight_mean" not in m_plain  # off by default: no TIS metrics
    assert m_tis["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m_tis["rollout/tis_clip_frac"] == 0.0
    assert m_tis["loss/policy"] == pytest.approx(m_plain["loss/policy"], rel=1e-5)
    assert m_tis["grad/norm"] == pytest.approx(m_plain["grad/norm"], rel=1e-5)
    for (name, p), q in zip(plain.unwrapped.named_parameters(), tis.unwrapped.parameters()):
        within(max_rel_error(p.detach(), q.detach()), 1e-5, name)


@pytest.mark.parametrize(("cap", "weight", "clip_frac"), [(3.0, 2.0, 0.0), (1.5, 1.5, 1.0)])
def test_tis_weights_scale_the_policy_loss(tiny_model, tokenizer, cap, weight, clip_frac):
    """Every sampled token ln 2 less likely under the sampler than under the learner: pi_learner / pi_rollout
    = 2 everywhere, so the loss doubles (cap 3) or grows by the cap where it binds (cap 1.5)."""
    batch = rollout_batch(tokenizer, n=8)
    plain = _learner(copy.deepcopy(tiny_model), micro_batch_size=8).update(batch).metrics
    shifted = _with_rollout_logp(batch, tiny_model, shift=math.log(2.0))
    learner = _learner(copy.deepcopy(tiny_model), micro_batch_size=8, tis_cap=cap)
    metrics = learner.update(shifted).metrics
    assert metrics["rollout/tis_weight_mean"] == pytest.approx(weight, rel=1e-5)
    assert metrics["rollout/tis_clip_frac"] == clip_frac
    assert metrics["loss/policy"] == pytest.approx(weight * plain["loss/policy"], rel=1e-4)


def test_sequence_mask_drops_sequences_whose_ratio_passes_the_cap(tiny_model, tokenizer):
    """Every response token ln 2 less likely under the sampler: a sequence of n response tokens has rho = 2^n.
    Under the default cap 3 the 1-token sequences keep weight 2 on their token; every longer one is masked. Here
    lengths 1, 3, 5, 2, 4, 1, 3, 5: 2 of 24 tokens kept at 2 (weight mean 4 / 24), 22 masked."""
    batch = rollout_batch(tokenizer, n=8)
    lengths = batch.response_mask.sum(-1)
    kept = lengths == 1
    assert kept.any() and not kept.all()
    shifted = _with_rollout_logp(batch, tiny_model, shift=math.log(2.0))
    learner = _learner(copy.deepcopy(tiny_model), micro_batch_size=8, is_mode="sequence_mask")
    metrics = learner.update(shifted).metrics
    n = int(lengths.sum())
    assert metrics["rollout/tis_weight_mean"] == pytest.approx(2.0 * int(lengths[kept].sum()) / n, rel=1e-5)
    assert metrics["rollout/tis_clip_frac"] == pytest.approx(int(lengths[~kept].sum()) / n)


def test_padding_fraction_counts_positions_of_each_micro_batch(tiny_model, tokenizer):
    batch = rollout_batch(tokenizer, n=4)
    lengths = batch.attention_mask.sum(-1).tolist()
    learner = _learner(copy.deepcopy(tiny_model), micro_batch_size=2)
    metrics = learner.update(batch).metrics
    # micro-batches [0, 1] and [2, 3], each padded to its own longest row
    computed = 2 * max(lengths[:2]) + 2 * max(lengths[2:])
    assert metrics["learner/padding_frac"] == pytest.approx(1 - sum(lengths) / computed)
    assert 0 < metrics["learner/padding_frac"] < 1  # rows of different lengths: some padding, not all


def test_gradient_checkpointing_recomputes_layers_in_update(tiny_model, tokenizer):
    """model.gradient_checkpointing: each decoder layer runs twice per micro-batch (forward, then again in
    backward), even though from_pretrained (and the hf sampler) leave the module in eval mode."""
    batch = rollout_batch(tokenizer, n=4)

    def layer_calls(checkpointing: bool) -> int:
        model = copy.deepcopy(tiny_model).eval()
        if checkpointing:
            model.gradient_checkpointing_enable()
        calls = []
        # a pre-hook: the recompute stops once it has what backward needs, before forward hooks would run
        model.model.layers[0].register_forward_pre_hook(lambda *args: calls.append(1))
        _learner(model, micro_batch_size=4).update(batch)
        return len(calls)

    assert layer_calls(False) == 1  # one micro-batch, no pre-pass
    assert layer_calls(True) == 2
