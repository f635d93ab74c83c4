"""The rollout engine protocol: what the trainer needs from any sampler (transformers or vLLM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    ignore_eos: bool = False  # keep sampling past EOS: exactly max_new_tokens tokens (benchmarks)


@dataclass
class Completion:
    token_ids: list[int]  # generated tokens, EOS included when the model stopped
    logprobs: list[float]  # log-probability of each generated token under the sampling distribution
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens; always with ignore_eos)
    text: str  # decoded without special tokens

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        """n completions for each prompt (token ids), in prompt order. The same seed reproduces the samples.
        `first_index`: the position of prompts[0] in the caller's whole list, when a data-parallel rank
        samples a share of it: engines that seed each prompt on its own seed prompt i as first_index + i,
        so the shares' samples are those of the whole list."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> int:
        """Make the engine sample from `model`'s current weights; returns the bytes this rank handed to the
        engine (`sync/bytes`: 0 where the engine samples from the learner's own module)."""
        ...

    def close(self) -> None: ...
