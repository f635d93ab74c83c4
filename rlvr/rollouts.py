"""The trainer's rollouts: each step's groups (sampled on this rank's share of the prompts, rewarded, their headers
gathered, filtered: rlvr.pipeline) and the learner's weights into the rollout engine, in one of two orders.

- `rollout.max_staleness` 0 (the default): sample, update, sync. Every batch comes from the weights the learner
  updates (`rollout/policy_lag` 0).
- `rollout.max_staleness` 1: the next step's first round is generated on a side thread while the learner
  updates on this one, from the weights before this update; the engine takes the learner's weights between two
  generations, never during one. Every batch after the first is one update behind (`rollout/policy_lag` 1);
  the learner corrects for it with AReaL's decoupled objective (docs/ALGORITHMS.md): the clip against its own
  pre-pass π_old, the importance weight π_old/π_behaviour from `rollout.is_mode`. Refill rounds of dynamic
  sampling and the rewards run on the main thread: the verifier's deadline is a signal, gathers are collectives.

Versions count updates: the learner's after step t is t; `engine_version` is the version of the weights the
engine holds. A checkpoint holds the batch in flight (every rank's share, gathered) and `engine_version`, so
that a resumed run trains on the very samples the first run would have (`state_dict`, `load_state_dict`).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch

from rlvr import distributed as dist
from rlvr.config import RLVRConfig
from rlvr.data.prompts import PromptSampler
from rlvr.hashing import derive_seed
from rlvr.pipeline import (
    Collected,
    Sampled,
    collect,
    generate_share,
    prompts_to_draw,
    score_share,
)
from rlvr.reward import RewardModel
from rlvr.rollout.base import Completion, RolloutEngine, SamplingParams


@dataclass
class Ahead:
    """A first round generated ahead of its step: its prompts (all ranks'), the version that generates it, and
    this rank's share as a future of (completions, generation seconds, when it ended)."""

    step: int
    indices: list[int]
    version: int
    future: Future
    idle_s: float = 0.0  # the engine's idle seconds before it started (timing/rollout_wait_s)


class Rollouts:
    def __init__(self, cfg: RLVRConfig, engine: RolloutEngine, reward: RewardModel, sampler: PromptSampler,
                 prompt_ids, golds: list[str], rows_json: list[str] | None):  # fmt: skip
        self.cfg, self.engine, self.reward, self.sampler = cfg, engine, reward, sampler
        self.prompt_ids, self.golds, self.rows_json = prompt_ids, golds, rows_json
        r = cfg.rollout
        self.params = SamplingParams(r.temperature, r.top_p, r.top_k, r.max_new_tokens, r.ignore_eos)
        self.staleness = r.max_staleness
        self.side = ThreadPoolExecutor(1, thread_name_prefix="rollout-ahead") if self.staleness else None
        self.ahead: Ahead | None = None
        self.engine_version = 0
        self.idle_since: float | None = None  # when the engine last finished a training generation
        self.waited = 0.0  # this step's seconds of the main thread waiting on generation

    # ---- one step ----------------------------------------------------------------------------------
    def collect(self, step: int, model: torch.nn.Module) -> tuple[Collected, dict[str, float]]:
        """Step `step`'s groups, and rollout/policy_lag (of its first round: refill rounds are generated here,
        from the learner's current weights), timing/learner_wait_s, timing/rollout_wait_s."""
        self.step, self.first_draw, self.model, self.sync_metrics = step, True, model, {}
        self.waited, self.lag, self.rollout_wait = 0.0, step - 1 - self.engine_version, 0.0
        collected = collect(
            self._indices,
            lambda indices, round_: self._sample(indices, step, round_),
            self.cfg.trainer.prompts_per_step,
            self.cfg.algo,
            self.params.max_new_tokens,
        )
        return collected, {
            **self.sync_metrics,
            "rollout/policy_lag": self.lag,
            "timing/learner_wait_s": self.waited,
            "timing/rollout_wait_s": self.rollout_wait,
        }

    def before_update(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        """max_staleness 1: the engine takes the weights before this update (unless it holds them), then starts
        generating step + 1's first round on the side thread."""
        if not self.staleness or step >= self.cfg.trainer.total_steps:
            return {}
        metrics = self._sync(model, step - 1) if self.engine_version < step - 1 else {}
        indices = self.sampler.next_indices(prompts_to_draw(self.cfg.trainer.prompts_per_step, self.cfg.algo))
        idle_s = self._idle_s()
        future = self.side.submit(self._generate, indices, step + 1, 0)
        self.ahead = Ahead(step + 1, indices, self.engine_version, future, idle_s)
        return metrics

    def after_update(self, step: int, model: torch.nn.Module, updated: bool) -> dict[str, float]:
        """max_staleness 0: the updated weights into the engine."""
        if self.staleness:
            return {}
        self.engine_version = step
        return self._sync(model, step) if updated else {}

    def fresh(self, model: torch.nn.Module, version: int) -> None:
        """The engine holding the learner's weights of `version` (for an evaluation): after the generation in
        flight, which still uses the older ones."""
        if self.ahead is not None:
            self.ahead.future.result()
        if self.engine_version < version:
            self._sync(model, version)

    # ---- the parts ---------------------------------------------------------------------------------
    def _indices(self, count: int) -> list[int]:
        """The prompts of a round: for a step's first round generated ahead, the ones it was generated for."""
        first, self.first_draw = self.first_draw, False
        if first and self.ahead is not None and self.ahead.step == self.step:
            if count != len(self.ahead.indices):  # the config changed on resume (validated against: a bug)
                raise RuntimeError(
                    f"rollouts: {count} prompts asked of a round generated for {len(self.ahead.indices)}"
                )
            return self.ahead.indices
        return self.sampler.next_indices(count)

    def _generate(self, indices: list[int], step: int, round_: int):
        """This rank's share of `indices`, generated: (completions, seconds, when it ended)."""
        start, shard = dist.my_shard(indices)
        seed = derive_seed(self.cfg.trainer.seed, "rollout", step, round_)
        outputs, seconds = generate_share(
            self.engine, self.prompt_ids, shard, self.cfg.algo.group_size, self.params, seed, start
        )
        return outputs, seconds, time.perf_counter()

    def _sample(self, indices: list[int], step: int, round_: int) -> Sampled:
        """This rank's share sampled (or taken from the round generated ahead) and rewarded, then every rank's
        groups in order: this rank's whole, the others' headers (`Group.header`)."""
        ahead = self.ahead if round_ == 0 and self.ahead is not None and self.ahead.step == step else None
        if ahead is not None:
            waiting = time.perf_counter()
            outputs, rollout_s, ended = ahead.future.result()
            self.waited += time.perf_counter() - waiting
            self.lag, self.rollout_wait = step - 1 - ahead.version, ahead.idle_s
            self.ahead = None
        else:
            if (
                self.engine_version < step - 1
            ):  # max_staleness 1: a round generated now uses the current weights
                self.sync_metrics = self._sync(self.model, step - 1)
            if round_ == 0:
                self.rollout_wait = self._idle_s()
            outputs, rollout_s, ended = self._generate(indices, step, round_)
            self.waited += rollout_s
        if round_ == 0:
            self.idle_since = ended
        _, shard = dist.my_shard(indices)
        groups, verify_s = score_share(
            self.reward, outputs, self.golds, shard, self.cfg.algo.group_size, self.rows_json
        )
        me = dist.rank()
        for g in groups:
            g.home = me
        # the other ranks learn each group's header; its tokens stay here until the batch is shared (rlvr.share)
        parts = dist.gather_objects(Sampled([g.header() for g in groups], rollout_s, verify_s))
        groups = [g for r, part in enumerate(parts) for g in (groups if r == me else part.groups)]
        return Sampled(groups, max(p.rollout_s for p in parts), max(p.verify_s for p in parts))

    def _idle_s(self) -> float:
        """timing/rollout_wait_s: the engine's idle seconds from its last training generation (evaluations
        included) until a step's first round starts; 0 before the first."""
        return 0.0 if self.idle_since is None else time.perf_counter() - self.idle_since

    def _sync(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        synced = time.perf_counter()
        sent = self.engine.sync_weights(model)
        self.engine_version = version
        return {"timing/sync_s": time.perf_counter() - synced, "sync/bytes": sent}

    # ---- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The engine's version and the round in flight, every rank's share gathered (a collective)."""
        ahead = None
        if self.ahead is not None:
            outputs = self.ahead.future.result()[0]
            shares = dist.gather_objects([[asdict(c) for c in group] for group in outputs])
            a = self.ahead
            ahead = {"step": a.step, "indices": a.indices, "version": a.version,
                     "outputs": [group for share in shares for group in share]}  # fmt: skip
        return {"engine_version": self.engine_version, "ahead": ahead}

    def load_state_dict(self, state: dict | None, step: int) -> None:
        """A checkpoint's rollouts at any world size: this rank takes its share of the round in flight. A
        checkpoint from before them (None) was written in order: its engine held its step's weights."""
        self.engine_version = state["engine_version"] if state else step
        if not state:
            return
        a = state.get("ahead")
        if a is None:
            return
        start, shard = dist.my_shard(a["indices"])
        outputs = [[Completion(**c) for c in group] for group in a["outputs"][start : start + len(shard)]]
        future: Future = Future()
        future.set_result((outputs, 0.0, time.perf_counter()))
        self.ahead = Ahead(a["step"], a["indices"], a["version"], future)

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.future.exception()  # wait: the engine closes after this
        if self.side is not None:
            self.side.shutdown(wait=True)
