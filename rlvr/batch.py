"""The training batch that crosses from the step's pipeline to the learner (the ground floor: no rlvr import)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    """N sequences (prompt + response), right-padded to length L; per-token tensors are aligned with input_ids:
    position t holds the value for token t (log p(token t | tokens < t))."""

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long
    response_mask: torch.Tensor  # [N, L] bool: generated tokens that count in the loss
    advantages: torch.Tensor  # [N] float
    rollout_logp: torch.Tensor  # [N, L] float: the sampler's log-probabilities (0 outside the response)

    def __len__(self) -> int:
        return self.input_ids.shape[0]
