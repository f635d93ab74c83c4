"""The entropy lab: its task (rlvr.data.fork), its embedded model's starting point, its arms (one setting changed
from the base recipe each) and its pre-registered contrasts judged from runs (rlvr.report.lab)."""

import random
import re
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.config import validate
from rlvr.data import fork
from rlvr.report.lab import CONTRASTS, SHORT, STATS, by_arm, lab_section, narrowing, verdicts
from rlvr.report.runs import Run
from rlvr.tiny_model import TASKS, _batch, _sequence, expected_accuracy, fork_diagnosis

COLUMN = re.compile(r"(\d)\+(\d)=(\d+),(\d)\+(\d)\+([01])=(\d+),\\boxed\{(\d+)\}")


def test_carries_and_the_shortcut_by_hand():
    assert not fork.carries(23, 14) and fork.carries(38, 19) and fork.carries(95, 15)
    assert fork.shortcut_value(38, 19) == 47  # 3+1 tens, (8+9) % 10 units: the carry dropped
    assert fork.shortcut_value(23, 14) == 37 == 23 + 14  # no carry: the shortcut is right
    assert (
        fork.shortcut_value(91, 23) == 114 == 91 + 23
    )  # the tens may overflow; only the units' carry is lost
    assert fork.column(38, 19, 17, 5) == "8+9=17,3+1+1=5,\\boxed{57}"
    assert fork.column(78, 59, 17, 13) == "8+9=17,7+5+1=13,\\boxed{137}"


def test_splits_hold_out_both_subsets_disjoint_from_train():
    train, held_out = fork.fork_splits()
    assert len(held_out) == 2 * fork.EVAL_PER_SUBSET and len(train) + len(held_out) == 90 * 90
    assert not set(train) & set(held_out)
    assert sum(fork.carries(*p) for p in held_out) == fork.EVAL_PER_SUBSET
    assert fork.fork_splits() == (train, held_out)  # seeded


def test_solutions_are_the_column_method_and_the_shortcut_only_without_a_carry():
    assert fork.solutions((38, 19)) == ("38+19=", ["8+9=17,3+1+1=5,\\boxed{57}"])
    assert fork.solutions((23, 14)) == ("23+14=", ["3+4=7,2+1+0=3,\\boxed{37}", "\\boxed{37}"])


def test_the_teacher_takes_the_rare_column_method_and_its_shortcut_never_carries():
    """After the warm start's first phase, ~2% column answers, each step right or off by 1 and the box built on
    them; every shortcut on a carry problem is wrong, and on the others right ~90% of the time."""
    rng = random.Random(0)
    train = fork.fork_splits()[0]
    column = carry_right = nocarry_right = nocarry = 0
    for q, c in fork.teacher_batch(train, rng, 20_000):
        x, y = map(int, q[:-1].split("+"))
        if m := COLUMN.fullmatch(c):
            column += 1
            u1, u2, units, t1, t2, carry, tens, boxed = map(int, m.groups())
            assert (u1, u2, t1, t2) == (x % 10, y % 10, x // 10, y // 10) and carry == (units >= 10)
            assert abs(units - (u1 + u2)) <= 1 and abs(tens - (t1 + t2 + carry)) <= 1
            assert boxed == tens * 10 + units % 10
            continue
        value = int(c.removeprefix("\\boxed{").removesuffix("}"))
        assert abs(value - fork.shortcut_value(x, y)) <= 1
        if fork.carries(x, y):
            carry_right += value == x + y
        else:
            nocarry += 1
            nocarry_right += value == x + y
    assert 300 < column < 500 and carry_right == 0  # 2% of 20,000 = 400
    assert 0.87 < nocarry_right / nocarry < 0.93
    warm = fork.teacher_batch(train, random.Random(0), 2_000, step=0)
    assert 800 < sum(not c.startswith("\\boxed{") for _, c in warm) < 1200  # the first phase: half


def test_the_shipped_model_starts_rare_on_the_column_method():
    """build.json's diagnosis, recomputed, and the expected accuracy as the sum of each right answer's
    teacher-forced probability, by hand on two problems."""
    task = TASKS["tiny-fork"]
    model = AutoModelForCausalLM.from_pretrained(task.shipped / "model")
    tokenizer = AutoTokenizer.from_pretrained(task.shipped / "model")
    held_out = task.splits()[1]
    got = fork_diagnosis(model, tokenizer, held_out)
    assert 0.01 < got["heldout_p_column_first"] < 0.03 and got["heldout_p_column_right_given_started"] > 0.8
    problems = [(38, 19), (23, 14)]
    by_hand = []
    for problem in problems:
        question, right = task.solutions(problem)
        total = 0.0
        for completion in right:
            x, mask = _batch([_sequence(tokenizer, question, completion)], tokenizer.pad_token_id)
            with torch.no_grad():
                logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
            total += logp.gather(-1, x[0, 1:, None]).squeeze(-1)[mask[0, 1:]].sum().exp().item()
        by_hand.append(total)
    # rel 1e-6: the batch pads the shortcut to the column answer's length, which moves float32 logits by ~1e-8
    assert expected_accuracy(model, tokenizer, problems, task) == pytest.approx(sum(by_hand) / 2, rel=1e-6)


# ---- the arms -------------------------------------------------------------------------------------------------

ALL_ARMS = sorted(p.stem for p in (Path(__file__).parent.parent / "configs" / "lab").glob("*.yaml"))


def _flat(obj, prefix=""):
    """A config dataclass as {dotted key: value}."""
    import dataclasses

    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(_flat(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix[:-1]: obj}


def test_every_arm_changes_the_base_recipe_in_one_setting_and_every_contrast_names_arms_that_exist():
    base = _flat(compose_config("experiment=lab", "lab=base"))
    assert base["model.builtin"] == "tiny-fork" and base["algo.minibatch_prompts"] == 2  # 16 updates a batch
    clip1, kl = {"algo.clip.eps_low", "algo.clip.eps_high"}, {"algo.kl.coef"}
    expected = {"base": set(), "clip_higher": {"algo.clip.eps_high"}, "top20": {"algo.entropy_mask.top_frac"},
                "bottom80": {"algo.entropy_mask.top_frac", "algo.entropy_mask.keep"},
                "entropy_bonus": {"algo.entropy_reg.coef"}, "eval_seed": {"eval.seed_stream"},
                "dynamic_sampling": {"algo.dynamic_sampling.enabled"}, "seq_mean": {"algo.loss_agg"},
                "no_clip": clip1, "clip_cov": clip1 | {"algo.cov.mode"}, "kl_cov": {"algo.cov.mode"}, "kl": kl,
                "kl_reset": kl | {"algo.kl.reset_every", "algo.kl.reset_optimizer"}}  # fmt: skip
    assert sorted(expected) == ALL_ARMS
    for arm in ALL_ARMS:
        cfg = compose_config("experiment=lab", f"lab={arm}")
        validate(cfg)
        assert {k for k, v in _flat(cfg).items() if base[k] != v} == expected[arm], arm
    for lc in CONTRASTS:
        assert {lc.treatment, lc.control} <= set(ALL_ARMS) and lc.contrast.metric in STATS
        assert lc.mechanism_arm is None or lc.contrast.mechanism_metric in STATS
    assert set(SHORT) <= set(ALL_ARMS)


# ---- the verdicts from runs -------------------------------------------------------------------------------------


def _run(arm: str, seed: int, pass1: list[float], entropy: float, high_frac: float = 0.0) -> Run:
    """A lab run: evaluations at steps 0, 4, 8 (pass@1, and carry pass@32 = pass@1 + 0.5), a flat entropy."""
    records = [
        {"step": s, "eval/pass@1": p, "eval/carry/pass@32": p + 0.5, "entropy/mean": entropy,
         "clip/high_frac": high_frac, "entropy/top20_mean": 0.3, "entropy/bottom80_mean": 0.05}
        for s, p in zip((0, 4, 8), pass1)
    ]  # fmt: skip
    return Run(Path(f"{arm}-{seed}"), arm, records, overrides={"lab": arm}, config={"trainer.seed": seed})


def test_the_contrasts_by_hand():
    """pass@1 AUC = the mean after step 0: base 0.4, 0.5, 0.6 over seeds 0-2; clip_higher 0.5, 0.7, 0.9 -> diffs
    0.1, 0.2, 0.3: mean 0.2, s 0.1, t(0.975, 2) 4.303, half-width 0.2484 -> (-0.0484, 0.4484): inconclusive.
    The base clips at the upper bound on 0.002 >= 0.001 of the tokens: tested. Entropy diffs 0.02 each: an
    interval of width 0 at 0.02 > 0: reproduced."""
    runs = []
    for seed, (b, c) in enumerate(((0.4, 0.5), (0.5, 0.7), (0.6, 0.9))):
        runs.append(_run("base", seed, [0.1, b, b], 0.05, high_frac=0.002))
        runs.append(_run("clip_higher", seed, [0.1, c, c], 0.07))
    assert set(by_arm(runs)) == {"base", "clip_higher"}
    rows = {lc.contrast.name: (row, diffs) for lc, row, diffs in verdicts(runs)}
    assert set(rows) == {"clip-higher keeps entropy up", "clip-higher raises accuracy"}
    acc, diffs = rows["clip-higher raises accuracy"]
    assert diffs == pytest.approx([0.1, 0.2, 0.3])
    assert (acc.n, acc.mean_diff, acc.ci_low, acc.ci_high) == pytest.approx(
        (3, 0.2, -0.048414, 0.448414), abs=1e-6
    )
    assert acc.verdict == "inconclusive" and acc.mechanism_value == pytest.approx(0.002)
    assert rows["clip-higher keeps entropy up"][0].verdict == "reproduced"
    (low_clip,) = [r for lc, r, _ in verdicts([*runs[:1], *runs[1:2]]) if "accuracy" in lc.contrast.name]
    assert low_clip.n == 1 and low_clip.verdict == "inconclusive"
    for run in runs:  # the upper bound never binds: not tested, whatever the difference
        for r in run.records:
            r["clip/high_frac"] = 0.0005
    assert {r.verdict for _, r, _ in verdicts(runs)} == {"not tested"}


def test_the_kl_share_is_judged_on_its_median_step_not_a_spike():
    """kl/grad_share 0.01, 0.02 and one spike of 143 (k3's exp term): the median 0.02 fails the 0.05 check that
    the mean 47.7 would pass."""
    run = _run("kl", 0, [0.1, 0.2, 0.3], 0.05)
    for r, share in zip(run.records, (0.01, 143.0, 0.02)):
        r["kl/grad_share"] = share
    assert STATS["kl/grad_share, run median"](run) == pytest.approx(0.02)


def test_narrowing_is_a_paired_fall_of_pass_at_32_on_a_subset():
    """carry pass@32 from 0.9 at step 0 to 0.6, 0.7, 0.65 at the end: diffs -0.3, -0.2, -0.25, an interval below
    0 (mean -0.25, half-width 4.30265 * 0.05 / sqrt 3 = 0.124207): narrows."""
    runs = [_run("base", s, [0.4, 0.3, end - 0.5], 0.05) for s, end in enumerate((0.6, 0.7, 0.65))]
    for run in runs:
        run.records[0]["eval/carry/pass@32"] = 0.9
    (row,) = narrowing(runs)
    assert (row.arm, row.subset, row.start, row.end) == pytest.approx(("base", "carry", 0.9, 0.65))
    assert row.change.mean == pytest.approx(-0.25) and row.change.high == pytest.approx(
        -0.25 + 0.124207, abs=1e-6
    )
    assert row.narrows
    section = lab_section(
        [*runs, *(_run("entropy_bonus", s, [0.4, 0.3, 0.2], 0.2) for s in range(3))], "f.png"
    )
    assert "| positive control | entropy bonus keeps entropy up |" in section and "**reproduced**" in section
