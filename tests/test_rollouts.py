"""rlvr.rollouts: the order of sampling, updates and weight syncs at rollout.max_staleness 0 and 1, the lag it
logs, and the batch in flight through a checkpoint. A fake engine stamps each completion with the version of the
weights it holds, so every assertion reads which weights generated what."""

import threading

from rlvr.config import RLVRConfig
from rlvr.data.prompts import PromptSampler
from rlvr.reward import Verdict
from rlvr.reward.model import Scores
from rlvr.rollout.base import Completion
from rlvr.rollouts import Rollouts

STEPS, PROMPTS, G = 4, 2, 2


class Policy:
    """The learner's model as the engine sees it: a version that each update raises."""

    version = 0


class FakeEngine:
    """Completions whose text is `p<prompt>@v<version of the weights it holds>`."""

    def __init__(self):
        self.version, self.syncs = 0, []

    def generate(self, prompts, n, params, seed, first_index=0):
        return [[Completion([1, 2], [-0.5, -0.5], "stop", f"p{p[0]}@v{self.version}") for _ in range(n)]
                for p in prompts]  # fmt: skip

    def sync_weights(self, model):
        self.version = model.version
        self.syncs.append(model.version)
        return 8


class HalfRight:
    """The first answer of a group right, the others wrong: every group carries signal."""

    needs_rows = False

    def score(self, texts, golds, rows=None):
        verdicts = [Verdict.CORRECT if i % G == 0 else Verdict.INCORRECT for i in range(len(texts))]
        rewards = [1.0 if v == Verdict.CORRECT else 0.0 for v in verdicts]
        return Scores(rewards, verdicts, [False] * len(texts), [{} for _ in texts], [{} for _ in texts])


def _rollouts(staleness: int, engine=None) -> Rollouts:
    cfg = RLVRConfig()
    cfg.rollout.max_staleness = staleness
    cfg.trainer.total_steps, cfg.trainer.prompts_per_step, cfg.algo.group_size = STEPS, PROMPTS, G
    prompt_ids = [[i] for i in range(10)]
    return Rollouts(
        cfg, engine or FakeEngine(), HalfRight(), PromptSampler(10, 0), prompt_ids, ["1"] * 10, None
    )


def _train(r: Rollouts, policy: Policy, steps=range(1, STEPS + 1), before_update=None):
    """The trainer's order; returns each step's (answers, lag, sync metrics)."""
    out = []
    for step in steps:
        collected, metrics = r.collect(step, policy)
        synced = r.before_update(step, policy)
        if before_update:
            before_update(step)
        policy.version = step  # the update
        synced.update(r.after_update(step, policy, updated=True))
        synced = {k: v for k, v in synced.items() if not k.startswith("timing/")}
        out.append(
            (
                [c.text for g in collected.groups for c in g.completions[:1]],
                metrics["rollout/policy_lag"],
                synced,
            )
        )
    return out


def test_in_order_every_batch_comes_from_the_weights_it_updates():
    policy, r = Policy(), _rollouts(0)
    got = _train(r, policy)
    assert [lag for _, lag, _ in got] == [0] * STEPS
    assert [{t.split("@")[1] for t in texts} for texts, _, _ in got] == [
        {f"v{s - 1}"} for s in range(1, STEPS + 1)
    ]
    assert r.engine.syncs == [1, 2, 3, 4] and all(s["sync/bytes"] == 8 for _, _, s in got)


def test_one_behind_generates_the_next_batch_during_the_update_from_the_weights_before_it():
    """Step 1 is sampled from v0 (nothing to overlap with); step t >= 2 from v(t-2), generated while step t-1's
    update ran; the engine takes v(t-1) just before it starts step t+1's batch. The prompts are those of the
    in-order run: the same draws in the same order."""
    updates = {s: threading.Event() for s in range(1, STEPS + 1)}
    engine = FakeEngine()
    seen: list[bool] = []
    plain = engine.generate

    def generate(prompts, n, params, seed, first_index=0):
        version = engine.version
        if threading.current_thread() is not threading.main_thread():  # generated ahead of step version + 2
            seen.append(updates[version + 1].wait(timeout=10))
        return plain(prompts, n, params, seed, first_index)

    engine.generate = generate
    policy, r = Policy(), _rollouts(1, engine)
    got = _train(r, policy, before_update=lambda step: updates[step].set())
    r.close()
    assert seen == [True] * (STEPS - 1)  # each batch ahead was still generating when the update finished
    assert [lag for _, lag, _ in got] == [0] + [1] * (STEPS - 1)
    versions = [{t.split("@")[1] for t in texts} for texts, _, _ in got]
    assert versions == [{"v0"}, {"v0"}, {"v1"}, {"v2"}]
    assert engine.syncs == [1, 2]  # before steps 3's and 4's batches; none after the last update
    in_order = _train(_rollouts(0), Policy())
    assert [[t.split("@")[0] for t in texts] for texts, _, _ in got] == [
        [t.split("@")[0] for t in texts] for texts, _, _ in in_order
    ]


def test_the_batch_in_flight_goes_through_a_checkpoint():
    """Saved after step 2 (step 3's batch in flight, generated from v1), resumed with a fresh engine holding v2: steps
    3 and 4 train on the same answers, with the same lags and syncs, as the run that was not stopped."""
    straight = _train(_rollouts(1), Policy())
    first, policy = _rollouts(1), Policy()
    _train(first, policy, steps=range(1, 3))
    state, sampler = first.state_dict(), first.sampler.state_dict()
    first.close()
    engine = FakeEngine()
    engine.sync_weights(policy)  # the trainer's engine starts from the checkpoint's weights
    resumed = _rollouts(1, engine)
    resumed.sampler.load_state_dict(sampler)
    resumed.load_state_dict(state, step=2)
    assert _train(resumed, policy, steps=range(3, STEPS + 1)) == straight[2:]
    resumed.close()


class OddPromptsRight(HalfRight):
    """Signal only on odd prompts (`p<odd>@...`): the even ones' groups are dropped and refilled."""

    def score(self, texts, golds, rows=None):
        scores = super().score(texts, golds, rows)
        odd = [int(t.split("@")[0][1:]) % 2 == 1 for t in texts]
        scores.verdicts = [v if o else Verdict.INCORRECT for v, o in zip(scores.verdicts, odd)]
        scores.rewards = [r if o else 0.0 for r, o in zip(scores.rewards, odd)]
        return scores


def test_refill_rounds_one_behind_are_generated_from_the_current_weights():
    """Dynamic sampling at max_staleness 1: step 2's first round comes from v0 (ahead), its refill rounds from
    v1, synced for them (and not again before step 3's batch); every kept group is an odd prompt's."""
    r = _rollouts(1)
    r.reward = OddPromptsRight()
    r.cfg.algo.dynamic_sampling.enabled, r.cfg.algo.dynamic_sampling.max_rounds = True, 20
    got = _train(r, Policy(), steps=range(1, 3))
    r.close()
    (first, _, _), (second, lag, synced) = got
    assert all(int(t.split("@")[0][1:]) % 2 for t in first + second) and len(second) == PROMPTS
    assert {t.split("@")[1] for t in first} == {"v0"} and lag == 1
    # the draws (PromptSampler(10, 0)): step 1 [9, 6] + [4] + [0] + [1]; step 2 ahead [7, 2], then [3] from v1
    assert second == ["p7@v0", "p3@v1"] and r.engine.syncs == [1]
    assert synced == {}  # before_update(2): the engine already holds v1
