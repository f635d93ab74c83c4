"""One RL step's data, from prompts to the learner's batch: sample G completions per prompt (the rollout engine),
reward them (rlvr.reward), filter the groups (DAPO dynamic sampling), shape the rewards and compute the group
advantages (rlvr.algo). The trainer's step calls these in order; none of it is a rollout engine, which is why it
sits at the loop's level and not in rlvr/rollout/.

DAPO dynamic sampling lives here: a group kept for the update has both outcomes, 0 < (correct answers) < G
(DAPO Eq. 11, on the reward's verdicts, whatever reward shaping adds); the others are dropped and more prompts
are sampled (at most `max_rounds` extra rounds) until the batch holds B groups. With `oversample` = k each round
draws ceil(k x the groups still needed) prompts and keeps at most what it needs: DAPO's way (oversample once,
filter once), with rounds as the fallback; the surplus mixed groups are dropped, their tokens counted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rlvr import algo
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig
from rlvr.reward import RewardModel, Verdict, component_metrics
from rlvr.rollout.base import Completion, RolloutEngine, SamplingParams


@dataclass
class Group:
    prompt_index: int
    completions: list[Completion]
    verdicts: list[Verdict]
    rewards: list[float]  # after shaping
    # per completion: its final box was too long for the verifier to keep whole, so its verdict is NO_ANSWER
    box_too_long: list[bool] = field(default_factory=list)
    # with reward.functions: per completion, each component's value and each user term's status
    components: list[dict[str, float]] = field(default_factory=list)
    statuses: list[dict[str, str]] = field(default_factory=list)
    home: int = 0  # the rank that generated it, which alone holds its tokens until the batch is shared
    n_tokens: list[int] | None = None  # a header's completion lengths (its completions hold no tokens)

    def lengths(self) -> list[int]:
        """Each completion's generated tokens."""
        return self.n_tokens if self.n_tokens is not None else [len(c.token_ids) for c in self.completions]

    def header(self) -> Group:
        """The group without its tokens, texts and log-probs: what every rank learns of another rank's groups
        (rewards, verdicts, lengths, finish reasons: the metrics, dynamic sampling and the batch's layout)."""
        stubs = [Completion([], [], c.finish_reason, "") for c in self.completions]
        return dataclasses.replace(self, completions=stubs, n_tokens=self.lengths())


@dataclass
class Collected:
    groups: list[Group]  # the groups that go into the update
    sampled: list[Group] = field(default_factory=list)  # every group sampled this step (for metrics)
    rounds: int = 1
    rollout_s: float = 0.0
    verify_s: float = 0.0
    gen_tokens: int = 0


@dataclass
class Sampled:
    """One round of sampling: the groups, with the seconds spent generating and rewarding them (the slowest
    rank's, under data parallelism)."""

    groups: list[Group]
    rollout_s: float
    verify_s: float


def generate_share(
    engine: RolloutEngine,
    prompt_ids: Sequence[Sequence[int]],
    indices: Sequence[int],
    n: int,
    params: SamplingParams,
    seed: int,
    first_index: int = 0,
) -> tuple[list[list[Completion]], float]:
    """n completions per prompt index, and the seconds they took. `first_index`: where `indices` start in the
    step's whole list (a data-parallel rank's share). No collective and no signal: it may run on a side thread
    (rlvr.rollouts, rollout.max_staleness 1)."""
    started = time.perf_counter()
    outputs = engine.generate([prompt_ids[i] for i in indices], n, params, seed, first_index=first_index)
    return outputs, time.perf_counter() - started


def score_share(
    reward: RewardModel,
    outputs: Sequence[Sequence[Completion]],
    golds: Sequence[str],
    indices: Sequence[int],
    n: int,
    rows_json: Sequence[str] | None = None,
) -> tuple[list[Group], float]:
    """The groups of `outputs`, each completion rewarded by `reward` (which reads the dataset rows `rows_json`
    when it has user functions), and the seconds that took. On the main thread: the verifier's deadline is a
    signal."""
    started = time.perf_counter()
    texts = [c.text for cs in outputs for c in cs]
    rows = [rows_json[i] for i in indices for _ in range(n)] if rows_json is not None else None
    s = reward.score(texts, [golds[i] for i in indices for _ in range(n)], rows)
    groups = [
        Group(i, list(cs), *(part[k * n : (k + 1) * n] for part in (s.verdicts, s.rewards, s.box_too_long,
                                                                   s.components, s.statuses)))
        for k, (i, cs) in enumerate(zip(indices, outputs))
    ]  # fmt: skip
    return groups, time.perf_counter() - started


def sample_groups(
    engine: RolloutEngine,
    reward: RewardModel,
    prompt_ids: Sequence[Sequence[int]],
    golds: Sequence[str],
    indices: Sequence[int],
    n: int,
    params: SamplingParams,
    seed: int,
    first_index: int = 0,
    rows_json: Sequence[str] | None = None,
) -> Sampled:
    """`generate_share`, then `score_share`."""
    outputs, rollout_s = generate_share(engine, prompt_ids, indices, n, params, seed, first_index)
    groups, verify_s = score_share(reward, outputs, golds, indices, n, rows_json)
    return Sampled(groups, rollout_s, verify_s)


def shape_rewards(groups: list[Group], cfg: AlgoConfig, max_new_tokens: int) -> None:
    """DAPO soft overlong punishment, added to the verifier's rewards in place."""
    if not cfg.overlong.shaping:
        return
    for g in groups:
        lengths = torch.tensor(g.lengths())
        penalty = algo.overlong_penalty(lengths, max_new_tokens, cfg.overlong.cache_len, cfg.overlong.penalty)
        g.rewards = [r + p for r, p in zip(g.rewards, penalty.tolist())]


def prompts_to_draw(need: int, cfg: AlgoConfig) -> int:
    """The prompts a round draws for `need` more groups: ceil(oversample x need) with dynamic sampling."""
    ds = cfg.dynamic_sampling
    return math.ceil(need * ds.oversample) if ds.enabled else need


def collect(
    next_indices: Callable[[int], list[int]],
    sample: Callable[[list[int], int], Sampled],
    batch_groups: int,
    cfg: AlgoConfig,
    max_new_tokens: int,
) -> Collected:
    """Sample `batch_groups` groups; with dynamic sampling keep only groups with both correct and incorrect
    answers, refilling for at most cfg.dynamic_sampling.max_rounds extra rounds (the batch may end smaller, never
    larger: the learner then splits it into fewer mini-batches, `rlvr.learner.minibatch_indices`)."""
    result = Collected(groups=[], rounds=0)
    ds = cfg.dynamic_sampling
    while True:
        need = batch_groups - len(result.groups)
        sampled = sample(next_indices(prompts_to_draw(need, cfg)), result.rounds)
        groups = sampled.groups
        shape_rewards(groups, cfg, max_new_tokens)
        result.rounds += 1
        result.rollout_s += sampled.rollout_s
        result.verify_s += sampled.verify_s
        result.sampled.extend(groups)
        result.gen_tokens += sum(n for g in groups for n in g.lengths())
        if not ds.enabled:
            result.groups = groups
            return result
        # on accuracy, not on the shaped reward: an all-correct group with one answer in the overlong zone
        # (rewards 1, 1, 1, 0.5) would otherwise be kept and trained on its length alone
        correct = torch.tensor(
            [v == Verdict.CORRECT for g in groups for v in g.verdicts], dtype=torch.float32
        )
        mixed = algo.groups_with_signal(correct, cfg.group_size).tolist()
        result.groups.extend(g for g, ok in zip(groups, mixed) if ok)
        if len(result.groups) >= batch_groups or result.rounds > ds.max_rounds:
            result.groups = result.groups[:batch_groups]
            return result


def to_batch(
    groups: list[Group], prompt_ids: Sequence[Sequence[int]], cfg: AlgoConfig, pad_id: int
) -> RolloutBatch:
    """Right-padded tensors of prompt + response for the learner, with group advantages."""
    rows = [(list(prompt_ids[g.prompt_index]), c) for g in groups for c in g.completions]
    width = max((len(p) + len(c.token_ids) for p, c in rows), default=1)  # a rank may hold no rows
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    response = torch.zeros((n, width), dtype=torch.bool)
    rollout_logp = torch.zeros((n, width), dtype=torch.float32)
    for i, (p, c) in enumerate(rows):
        end = len(p) + len(c.token_ids)
        input_ids[i, :end] = torch.tensor(p + c.token_ids)
        attention[i, :end] = 1
        response[i, len(p) : end] = True
        rollout_logp[i, len(p) : end] = torch.tensor(c.logprobs)
    if cfg.overlong.filter:
        truncated = torch.tensor([c.truncated for _, c in rows])
        response = algo.overlong_filter_mask(response, truncated)
    rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
    advantages = algo.group_advantages(rewards, cfg.group_size, cfg.advantage)
    return RolloutBatch(input_ids, attention, response, advantages, rollout_logp)


def rollout_metrics(
    collected: Collected, group_size: int, gen_tokens_total: int | None = None
) -> dict[str, float]:
    """Reward, accuracy, length and group statistics over every completion sampled this step.

    `rollout/gen_tokens` counts the tokens generated this step in every round (dynamic sampling's refills
    included), over all ranks: `collected` holds every rank's groups (another rank's as headers). With `gen_tokens_total` (the
    run's running count, this step included) it is logged as `rollout/gen_tokens_total`: the axis on which runs
    compare at equal generation compute (training rollouts only; evaluation is not counted)."""
    comps = [c for g in collected.sampled for c in g.completions]
    verdicts = [v for g in collected.sampled for v in g.verdicts]
    rewards = torch.tensor([r for g in collected.sampled for r in g.rewards], dtype=torch.float32)
    lengths = torch.tensor([n for g in collected.sampled for n in g.lengths()], dtype=torch.float32)
    zero_std = ~algo.groups_with_signal(rewards, group_size)
    n = len(comps)
    return {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if n > 1 else 0.0,
        "acc/mean": sum(v == Verdict.CORRECT for v in verdicts) / n,
        "verify/no_answer_frac": sum(v == Verdict.NO_ANSWER for v in verdicts) / n,
        "verify/timeout_frac": sum(v == Verdict.TIMEOUT for v in verdicts) / n,
        # NO_ANSWER because the box was longer than the verifier keeps (counted in no_answer_frac too)
        "verify/box_too_long_frac": sum(b for g in collected.sampled for b in g.box_too_long) / n,
        "response/len_mean": lengths.mean().item(),
        "response/len_max": lengths.max().item(),
        "response/truncated_frac": sum(c.truncated for c in comps) / n,
        "groups/zero_std_frac": zero_std.float().mean().item(),
        "groups/kept": len(collected.groups),
        "dynamic/rounds": collected.rounds,
        "timing/rollout_s": collected.rollout_s,
        "timing/verify_s": collected.verify_s,
        "throughput/gen_tokens_per_s": collected.gen_tokens / max(collected.rollout_s, 1e-9),
        "rollout/gen_tokens": collected.gen_tokens,
        **({"rollout/gen_tokens_total": gen_tokens_total} if gen_tokens_total is not None else {}),
        **component_metrics(
            [c for g in collected.sampled for c in g.components],
            [s for g in collected.sampled for s in g.statuses],
            n,
        ),
    }
