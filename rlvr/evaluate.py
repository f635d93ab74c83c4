"""pass@k on a held-out split: n samples per prompt, the unbiased estimator of Chen et al. 2021."""

from __future__ import annotations

from collections.abc import Sequence

from rlvr import distributed as dist
from rlvr.metrics import mean_pass_at_k
from rlvr.reward import MathVerifier, Verdict
from rlvr.rollout.base import RolloutEngine, SamplingParams


def count_correct(
    engine: RolloutEngine,
    verifier: MathVerifier,
    prompt_ids: Sequence[Sequence[int]],
    golds: Sequence[str],
    n: int,
    params: SamplingParams,
    seed: int,
    first_index: int = 0,
) -> list[int]:
    """Correct samples out of n, per prompt."""
    outputs = engine.generate(prompt_ids, n, params, seed, first_index=first_index)
    verdicts = verifier.verify([c.text for cs in outputs for c in cs], [g for g in golds for _ in range(n)])
    return [sum(v == Verdict.CORRECT for v in verdicts[i * n : (i + 1) * n]) for i in range(len(prompt_ids))]


def evaluate_pass_at_k(
    engine: RolloutEngine,
    verifier: MathVerifier,
    prompt_ids: Sequence[Sequence[int]],
    golds: Sequence[str],
    ks: Sequence[int],
    n: int,
    params: SamplingParams,
    seed: int,
) -> dict[str, float]:
    """{"eval/pass@K": value for each K in ks (pass@1 always included)}; n >= max(ks) samples per prompt.
    Under data parallelism each rank samples and verifies its share of the prompts; every rank returns the
    result over all of them."""
    start, shard = dist.my_shard(list(range(len(prompt_ids))))
    mine = count_correct(
        engine, verifier, [prompt_ids[i] for i in shard], [golds[i] for i in shard], n, params, seed, start
    )
    correct = [c for part in dist.gather_objects(mine) for c in part]
    scores = mean_pass_at_k(correct, n, sorted({1, *ks}))
    return {f"eval/pass@{k}": v for k, v in scores.items()}
