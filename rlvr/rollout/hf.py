"""Rollout with plain transformers: a KV-cached sampling loop over the learner's own model.

It shares the learner's module, so a weight sync costs nothing. Its own loop (rather than
`generate`) records each sampled token's log-probability as it goes — never a [tokens x vocab]
score tensor for the whole batch: the prompts' forward asks the model for the last position's logits
only (`logits_to_keep=1`, where the model's forward takes it) — and draws from a private
torch.Generator, so samples depend only on the seed it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from rlvr.errors import RunDiverged
from rlvr.rollout.base import Completion, SamplingParams


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits: [N, V] (already divided by the temperature). Tokens outside top-k / the top-p nucleus -> -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the first token is always kept)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def last_logits_only(model: torch.nn.Module) -> dict:
    """`logits_to_keep=1` if the model's forward (under DDP's or torch.compile's wrapper) takes it, else nothing:
    the prompts' forward then computes [batch, 1, vocab] logits, not [batch, prompt length, vocab]."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


class HFRolloutEngine:
    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # sequences per sampling batch (bounds the KV cache)

    def sync_weights(self, model: torch.nn.Module) -> int:
        self.model = model  # same module as the learner's: nothing to copy
        return 0

    def close(self) -> None:
        pass

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        # one generator for the whole call: a share of a list (first_index > 0) gets its own stream, so the
        # samples differ from the whole list's (unlike vLLM's per-prompt seeds) but stay reproducible
        if first_index:
            seed = (seed * 1_000_003 + first_index) % (1 << 63)
        generator = torch.Generator(device=self._device()).manual_seed(seed)
        flat = [list(p) for p in prompts for _ in range(n)]
        done: list[Completion] = []
        for start in range(0, len(flat), self.batch_size):
            done.extend(self._sample(flat[start : start + self.batch_size], params, generator))
        return [done[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _sample(self, prompts: list[list[int]], params: SamplingParams, generator) -> list[Completion]:
        device, eos, pad = self._device(), self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        was_training = self.model.training
        self.model.eval()
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):  # left padding: every prompt ends at the same column
            input_ids[i, width - len(p) :] = torch.tensor(p, device=device)
            mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **last_logits_only(self.model),
        )
        tokens, logps = [], []
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        for i in range(params.max_new_tokens):
            logits = filter_logits(out.logits[:, -1].float() / params.temperature, params.top_k, params.top_p)
            logp = logits.log_softmax(-1)
            if torch.isnan(logp).any():  # else torch.multinomial fails with a message that names no cause
                raise RunDiverged(
                    "the policy's next-token probabilities hold NaN while sampling (hf backend): its weights or "
                    "activations are not finite; likely causes: optim.lr too high, or a model with broken weights"
                )
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            token = token.masked_fill(finished, pad)
            tokens.append(token)
            logps.append(logp.gather(-1, token[:, None]).squeeze(-1))
            if not params.ignore_eos:
                finished |= token == eos
            if finished.all() or i == params.max_new_tokens - 1:  # no forward for a token never sampled
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = positions[:, -1:] + 1
            out = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        self.model.train(was_training)
        stop = None if params.ignore_eos else eos
        return self._completions(torch.stack(tokens, 1).tolist(), torch.stack(logps, 1).tolist(), stop)

    def _completions(
        self, tokens: list[list[int]], logps: list[list[float]], stop: int | None
    ) -> list[Completion]:
        """Cut each row after its first `stop` token (None: keep every token, finish reason "length")."""
        result = []
        for ids, lps in zip(tokens, logps):
            stopped = stop is not None and stop in ids
            n = ids.index(stop) + 1 if stopped else len(ids)
            result.append(
                Completion(
                    token_ids=ids[:n],
                    logprobs=lps[:n],
                    finish_reason="stop" if stopped else "length",
                    text=self.tokenizer.decode(ids[:n], skip_special_tokens=True),
                )
            )
        return result
