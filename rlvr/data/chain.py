"""The entropy lab's verifiable task: three two-digit numbers added in two steps, with forks.

`a+b+c=` (10 <= a, b, c <= 99) is answered by a short chain, e.g. for `23+58+14=`

    23+14=37,37+58=95,\\boxed{95}

Two kinds of fork make exploration matter (rlvr's quickstart task, one sum in ~6 tokens, has none):
- *which pair first*: the teacher adds (a, b), (a, c) or (b, c) first, uniformly, so the first tokens of an
  answer are a real choice among three valid ways;
- *a slip dooms the rest*: each addition slips (off by 1 or by 10) with probability 0.05 + 0.25 x its carries,
  and the next step builds on the slipped sum. Some orders carry less than others for a given problem, so the
  choice made at the first fork changes the odds of everything after it.

A model warm-started on this teacher answers right ~15% of the time at temperature 1 while 8 samples hold a
right answer ~70% of the time: pass@k well above pass@1, the regime where entropy and exploration decide how
far RL gets. The verifier checks only the boxed final sum.

Problems: all 90^3 triples. A seeded draw fixes EVAL_SIZE held-out problems and TRAIN_SIZE RL training
problems, disjoint; the warm start draws any triple outside the held-out set.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

LOW, HIGH = 10, 99
EVAL_SIZE, TRAIN_SIZE = 300, 20_000
SLIPS = (-10, -1, 1, 10)
SLIP_BASE, SLIP_PER_CARRY = 0.05, 0.25

Problem = tuple[int, int, int]


def _triple(index: int) -> Problem:
    span = HIGH - LOW + 1
    return (LOW + index // span**2, LOW + index // span % span, LOW + index % span)


def chain_splits(seed: int = 1234) -> tuple[list[Problem], list[Problem]]:
    """(train, held_out): disjoint seeded draws of TRAIN_SIZE and EVAL_SIZE triples."""
    drawn = random.Random(seed).sample(range((HIGH - LOW + 1) ** 3), EVAL_SIZE + TRAIN_SIZE)
    problems = [_triple(i) for i in drawn]
    return problems[EVAL_SIZE:], problems[:EVAL_SIZE]


@functools.cache
def _held_out() -> frozenset[Problem]:
    return frozenset(chain_splits()[1])


def question(a: int, b: int, c: int) -> str:
    return f"{a}+{b}+{c}="


def _orders(a: int, b: int, c: int) -> list[tuple[int, int, int]]:
    """The three ways to add: (first pair, then the third)."""
    return [(a, b, c), (a, c, b), (b, c, a)]


def _chain(x: int, y: int, s1: int, z: int, s2: int) -> str:
    return f"{x}+{y}={s1},{s1}+{z}={s2},\\boxed{{{s2}}}"


def carries(x: int, y: int) -> int:
    """Column carries of x + y (non-negative integers)."""
    count = carry = 0
    while x or y:
        carry = 1 if x % 10 + y % 10 + carry >= 10 else 0
        count += carry
        x, y = x // 10, y // 10
    return count


def _teacher_sum(x: int, y: int, rng: random.Random) -> int:
    if rng.random() < SLIP_BASE + SLIP_PER_CARRY * carries(x, y):
        return max(0, x + y + rng.choice(SLIPS))
    return x + y


def teacher_completion(a: int, b: int, c: int, rng: random.Random) -> str:
    """The noisy teacher: a uniformly chosen order, each step slipping with a probability that grows with its
    carries, the second step built on the first's (possibly slipped) sum."""
    x, y, z = rng.choice(_orders(a, b, c))
    s1 = _teacher_sum(x, y, rng)
    return _chain(x, y, s1, z, _teacher_sum(s1, z, rng))


def teacher_batch(train: list[Problem], rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (question, completion) pairs for the warm start: triples drawn outside the held-out split."""
    held_out = _held_out()
    batch = []
    while len(batch) < n:
        p = _triple(rng.randrange((HIGH - LOW + 1) ** 3))
        if p not in held_out:
            batch.append((question(*p), teacher_completion(*p, rng)))
    return batch


def solutions(problem: Problem) -> tuple[str, list[str]]:
    """The question and every completion with no slip (one per distinct order)."""
    chains = {_chain(x, y, x + y, z, x + y + z) for x, y, z in _orders(*problem)}
    return question(*problem), sorted(chains)


def write_splits(out: Path) -> None:
    train, held_out = chain_splits()
    for problems, name in ((train, "train.jsonl"), (held_out, "eval.jsonl")):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for p in problems:
                f.write(json.dumps({"question": question(*p), "answer": str(sum(p))}) + "\n")
