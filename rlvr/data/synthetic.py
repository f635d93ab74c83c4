"""The embedded default's verifiable task: two-digit addition, answered as `\\boxed{sum}`.

All 100 x 100 problems `a+b=` (0 <= a, b <= 99) are split once, by a seeded shuffle, into a held-out
eval split and a train split that never overlap. The warm start imitates a *noisy teacher*: right with
probability `p_correct`, otherwise a near miss (off by 1-3 or by 10, the usual slips). A model that learns
the teacher puts roughly `p_correct` of its probability on the right sum, so at temperature 1 a group of G
answers holds both outcomes and RL has signal from step 0; RL's job is to move the mass onto the right one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SLIPS = (-10, -3, -2, -1, 1, 2, 3, 10)


def addition_splits(
    eval_size: int = 500, seed: int = 1234
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(train, eval) lists of (a, b); disjoint, together all 10,000 problems."""
    problems = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(problems)
    return problems[eval_size:], problems[:eval_size]


def question(a: int, b: int) -> str:
    return f"{a}+{b}="


def completion(answer: int) -> str:
    return f"\\boxed{{{answer}}}"


def teacher_answer(a: int, b: int, rng: random.Random, p_correct: float) -> int:
    """The noisy teacher: a + b with probability p_correct, else a near miss that is still >= 0."""
    if rng.random() < p_correct:
        return a + b
    slips = [s for s in SLIPS if a + b + s >= 0]
    return a + b + rng.choice(slips)


def teacher_batch(
    train: list[tuple[int, int]], rng: random.Random, n: int, p_correct: float = 0.35
) -> list[tuple[str, str]]:
    """n (question, completion) pairs for the warm start: train problems drawn with replacement, the teacher's
    answers."""
    return [
        (question(a, b), completion(teacher_answer(a, b, rng, p_correct))) for a, b in rng.choices(train, k=n)
    ]


def solutions(problem: tuple[int, int]) -> tuple[str, list[str]]:
    """The question and its one right completion."""
    a, b = problem
    return question(a, b), [completion(a + b)]


def write_splits(out: Path) -> None:
    train, held_out = addition_splits()
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(held_out, out / "eval.jsonl")


def write_jsonl(problems: list[tuple[int, int]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for a, b in problems:
            f.write(json.dumps({"question": question(a, b), "answer": str(a + b)}) + "\n")
