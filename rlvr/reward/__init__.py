"""Rewards: verifiers for model answers and reward shaping."""

from rlvr.reward.math_verifier import MathVerifier, Verdict, rewards_from_verdicts, verify_one

__all__ = ["MathVerifier", "Verdict", "rewards_from_verdicts", "verify_one"]
