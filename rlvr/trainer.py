"""The RL loop: rollout -> verify -> advantages -> update -> sync -> log -> checkpoint.

`prepare` does everything that can fail on bad input (config, data rows, prompt lengths) before any model
loads; `Trainer.run` is the loop and reads top to bottom.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rlvr import checkpoint, sharded_checkpoint
from rlvr import distributed as dist
from rlvr.batch_stats import entropy_metrics, sampler_gap
from rlvr.config import ConfigError, RLVRConfig, validate
from rlvr.data.prompts import Problem, PromptSampler, check_golds, encode_prompts, load_problems
from rlvr.evaluate import EvalSet, build_eval_sets, evaluate_sets
from rlvr.guard import RunDiverged, RunGuard, describe_nonfinite, nonfinite_tensors
from rlvr.hashing import derive_seed
from rlvr.learner import Learner, UpdateResult, minibatch_indices
from rlvr.metrics import (
    CollapseMonitor,
    ConsoleSink,
    EntropyLawTracker,
    JsonlSink,
    MetricsLogger,
    PlateauDetector,
    WandbSink,
    write_entropy_edges,
)
from rlvr.model_source import resolve_model
from rlvr.objectives import sampler_correction
from rlvr.pipeline import Collected, rollout_metrics, to_batch
from rlvr.reward import TermFailureGuard, Verdict, build_reward_model, gold_problem, uses_math_golds
from rlvr.rollout.base import Completion
from rlvr.rollouts import Rollouts
from rlvr.share import share_groups

log = logging.getLogger(__name__)

BUILD_WAIT_S = 1800
"""How long a launcher's other local ranks wait for local rank 0 to build the embedded tiny model."""

WANDB_SAMPLES = 8
"""Completions sent to the wandb samples table each samples_every steps (one per prompt; all go to samples/)."""


def ensure_builtin_assets(cfg: RLVRConfig) -> None:
    """Install the embedded model `model.builtin`'s shipped weights and its data splits (a second) where
    `model.path` points, if they are not there yet, or are another recipe's."""
    from rlvr.tiny_model import TASKS, assets_current, install_tiny_assets

    if cfg.model.builtin is None:
        return
    task, root = TASKS[cfg.model.builtin], Path(cfg.model.path).parent
    if assets_current(root, task):
        return
    if Path(cfg.model.path).name != "model":
        raise ConfigError("model.path", f"must be <dir>/model for model.builtin, got {cfg.model.path}")
    if os.environ.get("LOCAL_RANK", "0") != "0":  # under a launcher, local rank 0 installs; the others wait
        deadline = time.monotonic() + BUILD_WAIT_S
        while not assets_current(root, task):  # build.json is written last
            if time.monotonic() > deadline:
                raise RuntimeError(f"model.path: {cfg.model.path} did not appear within {BUILD_WAIT_S} s")
            time.sleep(1.0)
        return
    if Path(cfg.model.path).is_dir():
        log.warning("replacing the model at %s: not %s recipe %d", root, task.name, task.recipe)
    log.info("installing the embedded model %s at %s", task.name, cfg.model.path)
    install_tiny_assets(root, task)


@dataclass
class Prepared:
    """Everything checked and tokenized; no model loaded yet."""

    cfg: RLVRConfig
    output_dir: Path
    tokenizer: object
    train: list[Problem]
    train_ids: list[list[int]]
    eval_sets: list[EvalSet]  # none: no evaluation
    resume_from: Path | None


def prepare(cfg: RLVRConfig, output_dir: str | Path) -> Prepared:
    """Validate config and data, tokenize prompts, decide where to resume from. Raises ConfigError/DataError."""
    from transformers import AutoTokenizer

    validate(cfg)
    out = Path(output_dir)
    for path in checkpoint.remove_stale_writes(out):
        log.warning("removed %s: a checkpoint write that a crash interrupted", path)
    resume_from = None
    if cfg.trainer.resume == "auto":
        resume_from, damaged = checkpoint.find_resumable(out)
        for path, problem in damaged:
            log.warning("cannot resume from %s: %s", path, problem)
        if damaged and resume_from is None:
            raise ConfigError(
                "trainer.resume", f"no checkpoint in {out}/checkpoints is intact (newest: {damaged[0][1]})"
            )
        if damaged:
            log.warning("resuming from %s, the newest intact checkpoint", resume_from)
    elif cfg.trainer.resume == "never":
        if checkpoint.find_latest(out) is not None:
            raise ConfigError(
                "trainer.resume",
                f"'never', but {out}/checkpoints holds a run; choose another trainer.output_dir or delete it",
            )
    else:
        resume_from = Path(cfg.trainer.resume)
        problem = checkpoint.verify_checkpoint(resume_from)
        if problem is not None:
            raise ConfigError("trainer.resume", problem)
    ensure_builtin_assets(cfg)
    # a hub id becomes its local snapshot for the whole run (the saved config.yaml keeps the id)
    cfg.model.path = resolve_model(cfg.model.path, cfg.model.revision)
    d = cfg.data
    train_set = d.train_dataset if d.train_dataset.path is not None else None
    train_key = "data.train_dataset" if train_set else "data.train_files"
    train = load_problems(d.train_files, d, train_key, train_set)
    math_golds = uses_math_golds(cfg.reward)
    if math_golds:  # golds the math term reads
        check_golds(train, train_key, gold_problem)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train, train_ids = encode_prompts(tokenizer, train, d, train_key)
    eval_sets = build_eval_sets(cfg, tokenizer, math_golds)
    return Prepared(cfg, out, tokenizer, train, train_ids, eval_sets, resume_from)


def _make_engine(cfg: RLVRConfig, model, tokenizer):
    if cfg.rollout.backend == "hf":
        from rlvr.rollout.hf import HFRolloutEngine

        return HFRolloutEngine(model, tokenizer)
    if cfg.rollout.mode == "server":
        from rlvr.rollout.server import ServerRolloutEngine

        log_path = Path(cfg.trainer.output_dir) / "rollout_server.log"
        engine = ServerRolloutEngine(cfg.model.path, tokenizer, cfg.rollout, cfg.trainer.seed, log_path)
    else:
        from rlvr.rollout.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine(cfg.model.path, tokenizer, cfg.rollout, seed=cfg.trainer.seed)
    engine.sync_weights(model)  # on resume the policy comes from a checkpoint, not from cfg.model.path
    return engine


class Trainer:
    def __init__(self, prep: Prepared):
        from accelerate.utils import set_seed
        from transformers import AutoModelForCausalLM

        cfg = self.cfg = prep.cfg
        self.prep, self.out = prep, prep.output_dir
        self.out.mkdir(parents=True, exist_ok=True)
        set_seed(cfg.trainer.seed)
        acc = self.accelerator = dist.make_accelerator("bf16" if cfg.model.dtype == "bfloat16" else "no")
        dist.check_supported(acc, cfg.rollout.backend)
        # a sharded checkpoint's weights are loaded into the policy once it is sharded (`_load_shards`)
        shards = (
            prep.resume_from if prep.resume_from and sharded_checkpoint.is_sharded(prep.resume_from) else None
        )
        source = prep.resume_from / "policy" if prep.resume_from and not shards else cfg.model.path
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, attn_implementation=cfg.model.attn_implementation
        )
        bad = nonfinite_tensors(model.named_parameters())
        if bad:
            key = "trainer.resume" if prep.resume_from else "model.path"
            raise ConfigError(
                key, f"the weights in {source} hold NaN or infinite values: {describe_nonfinite(bad)}"
            )
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if cfg.learner.compile:
            # in place (Module.compile): parameter names, hence checkpoints and weight sync, are unchanged
            model.get_decoder().compile(dynamic=True)
        self.learner = Learner(
            model,
            self.accelerator,
            cfg.algo,
            cfg.optim,
            cfg.learner,
            cfg.rollout.temperature,
            cfg.trainer.total_steps,
            is_correction=sampler_correction(cfg.rollout),
            max_new_tokens=cfg.rollout.max_new_tokens,
        )
        log.info(
            "learner: %d process(es), %s, %s",
            dist.world_size(),
            getattr(acc.distributed_type, "value", acc.distributed_type),
            f"policy sharded ({self.learner.sharding})"
            if self.learner.sharding
            else "full policy on every process",
        )
        self._load_shards(shards)  # before the engine takes the policy's weights
        self.engine = _make_engine(cfg, self.learner.unwrapped, prep.tokenizer)
        self.reward = build_reward_model(cfg.reward)
        self.verifier = self.reward.verifier  # evaluation scores math verdicts alone
        self.sampler = PromptSampler(len(prep.train), cfg.trainer.seed)
        rows_json = [p.row_json for p in prep.train] if self.reward.needs_rows else None
        golds = [p.answer for p in prep.train]
        self.rollouts = Rollouts(
            cfg, self.engine, self.reward, self.sampler, prep.train_ids, golds, rows_json
        )
        self.step, self.resets, self.stop_requested, self.gen_tokens_total = 0, 0, False, 0
        m = cfg.monitor
        self.law = EntropyLawTracker()
        self.collapse = CollapseMonitor(m.entropy_floor, m.entropy_drop_frac, m.window)
        patience = cfg.algo.kl.reset_on_plateau
        self.plateau = PlateauDetector(patience) if patience else None
        self.last_reset_step: int | None = None
        t = cfg.trainer
        self.guard = RunGuard(
            t.max_nonfinite_steps, t.no_signal_warn_steps, t.no_signal_max_steps, cfg.optim.lr
        )
        self.reward_guard = TermFailureGuard(cfg.reward.fail_warn_steps, cfg.reward.fail_max_steps)
        self._warn_inert_clip()
        if prep.resume_from:
            self._restore(prep.resume_from)
        self.logger = self._make_logger()

    def _load_shards(self, shards: Path | None) -> None:
        """Start the sharded checkpoints' writer (trainer.checkpoint_format=sharded), and load a sharded checkpoint
        `shards` (None: not resuming one): weights, Adam's state and a reset reference, resharded to this run."""
        t, learner = self.cfg.trainer, self.learner
        sharded_checkpoint.check_supported(learner.sharding, t.checkpoint_format, shards)
        sharded = t.checkpoint_format == "sharded"
        self.shard_writer = (
            sharded_checkpoint.ShardWriter(self.out, self.prep.tokenizer, t.keep_last, t.checkpoint_async)
            if sharded
            else None
        )
        if shards is not None:
            sharded_checkpoint.load(shards, learner.unwrapped, learner.optimizer, learner.reference)

    def _warn_inert_clip(self) -> None:
        """With one optimizer step per batch the policy is the sampler's during that step: every ratio is 1, so
        the clip bounds, the dual clip and KL-Cov's penalty never act (the issue the presets' mini-batches fix)."""
        a, t = self.cfg.algo, self.cfg.trainer
        full_batch = minibatch_indices(t.prompts_per_step, 1, a.minibatch_prompts, a.num_minibatches)
        if a.ppo_epochs * len(full_batch) > 1:
            return
        inert = [
            key
            for key, on in (
                ("algo.clip.eps_high", a.clip.eps_high != a.clip.eps_low),
                ("algo.clip.dual_c", a.clip.dual_c is not None),
                ("algo.cov.mode=kl_cov", a.cov.mode == "kl_cov"),
            )
            if on
        ]
        if inert:
            log.warning(
                "one optimizer step per batch: every importance ratio is exactly 1 during it, so %s change "
                "nothing; set algo.minibatch_prompts below trainer.prompts_per_step for several steps",
                ", ".join(inert),
            )

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg.trainer
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.step == 0 and self._eval_due(0):
                self.logger.log(0, self.evaluate(0))
            bar = self._progress_bar()
            for step in range(self.step + 1, cfg.total_steps + 1):
                started, received = time.perf_counter(), dist.bytes_received()
                metrics = self.train_step(step)
                if self._eval_due(step):
                    metrics.update(self.evaluate(step))
                metrics["timing/step_s"] = time.perf_counter() - started
                metrics["dist/bytes_received"] = dist.bytes_received() - received
                self.logger.log(step, metrics)
                self.guard.observe(step, metrics)  # raises RunDiverged: no save of this step
                self.reward_guard.observe(step, metrics)  # a reward term failing on every sample: the same
                self.step = step
                bar.update(1)
                # a signal may reach one rank only: every rank must stop (and save) at the same step. Only ever
                # set here, never cleared: a signal handled between reading the flag and storing a False would
                # be lost (it was: a SIGTERM right after a metrics line left a test's run going)
                if dist.any_rank(self.stop_requested):
                    self.stop_requested = True
                bar.set_postfix(
                    reward=f"{metrics['reward/mean']:.3f}",
                    entropy=f"{metrics.get('entropy/mean', float('nan')):.3f}",
                )
                if (
                    self.stop_requested
                    or step == cfg.total_steps
                    or (cfg.save_every and step % cfg.save_every == 0)
                ):
                    self.save()
                if self.stop_requested:
                    log.warning("stop requested: saved step %d, exiting", step)
                    break
            bar.close()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.close()

    def train_step(self, step: int) -> dict:
        """One RL step: sample groups, reward them and keep those with signal; their advantages; the update;
        the policy's entropy before it; weights to the rollout engine; the reference's schedule; log."""
        a = self.cfg.algo
        model = self.learner.unwrapped
        collected, metrics = self.rollouts.collect(step, model)
        self.gen_tokens_total += collected.gen_tokens  # all ranks' tokens: the groups are gathered
        metrics.update(rollout_metrics(collected, a.group_size, self.gen_tokens_total))
        metrics.update(self.rollouts.before_update(step, model))  # max_staleness 1: the next batch starts
        if collected.groups:
            groups, layout = share_groups(collected.groups, a)  # this rank's slice of every mini-batch
            batch = to_batch(groups, self.prep.train_ids, a, self.prep.tokenizer.pad_token_id)
            before = self._update(step, batch, layout)
            metrics.update(before.metrics)
            metrics.update(self._entropy_metrics(batch, before, groups))
            metrics.update(sampler_gap(batch, before.logp))
        metrics.update(self.rollouts.after_update(step, model, updated=bool(collected.groups)))
        metrics.update(self._reference_schedule(step))
        if self.cfg.trainer.samples_every and step % self.cfg.trainer.samples_every == 0:
            self._write_samples(step, collected)
        metrics.update(self._watch_entropy(step, metrics.get("entropy/mean")))
        return metrics

    # ---- named steps ----------------------------------------------------------------------------------
    def _update(self, step: int, batch, layout) -> UpdateResult:
        """The learner's update of this rank's rows `batch` (where `layout` says); RunDiverged when it left
        non-finite weights, or when the policy it started from gave NaN log-probabilities to the sampled answers
        (nothing is synced or saved then)."""
        seed = derive_seed(self.cfg.trainer.seed, "learner", step)
        before = self.learner.update(batch, seed=seed, layout=layout)
        if dist.any_rank(bool(nonfinite_tensors(self.learner.unwrapped.named_parameters()))):
            raise RunDiverged(
                f"step {step}: the update left NaN or infinite weights (grad/norm "
                f"{before.metrics['grad/norm']:.3g}); nothing was synced or saved; likely cause: optim.lr "
                f"too high (now {self.cfg.optim.lr:g})"
            )
        mask = batch.response_mask.to(before.entropy.device)
        if dist.any_rank(bool(torch.isnan(before.logp[mask]).any())):
            raise RunDiverged(
                f"step {step}: the learner's policy gives NaN log-probabilities to the sampled answers: its "
                f"activations overflow; likely causes: optim.lr too high (now {self.cfg.optim.lr:g}), or a "
                "model whose weights are broken"
            )
        return before

    def _reference_schedule(self, step: int) -> dict:
        """algo.kl.reset_every's reset of the reference, and ref/resets (when a reference exists)."""
        if self.learner.reference is None:
            return {}
        a = self.cfg.algo
        if a.kl.reset_every and step % a.kl.reset_every == 0:
            self._reset_reference(step, f"every {a.kl.reset_every} steps (algo.kl.reset_every)")
        return {"ref/resets": self.resets}

    def _entropy_metrics(self, batch, before: UpdateResult, groups: list) -> dict:
        """The entropy distribution, its split by outcome, and the logp-advantage covariance of the policy
        before the update, over the response tokens of the whole batch (`batch`: this rank's rows, of `groups`)."""
        mask = batch.response_mask.to(before.entropy.device)
        # to_batch lays out rows group by group, completion by completion: the verdicts in the same order
        correct = torch.tensor([v == Verdict.CORRECT for g in groups for v in g.verdicts])
        threshold = self.cfg.monitor.entropy_threshold
        return entropy_metrics(before.entropy, before.logp, mask, batch.advantages, correct, threshold)

    def _watch_entropy(self, step: int, mean_entropy: float | None) -> dict:
        """Collapse warning (every step: 1 on the step it fires, else 0) and the entropy–performance law."""
        reason = self.collapse.update(step, mean_entropy)
        if reason is not None:
            log.warning("entropy collapse at step %d: %s", step, reason)
        return {"entropy/collapse_warning": int(reason is not None), **self.law.observe_entropy(mean_entropy)}

    def _eval_due(self, step: int) -> bool:
        e = self.cfg.eval
        if e.every == 0 or not self.prep.eval_sets:
            return False
        if step == 0:
            return e.at_start
        return step % e.every == 0 or step == self.cfg.trainer.total_steps

    def evaluate(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        # the same seed at every evaluation: differences between evaluations come from the policy, not the draw
        seed = derive_seed(self.cfg.trainer.seed, self.cfg.eval.seed_stream)
        self.rollouts.fresh(
            self.learner.unwrapped, step
        )  # max_staleness 1: the engine may hold older weights
        result = evaluate_sets(self.engine, self.verifier, self.prep.eval_sets, seed)
        result["timing/eval_s"] = time.perf_counter() - started
        self.law.observe_eval(step, result.get("eval/pass@1"))  # paired with the next step's entropy
        if self.plateau is not None and self.plateau.update(result.get("eval/pass@1")):
            p = self.plateau
            self._reset_reference(
                step,
                f"eval/pass@1 has not improved on its best {p.best:.4g} for {p.patience} evaluations "
                "(algo.kl.reset_on_plateau)",
            )
            result["ref/resets"] = self.resets  # the step's line shows the count after this reset
        return result

    def _reset_reference(self, step: int, why: str) -> None:
        """reference := current policy (and fresh optimizer moments with algo.kl.reset_optimizer), counted in
        ref/resets; a second trigger at the same step finds the reference already equal to the policy."""
        if self.last_reset_step == step:
            return
        self.learner.reset_reference()
        self.resets += 1
        self.last_reset_step = step
        log.info("step %d: reference reset to the current policy: %s", step, why)

    def _write_samples(self, step: int, collected: Collected) -> None:
        """samples/step_N.jsonl (and the wandb table) on rank 0, which receives the other ranks' texts for it."""
        texts = {
            k: [Completion([], [], c.finish_reason, c.text) for c in g.completions]
            for k, g in enumerate(collected.sampled)
            if g.home == dist.rank() and not dist.is_main()
        }
        parts = dist.gather_to_main(texts)
        if parts is None:
            return
        sampled = list(collected.sampled)
        for k, completions in (item for part in parts for item in part.items()):
            sampled[k] = dataclasses.replace(sampled[k], completions=completions)
        path = self.out / "samples" / f"step_{step:06d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = []
        with path.open("w", encoding="utf-8") as f:
            for g in sampled:
                prob = self.prep.train[g.prompt_index]
                for i, (c, v, r) in enumerate(zip(g.completions, g.verdicts, g.rewards)):
                    row = {
                        "origin": prob.origin,
                        "prompt": prob.prompt,
                        "gold": prob.answer,
                        "completion": c.text,
                        "verdict": v.value,
                        "reward": r,
                        "finish_reason": c.finish_reason,
                    }
                    f.write(json.dumps(row) + "\n")
                    if i == 0 and len(table) < WANDB_SAMPLES:
                        table.append({key: val for key, val in row.items() if key != "origin"})
        self.logger.log_samples(step, table)

    def _request_stop(self, signum, frame) -> None:
        log.warning("received signal %d: finishing the current step, then saving", signum)
        self.stop_requested = True

    # ---- state ----------------------------------------------------------------------------------------
    def state(self, optimizer: dict, rollouts: dict) -> dict:
        """The trainer's state.pt; `optimizer`: the optimizer's full state (`checkpoint.gather_full_state`);
        `rollouts`: the batch in flight (`Rollouts.state_dict`)."""
        return {
            "rollouts": rollouts,
            "step": self.step,
            "resets": self.resets,
            "gen_tokens_total": self.gen_tokens_total,
            "sampler": self.sampler.state_dict(),
            "optimizer": optimizer,
            "scheduler": self.learner.scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
            "entropy_law": self.law.state_dict(),
            "collapse_monitor": self.collapse.state_dict(),
            "entropy_reg": self.learner.entropy_reg_state(),  # the adaptive entropy coefficient
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
            "guard": self.guard.state_dict(),
            "reward_guard": self.reward_guard.state_dict(),
        }

    def save(self) -> None:
        """Full format: every rank joins the gathers of the full weights and optimizer state (their shards under
        FSDP); rank 0 writes; the others wait for it. Sharded: each rank writes its own shard (ShardWriter)."""
        learner = self.learner
        rollouts = self.rollouts.state_dict()
        reference = learner.reference if self.resets > 0 else None
        if self.shard_writer is not None:
            self._refuse_nonfinite(nonfinite_tensors(learner.unwrapped.named_parameters()))
            state = self.state(None, rollouts)
            self.shard_writer.save(self.step, learner.unwrapped, learner.optimizer, reference, state)
            return
        weights, optimizer = checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)
        reference_weights = checkpoint.gather_full_state(reference)[0] if reference is not None else None
        self._refuse_nonfinite(nonfinite_tensors(weights.items()) if dist.is_main() else [])
        if dist.is_main():
            checkpoint.save_checkpoint(
                self.out,
                self.step,
                learner.unwrapped,
                self.prep.tokenizer,
                reference,
                self.state(optimizer, rollouts),
                self.cfg.trainer.keep_last,
                policy_state=weights,
                reference_state=reference_weights,
            )
        dist.barrier()

    def _refuse_nonfinite(self, bad: list) -> None:
        """RunDiverged on every rank, no checkpoint written, when any rank found NaN or infinite weights (`bad`)."""
        if dist.any_rank(bool(bad)):
            where = describe_nonfinite(bad) if bad else "on another rank"
            raise RunDiverged(
                f"step {self.step}: no checkpoint written: the policy's weights hold NaN or infinite values ({where})"
            )

    def _restore(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM

        state = checkpoint.load_state(path)
        self.step, self.resets = state["step"], state["resets"]
        # older checkpoints lack it: count from 0 (the total then misses the steps before this resume)
        self.gen_tokens_total = state.get("gen_tokens_total", 0)
        self.sampler.load_state_dict(state["sampler"])
        self.rollouts.load_state_dict(state.get("rollouts"), self.step)
        sharded = sharded_checkpoint.is_sharded(path)  # its weights, Adam, reference: loaded by _load_shards
        if not sharded:
            self.learner.restore(state["optimizer"], path / "policy")
        self.learner.scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        # checkpoints written before the observatory existed have neither: start empty
        self.law.load_state_dict(state.get("entropy_law", {}))
        self.collapse.load_state_dict(state.get("collapse_monitor", {}))
        self.guard.load_state_dict(state.get("guard", {}))
        self.reward_guard.load_state_dict(state.get("reward_guard", {}))
        if self.plateau is not None:  # a run that turns reset_on_plateau on at a restart starts counting then
            self.plateau.load_state_dict(state.get("plateau") or {})
        self.learner.load_entropy_reg_state(state.get("entropy_reg"))
        if self.learner.reference is not None and not sharded:
            # the reference is the base model until a reset, the latest reset's policy after one (saved with
            # every checkpoint from then on); the learner copied it from the resumed policy, which is neither
            source = path / "reference" if self.resets > 0 else self.cfg.model.path
            if self.resets > 0 and not (path / "reference").is_dir():
                raise FileNotFoundError(
                    f"{path} records {self.resets} reference reset(s) but holds no reference/ directory"
                )
            ref = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            checkpoint.load_full_state(self.learner.reference, ref.state_dict())
        log.info("resumed from %s at step %d", path, self.step)

    def _make_logger(self) -> MetricsLogger:
        if not dist.is_main():  # every rank computes the same metrics; rank 0 writes them
            return MetricsLogger([])
        jsonl = JsonlSink(self.out / "metrics.jsonl")
        jsonl.truncate_after(self.step)  # steps logged after the checkpoint we resume from are redone
        write_entropy_edges(self.out)
        sinks = [jsonl, ConsoleSink(every=self.cfg.logger.console_every)]
        if self.cfg.logger.wandb:
            run_id = derive_seed(str(self.out.resolve()))
            config = OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True)
            sinks.append(
                WandbSink(
                    self.out,
                    self.cfg.logger.wandb_project,
                    self.out.name,
                    config,
                    self.cfg.logger.wandb_mode,
                    id=f"{run_id:x}",
                    resume="allow",
                )
            )
        return MetricsLogger(sinks)

    def _progress_bar(self):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.cfg.trainer.total_steps,
            initial=self.step,
            desc="rl steps",
            disable=not self.cfg.trainer.progress_bar or not dist.is_main(),
            dynamic_ncols=True,
        )

    def close(self) -> None:
        try:
            if self.shard_writer is not None:
                self.shard_writer.close()  # a background save finished and committed, on every rank
        finally:
            self.logger.close()
            self.rollouts.close()
            self.reward.close()
            self.engine.close()
            dist.shutdown()
