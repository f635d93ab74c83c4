"""The reward's rule, whole: the math verdicts, the user's weighted terms, the accuracy that acc/mean and
dynamic sampling count, and the metrics of each term. `build_reward_model(cfg.reward)` makes it once;
`RewardModel.score` is what a step calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rlvr.reward.functions import ERROR, MATH, OK, SKIPPED, TIMEOUT, specs_from_config
from rlvr.reward.math_verifier import MathVerifier, Verdict, rewards_from_verdicts
from rlvr.reward.scorer import TermScorer

if TYPE_CHECKING:
    from rlvr.config import RewardConfig


class Verifier(Protocol):
    def verify(self, completions: Sequence[str], golds: Sequence[str]) -> list[Verdict]: ...

    def close(self) -> None: ...


def term_value(name: str, values: dict[str, float]) -> float:
    """A term's value from one sample's component values: its float, or the sum of its dict's entries."""
    return sum(v for k, v in values.items() if k == name or k.startswith(f"{name}/"))


def combine(terms: Sequence[tuple[str, float]], values: list[dict[str, float]]) -> list[float]:
    """Per sample, the reward: sum over (name, weight) terms of weight x term_value."""
    return [sum(w * term_value(name, v) for name, w in terms) for v in values]


def accuracy_verdicts(name: str, threshold: float, values: list[dict[str, float]]) -> list[Verdict]:
    """What acc/mean and dynamic sampling count when reward.accuracy names a term: CORRECT where its value is
    at least `threshold`, else INCORRECT."""
    return [Verdict.CORRECT if term_value(name, c) >= threshold else Verdict.INCORRECT for c in values]


def uses_math_golds(r: RewardConfig) -> bool:
    """Whether the reward reads the golds with math-verify (they must then parse): no terms, or a math term."""
    return not r.functions or any(t.fn == MATH for t in r.functions)


@dataclass(frozen=True)
class RewardRule:
    """The reward's rule as plain values: the math verdicts' rewards, the weighted terms ((name, weight) of
    reward.functions; none: the math verdicts alone) and what counts as correct."""

    correct: float = 1.0
    incorrect: float = 0.0
    no_answer: float = 0.0
    timeout: float = 0.0
    terms: tuple[tuple[str, float], ...] = ()
    accuracy: str = MATH
    accuracy_threshold: float = 1.0

    @classmethod
    def from_config(cls, r: RewardConfig) -> RewardRule:
        terms = tuple((t.name, t.weight) for t in r.functions)
        return cls(r.correct, r.incorrect, r.no_answer, r.timeout, terms, r.accuracy, r.accuracy_threshold)

    @property
    def has_math(self) -> bool:
        return any(name == MATH for name, _ in self.terms)


@dataclass
class Scores:
    """Per sample (in input order): the reward, the verdict acc/mean and dynamic sampling count, whether the
    final box was too long to verify, each component's value and each term's status (with reward.functions)."""

    rewards: list[float]
    verdicts: list[Verdict]
    box_too_long: list[bool]
    components: list[dict[str, float]]
    statuses: list[dict[str, str]]


class RewardModel:
    """The math verifier and the user's terms (`terms`, None without user functions) under one `rule`."""

    def __init__(self, verifier: Verifier, terms: TermScorer | None, rule: RewardRule):
        self.verifier, self.terms, self.rule = verifier, terms, rule

    @property
    def needs_rows(self) -> bool:
        """Whether `score` reads the dataset rows (the user's functions get them)."""
        return self.terms is not None

    def score(
        self, texts: Sequence[str], golds: Sequence[str], rows_json: Sequence[str] | None = None
    ) -> Scores:
        rule = self.rule
        verdicts = self.verifier.verify(texts, golds)
        # a stand-in verifier (tests) may not cut completions: then no box is too long to keep
        too_long = getattr(self.verifier, "last_box_too_long", None) or [False] * len(texts)
        rewards = rewards_from_verdicts(verdicts, rule.correct, rule.incorrect, rule.no_answer, rule.timeout)
        components: list[dict[str, float]] = [{} for _ in texts]
        statuses: list[dict[str, str]] = [{} for _ in texts]
        if not rule.terms:
            return Scores(rewards, verdicts, too_long, components, statuses)
        if self.terms is not None:
            components, statuses = self.terms.score(texts, rows_json)
        for c, r in zip(components, rewards):
            c[MATH] = r
        rewards = combine(rule.terms, components)
        if rule.has_math:  # math-verify's own faults, as the user terms' are counted
            for s, v in zip(statuses, verdicts):
                s[MATH] = TIMEOUT if v == Verdict.TIMEOUT else OK
        if rule.accuracy != MATH:  # acc/mean and dynamic sampling follow the named term
            verdicts = accuracy_verdicts(rule.accuracy, rule.accuracy_threshold, components)
        if not rule.has_math:
            for c in components:
                del c[MATH]
        return Scores(rewards, verdicts, too_long, components, statuses)

    def close(self) -> None:
        self.verifier.close()
        if self.terms is not None:
            self.terms.close()


def build_reward_model(r: RewardConfig) -> RewardModel:
    """The step's reward from reward.*: the math verifier's workers, and the user terms' workers when there
    are any."""
    verifier = MathVerifier(r.num_workers, r.timeout_s, require_boxed=r.require_boxed)
    try:
        specs = specs_from_config(r.functions)
        terms = (
            TermScorer(specs, r.num_workers, r.timeout_s, r.max_abs, r.timeout_skip_after) if specs else None
        )
    except BaseException:
        verifier.close()
        raise
    return RewardModel(verifier, terms, RewardRule.from_config(r))


def component_metrics(
    components: list[dict[str, float]], statuses: list[dict[str, str]], n: int
) -> dict[str, float]:
    """reward/<component>/mean of each term's value (and of each part of a dict-valued term, whose
    reward/<term>/mean is then the sum of its parts, as it enters the reward), and each term's error and timeout
    fractions (a skipped sample counts as a timeout), over `n` samples."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for c in components for k in c):
        out[f"reward/{key}/mean"] = sum(c.get(key, 0.0) for c in components) / n
    for name in dict.fromkeys(k.partition("/")[0] for c in components for k in c if "/" in k):
        out[f"reward/{name}/mean"] = sum(term_value(name, c) for c in components) / n
    for name in dict.fromkeys(k for s in statuses for k in s):
        out[f"reward/{name}/error_frac"] = sum(s.get(name) == ERROR for s in statuses) / n
        out[f"reward/{name}/timeout_frac"] = sum(s.get(name) in (TIMEOUT, SKIPPED) for s in statuses) / n
    return out
