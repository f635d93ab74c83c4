"""The learner: log-probabilities and entropies of response tokens, the RL loss, and optimizer steps.

Memory: logits are only ever formed for response tokens, a chunk of `learner.logprob_chunk_size`
tokens at a time, by `rlvr.logprob.chunked_logp_entropy`, which keeps no logits for backward (it
recomputes each chunk's), so no [tokens x vocab] tensor exists for a whole batch.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rlvr import algo, checkpoint, zero3
from rlvr import distributed as dist
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, LearnerConfig, OptimConfig
from rlvr.logprob import chunked_logp_entropy


def response_logp_entropy(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_mask: torch.Tensor,
    temperature: float,
    chunk_size: int,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, response_mask, position_ids: [n, L]. Returns (logp, entropy): [n, L] float32,
    aligned with input_ids, zero outside response_mask. Logits are scaled by 1/temperature, so logp is the
    log-probability under the sampling distribution. Gradient flows into logp only. Packed rows (`pack_rows`):
    attention_mask None and position_ids restarting at 0 for each sequence, from which transformers builds
    attention that keeps every sequence to itself."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    # no KV cache: transformers only reads packed-sequence boundaries from position_ids when there is none
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    hidden = out.last_hidden_state
    predicts = response_mask[:, 1:]  # hidden at t-1 predicts token t
    h = hidden[:, :-1][predicts]
    labels = input_ids[:, 1:][predicts]
    token_logp, token_entropy = chunked_logp_entropy(h, head.weight, labels, temperature, chunk_size)
    logp = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    entropy = torch.zeros_like(logp)
    logp[:, 1:][predicts] = token_logp
    entropy[:, 1:][predicts] = token_entropy
    return logp, entropy


class ResponseLogprobs(torch.nn.Module):
    """A policy whose forward is `response_logp_entropy`: the whole computation, LM head included, runs inside
    one module call, which is what DDP (gradient all-reduce) and FSDP (unsharding the head and embeddings for
    the call) hook into."""

    def __init__(self, policy: torch.nn.Module, temperature: float, chunk_size: int):
        super().__init__()
        self.policy = policy
        # the transformer blocks accelerate's FSDP auto-wrap shards one by one (else the whole model is one unit)
        self._no_split_modules = getattr(policy, "_no_split_modules", None)
        self.temperature = temperature
        self.chunk_size = chunk_size

    def forward(self, input_ids, attention_mask, response_mask, position_ids=None):
        return response_logp_entropy(
            self.policy,
            input_ids,
            attention_mask,
            response_mask,
            self.temperature,
            self.chunk_size,
            position_ids,
        )


def split_micro_batches(plan: Sequence, rank: int, world: int) -> list:
    """rank's micro-batches (every world-th, from its rank on), padded with None to the same count on every rank:
    each backward is a gradient all-reduce that every rank must join, so a rank short of work runs a dummy."""
    mine = list(plan[rank::world])
    return mine + [None] * (-(-len(plan) // world) - len(mine))


# A micro-batch is a list of forward rows, each a list of sequence indices: one per row unless packed.
MicroBatch = list[list[int]]


def micro_batch_positions(rows: MicroBatch, lengths: Sequence[int]) -> int:
    """Positions one forward pass over these rows computes: every row right-padded to the longest row, a row
    as long as the real lengths of its sequences together."""
    return len(rows) * max(sum(lengths[i] for i in row) for row in rows)


def pack_sequences(order: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit: each sequence, taken in `order`, goes into the first row with room for it (its tokens plus
    the row's <= capacity), else opens a new row; a sequence longer than capacity gets a row to itself. Rows
    in the order they were opened."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def plan_micro_batches(
    lengths: Sequence[int],
    micro_batch_size: int,
    max_tokens: int | None,
    pack: bool,
    row_tokens: int | None = None,
) -> list[MicroBatch]:
    """Sequences 0..n-1, of these real lengths, laid out in micro-batches of forward rows.

    max_tokens None: runs of micro_batch_size consecutive sequences, one per row. Otherwise a token budget,
    sequences taken longest first: unpacked, one sequence per row; packed, first-fit decreasing into rows of
    at most `row_tokens` tokens (None: the longest sequence's length, so that no packed row costs more attention
    than a padded one: under sdpa/eager a packed row's attention spans the whole row). Rows then go longest
    first, consecutive ones sharing a micro-batch while `micro_batch_positions <= max_tokens`; a row longer than
    the budget gets a micro-batch to itself."""
    n = len(lengths)
    if max_tokens is None:
        return [[[i] for i in range(s, min(s + micro_batch_size, n))] for s in range(0, n, micro_batch_size)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    if pack:
        capacity = min(row_tokens or max(lengths, default=1), max_tokens)
        rows = pack_sequences(order, lengths, capacity)
        rows.sort(key=lambda row: -sum(lengths[i] for i in row))  # rows of like length share a micro-batch
    else:
        rows = [[i] for i in order]
    plan: list[MicroBatch] = []
    for row in rows:
        if plan and micro_batch_positions(plan[-1] + [row], lengths) <= max_tokens:
            plan[-1].append(row)
        else:
            plan.append([row])
    return plan


def flat(micro_batch: MicroBatch) -> torch.Tensor:
    """A micro-batch's sequence indices, row after row: the order pack_rows' row_sizes refer to."""
    return torch.tensor([i for row in micro_batch for i in row])


def padding_fraction(lengths: Sequence[int], micro_batches: Sequence[MicroBatch]) -> float:
    """Share of the positions that forward passes over these micro-batches compute that are not real tokens."""
    computed = sum(micro_batch_positions(mb, lengths) for mb in micro_batches)
    real = sum(lengths[i] for mb in micro_batches for row in mb for i in row)
    return 1.0 - real / max(computed, 1)


def pack_rows(
    input_ids: torch.Tensor, response_mask: torch.Tensor, lengths: torch.Tensor, row_sizes: Sequence[int]
):
    """Right-padded sequences input_ids, response_mask [n, L] with real lengths [n] -> packed rows: the first
    row_sizes[0] sequences back to back in row 0, the next row_sizes[1] in row 1, and so on, right-padded to
    the longest row. Returns (ids, position_ids, response_mask) [k, W] and the map (src_rows, src_cols,
    dst_rows, dst_cols), [T] each: token [src_rows, src_cols] went to [dst_rows, dst_cols].

    Position ids are the columns, so they restart at 0 for each sequence (the same rotary positions as unpacked,
    and the boundaries transformers reads); padding positions are all 0, so each pad token is a sequence of its
    own, which nothing else attends to. A sequence's first token is never predicted (unpacked, nothing precedes
    it), so it is dropped from the response mask: packed, the previous sequence's last token would predict it."""
    device = lengths.device
    n_rows = len(row_sizes)
    seq_row = torch.repeat_interleave(
        torch.arange(n_rows, device=device), torch.tensor(row_sizes, device=device)
    )
    starts = torch.cumsum(lengths, 0) - lengths  # each sequence's offset in all tokens back to back
    row_lengths = torch.zeros(n_rows, dtype=lengths.dtype, device=device).index_add_(0, seq_row, lengths)
    row_starts = torch.cumsum(row_lengths, 0) - row_lengths
    src_rows = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    token = torch.arange(len(src_rows), device=device)  # each real token's index, all back to back
    src_cols = token - starts[src_rows]
    dst_rows = seq_row[src_rows]
    dst_cols = token - row_starts[dst_rows]
    shape = (n_rows, int(row_lengths.max()))
    ids = input_ids.new_zeros(shape)
    pos = torch.zeros(shape, dtype=torch.long, device=device)
    resp = torch.zeros(shape, dtype=torch.bool, device=device)
    ids[dst_rows, dst_cols] = input_ids[src_rows, src_cols]
    pos[dst_rows, dst_cols] = src_cols
    resp[dst_rows, dst_cols] = response_mask[src_rows, src_cols] & (src_cols > 0)
    return ids, pos, resp, (src_rows, src_cols, dst_rows, dst_cols)


def unpack_rows(packed: torch.Tensor, index: tuple[torch.Tensor, ...], shape: tuple[int, int]):
    """Inverse of pack_rows' layout for a per-token tensor: packed [k, W] -> [n, L] (pack_rows' map as
    `index`), zero where nothing was packed. Differentiable."""
    src_rows, src_cols, dst_rows, dst_cols = index
    out = packed.new_zeros(shape)
    out[src_rows, src_cols] = packed[dst_rows, dst_cols]
    return out


def minibatch_indices(
    n_groups: int, group_size: int, minibatch_prompts: int | None, num_minibatches: int = 1
) -> list[torch.Tensor]:
    """The sequence indices [n] of each mini-batch of a batch of n_groups groups laid out group after group:
    whole groups, in order. ceil(n_groups / minibatch_prompts) mini-batches (None: num_minibatches, at most one
    per group), their sizes equal give or take one group. A full batch is cut into mini-batches of exactly
    minibatch_prompts groups (validate asks that it divides trainer.prompts_per_step); a short one (dynamic
    sampling out of rounds: 27 groups for mini-batches of 8) into as many steps as it fills, evenly (7, 7, 7, 6),
    never into full steps and a remnant of a few groups whose one noisy step would count as much as the others."""
    if minibatch_prompts is not None:
        count = -(-n_groups // minibatch_prompts)
    else:
        count = min(num_minibatches, n_groups)
    count = max(count, 1)
    sizes = [n_groups // count + (i < n_groups % count) for i in range(count)]  # the larger ones first
    ends = list(itertools.accumulate(sizes))
    return [torch.arange((end - n) * group_size, end * group_size) for n, end in zip(sizes, ends)]


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
        max_new_tokens: int | None = None,
    ):
        self.accelerator = accelerator
        # rollout.max_new_tokens: the constant normaliser of the Dr. GRPO aggregation (seq_mean_token_sum_norm)
        self.max_new_tokens = max_new_tokens
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
        # copied before prepare: a module FSDP has sharded cannot be deep-copied
        self.reference = None
        if algo_cfg.kl.coef > 0:
            reference = zero3.whole_copy(model) if zero3.is_zero3(model) else copy.deepcopy(model)
            self.reference = reference.eval().requires_grad_(False)
        policy = ResponseLogprobs(model, temperature, learner.logprob_chunk_size)
        self.deepspeed = getattr(accelerator.distributed_type, "value", None) == "DEEPSPEED"
        if self.deepspeed:
            zero3.configure(accelerator, optim.max_grad_norm)
        # the scheduler stays ours: accelerate's wrapper would step it once per process at each optimizer step
        self.model, self.optimizer = accelerator.prepare(policy, optimizer)
        dist.check_still_tied(self.unwrapped)
        self.scheduler = scheduler
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

    def _cov_selection(self, batch, rows, old_logp, adv, pg_mask, current, generator) -> torch.Tensor:
        """Clip-Cov / KL-Cov tokens [n, L] bool of one mini-batch (`rows` of the batch), chosen as verl does at
        each optimizer step: from the covariance of the current policy's log-probs over all of the mini-batch's
        loss tokens (the definitions' N), Clip-Cov's draw from `generator` among tokens the PPO clip does not
        already clip. `current`: the current log-probs if known (the first step, where they are `old_logp`)."""
        c, clip = self.algo.cov, self.algo.clip
        if current is None:
            current = self._no_grad_pass(self.accelerator.unwrap_model(self.model), batch, rows)[0]
        cov = algo.token_covariance(current, adv, pg_mask)
        if c.mode == "kl_cov":
            return algo.kl_cov_select(cov, pg_mask, c.kl_frac)
        _, info = algo.ppo_clip_loss(current, old_logp, adv, clip.eps_low, clip.eps_high)
        clipped = info["clipped_low"] | info["clipped_high"]
        return algo.clip_cov_select(
            cov, pg_mask, c.clip_frac, c.clip_bound_low, c.clip_bound_high, generator, exclude=clipped
        )

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
    def _no_grad_pass(self, model: ResponseLogprobs, batch: RolloutBatch, rows: torch.Tensor | None = None):
        """(logp, entropy) [n, L] of the batch's sequences `rows` (None: all) under `model` (not DDP-wrapped: no
        collective per forward), each rank computing its share of the micro-batches. Under FSDP each forward is
        a collective: a rank short of work runs a discarded one, so that every rank runs as many."""
        rows = torch.arange(len(batch)) if rows is None else rows
        logp = torch.zeros((len(rows), batch.input_ids.shape[1]), device=self.accelerator.device)
        entropy = torch.zeros_like(logp)
        plan = self._micro_batches(batch.attention_mask[rows].sum(-1).tolist())
        for micro in split_micro_batches(plan, dist.rank(), dist.world_size()):
            if micro is None:
                if self.sharded:
                    self._forward(model, batch, rows[flat(plan[0])], [len(r) for r in plan[0]])
                continue
            local = flat(micro)
            logp[local], entropy[local] = self._forward(model, batch, rows[local], [len(r) for r in micro])
        return dist.all_reduce_sum_(logp), dist.all_reduce_sum_(entropy)

    def update(self, batch: RolloutBatch, seed: int | None = None) -> dict[str, float]:
        """μ passes (algo.ppo_epochs) over the batch, one optimizer step per mini-batch of whole groups
        (`minibatch_indices`). Returns learner metrics and per-token tensors of the policy before the update
        (`entropy`, `logp`, on the learner's device). `seed` drives the update's own random draws (Clip-Cov's
        token draw; None: torch's global RNG)."""
        started = time.perf_counter()
        # from_pretrained returns eval mode (and the hf sampler switches the shared module to it): transformers
        # applies gradient checkpointing only in train mode
        self.model.train()
        a, device = self.algo, self.accelerator.device
        if len(batch) % a.group_size:
            raise ValueError(f"{len(batch)} sequences are not whole groups of algo.group_size={a.group_size}")
        resp = batch.response_mask.to(device)
        adv = batch.advantages.to(device)
        minibatches = minibatch_indices(
            len(batch) // a.group_size, a.group_size, a.minibatch_prompts, a.num_minibatches
        )
        n_updates = a.ppo_epochs * len(minibatches)
        # A pre-pass is needed when the policy moves before some tokens are seen (several updates) or when the
        # whole batch's entropies or log-probs must be known first (entropy mask, Clip-Cov/KL-Cov selection);
        # otherwise old = current, detached.
        prepass = n_updates > 1 or a.entropy_mask.top_frac is not None or a.cov.mode is not None
        old_logp = entropy = None
        if prepass:
            old_logp, entropy = self._no_grad_pass(self.accelerator.unwrap_model(self.model), batch)
        ref_logp = self._no_grad_pass(self._reference, batch)[0] if self.reference is not None else None
        pg_mask = resp
        if a.entropy_mask.top_frac is not None:
            # Forking tokens (Wang et al. 2025): the indicator H >= tau_rho^B over the whole rollout batch, with
            # the entropies of the policy that sampled it (the pre-pass: pi_old, also what the rollout engine
            # sampled from). It is the same token set in every mini-batch and epoch: a fixed property of the
            # sampled responses, as the paper's tau^B_rho is a quantile of the batch B, not of a mini-batch
            # under a policy that has already moved
            pg_mask = algo.top_entropy_mask(entropy, resp, a.entropy_mask.top_frac)

        rollout_logp = batch.rollout_logp.to(device)
        sums = dict.fromkeys(
            ("loss/policy", "kl/ref", "clip/low", "clip/high", "clip/dual", "tis/weight", "tis/capped"), 0.0
        )
        sums.update({"cov/kl_abs": 0.0, "cov/selected": 0.0})
        grad_norms, nonfinite = [], 0
        fused_logp = torch.zeros_like(resp, dtype=torch.float32)
        fused_entropy = torch.zeros_like(fused_logp)
        lengths = batch.attention_mask.sum(-1).tolist()
        # each mini-batch's micro-batches, as indices into the mini-batch (as the loss weights are)
        plans = [self._micro_batches([lengths[i] for i in mb.tolist()]) for mb in minibatches]
        padding = padding_fraction(
            lengths,
            [[mb[row].tolist() for row in micro] for mb, plan in zip(minibatches, plans) for micro in plan],
        )
        # per mini-batch, the same in every epoch: the normaliser counts every response token of the mini-batch
        # (every rank's), also under the entropy mask: the 80/20 objective keeps DAPO's 1/sum|o_i| and puts its
        # indicator inside the sum
        weights = [algo.loss_token_weights(resp[mb], a.loss_agg, self.max_new_tokens) for mb in minibatches]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        world = dist.world_size()
        for epoch in range(a.ppo_epochs):
            for j, (mb, plan, w_kl) in enumerate(zip(minibatches, plans, weights)):
                w_pg = w_kl * pg_mask[mb]
                cov_sel = None
                if a.cov.mode is not None:
                    current = old_logp[mb] if epoch == 0 and j == 0 else None
                    cov_sel = self._cov_selection(
                        batch, mb, old_logp[mb], adv[mb], pg_mask[mb], current, generator
                    )
                    sums["cov/selected"] += int(cov_sel.sum())
                mine = split_micro_batches(plan, dist.rank(), world)
                for k, micro in enumerate(mine):
                    # gradients are reduced (and, under DeepSpeed, the optimizer steps) on each rank's last
                    # backward of the mini-batch only
                    with contextlib.nullcontext() if k == len(mine) - 1 else self._accumulating():
                        if (
                            micro is None
                        ):  # no micro-batch left for this rank: a zero loss joins the all-reduce
                            first = plan[0]
                            logp, _ = self._forward(
                                self.model, batch, mb[flat(first)], [len(r) for r in first]
                            )
                            self.accelerator.backward(logp.sum() * 0.0)
                            continue
                        rows = flat(micro)
                        idx = mb[rows]
                        logp, ent = self._forward(self.model, batch, idx, [len(r) for r in micro])
                        if not prepass:
                            fused_logp[idx], fused_entropy[idx] = logp.detach(), ent
                        old = old_logp[idx] if prepass else logp.detach()
                        sel = None if cov_sel is None else cov_sel[rows]
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
                        # logged: the mean over the optimizer steps of each step's loss
                        sums["loss/policy"] += loss.item() / n_updates
                        sums["clip/low"] += (info["clipped_low"] & m).sum().item()
                        sums["clip/high"] += (info["clipped_high"] & m).sum().item()
                        sums["clip/dual"] += (info["dual_clipped"] & m).sum().item()
                        if ref_logp is not None:
                            kl = algo.kl_penalty(logp, ref_logp[idx], a.kl.estimator)
                            kl_loss = (kl * w_kl[rows]).sum()
                            loss = loss + a.kl.coef * kl_loss
                            sums["kl/ref"] += kl_loss.item() / n_updates
                        # the ranks' gradients are averaged: scaled by the world size they sum to the batch's
                        self.accelerator.backward(loss * world)
                norm = float(
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.optim_cfg.max_grad_norm)
                )
                # the divergence guard (rlvr/guard.py): a non-finite gradient (the norm is the whole model's, the
                # same on every rank) changes no weight. Under DeepSpeed the engine has stepped in backward already.
                if math.isfinite(norm):
                    grad_norms.append(norm)
                    self.optimizer.step()
                else:
                    nonfinite += 1
                self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        # each rank summed over its own micro-batches (and filled its own rows): the batch's totals; the selection
        # counts are every rank's already
        selected = sums.pop("cov/selected")
        totals = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
        sums = dict(zip(sums, dist.all_reduce_sum_(totals).tolist()))
        if not prepass:
            dist.all_reduce_sum_(fused_logp)
            dist.all_reduce_sum_(fused_entropy)

        n_pg = max(int(pg_mask.sum()) * a.ppo_epochs, 1)
        n_tokens = int(resp.sum())
        metrics = {
            "loss/policy": sums["loss/policy"],
            "clip/low_frac": sums["clip/low"] / n_pg,
            "clip/high_frac": sums["clip/high"] / n_pg,
            "clip/dual_frac": sums["clip/dual"] / n_pg,
            "grad/norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "learner/nonfinite_steps": nonfinite,
            "lr": lr,
            "learner/pg_token_frac": int(pg_mask.sum()) / max(n_tokens, 1),
            "learner/padding_frac": padding,
            "learner/minibatches": len(minibatches),
            "timing/learner_s": time.perf_counter() - started,
        }
        if ref_logp is not None:
            metrics["kl/ref"] = sums["kl/ref"]
        if self.tis_cap is not None:
            metrics["rollout/tis_weight_mean"] = sums["tis/weight"] / n_pg
            metrics["rollout/tis_clip_frac"] = sums["tis/capped"] / n_pg
        if a.cov.mode is not None:
            metrics["cov/selected_frac"] = selected / n_pg
            if a.cov.mode == "kl_cov":
                metrics["cov/kl_abs_mean"] = sums["cov/kl_abs"] / max(selected, 1)
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
