"""pass@k on held-out sets: n samples per prompt, the unbiased estimator of Chen et al. 2021."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from rlvr import distributed as dist
from rlvr.config import HELDOUT, DataConfig, EvalSetConfig, RLVRConfig, eval_sets
from rlvr.data.prompts import check_golds, encode_prompts, load_problems
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
    samples: list[dict] | None = None,
) -> list[int]:
    """Correct samples out of n, per prompt; each sample appended to `samples` if given."""
    outputs = engine.generate(prompt_ids, n, params, seed, first_index=first_index)
    verdicts = verifier.verify([c.text for cs in outputs for c in cs], [g for g in golds for _ in range(n)])
    if samples is not None:
        for i, cs in enumerate(outputs):
            for j, c in enumerate(cs):
                v = verdicts[i * n + j]
                samples.append({"prompt_index": first_index + i, "gold": golds[i], "completion": c.text,
                                "verdict": v.value, "finish_reason": c.finish_reason})  # fmt: skip
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
    samples: list[dict] | None = None,
) -> dict[str, float]:
    """{"eval/pass@K": value for each K in ks (pass@1 always included)}; n >= max(ks) samples per prompt.
    Under data parallelism each rank samples and verifies its share of the prompts; every rank returns the
    result over all of them."""
    start, shard = dist.my_shard(list(range(len(prompt_ids))))
    mine = count_correct(
        engine,
        verifier,
        [prompt_ids[i] for i in shard],
        [golds[i] for i in shard],
        n,
        params,
        seed,
        start,
        samples,
    )
    correct = [c for part in dist.gather_objects(mine) for c in part]
    scores = mean_pass_at_k(correct, n, sorted({1, *ks}))
    return {f"eval/pass@{k}": v for k, v in scores.items()}


@dataclass
class EvalSet:
    """A held-out set, tokenized: its name ("" for the one split of data.eval_* without eval.sets; "heldout"
    for that split beside eval.sets), prompts, golds, and how it is sampled."""

    name: str
    prompt_ids: list[list[int]]
    golds: list[str]
    ks: list[int]
    n: int
    params: SamplingParams


def evaluate_sets(
    engine: RolloutEngine,
    verifier: MathVerifier,
    sets: Sequence[EvalSet],
    seed: int,
    samples: dict[str, list[dict]] | None = None,
) -> dict[str, float]:
    """pass@k of each set: eval/<name>/pass@K for named sets, and eval/pass@K, the mean over the sets that have
    that K (a single unnamed set: its own values, as before sets existed). With `samples`, each set's samples
    are appended under its name (this rank's share)."""
    out: dict[str, float] = {}
    by_k: dict[str, list[float]] = {}
    for s in sets:
        mine = samples.setdefault(s.name, []) if samples is not None else None
        scores = evaluate_pass_at_k(engine, verifier, s.prompt_ids, s.golds, s.ks, s.n, s.params, seed, mine)
        for key, value in scores.items():  # eval/pass@K
            by_k.setdefault(key, []).append(value)
            if s.name:
                out[key.replace("eval/", f"eval/{s.name}/", 1)] = value
    out.update({key: sum(values) / len(values) for key, values in by_k.items()})
    return out


def build_eval_sets(cfg: RLVRConfig, tokenizer, check_math_golds: bool = True) -> list[EvalSet]:
    """The held-out sets of a config, read, checked and tokenized: the split of data.eval_files /
    data.eval_dataset, named "" alone or HELDOUT ("heldout", first) beside eval.sets, then eval.sets' own."""
    return [_eval_set(cfg, *source, tokenizer, check_math_golds) for source in _eval_sources(cfg)]


def _eval_sources(cfg: RLVRConfig) -> list[tuple[str, DataConfig, str, EvalSetConfig | None]]:
    """(name, how to read it, its config key, its eval.sets entry) for each held-out set: data.eval_* (no entry;
    unnamed when it is the only set, as before eval.sets existed), then eval.sets."""
    d = cfg.data
    split = HELDOUT if cfg.eval.sets else ""
    if d.eval_dataset.path is not None:
        sources = [(split, d, "data.eval_dataset", None)]
    else:
        sources = [(split, d, "data.eval_files", None)] if d.eval_files else []
    for name, s in eval_sets(cfg.eval).items():
        data = dataclasses.replace(
            d,
            eval_files=list(s.files),
            eval_dataset=s.dataset,
            prompt_key=s.prompt_key,
            question_key=None,
            answer_key=s.answer_key,
            answer_pattern=s.answer_pattern,
            prompt_template=s.prompt_template,
            system_prompt=s.system_prompt if s.system_prompt is not None else d.system_prompt,
            use_chat_template=s.use_chat_template if s.use_chat_template is not None else d.use_chat_template,
            dedup=False,
            eval_max_prompts=s.max_prompts,
        )
        sources.append((name, data, f"eval.sets.{name}", s))
    return sources


def _eval_set(
    cfg: RLVRConfig, name: str, d: DataConfig, key: str, s: EvalSetConfig | None, tokenizer, check: bool
) -> EvalSet:
    from rlvr.reward.math_verifier import gold_problem

    dataset = d.eval_dataset if d.eval_dataset.path is not None else None
    problems = load_problems(d.eval_files, d, key, dataset)
    problems = problems[: d.eval_max_prompts] if d.eval_max_prompts else problems
    if check:
        check_golds(problems, key, gold_problem)
    problems, ids = encode_prompts(tokenizer, problems, d, key)
    e, r = cfg.eval, cfg.rollout
    ks = (s.k if s and s.k else None) or e.k
    params = SamplingParams(
        (s.temperature if s else None) or e.temperature or r.temperature,
        (s.top_p if s else None) or r.top_p,
        r.top_k,
        (s.max_new_tokens if s else None) or r.max_new_tokens,
    )
    n = (s.n if s else None) or e.n or max(ks)
    return EvalSet(name, ids, [p.answer for p in problems], list(ks), n, params)
