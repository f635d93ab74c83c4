"""The training batch that crosses from the step's pipeline to the learner (the ground floor: no rlvr import)."""

from __future__ import annotations

import dataclasses
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

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The sequences `rows` [n] (indices), in that order, at the same width."""
        return RolloutBatch(*(t[rows] for t in dataclasses.astuple(self)))


@dataclass(frozen=True)
class BatchLayout:
    """Where one rank's rows sit in the step's whole batch (rlvr.share): the rank holds its slice of every
    mini-batch, mini-batch after mini-batch. With one process, the whole batch."""

    rows: torch.Tensor  # [n] long: each of this rank's rows' index in the whole batch
    minibatches: list[torch.Tensor]  # per mini-batch, this rank's rows in it (indices into its n rows)
    minibatch_rows: list[tuple[int, int]]  # per mini-batch, [start, end) of its rows in the whole batch
    n_rows: int  # rows of the whole batch
