"""The learner's dropout (off, as TRL) and its entropy regulariser (algo.entropy_reg): the bonus's gradient and
aggregation worked by hand, and the adaptive coefficient's steps."""

import copy

import pytest
import torch
from accelerate import Accelerator
from helpers import rollout_batch
from margins import within

from rlvr import algo
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, ClipConfig, KLConfig, LearnerConfig, OptimConfig
from rlvr.config_algo import EntropyRegConfig
from rlvr.learner import Learner


def _learner(model, lr=1e-2, micro_batch_size=3, **algo_overrides) -> Learner:
    algo_cfg = AlgoConfig(**{"group_size": 2, "loss_agg": "token_mean", **algo_overrides})
    optim = OptimConfig(lr=lr, max_grad_norm=1e9, eps=1.0)
    return Learner(model, Accelerator(cpu=True), algo_cfg, optim, LearnerConfig(micro_batch_size), 1.0, 10)


def _with_advantages(batch: RolloutBatch, advantages: list[float]) -> RolloutBatch:
    adv = torch.tensor(advantages)
    return RolloutBatch(batch.input_ids, batch.attention_mask, batch.response_mask, adv, batch.rollout_logp)


# ---- dropout ---------------------------------------------------------------------------------------------


def _with_dropout(tiny_model):
    """The tiny Qwen2 with attention dropout 0.1 (many hub models ship one; the shipped tiny models have 0)."""
    from transformers import Qwen2ForCausalLM

    config = copy.deepcopy(tiny_model.config)
    config.attention_dropout = 0.1
    model = Qwen2ForCausalLM(config)
    model.load_state_dict(tiny_model.state_dict())
    assert model.model.layers[0].self_attn.attention_dropout == 0.1
    return model


def test_dropout_is_off_in_the_learner(tiny_model, tokenizer, monkeypatch):
    """At lr 0 the policy never moves, so the first mini-batch's new log-probs must equal the pre-pass's (ratio 1:
    no token clipped even at eps 1e-3) and the KL to the reference, a copy of the same weights, must be 0. With
    attention dropout 0.1 left on (measured), each forward drew its own mask: the log-probs were up to 0.18 nats
    apart, 54% of the tokens clipped, kl/ref 2.6e-3. The model stays in train mode (gradient checkpointing needs
    it)."""
    firsts = []
    ppo_clip_loss = algo.ppo_clip_loss

    def spy(logp, old, *args):
        firsts.append((logp.detach().clone(), old.clone()))
        return ppo_clip_loss(logp, old, *args)

    monkeypatch.setattr(algo, "ppo_clip_loss", spy)
    clip = ClipConfig(eps_low=1e-3, eps_high=1e-3)
    learner = _learner(_with_dropout(tiny_model), lr=0.0, num_minibatches=2, kl=KLConfig(coef=0.1), clip=clip)
    metrics = learner.update(rollout_batch(tokenizer, n=8)).metrics
    logp, old = firsts[0]
    within((logp - old).abs().max(), 1e-5, "first mini-batch: new logp - old")
    assert metrics["clip/low_frac"] == metrics["clip/high_frac"] == 0.0
    within(abs(metrics["kl/ref"]), 1e-7, "kl/ref")
    assert learner.unwrapped.training
    for model in (learner.unwrapped, learner.reference):
        assert model.config.attention_dropout == 0.0
        assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)


def test_disable_dropout_zeroes_modules_attributes_and_config():
    from rlvr.learner import disable_dropout

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.3)
            self.attention_dropout = 0.2
            self.use_dropout = True  # a flag, not a probability: left alone
            self.config = type("Config", (), {})()
            self.config.hidden_dropout = 0.1

    block = Block()
    disable_dropout(block)
    assert block.drop.p == 0.0 and block.attention_dropout == 0.0 and block.config.hidden_dropout == 0.0
    assert block.use_dropout is True
    assert block.training  # not eval mode


# ---- the entropy regulariser --------------------------------------------------------------------------------


def _reference_entropy_gradient_norm(model, batch, coef: float) -> float:
    """||d(-coef * H)/d theta||, H the token-mean entropy of the response tokens, by autograd over full logits."""
    model = copy.deepcopy(model)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    mask = batch.response_mask[:, 1:]
    entropy = algo.entropy_from_logits(logits)[mask]
    (-coef * entropy.sum() / mask.sum()).backward()
    return torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters())).item()


def test_entropy_bonus_gradient_is_minus_coef_times_the_entropy_gradient(tiny_model, tokenizer):
    """With zero advantages the policy loss has no gradient, so the step's gradient is the bonus's alone:
    -coef * d/dtheta (1/N sum_t H_t) (token_mean), which autograd over the full logits gives. Without the
    regulariser the gradient is 0; before the entropy carried a gradient it was 0 with it too."""
    batch = _with_advantages(rollout_batch(tokenizer, n=4), [0.0] * 4)
    reg = _learner(copy.deepcopy(tiny_model), entropy_reg=EntropyRegConfig(coef=0.5)).update(batch).metrics
    want = _reference_entropy_gradient_norm(tiny_model, batch, 0.5)
    within(abs(reg["grad/norm"] - want) / want, 1e-4, "grad/norm vs autograd")
    assert reg["entropy_reg/coef"] == 0.5
    off = _learner(copy.deepcopy(tiny_model)).update(batch).metrics
    assert off["grad/norm"] == 0.0
    assert "entropy_reg/coef" not in off and "loss/entropy" not in off  # off: the metrics are as before


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
def test_entropy_bonus_is_aggregated_as_the_policy_loss(tiny_model, tokenizer, loss_agg):
    """loss/entropy is H aggregated with the policy loss's weights: token_mean (1/11) sum_t H_t over the 11 tokens
    of lengths 1, 3, 5, 2; seq_mean_token_mean (1/4) sum_i (1/|o_i|) sum_t H_it. One optimizer step, so the
    forward's entropies are those the update returns (pi_old)."""
    batch = rollout_batch(tokenizer, n=4)
    learner = _learner(copy.deepcopy(tiny_model), loss_agg=loss_agg, entropy_reg=EntropyRegConfig(coef=0.1))
    result = learner.update(batch)
    h = result.entropy.double()
    lengths = batch.response_mask.sum(-1).double()
    assert lengths.tolist() == [1, 3, 5, 2]
    want = h.sum() / 11 if loss_agg == "token_mean" else (h.sum(-1) / lengths).mean()
    within(abs(result.metrics["loss/entropy"] - want.item()) / want.item(), 1e-6, "loss/entropy")


def test_adaptive_coefficient_follows_the_last_step_entropy(tiny_model, tokenizer):
    """Skywork-OR1's control in the learner: step k uses the coefficient that step k-1's mean entropy set. Target
    100 nats (far above): 0, then +0.01 a step; then a target of 1e-3 (far below): down a step and not applied."""
    batch = rollout_batch(tokenizer, n=4)
    reg = EntropyRegConfig(coef=0.0, target=100.0, step=0.01, max_coef=1.0)
    learner = _learner(copy.deepcopy(tiny_model), lr=1e-3, entropy_reg=reg)
    used = [learner.update(batch).metrics["entropy_reg/coef"] for _ in range(3)]
    assert used == pytest.approx([0.0, 0.01, 0.02], abs=1e-12)
    assert learner.entropy_reg.state_dict() == {"coef": pytest.approx(0.03, abs=1e-12), "applies": True}
    reg.target = 1e-3
    assert learner.update(batch).metrics["entropy_reg/coef"] == pytest.approx(0.03, abs=1e-12)
    assert learner.update(batch).metrics["entropy_reg/coef"] == 0.0  # above the target: off
    assert learner.entropy_reg.coef == pytest.approx(0.01, abs=1e-12)
