"""The learner: log-probabilities and entropies of response tokens, the RL loss, and optimizer steps.

Memory: logits are only ever formed for response tokens, a chunk of `learner.logprob_chunk_size`
tokens at a time, and each chunk is recomputed in backward (activation checkpointing), so no
[tokens x vocab] tensor exists for a whole batch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from rlvr import algo
from rlvr.config import AlgoConfig, LearnerConfig, OptimConfig


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


def _chunk_logp_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, inv_temp: float):
    """hidden: [n, H], weight: [V, H], labels: [n] -> (logp [n] with grad, entropy [n] without)."""
    logits = (hidden @ weight.T).float() * inv_temp
    lse = logits.logsumexp(-1)
    logp = logits.gather(-1, labels[:, None]).squeeze(-1) - lse
    with torch.no_grad():
        entropy = lse - (logits.softmax(-1) * logits).sum(-1)
    return logp, entropy


def response_logp_entropy(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, response_mask: [n, L]. Returns (logp, entropy): [n, L] float32, aligned with
    input_ids, zero outside response_mask. Logits are scaled by 1/temperature, so logp is the log-probability
    under the sampling distribution. Gradient flows into logp only."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    predicts = response_mask[:, 1:]  # hidden at t-1 predicts token t
    h = hidden[:, :-1][predicts]
    labels = input_ids[:, 1:][predicts]
    pieces = []
    for s in range(0, h.shape[0], chunk_size):
        args = (h[s : s + chunk_size], head.weight, labels[s : s + chunk_size], 1.0 / temperature)
        pieces.append(
            checkpoint(_chunk_logp_entropy, *args, use_reentrant=False)
            if torch.is_grad_enabled()
            else _chunk_logp_entropy(*args)
        )
    logp = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    entropy = torch.zeros_like(logp)
    if pieces:
        logp[:, 1:][predicts] = torch.cat([p[0] for p in pieces])
        entropy[:, 1:][predicts] = torch.cat([p[1] for p in pieces])
    return logp, entropy


class Learner:
    """Owns the policy, its optimizer and scheduler, and the reference policy (when algo.kl.coef > 0)."""

    def __init__(
        self,
        model,
        accelerator,
        algo_cfg: AlgoConfig,
        optim: OptimConfig,
        learner: LearnerConfig,
        temperature: float,
        total_steps: int,
        tis_cap: float | None = None,
    ):
        self.accelerator = accelerator
        # rollout.tis_cap: truncated importance sampling against the sampler's logprobs (None = off)
        self.tis_cap = tis_cap
        self.algo = algo_cfg
        self.cfg = learner
        self.optim_cfg = optim
        self.temperature = temperature
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=optim.lr,
            betas=(optim.beta1, optim.beta2),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, optim.warmup_steps, total_steps, optim.schedule)
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.reference = None
        if algo_cfg.kl.coef > 0:
            self.reference = copy.deepcopy(self.unwrapped).eval().requires_grad_(False)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def reset_reference(self) -> None:
        """ProRL hard reset: the reference becomes the current policy (and optionally Adam's moments restart)."""
        self.reference.load_state_dict(self.unwrapped.state_dict())
        if self.algo.kl.reset_optimizer:
            self.optimizer.state.clear()

    def _micro_batches(self, rows: torch.Tensor):
        for s in range(0, len(rows), self.cfg.micro_batch_size):
            yield rows[s : s + self.cfg.micro_batch_size]

    def _padding_frac(self, batch: RolloutBatch, minibatches) -> float:
        """Fraction of the positions the forward passes compute that are padding (rows x longest row)."""
        lengths = batch.attention_mask.sum(-1)
        computed = sum(
            len(rows) * int(lengths[mb[rows]].max())
            for mb in minibatches
            for rows in self._micro_batches(torch.arange(len(mb)))
        )
        return 1.0 - int(lengths.sum()) / max(computed, 1)

    def _forward(self, model, batch: RolloutBatch, rows: torch.Tensor):
        """Forward on a micro-batch, trimmed to its longest sequence; returns (logp, entropy) at full width L."""
        device = self.accelerator.device
        width = int(batch.attention_mask[rows].sum(-1).max())
        ids, att, resp = (
            t[rows, :width].to(device) for t in (batch.input_ids, batch.attention_mask, batch.response_mask)
        )
        with self.accelerator.autocast():
            logp, entropy = response_logp_entropy(
                model, ids, att, resp, self.temperature, self.cfg.logprob_chunk_size
            )
        pad = batch.input_ids.shape[1] - width
        return torch.nn.functional.pad(logp, (0, pad)), torch.nn.functional.pad(entropy, (0, pad))

    def _cov_selection(self, old_logp, adv, pg_mask, minibatches, seed: int | None) -> torch.Tensor:
        """Clip-Cov / KL-Cov tokens [N, L] bool: chosen once per mini-batch, over all of its loss tokens (the
        definitions' N), from the log-probs of the policy before the update (where every ratio is 1, so no token
        is PPO-clipped yet); the same tokens are used in every epoch. Clip-Cov's draw comes from `seed`."""
        c = self.algo.cov
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        selected = torch.zeros_like(pg_mask)
        for mb in minibatches:
            cov = algo.token_covariance(old_logp[mb], adv[mb], pg_mask[mb])
            if c.mode == "clip_cov":
                selected[mb] = algo.clip_cov_select(
                    cov, pg_mask[mb], c.clip_frac, c.clip_bound_low, c.clip_bound_high, generator
                )
            else:
                selected[mb] = algo.kl_cov_select(cov, pg_mask[mb], c.kl_frac)
        return selected

    def _policy_loss(self, logp, old, adv, cov_selected):
        """Per-token policy loss and clip info: PPO clip, or the Clip-Cov / KL-Cov variant (algo.cov.mode)."""
        a = self.algo
        if a.cov.mode == "kl_cov":
            return algo.kl_cov_loss(logp, old, adv, cov_selected, a.cov.kl_coef)
        pg, info = algo.ppo_clip_loss(logp, old, adv, a.clip.eps_low, a.clip.eps_high, a.clip.dual_c)
        if a.cov.mode == "clip_cov":
            pg = algo.clip_cov_loss(pg, cov_selected)
        return pg, info

    @torch.no_grad()
    def _no_grad_pass(self, model, batch: RolloutBatch):
        logp = torch.zeros(batch.input_ids.shape, device=self.accelerator.device)
        entropy = torch.zeros_like(logp)
        for rows in self._micro_batches(torch.arange(len(batch))):
            logp[rows], entropy[rows] = self._forward(model, batch, rows)
        return logp, entropy

    def update(self, batch: RolloutBatch, seed: int | None = None) -> dict[str, float]:
        """μ passes of num_minibatches optimizer steps over the batch. Returns learner metrics and per-token
        tensors of the policy before the update (`entropy`, `logp`, on the learner's device). `seed` drives the
        update's own random draws (Clip-Cov's token draw; None: torch's global RNG)."""
        started = time.perf_counter()
        a, device = self.algo, self.accelerator.device
        resp = batch.response_mask.to(device)
        adv = batch.advantages.to(device)
        # A pre-pass is needed when the policy moves before some tokens are seen (several updates) or when the
        # whole batch's entropies or log-probs must be known first (entropy mask, Clip-Cov/KL-Cov selection);
        # otherwise old = current, detached.
        prepass = (
            a.ppo_epochs > 1
            or a.num_minibatches > 1
            or a.entropy_mask.top_frac is not None
            or a.cov.mode is not None
        )
        old_logp = entropy = None
        if prepass:
            old_logp, entropy = self._no_grad_pass(self.model, batch)
        ref_logp = self._no_grad_pass(self.reference, batch)[0] if self.reference is not None else None
        pg_mask = resp
        if a.entropy_mask.top_frac is not None:
            pg_mask = algo.top_entropy_mask(entropy, resp, a.entropy_mask.top_frac)

        rollout_logp = batch.rollout_logp.to(device)
        sums = dict.fromkeys(
            ("loss/policy", "kl/ref", "clip/low", "clip/high", "clip/dual", "tis/weight", "tis/capped"), 0.0
        )
        sums["cov/kl_abs"] = 0.0
        grad_norms = []
        fused_logp = torch.zeros_like(resp, dtype=torch.float32)
        fused_entropy = torch.zeros_like(fused_logp)
        minibatches = torch.arange(len(batch)).chunk(a.num_minibatches)
        cov_sel = self._cov_selection(old_logp, adv, pg_mask, minibatches, seed) if a.cov.mode else None
        for _ in range(a.ppo_epochs):
            for mb in minibatches:
                w_pg = algo.loss_token_weights(pg_mask[mb], a.loss_agg)
                w_kl = algo.loss_token_weights(resp[mb], a.loss_agg)
                for rows in self._micro_batches(torch.arange(len(mb))):
                    idx = mb[rows]
                    logp, ent = self._forward(self.model, batch, idx)
                    if not prepass:
                        fused_logp[idx], fused_entropy[idx] = logp.detach(), ent
                    old = old_logp[idx] if prepass else logp.detach()
                    sel = None if cov_sel is None else cov_sel[idx]
                    pg, info = self._policy_loss(logp, old, adv[idx], sel)
                    m = pg_mask[idx]
                    if "abs_kl" in info:
                        sums["cov/kl_abs"] += info["abs_kl"][sel].sum().item()
                    if self.tis_cap is not None:
                        tis = algo.tis_weights(old, rollout_logp[idx], self.tis_cap)
                        pg = pg * tis
                        sums["tis/weight"] += tis[m].sum().item()
                        sums["tis/capped"] += (tis[m] == self.tis_cap).sum().item()
                    loss = (pg * w_pg[rows]).sum()
                    sums["loss/policy"] += loss.item() / a.ppo_epochs
                    sums["clip/low"] += (info["clipped_low"] & m).sum().item()
                    sums["clip/high"] += (info["clipped_high"] & m).sum().item()
                    sums["clip/dual"] += (info["dual_clipped"] & m).sum().item()
                    if ref_logp is not None:
                        kl = algo.kl_penalty(logp, ref_logp[idx], a.kl.estimator)
                        kl_loss = (kl * w_kl[rows]).sum()
                        loss = loss + a.kl.coef * kl_loss
                        sums["kl/ref"] += kl_loss.item() / a.ppo_epochs
                    self.accelerator.backward(loss)
                grad_norms.append(
                    float(
                        self.accelerator.clip_grad_norm_(
                            self.model.parameters(), self.optim_cfg.max_grad_norm
                        )
                    )
                )
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()

        n_pg = max(int(pg_mask.sum()) * a.ppo_epochs, 1)
        n_tokens = int(resp.sum())
        metrics = {
            "loss/policy": sums["loss/policy"],
            "clip/low_frac": sums["clip/low"] / n_pg,
            "clip/high_frac": sums["clip/high"] / n_pg,
            "clip/dual_frac": sums["clip/dual"] / n_pg,
            "grad/norm": sum(grad_norms) / len(grad_norms),
            "lr": lr,
            "learner/pg_token_frac": int(pg_mask.sum()) / max(n_tokens, 1),
            "learner/padding_frac": self._padding_frac(batch, minibatches),
            "timing/learner_s": time.perf_counter() - started,
        }
        if ref_logp is not None:
            metrics["kl/ref"] = sums["kl/ref"]
        if self.tis_cap is not None:
            metrics["rollout/tis_weight_mean"] = sums["tis/weight"] / n_pg
            metrics["rollout/tis_clip_frac"] = sums["tis/capped"] / n_pg
        if cov_sel is not None:
            n_sel = int(cov_sel.sum())
            metrics["cov/selected_frac"] = n_sel / max(int(pg_mask.sum()), 1)
            if a.cov.mode == "kl_cov":
                metrics["cov/kl_abs_mean"] = sums["cov/kl_abs"] / max(n_sel * a.ppo_epochs, 1)
        metrics["throughput/learner_tokens_per_s"] = (
            int(batch.attention_mask.sum()) * a.ppo_epochs / metrics["timing/learner_s"]
        )
        before = {
            "entropy": entropy if prepass else fused_entropy,
            "logp": old_logp if prepass else fused_logp,
        }
        return metrics, before


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of optim.lr at RL step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
