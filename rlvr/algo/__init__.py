"""Pure tensor functions for RLVR: advantages, policy losses, KL, entropy, masks and reward shaping."""

from rlvr.algo.advantages import ADVANTAGE_MODES, group_advantages
from rlvr.algo.entropy import entropy_from_logits, logprobs_from_logits, top_entropy_mask
from rlvr.algo.kl import KL_ESTIMATORS, kl_penalty
from rlvr.algo.policy_loss import LOSS_AGG_MODES, aggregate_loss, loss_token_weights, ppo_clip_loss
from rlvr.algo.shaping import groups_with_signal, overlong_filter_mask, overlong_penalty

__all__ = [
    "ADVANTAGE_MODES",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "entropy_from_logits",
    "group_advantages",
    "groups_with_signal",
    "kl_penalty",
    "logprobs_from_logits",
    "loss_token_weights",
    "overlong_filter_mask",
    "overlong_penalty",
    "ppo_clip_loss",
    "top_entropy_mask",
]
