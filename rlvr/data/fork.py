"""The entropy lab's verifiable task: two-digit addition where a rare way of answering beats the common one.

`x+y=` (10 <= x, y <= 99) has two ways of answering, which part at the first token:

- the *shortcut* (the teacher's choice 1 - P_COLUMN of the time) boxes the sum at once, adding each column on
  its own and dropping the carry: `\\boxed{47}` for 38+19. It is right exactly on the problems whose units do
  not carry (55% of them), wrong on every other one (the *carry subset*), and slips by 1 with probability
  SHORTCUT_SLIP;
- the *column method* (P_COLUMN = 2%) writes the units, then the tens with the carry, then the box:
  `8+9=17,3+1+1=5,\\boxed{57}`. Each step slips by 1 with probability COLUMN_SLIP, and the box is built on the
  written steps. It is right on either subset about 94% of the time.

A model warm-started on this teacher starts its answer with the column method about 2% of the time: on the carry
subset pass@1 is near 0.02 while pass@32 is near 0.5, so a group of G answers sometimes holds the rare right
one, and RL has to find it and raise a first token of low probability (DAPO's argument for clip-higher: at
eps_high 0.2 a token at p = 0.02 rises to at most 0.024 in one update). A policy that sharpens onto the shortcut
instead narrows: its pass@32 on the carry subset falls below the starting model's (Yue et al. 2025). The
verifier checks only the boxed number.

Problems: all 90 x 90 pairs. A seeded shuffle holds out EVAL_PER_SUBSET problems of each subset (written as
eval_carry.jsonl, eval_nocarry.jsonl and, both together, eval.jsonl); the rest are the train split, from which
the warm start draws too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

LOW, HIGH = 10, 99
EVAL_PER_SUBSET = 100
P_COLUMN = 0.02
# the warm start first teaches the column method at WARM_COLUMN of the answers for WARM_STEPS steps (at 2% a
# 4-layer model never learns to carry it out: its column answers came out right 0.4% of the time after 3,000
# steps), then at P_COLUMN, which brings the first token's share down to ~2% and keeps the skill
WARM_COLUMN, WARM_STEPS = 0.5, 1500
SHORTCUT_SLIP, COLUMN_SLIP = 0.1, 0.03

Problem = tuple[int, int]


def carries(x: int, y: int) -> bool:
    """Whether the units column carries."""
    return x % 10 + y % 10 >= 10


def fork_splits(seed: int = 1234) -> tuple[list[Problem], list[Problem]]:
    """(train, held_out): held_out is EVAL_PER_SUBSET carry problems then EVAL_PER_SUBSET others, disjoint from
    train; seeded."""
    problems = [(x, y) for x in range(LOW, HIGH + 1) for y in range(LOW, HIGH + 1)]
    random.Random(seed).shuffle(problems)
    carry = [p for p in problems if carries(*p)][:EVAL_PER_SUBSET]
    other = [p for p in problems if not carries(*p)][:EVAL_PER_SUBSET]
    held_out = set(carry + other)
    return [p for p in problems if p not in held_out], carry + other


def question(x: int, y: int) -> str:
    return f"{x}+{y}="


def shortcut_value(x: int, y: int) -> int:
    """The tens added, the units added modulo 10: the sum without the units' carry."""
    return (x // 10 + y // 10) * 10 + (x % 10 + y % 10) % 10


def shortcut(value: int) -> str:
    return f"\\boxed{{{value}}}"


def column(x: int, y: int, units: int, tens: int) -> str:
    """The column method with the written units sum and tens sum (each possibly slipped); the box follows them."""
    carry = 1 if units >= 10 else 0
    return f"{x % 10}+{y % 10}={units},{x // 10}+{y // 10}+{carry}={tens},\\boxed{{{tens * 10 + units % 10}}}"


def _slip(value: int, p: float, rng: random.Random) -> int:
    return value + rng.choice((-1, 1)) if rng.random() < p else value


def teacher_completion(x: int, y: int, rng: random.Random, p_column: float = P_COLUMN) -> str:
    if rng.random() < p_column:
        units = max(0, _slip(x % 10 + y % 10, COLUMN_SLIP, rng))
        tens = max(0, _slip(x // 10 + y // 10 + (units >= 10), COLUMN_SLIP, rng))
        return column(x, y, units, tens)
    return shortcut(_slip(shortcut_value(x, y), SHORTCUT_SLIP, rng))


def teacher_batch(
    train: list[Problem], rng: random.Random, n: int, step: int = WARM_STEPS
) -> list[tuple[str, str]]:
    """n (question, completion) pairs for warm-start step `step`: train problems drawn with replacement, the
    column method at WARM_COLUMN of them before WARM_STEPS, at P_COLUMN from then on."""
    p_column = WARM_COLUMN if step < WARM_STEPS else P_COLUMN
    return [(question(*p), teacher_completion(*p, rng, p_column)) for p in rng.choices(train, k=n)]


def solutions(problem: Problem) -> tuple[str, list[str]]:
    """The question and every right completion without a slip: the column method's, and the shortcut's where
    the units do not carry."""
    x, y = problem
    right = [column(x, y, x % 10 + y % 10, x // 10 + y // 10 + carries(x, y))]
    if not carries(x, y):
        right.append(shortcut(x + y))
    return question(x, y), sorted(right)


def write_splits(out: Path) -> None:
    train, held_out = fork_splits()
    files = {
        "train.jsonl": train,
        "eval.jsonl": held_out,
        "eval_carry.jsonl": [p for p in held_out if carries(*p)],
        "eval_nocarry.jsonl": [p for p in held_out if not carries(*p)],
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, problems in files.items():
        with (out / name).open("w", encoding="utf-8") as f:
            for x, y in problems:
                f.write(json.dumps({"question": question(x, y), "answer": str(x + y)}) + "\n")
