"""learner.compile: the trainer compiles the policy's decoder in place (Module.compile, dynamic=True) before
the Learner is built. This runs inductor for real on the CPU (a cold compile takes ~40 s of CPU here)."""

import copy

import pytest
import torch
from accelerate import Accelerator
from helpers import rollout_batch

from rlvr.config import AlgoConfig, KLConfig, LearnerConfig, OptimConfig
from rlvr.learner import Learner


def _learner(model):
    # a large Adam eps makes the first step proportional to the gradient, so equal weights mean equal grads
    algo = AlgoConfig(loss_agg="token_mean", group_size=2, kl=KLConfig(coef=0.1))
    optim = OptimConfig(lr=1e-2, max_grad_norm=1e9, eps=1.0)
    return Learner(model, Accelerator(cpu=True), algo, optim, LearnerConfig(micro_batch_size=8), 1.0, 10)


def test_compiled_decoder_updates_like_eager(tiny_model, tokenizer):
    compiled_model = copy.deepcopy(tiny_model)
    compiled_model.get_decoder().compile(dynamic=True)  # what rlvr/trainer.py does when learner.compile
    assert compiled_model.state_dict().keys() == tiny_model.state_dict().keys()  # checkpoints, weight sync
    eager, compiled = _learner(copy.deepcopy(tiny_model)), _learner(compiled_model)
    # two batches of different widths: dynamic shapes, and the KL reference (a deep copy) must work too
    for batch in (rollout_batch(tokenizer, n=6), rollout_batch(tokenizer, n=8, seed=1)):
        expected = eager.update(batch).metrics
        got = compiled.update(batch).metrics
        # the KL is a difference of log-probs: the kernels' rounding (~1e-8) is a larger share of it
        assert got["kl/ref"] == pytest.approx(expected["kl/ref"], rel=1e-4, abs=1e-7)
        assert got["grad/norm"] == pytest.approx(expected["grad/norm"], rel=1e-4)
    for (name, p), q in zip(eager.unwrapped.named_parameters(), compiled.unwrapped.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
