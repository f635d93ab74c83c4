import math

import torch
from helpers import right_pad
from margins import within

from rlvr.learner import response_logp_entropy
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import HFRolloutEngine, filter_logits


def test_filter_logits_top_k_and_top_p():
    # top_k=2 keeps the two largest logits
    out = filter_logits(torch.tensor([[1.0, 4.0, 2.0, 3.0]]), top_k=2, top_p=1.0)
    assert torch.isinf(out[0, [0, 2]]).all() and out[0, 1] == 4.0 and out[0, 3] == 3.0
    # probs .5, .3, .2 with top_p .6: mass before .5 is 0 (keep), before .3 is .5 < .6 (keep), before .2 is .8 (drop)
    logits = torch.tensor([[math.log(0.2), math.log(0.5), math.log(0.3)]])
    out = filter_logits(logits, top_k=0, top_p=0.6)
    assert torch.isinf(out[0, 0]) and torch.isfinite(out[0, 1:]).all()


def _prompts(tokenizer):
    return [tokenizer(q, add_special_tokens=False)["input_ids"] for q in ("1+2=", "34+56=", "7+80=")]


def test_generate_shapes_finish_reasons_and_reproducibility(tiny_model, tokenizer):
    engine = HFRolloutEngine(tiny_model, tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=5)
    out = engine.generate(_prompts(tokenizer), 4, params, seed=7)
    assert [len(group) for group in out] == [4, 4, 4]
    for c in (c for group in out for c in group):
        assert len(c.token_ids) == len(c.logprobs) <= 5
        assert all(lp <= 0 for lp in c.logprobs)
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == tokenizer.eos_token_id
        else:
            assert (
                c.finish_reason == "length"
                and len(c.token_ids) == 5
                and tokenizer.eos_token_id not in c.token_ids
            )
    again = engine.generate(_prompts(tokenizer), 4, params, seed=7)
    other = engine.generate(_prompts(tokenizer), 4, params, seed=8)
    ids = lambda o: [c.token_ids for g in o for c in g]  # noqa: E731
    assert ids(out) == ids(again)
    assert ids(out) != ids(other)
    assert len({tuple(c.token_ids) for c in out[0]}) > 1  # a random model at T=1 does not repeat itself


def test_sampling_logprobs_match_learner(tiny_model, tokenizer):
    """The sampler's logprobs (left-padded, KV-cached) equal the learner's (right-padded, full forward)."""
    engine = HFRolloutEngine(tiny_model, tokenizer)
    prompts = _prompts(tokenizer)
    params = SamplingParams(temperature=0.7, top_k=0, max_new_tokens=6)
    out = engine.generate(prompts, 2, params, seed=3)
    ids, att, resp = right_pad(
        [(p, c.token_ids) for p, group in zip(prompts, out) for c in group], tokenizer.pad_token_id
    )
    expected = torch.zeros(ids.shape)
    expected[resp] = torch.tensor([lp for group in out for c in group for lp in c.logprobs])
    with torch.no_grad():
        logp, _ = response_logp_entropy(tiny_model, ids, att, resp, 0.7, chunk_size=64)
    diff = (logp - expected)[resp].abs()
    within(diff.max(), 1e-4, "max |logp diff|")


def test_sampling_follows_the_model_distribution(tokenizer):
    """First-token frequencies over 4000 draws match softmax(logits / T) (within 4 standard errors)."""
    from rlvr.tiny_model import build_model

    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=1)
    with torch.no_grad():  # sharpen the head so a few tokens carry most of the mass
        model.lm_head.weight.mul_(30.0)
    prompt = tokenizer("5+5=", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = (model(torch.tensor([prompt])).logits[0, -1] / 0.9).softmax(-1)
    out = HFRolloutEngine(model, tokenizer).generate(
        [prompt], 4000, SamplingParams(temperature=0.9, max_new_tokens=1), seed=0
    )
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in out[0]]), minlength=probs.numel()).float()
    top = probs.topk(3).indices
    se = (probs[top] * (1 - probs[top]) / 4000).sqrt()
    assert ((counts[top] / 4000 - probs[top]).abs() < 4 * se + 1e-3).all()


def test_ignore_eos_samples_exactly_max_new_tokens(tiny_model, tokenizer):
    """With EOS made ~99% likely at every step, plain sampling stops at once; ignore_eos samples on past it."""
    eos = tokenizer.eos_token_id

    def favour_eos(module, inputs, logits):
        return logits.index_add(-1, torch.tensor([eos]), torch.full((*logits.shape[:-1], 1), 10.0))

    tiny_model.get_output_embeddings().register_forward_hook(favour_eos)
    engine = HFRolloutEngine(tiny_model, tokenizer)
    stopping = [
        c for g in engine.generate(_prompts(tokenizer), 4, SamplingParams(max_new_tokens=7), 0) for c in g
    ]
    assert sum(c.finish_reason == "stop" for c in stopping) >= len(stopping) // 2
    params = SamplingParams(max_new_tokens=7, ignore_eos=True)
    forced = [c for g in engine.generate(_prompts(tokenizer), 4, params, seed=0) for c in g]
    for c in forced:
        assert c.finish_reason == "length" and len(c.token_ids) == len(c.logprobs) == 7
    assert sum(c.token_ids.count(eos) for c in forced) > len(forced)  # EOS sampled, and sampling went on


def test_the_prompts_forward_computes_the_last_positions_logits_only(tiny_model, tokenizer):
    """No [batch, prompt length, vocab] logits: the lm head sees one position per row, prefill included (with a
    real vocabulary the prompts' full logits are gigabytes); and one forward per sampled token, none after the
    last."""
    shapes = []
    hook = tiny_model.get_output_embeddings().register_forward_hook(
        lambda m, i, out: shapes.append(out.shape)
    )
    try:
        HFRolloutEngine(tiny_model, tokenizer).generate(
            _prompts(tokenizer), 2, SamplingParams(max_new_tokens=3), 0
        )
    finally:
        hook.remove()
    assert max(len(p) for p in _prompts(tokenizer)) > 1 and len(shapes) == 3
    assert all(s[1] == 1 for s in shapes), shapes
