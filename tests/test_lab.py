"""The entropy lab: its task (rlvr.data.chain), its embedded model's accuracy sum over the task's several right
answers, and its sweep: every method composes under the lab's one budget and validates."""

import random
import re

import pytest
import torch
from helpers import compose_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.config import RLVRConfig, validate
from rlvr.data import chain
from rlvr.tiny_model import TASKS, _batch, _sequence, expected_accuracy

CHAIN = re.compile(r"(\d+)\+(\d+)=(\d+),(\d+)\+(\d+)=(\d+),\\boxed\{(\d+)\}")
LAB_METHODS = ["grpo", "dapo", "forking_tokens", "prorl", "clip_cov", "kl_cov"]


def test_carries_by_hand():
    assert chain.carries(23, 14) == 0  # 37
    assert chain.carries(58, 67) == 2  # 8+7=15 carry, 5+6+1=12 carry
    assert chain.carries(95, 14) == 1  # 9+1=10 carry in the tens
    assert chain.carries(199, 1) == 2  # 9+1, then 9+0+1: carries ripple


def test_splits_are_disjoint_three_two_digit_numbers():
    train, held_out = chain.chain_splits()
    assert len(train) == chain.TRAIN_SIZE and len(held_out) == chain.EVAL_SIZE
    assert not set(train) & set(held_out) and len(set(train)) == len(train)
    assert all(10 <= n <= 99 for p in train + held_out for n in p)
    assert chain.chain_splits() == (train, held_out)  # seeded


def test_solutions_are_one_chain_per_distinct_order():
    question, chains = chain.solutions((23, 58, 14))
    assert question == "23+58+14="
    assert chains == [
        "23+14=37,37+58=95,\\boxed{95}",
        "23+58=81,81+14=95,\\boxed{95}",
        "58+14=72,72+23=95,\\boxed{95}",
    ]
    assert chain.solutions((12, 12, 30))[1] == [
        "12+12=24,24+30=54,\\boxed{54}",
        "12+30=42,42+12=54,\\boxed{54}",
    ]


def test_the_teacher_forks_on_the_order_and_builds_on_its_slips():
    """Each completion is a chain over a pair of the problem then the third number, the second step starts from
    the first step's written sum (a slip carries through), and every written sum is right or off by 1 or 10."""
    rng = random.Random(0)
    orders, slipped_first, final_wrong = set(), 0, 0
    for _ in range(2000):
        a, b, c = 10 + rng.randrange(90), 10 + rng.randrange(90), 10 + rng.randrange(90)
        x, y, s1, s1_again, z, s2, boxed = map(
            int, CHAIN.fullmatch(chain.teacher_completion(a, b, c, rng)).groups()
        )
        assert sorted((x, y, z)) == sorted((a, b, c)) and s1_again == s1 and boxed == s2
        assert s1 - (x + y) in (0, *chain.SLIPS) and s2 - (s1 + z) in (0, *chain.SLIPS)
        orders.add((x, y, z) == (a, b, c))
        slipped_first += s1 != x + y
        final_wrong += s2 != a + b + c
    assert orders == {True, False}
    assert 0 < slipped_first < final_wrong < 2000  # a slip in either step dooms the answer


def test_teacher_batch_never_draws_a_held_out_problem():
    held_out = {chain.question(*p) for p in chain.chain_splits()[1]}
    batch = chain.teacher_batch([], random.Random(1), 500)
    assert len(batch) == 500 and not {q for q, _ in batch} & held_out


def test_expected_accuracy_sums_the_probability_of_every_right_chain():
    """By hand: the probability of each right chain, teacher-forced one at a time, summed per problem."""
    task = TASKS["tiny-chain"]
    model = AutoModelForCausalLM.from_pretrained(task.shipped / "model")
    tokenizer = AutoTokenizer.from_pretrained(task.shipped / "model")
    problems = [(23, 58, 14), (12, 12, 30)]
    by_hand = []
    for problem in problems:
        question, chains = task.solutions(problem)
        total = 0.0
        for completion in chains:
            x, mask = _batch([_sequence(tokenizer, question, completion)], tokenizer.pad_token_id)
            with torch.no_grad():
                logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
            total += logp.gather(-1, x[0, 1:, None]).squeeze(-1)[mask[0, 1:]].sum().exp().item()
        by_hand.append(total)
    assert expected_accuracy(model, tokenizer, problems, task) == pytest.approx(sum(by_hand) / 2, rel=1e-9)


def _lab(*overrides: str) -> RLVRConfig:
    return compose_config("experiment=lab", *overrides)


@pytest.mark.parametrize("method", LAB_METHODS)
def test_every_lab_method_runs_its_preset_under_the_labs_one_budget(method):
    c = _lab(f"lab={method}")
    validate(c)
    assert c.algo.name == method and c.model.builtin == "tiny-chain" and c.reward.require_boxed
    assert (c.algo.group_size, c.algo.minibatch_prompts, c.trainer.prompts_per_step) == (8, 8, 32)
    assert (c.optim.lr, c.trainer.total_steps, c.rollout.max_new_tokens) == (3e-4, 100, 40)
    preset = compose_config(f"algo={method}").algo  # the method's own rules, as the quickstart runs them
    for key in ("advantage", "loss_agg", "clip", "dynamic_sampling", "entropy_mask", "cov"):
        assert getattr(c.algo, key) == getattr(preset, key), key
    assert c.algo.kl.coef == preset.kl.coef
    if method == "prorl":  # resets that happen within the lab's 100 steps
        assert c.algo.kl.coef > 0 and c.algo.kl.reset_every == 25
    else:
        assert c.algo.kl.reset_every is None


def test_the_lab_defaults_to_dapo():
    assert _lab().algo.name == "dapo"
