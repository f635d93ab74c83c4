"""Pure tensor functions for RLVR: advantages, policy losses, KL, entropy, masks and reward shaping."""

from rlvr.algo.advantages import ADVANTAGE_MODES, group_advantages
from rlvr.algo.cov import (
    COV_MODES,
    clip_cov_loss,
    clip_cov_select,
    kl_cov_loss,
    kl_cov_select,
    token_covariance,
)
from rlvr.algo.entropy import entropy_from_logits, logprobs_from_logits, top_entropy_mask
from rlvr.algo.kl import KL_ESTIMATORS, kl_penalty
from rlvr.algo.policy_loss import (
    IS_MODES,
    LOSS_AGG_MODES,
    ISCorrection,
    aggregate_loss,
    loss_token_weights,
    ppo_clip_loss,
    sampler_is_weights,
)
from rlvr.algo.shaping import groups_with_signal, overlong_filter_mask, overlong_penalty

__all__ = [
    "ADVANTAGE_MODES",
    "COV_MODES",
    "IS_MODES",
    "ISCorrection",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "clip_cov_loss",
    "clip_cov_select",
    "entropy_from_logits",
    "group_advantages",
    "groups_with_signal",
    "kl_cov_loss",
    "kl_cov_select",
    "kl_penalty",
    "logprobs_from_logits",
    "loss_token_weights",
    "overlong_filter_mask",
    "overlong_penalty",
    "ppo_clip_loss",
    "sampler_is_weights",
    "token_covariance",
    "top_entropy_mask",
]
