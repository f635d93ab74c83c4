"""Example reward functions for `reward.functions` (docs/REWARDS.md); the tests train with them.

A reward function is called once per sampled completion as `fn(completion, row, **kwargs)`, in a verifier
worker process: `completion` is the generated text, `row` the dataset row it answers (every field, nested ones
included), `kwargs` the entry's `kwargs`. It returns a float, or a dict of named floats (each logged, their sum
weighted into the reward). It must not keep state between calls. Raising, or running past reward.timeout_s,
costs that sample the entry's `fallback` value, counted in reward/<name>/error_frac and timeout_frac.
"""


def concise(completion: str, row: dict, max_chars: int = 40) -> float:
    """1.0 for an answer of at most `max_chars` characters, falling linearly to 0.0 at twice that."""
    over = max(0, len(completion) - max_chars)
    return max(0.0, 1.0 - over / max_chars)


def shows_work(completion: str, row: dict, key: str = "question") -> dict:
    """Two components: whether the answer is boxed, and whether it restates the row's question."""
    return {"boxed": float("\\boxed{" in completion), "restates": float(str(row.get(key, "")) in completion)}
