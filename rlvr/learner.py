"""The learner: log-probabilities and entropies of response tokens, the RL loss, and optimizer steps.

Memory: logits are only ever formed for response tokens, a chunk of `learner.logprob_chunk_size`
tokens at a time, by `rlvr.logprob.chunked_logp_entropy`, which keeps no logits for backward (it
recomputes each chunk's), so no [tokens x vocab] tensor exists for a whole batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rlvr import algo, checkpoint, zero3
from rlvr import distributed as dist
from rlvr.batch import BatchLayout, RolloutBatch
from rlvr.config import AlgoConfig, LearnerConfig, OptimConfig

# re-exported: these lived here before moving beside the chunked Function they call; users and tests import them
from rlvr.logprob import ResponseLogprobs, response_logp_entropy  # noqa: F401

# re-exported: these lived here before rlvr.microbatch, and users, tests and benchmarks import them from here
from rlvr.microbatch import (  # noqa: F401
    MicroBatch,
    flat,
    layout_of,
    micro_batch_positions,
    minibatch_indices,
    pack_rows,
    pack_sequences,
    padding_fraction,
    padding_positions,
    plan_micro_batches,
    unpack_rows,
)
from rlvr.objectives import build_entropy_reg, build_objective
from rlvr.sharded import total


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off for good, as TRL's `disable_dropout_in_model`, without eval mode (transformers applies gradient
    checkpointing only in train mode, which the learner's forwards run in): every dropout module's p, every float
    `*dropout*` attribute that a functional dropout reads (Qwen2's attention_dropout, copied from the config when
    the layer was built) and the model config's `*dropout*` fields set to 0. With dropout on, the pre-pass, each
    mini-batch's forward and the reference draw different masks: the ratio leaves 1 before any update, pi_old is
    noisy and the KL to an identical reference is not 0."""

    def zero(obj) -> None:
        for name, value in list(vars(obj).items()):
            if "dropout" in name and isinstance(value, (float, int)) and not isinstance(value, bool):
                setattr(obj, name, 0.0)

    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        zero(module)
        if getattr(module, "config", None) is not None:
            zero(module.config)


@dataclass
class UpdateResult:
    """What `Learner.update` returns.

    metrics: the update's learner metrics (loss/policy, clip/*, grad/norm, lr, learner/*, timing, throughput, and
    kl/ref with kl/grad_share, rollout/tis_*, cov/*, entropy_reg/coef with loss/entropy where those are on).
    logp, entropy: [n, L] float32 on the learner's device, aligned with this rank's rows of the batch (its
    input_ids) and zero outside its response mask: each response token's log-probability (at the sampling
    temperature) and the entropy of its distribution under the policy before the update (pi_old).
    """

    metrics: dict[str, float]
    logp: Tensor
    entropy: Tensor


@dataclass
class _RankSums:
    """One rank's running sums over its micro-batches of an update, all-reduced at its end in one float64 tensor,
    in field order. Token counts are of policy-gradient tokens."""

    loss_policy: float = 0.0  # each optimizer step's policy loss / the update's steps
    kl_ref: float = 0.0  # each step's KL to the reference / the update's steps
    entropy: float = 0.0  # each step's aggregated entropy (the regulariser's H) / the update's steps
    clip_low: float = 0.0
    clip_high: float = 0.0
    clip_dual: float = 0.0
    tis_weight: float = 0.0
    tis_capped: float = 0.0
    cov_kl_abs: float = 0.0  # KL-Cov's |logp - old| over its selected tokens
    cov_selected: float = 0.0  # Clip-Cov/KL-Cov tokens selected over the update's steps

    def all_reduced(self, device: torch.device) -> _RankSums:
        """Every rank's sums added up (one collective every rank must join)."""
        totals = torch.tensor(dataclasses.astuple(self), dtype=torch.float64, device=device)
        return _RankSums(*dist.all_reduce_sum_(totals).tolist())


@dataclass
class _Tally:
    """The counters of one update."""

    sums: _RankSums = field(default_factory=_RankSums)
    grad_norms: list[float] = field(default_factory=list)  # of the optimizer steps taken
    nonfinite: int = 0  # optimizer steps skipped for a non-finite gradient
    # per optimizer step, this rank's squared norms of the policy and KL terms' gradients to the tokens' log-probs
    grad_sq: list[list[float]] = field(default_factory=list)


@dataclass
class _Prepared:
    """What every optimizer step of one update reads, computed before the first (N sequences of this rank, L the
    width)."""

    layout: BatchLayout  # where this rank's rows sit in the whole batch
    minibatches: list[Tensor]  # this rank's sequence indices of each mini-batch
    plans: list[list[MicroBatch]]  # each mini-batch's micro-batches, as indices into the mini-batch
    weights: list[Tensor]  # [len(mb), L] per mini-batch: algo.loss_token_weights over its response tokens
    resp: Tensor  # [N, L] bool: response tokens
    adv: Tensor  # [N]
    pg_mask: Tensor  # [N, L] bool: the tokens that carry the policy gradient (chosen over the whole batch)
    rollout_logp: Tensor  # [N, L]: the sampler's log-probs
    old_logp: Tensor | None  # [N, L] from the pre-pass (pi_old); None without one: old = current, detached
    entropy: Tensor | None  # [N, L] from the pre-pass
    ref_logp: Tensor | None  # [N, L] under the reference policy, when there is one
    fused_logp: Tensor  # [N, L]: without a pre-pass, pi_old's log-probs as the steps' forwards see them
    fused_entropy: Tensor  # [N, L], likewise
    padding: float  # learner/padding_frac (every rank's forwards)
    n_updates: int  # optimizer steps in the update: ppo_epochs * mini-batches


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
        is_correction: algo.ISCorrection | None = None,
        max_new_tokens: int | None = None,
    ):
        self.accelerator = accelerator
        # rollout.max_new_tokens: the constant normaliser of the Dr. GRPO aggregation (seq_mean_token_sum_norm)
        self.max_new_tokens = max_new_tokens
        # rollout.is_mode / tis_cap: importance weights against the sampler's log-probs (None = off)
        self.is_correction = is_correction
        self.algo = algo_cfg
        self.cfg = learner
        self.optim_cfg = optim
        self.temperature = temperature
        # the policy-gradient tokens and loss (entropy mask, PPO clip / Clip-Cov / KL-Cov), chosen once
        self.objective = build_objective(algo_cfg)
        self.entropy_reg = build_entropy_reg(algo_cfg.entropy_reg)  # None: off
        # before the reference is copied from it: neither has dropout
        disable_dropout(model)
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
        # copied before prepare: a module FSDP has sharded cannot be deep-copied
        self.reference = None
        if algo_cfg.kl.coef > 0:
            reference = zero3.whole_copy(model) if zero3.is_zero3(model) else copy.deepcopy(model)
            self.reference = reference.eval().requires_grad_(False)
        policy = ResponseLogprobs(
            model, temperature, learner.logprob_chunk_size, entropy_grad=self.entropy_reg is not None
        )
        self.deepspeed = getattr(accelerator.distributed_type, "value", None) == "DEEPSPEED"
        if self.deepspeed:
            zero3.configure(accelerator, optim.max_grad_norm)
        # the scheduler stays ours: accelerate's wrapper would step it once per process at each optimizer step
        self.model, self.optimizer = accelerator.prepare(policy, optimizer)
        dist.check_still_tied(self.unwrapped)
        self.scheduler = scheduler
        # a rank with no micro-batch left runs one on this 2-token row, so that it joins the others' collectives
        self._idle = RolloutBatch(
            torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long),
            torch.tensor([[False, True]]), torch.zeros(1), torch.zeros(1, 2),
        )  # fmt: skip
        # sharded parameters: every forward gathers them, a collective every rank must join
        self.sharding = (
            "FSDP2" if dist.is_sharded(self.model) else "ZeRO-3" if zero3.is_zero3(self.model) else None
        )
        if self.reference is not None:
            self._reference = ResponseLogprobs(self.reference, temperature, learner.logprob_chunk_size)
            if self.sharding == "ZeRO-3":  # partitioned like the policy, by an engine of its own
                self._reference = zero3.partition_frozen(self._reference, accelerator)
            elif self.sharding == "FSDP2":  # sharded like the policy, so that its state loads shard to shard
                dist.shard_like(self._reference, self.model)
                # the policy as prepared: with accelerate's cpu_ram_efficient_loading (fine for untied models) only
                # local rank 0 loaded the weights (the other ranks' copies held zeros) and prepare broadcast them
                self.reference.load_state_dict(self.unwrapped.state_dict())
            else:
                self._reference.to(accelerator.device)

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The policy itself (a transformers model), without the DDP/FSDP wrapper or the logprob head."""
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def sharded(self) -> bool:
        """Whether the policy's parameters are sharded (FSDP2) or partitioned (ZeRO-3)."""
        return self.sharding is not None

    def restore(self, optimizer_state: dict, policy_dir: Path) -> None:
        """Resume from a checkpoint (any world size or sharding) whose policy weights the model was loaded from
        (`policy_dir`): the optimizer's state and, under ZeRO-3, its fp32 master weights, which DeepSpeed made
        from the module's weights (rounded copies of the saved ones under bf16 mixed precision)."""
        checkpoint.load_optimizer_state(self.unwrapped, self.optimizer, optimizer_state)
        if self.sharding == "ZeRO-3":
            zero3.load_master_weights(self.unwrapped, policy_dir)

    def entropy_reg_state(self) -> dict | None:
        """The adaptive entropy coefficient's state for a checkpoint (None while the regulariser is off)."""
        return self.entropy_reg.state_dict() if self.entropy_reg is not None else None

    def load_entropy_reg_state(self, state: dict | None) -> None:
        """Resume the coefficient from `entropy_reg_state`; none saved (the regulariser was off then, or an older
        checkpoint): it starts from algo.entropy_reg.coef."""
        if self.entropy_reg is not None and state:
            self.entropy_reg.load_state_dict(state)

    def reset_reference(self) -> None:
        """ProRL hard reset: the reference becomes the current policy (and optionally Adam's moments restart)."""
        if self.sharding == "ZeRO-3":
            zero3.copy_weights(self.unwrapped, self.reference)
        else:
            self.reference.load_state_dict(self.unwrapped.state_dict())
        if self.algo.kl.reset_optimizer:
            self.optimizer.state.clear()

    @contextlib.contextmanager
    def _accumulating(self):
        """Backward passes inside accumulate gradients without reducing them across ranks (DDP, FSDP2) or
        stepping (DeepSpeed, whose engine steps in `accelerator.backward` when gradients are synced)."""
        if not self.deepspeed:
            with self.accelerator.no_sync(self.model):
                yield
            return
        self.accelerator.sync_gradients = False
        try:
            yield
        finally:
            self.accelerator.sync_gradients = True

    def _micro_batches(self, lengths: Sequence[int]) -> list[MicroBatch]:
        """`plan_micro_batches` under learner.*, over the sequences whose real lengths are given."""
        c = self.cfg
        return plan_micro_batches(
            lengths, c.micro_batch_size, c.max_tokens_per_microbatch, c.pack, c.pack_row_tokens
        )

    def _padded(self, plan: list[MicroBatch]) -> list[MicroBatch | None]:
        """This rank's micro-batches padded with None to the most any rank has: a rank short of work runs a dummy
        forward (`_idle_forward`) for each, as every backward (and, sharded, every forward) is a collective."""
        most = dist.all_reduce_max_(torch.tensor([len(plan)], device=self.accelerator.device))
        return plan + [None] * (int(most) - len(plan))

    def _idle_forward(self, model) -> Tensor:
        """A forward on a 2-token row that belongs to no batch: log-probs [1, 2] to backward times 0."""
        return self._forward(model, self._idle, torch.tensor([0]), [1])[0]

    def _forward(self, model, batch: RolloutBatch, rows: torch.Tensor, row_sizes: Sequence[int]):
        """Forward on the sequences `rows` of the batch: packed (learner.pack) `row_sizes` sequences per row,
        else one per row trimmed to the longest; returns (logp, entropy) [len(rows), L] in the batch's layout."""
        device = self.accelerator.device
        lengths = batch.attention_mask[rows].sum(-1)
        if self.cfg.pack:
            ids, pos, resp, index = pack_rows(
                batch.input_ids[rows], batch.response_mask[rows], lengths, row_sizes
            )
            ids, pos, resp = ids.to(device), pos.to(device), resp.to(device)
            index = tuple(t.to(device) for t in index)
            att = None
        else:
            width = int(lengths.max())
            ids, att, resp = (
                t[rows, :width].to(device)
                for t in (batch.input_ids, batch.attention_mask, batch.response_mask)
            )
            pos = None
        with self.accelerator.autocast():
            logp, entropy = model(ids, att, resp, pos)
        if self.cfg.pack:
            shape = (len(rows), batch.input_ids.shape[1])
            return tuple(unpack_rows(t, index, shape) for t in (logp, entropy))
        pad = batch.input_ids.shape[1] - width
        return torch.nn.functional.pad(logp, (0, pad)), torch.nn.functional.pad(entropy, (0, pad))

    @torch.no_grad()
    def _no_grad_pass(self, model: ResponseLogprobs, batch: RolloutBatch, rows: torch.Tensor | None = None):
        """(logp, entropy) [n, L] of this rank's sequences `rows` (None: all) under `model` (not DDP-wrapped: no
        collective per forward). Under FSDP each forward is a collective: a rank short of work runs discarded
        ones, so that every rank runs as many."""
        rows = torch.arange(len(batch)) if rows is None else rows
        logp = torch.zeros((len(rows), batch.input_ids.shape[1]), device=self.accelerator.device)
        entropy = torch.zeros_like(logp)
        plan = self._micro_batches(batch.attention_mask[rows].sum(-1).tolist())
        for micro in self._padded(plan) if self.sharded else plan:
            if micro is None:
                self._idle_forward(model)
                continue
            local = flat(micro)
            logp[local], entropy[local] = self._forward(model, batch, rows[local], [len(r) for r in micro])
        return logp, entropy

    def update(
        self, batch: RolloutBatch, seed: int | None = None, layout: BatchLayout | None = None
    ) -> UpdateResult:
        """μ passes (algo.ppo_epochs) over the batch, one optimizer step per mini-batch of whole groups
        (`minibatch_indices`). Returns the learner's metrics and the policy before the update (`UpdateResult`).
        `seed` drives the update's own random draws (Clip-Cov's token draw; None: torch's global RNG).
        `batch`: this rank's rows of the step's batch, where `layout` says (rlvr.share); None: the whole batch,
        in one process."""
        started = time.perf_counter()
        if layout is None:
            if dist.world_size() > 1:
                raise ValueError("several processes: update() needs this rank's layout of the batch")
            a = self.algo
            layout = layout_of(
                len(batch) // a.group_size, a.group_size, a.minibatch_prompts, a.num_minibatches, 0, 1
            )
        # from_pretrained returns eval mode (and the hf sampler switches the shared module to it): transformers
        # applies gradient checkpointing only in train mode
        self.model.train()
        prep = self._prepare(batch, layout)
        tally = _Tally()
        entropy_coef = self.entropy_reg.used if self.entropy_reg is not None else None
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for epoch in range(self.algo.ppo_epochs):
            for j in range(len(prep.minibatches)):
                self._minibatch_step(batch, prep, j, epoch == 0 and j == 0, generator, tally)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        # each rank summed over its own micro-batches: the batch's totals
        sums = tally.sums.all_reduced(self.accelerator.device)
        if prep.old_logp is None:  # no pre-pass: the steps' forwards filled this rank's rows of pi_old
            logp, entropy = prep.fused_logp, prep.fused_entropy
        else:
            logp, entropy = prep.old_logp, prep.entropy
        metrics = self._metrics(batch, prep, tally, sums, lr, started)
        if self.entropy_reg is not None:
            metrics["entropy_reg/coef"] = entropy_coef
            metrics["loss/entropy"] = sums.entropy
            # the adaptive coefficient of the next step follows this batch's mean token entropy under pi_old
            sum_n = total(torch.stack([entropy.double().sum(), prep.resp.sum().double()])).tolist()
            self.entropy_reg.observe(sum_n[0] / max(int(sum_n[1]), 1))
        return UpdateResult(metrics, logp, entropy)

    def _prepare(self, batch: RolloutBatch, layout: BatchLayout) -> _Prepared:
        """What every optimizer step of the update reads: mini-batches and their micro-batches, loss weights, the
        policy-gradient tokens, and the pre-pass (pi_old) and reference log-probs where they are needed."""
        a, device = self.algo, self.accelerator.device
        if len(batch) % a.group_size:
            raise ValueError(f"{len(batch)} sequences are not whole groups of algo.group_size={a.group_size}")
        resp = batch.response_mask.to(device)
        minibatches = layout.minibatches
        n_updates = a.ppo_epochs * len(minibatches)
        # A pre-pass is needed when the policy moves before some tokens are seen (several updates) or when the
        # whole batch's entropies or log-probs must be known first (entropy mask, Clip-Cov/KL-Cov selection);
        # otherwise old = current, detached.
        old_logp = entropy = None
        if n_updates > 1 or self.objective.needs_prepass:
            old_logp, entropy = self._no_grad_pass(self.accelerator.unwrap_model(self.model), batch)
        ref_logp = self._no_grad_pass(self._reference, batch)[0] if self.reference is not None else None
        lengths = batch.attention_mask.sum(-1).tolist()
        # each mini-batch's micro-batches, as indices into the mini-batch (as the loss weights are)
        plans = [self._micro_batches([lengths[i] for i in mb.tolist()]) for mb in minibatches]
        micro_batches = [
            [mb[row].tolist() for row in micro] for mb, plan in zip(minibatches, plans) for micro in plan
        ]
        computed, real = total(
            torch.tensor(padding_positions(lengths, micro_batches), dtype=torch.float64, device=device)
        ).tolist()
        fused_logp = torch.zeros_like(resp, dtype=torch.float32)
        return _Prepared(
            layout=layout,
            minibatches=minibatches,
            plans=plans,
            weights=self._loss_weights(resp, minibatches),
            resp=resp,
            adv=batch.advantages.to(device),
            pg_mask=self.objective.pg_tokens.mask(entropy, resp, layout.rows, layout.n_rows),
            rollout_logp=batch.rollout_logp.to(device),
            old_logp=old_logp,
            entropy=entropy,
            ref_logp=ref_logp,
            fused_logp=fused_logp,
            fused_entropy=torch.zeros_like(fused_logp),
            padding=1.0 - real / max(computed, 1),
            n_updates=n_updates,
        )

    def _loss_weights(self, resp: Tensor, minibatches: list[Tensor]) -> list[Tensor]:
        """Per mini-batch, the same in every epoch, algo.loss_token_weights [len(mb), L] of this rank's rows: the
        normaliser counts every response token of the mini-batch (every rank's), also under the entropy mask: the
        80/20 objective keeps DAPO's 1/sum|o_i| and puts its indicator inside the sum."""
        counts = [torch.stack([resp[mb].sum(), (resp[mb].sum(1) > 0).sum()]) for mb in minibatches]
        totals = dist.all_reduce_sum_(torch.stack(counts)) if counts else []
        return [
            algo.loss_token_weights(resp[mb], self.algo.loss_agg, self.max_new_tokens, (n[0].float(), n[1]))
            for mb, n in zip(minibatches, totals)
        ]

    def _minibatch_step(self, batch, prep: _Prepared, j: int, first: bool, generator, tally: _Tally) -> None:
        """One optimizer step on mini-batch j: this rank's micro-batches' backward passes, then the step.
        `first`: the update's first step, where the current policy is still the pre-pass's."""
        mb, plan, w_kl = prep.minibatches[j], prep.plans[j], prep.weights[j]
        w_pg = w_kl * prep.pg_mask[mb]
        selected = None
        if self.objective.policy_loss.selects:
            selected = self._select(batch, prep, j, first, generator)
            tally.sums.cov_selected += int(selected.sum())
        if prep.ref_logp is not None:
            tally.grad_sq.append([0.0, 0.0])
        world = dist.world_size()
        mine = self._padded(plan)
        for k, micro in enumerate(mine):
            # gradients are reduced (and, under DeepSpeed, the optimizer steps) on each rank's last backward of
            # the mini-batch only
            with contextlib.nullcontext() if k == len(mine) - 1 else self._accumulating():
                if micro is None:  # no micro-batch left for this rank: a zero loss joins the all-reduce
                    self.accelerator.backward(self._idle_forward(self.model).sum() * 0.0)
                    continue
                loss = self._micro_batch_loss(batch, prep, mb, micro, w_pg, w_kl, selected, tally)
                # the ranks' gradients are averaged: scaled by the world size they sum to the batch's
                self.accelerator.backward(loss * world)
        norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), self.optim_cfg.max_grad_norm))
        # the divergence guard (rlvr/guard.py): a non-finite gradient (the norm is the whole model's, the same on
        # every rank) changes no weight. Under DeepSpeed the engine has stepped in backward already.
        if math.isfinite(norm):
            tally.grad_norms.append(norm)
            self.optimizer.step()
        else:
            tally.nonfinite += 1
        self.optimizer.zero_grad(set_to_none=True)

    def _select(self, batch, prep: _Prepared, j: int, first: bool, generator) -> Tensor:
        """The Clip-Cov / KL-Cov tokens [len(mb), L] bool of this rank's rows `mb` of mini-batch j, chosen over
        the whole mini-batch from the current policy's log-probs: the pre-pass's at the first step, else a
        no-grad pass over the mini-batch."""
        mb, (start, end) = prep.minibatches[j], prep.layout.minibatch_rows[j]

        def current() -> Tensor:
            if first:
                return prep.old_logp[mb]
            return self._no_grad_pass(self.accelerator.unwrap_model(self.model), batch, mb)[0]

        rows = prep.layout.rows[mb] - start  # their places in the mini-batch
        return self.objective.policy_loss.select(
            current, prep.old_logp[mb], prep.adv[mb], prep.pg_mask[mb], generator, rows, end - start
        )

    def _micro_batch_loss(self, batch, prep: _Prepared, mb, micro, w_pg, w_kl, selected, tally: _Tally):
        """The loss of one micro-batch (`micro`, indices into the mini-batch `mb`) to backward: its share of the
        mini-batch's policy loss (weights w_pg [len(mb), L]), entropy bonus and KL to the reference (both w_kl),
        adding to `tally`."""
        sums = tally.sums
        rows = flat(micro)
        idx = mb[rows]
        logp, ent = self._forward(self.model, batch, idx, [len(r) for r in micro])
        if prep.old_logp is None:  # no pre-pass: this forward is the policy before the update
            prep.fused_logp[idx], prep.fused_entropy[idx] = logp.detach(), ent.detach()
        old = logp.detach() if prep.old_logp is None else prep.old_logp[idx]
        sel = None if selected is None else selected[rows]
        policy_loss = self.objective.policy_loss
        pg, info = policy_loss.loss(logp, old, prep.adv[idx], sel)
        m = prep.pg_mask[idx]
        sums.cov_kl_abs += policy_loss.selected_abs_kl(info, sel)
        if self.is_correction is not None:
            w, acted = self.is_correction.weights(old, prep.rollout_logp[idx], prep.resp[idx])
            pg = pg * w
            sums.tis_weight += w[m].sum().item()
            sums.tis_capped += (acted & m).sum().item()
        pg_loss = loss = (pg * w_pg[rows]).sum()
        # logged: the mean over the optimizer steps of each step's loss
        sums.loss_policy += loss.item() / prep.n_updates
        sums.clip_low += (info["clipped_low"] & m).sum().item()
        sums.clip_high += (info["clipped_high"] & m).sum().item()
        sums.clip_dual += (info["dual_clipped"] & m).sum().item()
        if self.entropy_reg is not None:  # the bonus on every response token, aggregated as the policy loss
            entropy = (ent * w_kl[rows]).sum()
            loss = loss - self.entropy_reg.used * entropy
            sums.entropy += entropy.item() / prep.n_updates
        if prep.ref_logp is not None:
            kl = algo.kl_penalty(logp, prep.ref_logp[idx], self.algo.kl.estimator)
            kl_loss = (kl * w_kl[rows]).sum()
            kl_term = self.algo.kl.coef * kl_loss
            loss = loss + kl_term
            sums.kl_ref += kl_loss.item() / prep.n_updates
            _add_grad_sq(tally.grad_sq[-1], logp, pg_loss, kl_term)
        return loss

    def _metrics(self, batch, prep: _Prepared, tally: _Tally, sums: _RankSums, lr: float, started: float):
        """The update's metrics from its counters (`sums` all-reduced). The clip and Clip-Cov/KL-Cov selection
        fractions count tokens that carry the policy gradient, per response token and epoch: under the
        forking-token mask the same absolute rate reads the same as without it. TIS's are per policy-gradient
        token."""
        a = self.algo
        counts = torch.stack(
            [prep.pg_mask.sum(), prep.resp.sum(), batch.attention_mask.sum().to(prep.resp.device)]
        )
        pg_tokens, n_tokens, positions = (
            int(n) for n in dist.all_reduce_sum_(counts).tolist()
        )  # every rank's
        n_pg = max(pg_tokens * a.ppo_epochs, 1)
        n_all = max(n_tokens * a.ppo_epochs, 1)
        grad_norms = tally.grad_norms
        metrics = {
            "loss/policy": sums.loss_policy,
            "clip/low_frac": sums.clip_low / n_all,
            "clip/high_frac": sums.clip_high / n_all,
            "clip/dual_frac": sums.clip_dual / n_all,
            "grad/norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "learner/nonfinite_steps": tally.nonfinite,
            "lr": lr,
            "learner/pg_token_frac": pg_tokens / max(n_tokens, 1),
            "learner/padding_frac": prep.padding,
            "learner/minibatches": len(prep.minibatches),
            "timing/learner_s": time.perf_counter() - started,
        }
        if prep.ref_logp is not None:
            metrics["kl/ref"] = sums.kl_ref
            metrics["kl/grad_share"] = kl_grad_share(tally.grad_sq, self.accelerator.device)
        if self.is_correction is not None:
            metrics["rollout/tis_weight_mean"] = sums.tis_weight / n_pg
            metrics["rollout/tis_clip_frac"] = sums.tis_capped / n_pg
        metrics.update(self.objective.policy_loss.metrics(sums.cov_selected, sums.cov_kl_abs, n_all))
        metrics["throughput/learner_tokens_per_s"] = positions * a.ppo_epochs / metrics["timing/learner_s"]
        return metrics


def _add_grad_sq(acc: list[float], logp: Tensor, pg_loss: Tensor, kl_term: Tensor) -> None:
    """Adds to acc = [policy, KL] the squared norms of d pg_loss / d logp and d kl_term / d logp (logp [n, L] the
    micro-batch's, with grad; kl_term = beta * its KL loss). Micro-batches hold disjoint tokens, so their squares
    add up to the mini-batch's. At the log-prob level: through the model both follow the same chain rule
    (d/dtheta = d/dlogp . dlogp/dtheta), so this is the share each term asks of the model, without a backward
    through it; the ratio of the parameter gradients' norms differs by the model's Jacobian. autograd.grad only
    reads the graph (retain_graph): the backward that follows computes the same numbers."""
    for k, term in enumerate((pg_loss, kl_term)):
        if not term.requires_grad:
            continue
        (g,) = torch.autograd.grad(term, logp, retain_graph=True, allow_unused=True)
        if g is not None:
            acc[k] += g.double().square().sum().item()


def kl_grad_share(grad_sq: list[list[float]], device: torch.device) -> float:
    """kl/grad_share: per optimizer step ||d(beta KL)/d logp|| / ||d PG/d logp|| over its mini-batch (`grad_sq`:
    each step's [policy, KL] squared norms, this rank's, all-reduced here: a collective every rank joins), averaged
    over the steps whose ratio is finite (NaN if none: no policy gradient at all)."""
    if not grad_sq:
        return float("nan")
    totals = dist.all_reduce_sum_(torch.tensor(grad_sq, dtype=torch.float64, device=device)).tolist()
    ratios = [math.sqrt(kl) / math.sqrt(pg) for pg, kl in totals if pg > 0 and math.isfinite(kl / pg)]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of optim.lr at RL step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
