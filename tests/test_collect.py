import torch

from rlvr.config import AlgoConfig, DynamicSamplingConfig, OverlongConfig
from rlvr.pipeline import Collected, Group, Sampled, collect, rollout_metrics, sample_groups, to_batch
from rlvr.reward import RewardModel, RewardRule, Verdict
from rlvr.reward.math_verifier import tail_for_verify
from rlvr.rollout.base import Completion, SamplingParams


def _group(index: int, rewards: list[float], length: int = 2) -> Group:
    comps = [Completion(list(range(10, 10 + length)), [-0.5] * length, "stop", "x") for _ in rewards]
    verdicts = [Verdict.CORRECT if r > 0 else Verdict.INCORRECT for r in rewards]
    return Group(index, comps, verdicts, list(rewards))


class FakeSampler:
    """Serves groups from a script: round r returns script[r][:count]; records what was asked."""

    def __init__(self, script):
        self.script, self.asked, self.next = script, [], 0

    def indices(self, count):
        out = list(range(self.next, self.next + count))
        self.next += count
        return out

    def sample(self, indices, round_):
        self.asked.append((len(indices), round_))
        return Sampled([_group(i, r) for i, r in zip(indices, self.script[round_])], 0.5, 0.25)


def test_dynamic_sampling_refills_until_full():
    # B=3, G=2. Round 0: [1,1] no signal, [0,1] keep, [0,0] no signal -> 1 kept, 2 more needed.
    # Round 1 (2 prompts): [1,0] keep, [1,1] no -> 2 kept. Round 2 (1 prompt): [0,1] keep -> 3 kept, done.
    fake = FakeSampler([[[1, 1], [0, 1], [0, 0]], [[1, 0], [1, 1]], [[0, 1]]])
    cfg = AlgoConfig(group_size=2, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=3))
    got = collect(fake.indices, fake.sample, 3, cfg, max_new_tokens=8)
    assert fake.asked == [(3, 0), (2, 1), (1, 2)]
    assert [g.rewards for g in got.groups] == [[0, 1], [1, 0], [0, 1]]
    assert got.rounds == 3 and len(got.sampled) == 6
    assert got.rollout_s == 1.5 and got.verify_s == 0.75
    m = rollout_metrics(got, group_size=2)
    # 6 sampled groups, 3 without signal -> zero_std_frac 0.5; 12 completions, 2+1+0+1+2+1 = 7 correct -> 7/12
    assert m["groups/zero_std_frac"] == 0.5 and m["acc/mean"] == 7 / 12 and m["dynamic/rounds"] == 3


def test_generated_tokens_count_every_round():
    # B=2, G=2, dynamic sampling. Round 0 (2 prompts, answers of 3 tokens): [1,1] dropped, [0,1] kept -> 4 x 3 = 12
    # tokens. Round 1 (1 prompt, answers of 5 tokens): [1,0] kept -> 2 x 5 = 10 tokens. 22 tokens in all, though
    # the batch holds only 2 x 3 + 2 x 5 = 16 of them: the dropped group's generation is counted too.
    lengths = [3, 5]

    def sample(indices, round_):
        script = [[[1, 1], [0, 1]], [[1, 0]]][round_]
        return Sampled([_group(i, r, lengths[round_]) for i, r in zip(indices, script)], 0.5, 0.0)

    cfg = AlgoConfig(group_size=2, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=3))
    got = collect(FakeSampler([]).indices, sample, 2, cfg, max_new_tokens=8)
    assert got.rounds == 2 and got.gen_tokens == 22
    m = rollout_metrics(got, group_size=2, gen_tokens_total=100 + 22)  # a run that had generated 100 before
    assert m["rollout/gen_tokens"] == 22 and m["rollout/gen_tokens_total"] == 122
    assert m["throughput/gen_tokens_per_s"] == 22 / 1.0  # two rounds of 0.5 s
    assert "rollout/gen_tokens_total" not in rollout_metrics(got, group_size=2)


def test_oversampling_draws_more_up_front_keeps_mixed_groups_and_no_more_than_needed():
    """B=3, G=2, oversample 2: round 0 draws ceil(2 x 3) = 6 prompts: [1,1] [0,1] [0,0] [1,0] [1,1] [0,0] -> 2
    mixed; round 1 draws ceil(2 x 1) = 2: [0,1] [1,0] -> both mixed, 1 kept (the batch never grows past B). Rounds
    draw 1 x need at oversample 1 (the test above); every kept group is mixed either way."""
    fake = FakeSampler([[[1, 1], [0, 1], [0, 0], [1, 0], [1, 1], [0, 0]], [[0, 1], [1, 0]]])
    ds = DynamicSamplingConfig(enabled=True, max_rounds=3, oversample=2.0)
    got = collect(
        fake.indices, fake.sample, 3, AlgoConfig(group_size=2, dynamic_sampling=ds), max_new_tokens=8
    )
    assert fake.asked == [(6, 0), (2, 1)]
    assert [g.rewards for g in got.groups] == [[0, 1], [1, 0], [0, 1]] and got.rounds == 2
    assert got.gen_tokens == 8 * 2 * 2  # 8 groups of 2 answers of 2 tokens: the dropped surplus is counted
    one_round = FakeSampler([[[0, 1], [1, 0], [0, 1], [1, 1]]])
    ds = DynamicSamplingConfig(enabled=True, oversample=1.5)
    got = collect(one_round.indices, one_round.sample, 2, AlgoConfig(group_size=2, dynamic_sampling=ds), 8)
    assert one_round.asked == [(3, 0)] and got.rounds == 1 and len(got.groups) == 2


def test_dynamic_sampling_stops_after_max_rounds():
    fake = FakeSampler([[[1, 1], [0, 0]], [[1, 1], [0, 1]], [[0, 0]]])
    cfg = AlgoConfig(group_size=2, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=1))
    got = collect(fake.indices, fake.sample, 2, cfg, max_new_tokens=8)
    assert got.rounds == 2 and [g.rewards for g in got.groups] == [[0, 1]]  # batch ends smaller, never larger


def test_without_dynamic_sampling_everything_is_kept():
    fake = FakeSampler([[[1, 1], [0, 0]]])
    got = collect(fake.indices, fake.sample, 2, AlgoConfig(group_size=2), max_new_tokens=8)
    assert got.rounds == 1 and len(got.groups) == 2


def test_overlong_shaping_is_added_to_rewards():
    # max 8 tokens, cache 2: length 7 -> (8-2-7)/2 = -0.5
    fake = FakeSampler([[[1, 0]]])
    cfg = AlgoConfig(group_size=2, overlong=OverlongConfig(shaping=True, cache_len=2))

    def sample(indices, round_):
        return Sampled([_group(indices[0], [1, 0], length=7)], 0.0, 0.0)

    got = collect(fake.indices, sample, 1, cfg, max_new_tokens=8)
    assert got.groups[0].rewards == [0.5, -0.5]


def test_dynamic_sampling_keeps_groups_on_accuracy_not_on_the_shaped_reward():
    # G=4, max 8 tokens, overlong cache 2 (soft zone 7..8 tokens, length 7 -> (8-2-7)/2 = -0.5).
    # Group 0: all 4 correct, one answer 7 tokens long: shaped rewards 1, 1, 1, 0.5. Its rewards differ, but every
    #   answer is right: DAPO Eq. 11 (0 < correct < G) drops it. Filtering on the shaped reward kept it.
    # Group 1: 2 of 4 correct, all 2 tokens: rewards 1, 0, 1, 0 -> kept.
    # Group 2: none correct, one answer 7 tokens long: rewards 0, 0, 0, -0.5 -> dropped (0 correct).
    def sample(indices, round_):
        lengths = [[2, 2, 2, 7], [2, 2, 2, 2], [7, 2, 2, 2]]
        verdicts = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
        groups = []
        for i, lens, vs in zip(indices, lengths, verdicts):
            comps = [Completion(list(range(10, 10 + n)), [-0.5] * n, "stop", "x") for n in lens]
            ok = [Verdict.CORRECT if v else Verdict.INCORRECT for v in vs]
            groups.append(Group(i, comps, ok, [float(v) for v in vs]))
        return Sampled(groups, 0.0, 0.0)

    cfg = AlgoConfig(
        group_size=4,
        dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=0),
        overlong=OverlongConfig(shaping=True, cache_len=2),
    )
    got = collect(FakeSampler([]).indices, sample, 3, cfg, max_new_tokens=8)
    assert [g.rewards for g in got.sampled] == [[1, 1, 1, 0.5], [1, 0, 1, 0], [-0.5, 0, 0, 0]]
    assert [g.prompt_index for g in got.groups] == [1]
    # groups/zero_std_frac stays a statistic of the rewards: all three groups' rewards spread
    assert rollout_metrics(got, group_size=4)["groups/zero_std_frac"] == 0.0


def test_to_batch_aligns_tokens_logprobs_and_advantages():
    prompts = [[1, 2, 3], [4]]
    g0 = Group(
        0,
        [Completion([7, 8], [-0.1, -0.2], "stop", ""), Completion([9], [-0.3], "length", "")],
        [],
        [1.0, 0.0],
    )
    g1 = Group(
        1,
        [Completion([5, 6, 7], [-1.0, -2.0, -3.0], "stop", ""), Completion([5], [-4.0], "stop", "")],
        [],
        [0.0, 0.0],
    )
    cfg = AlgoConfig(group_size=2, advantage="drgrpo", overlong=OverlongConfig(filter=True))
    b = to_batch([g0, g1], prompts, cfg, pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 7, 8], [1, 2, 3, 9, 0], [4, 5, 6, 7, 0], [4, 5, 0, 0, 0]]
    assert b.attention_mask.sum(-1).tolist() == [5, 4, 4, 2]
    # row 1 was truncated: overlong filtering removes it from the loss
    assert b.response_mask.tolist() == [
        [False, False, False, True, True],
        [False] * 5,
        [False, True, True, True, False],
        [False, True, False, False, False],
    ]
    torch.testing.assert_close(b.rollout_logp[0, 3:], torch.tensor([-0.1, -0.2]))
    torch.testing.assert_close(b.rollout_logp[2, 1:4], torch.tensor([-1.0, -2.0, -3.0]))
    # Dr. GRPO advantages: group 0 mean 0.5 -> [+0.5, -0.5]; group 1 all zero
    torch.testing.assert_close(b.advantages, torch.tensor([0.5, -0.5, 0.0, 0.0]))


class ScriptedEngine:
    """Returns the given completion texts, n per prompt, in order."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, n, params, seed, first_index=0):
        texts = iter(self.texts)
        return [[Completion([1], [-0.5], "stop", next(texts)) for _ in range(n)] for _ in prompts]


class CuttingVerifier:
    """MathVerifier's cut with a 12-character limit (a box longer than that is NO_ANSWER, and flagged); then
    no box is NO_ANSWER, a box holding the gold CORRECT, any other INCORRECT."""

    def verify(self, texts, golds):
        tails = [tail_for_verify(t, 12) for t in texts]
        self.last_box_too_long = [t is None for t in tails]
        return [self._verdict(t, g) for t, g in zip(tails, golds)]

    @staticmethod
    def _verdict(tail, gold):
        if tail is None or "\\boxed{" not in tail:
            return Verdict.NO_ANSWER
        return Verdict.CORRECT if tail.endswith(f"{{{gold}}}") else Verdict.INCORRECT


def test_box_too_long_is_counted_in_its_own_metric():
    long_box = r"\boxed{" + "+".join(["1"] * 10) + "}"  # 27 characters: more than the verifier's 12
    texts = [r"so \boxed{2}", long_box, r"\boxed{3}", "no idea"]
    reward = RewardModel(CuttingVerifier(), None, RewardRule())
    groups = sample_groups(
        ScriptedEngine(texts), reward, [[1], [2]], ["2", "3"], [0, 1], 2, SamplingParams(), 0
    ).groups
    assert [g.box_too_long for g in groups] == [[False, True], [False, False]]
    assert [g.verdicts for g in groups] == [
        [Verdict.CORRECT, Verdict.NO_ANSWER],
        [Verdict.CORRECT, Verdict.NO_ANSWER],
    ]
    m = rollout_metrics(Collected(groups=groups, sampled=groups), group_size=2)
    assert m["verify/box_too_long_frac"] == 1 / 4  # one of four completions
    assert m["verify/no_answer_frac"] == 2 / 4  # it is a NO_ANSWER too, beside "no idea"


def test_the_old_import_path_still_serves_the_pipeline_without_the_learner():
    """rlvr.rollout.collect is a re-export of rlvr.pipeline; a rollout module never pulls in the learner."""
    import subprocess
    import sys

    code = (
        "import sys; import rlvr.rollout.collect as c, rlvr.pipeline as p; "
        "assert c.collect is p.collect and c.Group is p.Group; print('rlvr.learner' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
