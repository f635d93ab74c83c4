"""The reward's whole rule: math-verify verdicts, the user's weighted terms, accuracy, and their faults.

`build_reward_model(cfg.reward).score(texts, golds, rows)` is what a step calls (rlvr.reward.model);
`check_reward_config` loads and checks the user's functions at config time (rlvr.reward.checks).
"""

from rlvr.reward.checks import check_reward_config
from rlvr.reward.health import TermFailureGuard
from rlvr.reward.math_verifier import MathVerifier, Verdict, gold_problem, rewards_from_verdicts, verify_one
from rlvr.reward.model import (
    RewardModel,
    RewardRule,
    Scores,
    build_reward_model,
    component_metrics,
    uses_math_golds,
)

__all__ = [
    "MathVerifier",
    "RewardModel",
    "RewardRule",
    "Scores",
    "TermFailureGuard",
    "Verdict",
    "build_reward_model",
    "check_reward_config",
    "component_metrics",
    "gold_problem",
    "rewards_from_verdicts",
    "uses_math_golds",
    "verify_one",
]
