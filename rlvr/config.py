"""Typed configuration: dataclasses registered in Hydra's ConfigStore, each section followed by its validator.

Hydra already rejects unknown keys and values of the wrong type (naming the key). `validate` runs each section's
validator, then the rules between sections, then the file-system checks; every message names the offending key so
a bad run fails before a model loads. The algo section lives in rlvr.config_algo, the eval section in
rlvr.config_eval and the trainer section in rlvr.config_trainer; all are re-exported here (`__all__`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rlvr.config_algo import (
    AlgoConfig,
    ClipConfig,
    CovConfig,
    DynamicSamplingConfig,
    EntropyMaskConfig,
    KLConfig,
    OverlongConfig,
    check_algo,
)
from rlvr.config_eval import HELDOUT, DatasetSpec, EvalConfig, EvalSetConfig, check_eval, eval_sets
from rlvr.config_rules import one_of as _one_of
from rlvr.config_rules import require as _require
from rlvr.config_trainer import TrainerConfig, check_trainer
from rlvr.errors import ConfigError

# what `from rlvr.config import X` has always reached (the algo section now lives in rlvr.config_algo)
__all__ = [
    "AlgoConfig",
    "ClipConfig",
    "ConfigError",
    "CovConfig",
    "DataConfig",
    "DatasetSpec",
    "DynamicSamplingConfig",
    "EntropyMaskConfig",
    "EvalConfig",
    "EvalSetConfig",
    "HELDOUT",
    "KLConfig",
    "LearnerConfig",
    "LoggerConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "OverlongConfig",
    "RLVRConfig",
    "RewardConfig",
    "RewardFunctionConfig",
    "RolloutConfig",
    "TrainerConfig",
    "eval_sets",
    "register_configs",
    "validate",
]


@dataclass
class ModelConfig:
    # a local Hugging Face model dir, or a hub id (org/name), resolved through huggingface_hub's cache (offline
    # with HF_HUB_OFFLINE=1; rlvr/model_source.py)
    path: str = MISSING
    revision: str | None = None  # a hub id's branch, tag or commit (null: main)
    # an embedded model (rlvr.tiny_model.TASKS: "tiny-addition", the quickstart's; "tiny-fork", the entropy
    # lab's): its shipped weights and data splits are installed at `path`'s parent if missing
    builtin: str | None = None
    dtype: str = "float32"  # learner weights: float32 | bfloat16 (fp32 master weights kept by the optimizer)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False


def _check_model(m: ModelConfig) -> None:
    """model's values; whether model.path exists is `_check_paths`'s."""
    _one_of(m.dtype, ("float32", "bfloat16"), "model.dtype")
    _one_of(m.builtin, (None, "tiny-addition", "tiny-fork"), "model.builtin")


@dataclass
class DataConfig:
    # rows come from files or from a dataset, never both (each pair names the same split)
    train_files: list[str] = field(default_factory=list)  # .jsonl / .json / .parquet, or a save_to_disk dir
    eval_files: list[str] = field(default_factory=list)
    train_dataset: DatasetSpec = field(default_factory=DatasetSpec)  # data.train_dataset.path=ID sets it
    eval_dataset: DatasetSpec = field(default_factory=DatasetSpec)
    # the prompt: a string field, formatted through prompt_template, or a list of {role, content} chat messages,
    # rendered by the tokenizer's chat template
    prompt_key: str = "question"
    question_key: str | None = None  # the former name of prompt_key, still read
    answer_key: str = "answer"  # a dotted path reaches nested fields: reward_model.ground_truth
    # a regex whose first group, searched in the answer field, is the gold (GSM8K: '####\s*(.+)$')
    answer_pattern: str | None = None
    prompt_template: str | None = None  # str.format over the row's fields; null: the prompt field as it is
    system_prompt: str | None = None  # with chat messages: replaces their system message, or is put first
    use_chat_template: bool = False  # render a string prompt as one user message through the chat template
    max_prompt_tokens: int = 1024  # longer prompts are an error (named by file and row), never silently cut
    overlong_prompts: str = "error"  # error | skip (skipped rows are counted and reported once)
    dedup: bool = False  # drop rows whose (prompt, gold) repeats an earlier row's; the count is reported
    eval_max_prompts: int | None = None  # use only the first N eval rows
    # keep prompt token ids under RLVR_CACHE_DIR/prompt_tokens: one process per machine tokenizes a dataset, once
    token_cache: bool = True


def _check_data(d: DataConfig) -> None:
    """Each split from files or a dataset (not both), training rows present, and the fields' settings."""
    for split in ("train", "eval"):
        files, dataset = getattr(d, f"{split}_files"), getattr(d, f"{split}_dataset")
        _require(
            not (files and dataset.path is not None),
            f"data.{split}_files",
            f"and data.{split}_dataset are both set: take the {split} rows from one of them",
        )
    _require(
        bool(d.train_files) or d.train_dataset.path is not None,
        "data.train_files",
        "no training rows: set data.train_files (files) or data.train_dataset (a hub id or dataset dir)",
    )
    _one_of(d.overlong_prompts, ("error", "skip"), "data.overlong_prompts")
    _require(
        d.question_key is None or d.prompt_key in ("question", d.question_key),
        "data.question_key",
        f"is the former name of data.prompt_key; both are set ({d.question_key!r}, {d.prompt_key!r}): keep prompt_key",
    )
    if d.answer_pattern is not None:
        try:
            groups = re.compile(d.answer_pattern).groups
        except re.error as err:
            raise ConfigError("data.answer_pattern", f"not a valid regex ({err})") from None
        _require(groups >= 1, "data.answer_pattern", "needs a group around the gold, e.g. '####\\s*(.+)$'")


@dataclass
class RolloutConfig:
    backend: str = "hf"  # hf | vllm
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    ignore_eos: bool = False  # sample past EOS: every completion is max_new_tokens long (benchmarks)
    # importance weights for the sampler/learner gap (rlvr.algo.sampler_is_weights, docs/ALGORITHMS.md): is_mode
    # null (off) | token_truncate | token_mask | sequence_truncate | sequence_mask | icepop, with is_cap (the
    # truncate and mask modes' bound) and icepop_bounds [low, high]; tis_cap: C is short for token_truncate at C
    tis_cap: float | None = None
    is_mode: str | None = None
    is_cap: float = 3.0
    icepop_bounds: list[float] = field(default_factory=lambda: [0.5, 5.0])
    # vLLM engine settings (ignored by the hf backend)
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    enable_sleep_mode: bool = False
    enable_prefix_caching: bool = True
    # colocated: vLLM in the trainer's process, weights handed over in place; server: vLLM in its own process
    # on its own devices (`rlvr-rollout-server`), prompts over HTTP, weights by vLLM's weight transfer (NCCL on GPU)
    mode: str = "colocated"
    server_url: str | None = None  # server mode: http://HOST:PORT (null: launch one on a free loopback port)
    server_launch: bool = True  # server mode: the trainer starts the server (at server_url), stops it on exit
    # a launched server's bind address (null: server_url's host, else 127.0.0.1; 0.0.0.0: every interface, for
    # ranks on other nodes) and the host every rank dials (null: server_url's host, else the bind address, or
    # this node's name where the bind address is a wildcard)
    server_bind: str | None = None
    server_advertise: str | None = None
    server_devices: str | None = None  # CUDA_VISIBLE_DEVICES of a launched server (null: inherited)
    # 1: the next batch is generated while the learner updates, one update behind (rlvr.rollouts; server mode,
    # with an rollout.is_mode correction: AReaL's decoupled objective); 0: sample, update, sync, in order
    max_staleness: int = 0
    server_start_timeout_s: float = 600.0  # how long to wait for the server to answer


def _check_is_correction(r: RolloutConfig) -> None:
    from rlvr.algo.policy_loss import IS_MODES

    _one_of(r.is_mode, (None, *IS_MODES), "rollout.is_mode")
    _require(
        r.tis_cap is None or r.is_mode is None,
        "rollout.tis_cap",
        f"is short for rollout.is_mode=token_truncate: set it or rollout.is_mode ({r.is_mode}), not both",
    )
    _require(r.is_cap >= 1, "rollout.is_cap", f"must be >= 1, got {r.is_cap}")
    b = r.icepop_bounds
    _require(
        len(b) == 2 and 0 < b[0] <= 1 <= b[1],
        "rollout.icepop_bounds",
        f"must be [low, high] with 0 < low <= 1 <= high, got {list(b)}",
    )


def _check_rollout(r: RolloutConfig) -> None:
    _one_of(r.backend, ("hf", "vllm"), "rollout.backend")
    _require(r.temperature > 0, "rollout.temperature", f"must be > 0, got {r.temperature}")
    _require(0 < r.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    _require(r.top_k >= 0, "rollout.top_k", f"must be >= 0 (0 = off), got {r.top_k}")
    _require(r.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {r.max_new_tokens}")
    _require(
        r.tis_cap is None or r.tis_cap >= 1,
        "rollout.tis_cap",
        f"must be >= 1 or null (off), got {r.tis_cap}",
    )
    _check_is_correction(r)
    _require(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
    _one_of(r.mode, ("colocated", "server"), "rollout.mode")
    _check_staleness(r)
    if r.mode == "server":
        _check_rollout_server(r)


def _check_staleness(r: RolloutConfig) -> None:
    _one_of(r.max_staleness, (0, 1), "rollout.max_staleness")  # one batch in flight: a lag of exactly 1
    if r.max_staleness == 0:
        return
    _require(
        r.mode == "server",
        "rollout.max_staleness",
        "generating while the learner updates needs the engine in its own process: set rollout=server (the "
        "colocated engine shares the trainer's process and devices)",
    )
    _require(
        r.is_mode is not None or r.tis_cap is not None,
        "rollout.is_mode",
        "rollout.max_staleness 1 trains on batches sampled one update behind: set rollout.is_mode "
        "(token_mask: AReaL's decoupled objective; docs/ALGORITHMS.md)",
    )


def _check_rollout_server(r: RolloutConfig) -> None:
    """rollout.mode=server: vLLM in its own process, launched here or reached at server_url."""
    _require(r.backend == "vllm", "rollout.mode", "'server' runs vLLM: set rollout.backend=vllm")
    _require(
        r.server_launch or r.server_url is not None,
        "rollout.server_url",
        "needed with rollout.server_launch=false (the address of a running rlvr-rollout-server)",
    )
    _require(
        r.server_url is None or r.server_url.startswith(("http://", "https://")),
        "rollout.server_url",
        f"must look like http://HOST:PORT, got {r.server_url!r}",
    )
    _require(
        not r.enable_sleep_mode,
        "rollout.enable_sleep_mode",
        "frees a colocated engine's GPU memory for the learner; the rollout server has its own devices",
    )
    _require(r.server_start_timeout_s > 0, "rollout.server_start_timeout_s", "must be > 0")
    for key in ("server_bind", "server_advertise"):
        value = getattr(r, key)
        _require(
            value is None or (value and not any(c in value for c in "/: ")),
            f"rollout.{key}",
            f"a host name or IPv4 address, without scheme or port (the port is server_url's), got {value!r}",
        )
    _require(
        r.server_launch or (r.server_bind is None and r.server_advertise is None),
        "rollout.server_bind",
        "applies to a server this trainer launches; with rollout.server_launch=false set rollout.server_url",
    )


@dataclass
class RewardFunctionConfig:
    """One term of the reward (rlvr/reward/functions.py): weight x fn(completion, row, **kwargs)."""

    name: str = MISSING  # logged as reward/<name>/mean
    fn: str = MISSING  # math | format | package.module:callable | path/to/file.py:callable
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    fallback: float = 0.0  # the value of a sample on which the function raised or ran out of time


@dataclass
class RewardConfig:
    # the reward's terms, summed with their weights; empty: the math verdicts alone, mapped by the values below
    functions: list[RewardFunctionConfig] = field(default_factory=list)
    # what acc/mean and dynamic sampling count as correct: the math verdict, or a function's value at or above
    # accuracy_threshold
    accuracy: str = "math"
    accuracy_threshold: float = 1.0
    # the math verdicts' values
    correct: float = 1.0
    incorrect: float = 0.0
    no_answer: float = 0.0
    timeout: float = (
        0.0  # reward of a sample whose verification ran out of time (counted in verify/timeout_frac)
    )
    timeout_s: float = 5.0  # per-sample verification time limit
    # a completion without a \boxed{} answer gets no_answer, whatever else math-verify could read in it (a last
    # bare number): a strict format, so a policy cannot learn to drop the box and be scored on its last number
    require_boxed: bool = False
    num_workers: int = 2
    # a user term's value that is not finite or beyond +-max_abs counts as its error (fallback, error_frac)
    max_abs: float = 1e6
    # a term that fails on every sample of a step: warn after this many such steps in a row, stop the run after
    # fail_max_steps (null: never)
    fail_warn_steps: int | None = 3
    fail_max_steps: int | None = 20
    # a term that runs out of time on this many samples in a row of a batch (in one worker) is skipped for the
    # rest of that batch: its fallback, counted in timeout_frac (null: never skip)
    timeout_skip_after: int | None = 4


def _check_reward(r: RewardConfig) -> None:
    """The verifier's limits and each term (`_validate_reward_functions` loads the user's functions)."""
    _require(r.timeout_s > 0, "reward.timeout_s", f"must be > 0, got {r.timeout_s}")
    _validate_reward_functions(r)
    _require(r.num_workers >= 1, "reward.num_workers", f"must be >= 1, got {r.num_workers}")


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine (after warm-up)
    max_grad_norm: float = 1.0


def _check_optim(o: OptimConfig) -> None:
    """AdamW's own argument checks, here so a typo fails before the model loads (NaN fails every comparison)."""
    _require(math.isfinite(o.lr) and o.lr > 0, "optim.lr", f"must be a finite number > 0, got {o.lr}")
    _require(0 <= o.beta1 < 1, "optim.beta1", f"must be in [0, 1), got {o.beta1}")
    _require(0 <= o.beta2 < 1, "optim.beta2", f"must be in [0, 1), got {o.beta2}")
    _require(
        math.isfinite(o.weight_decay) and o.weight_decay >= 0,
        "optim.weight_decay",
        f"must be a finite number >= 0, got {o.weight_decay}",
    )
    _require(math.isfinite(o.eps) and o.eps > 0, "optim.eps", f"must be a finite number > 0, got {o.eps}")
    _require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _one_of(o.schedule, ("constant", "cosine"), "optim.schedule")
    _require(o.max_grad_norm > 0, "optim.max_grad_norm", f"must be > 0, got {o.max_grad_norm}")


@dataclass
class LearnerConfig:
    micro_batch_size: int = 8  # sequences per forward/backward
    logprob_chunk_size: int = 2048  # tokens per chunk of the LM head (bounds the [tokens x vocab] memory)
    # token budget per forward/backward (real tokens plus padding); when set it replaces micro_batch_size, and a
    # sequence longer than the budget gets a micro-batch to itself (null = micro_batch_size sequences)
    max_tokens_per_microbatch: int | None = None
    # pack several sequences into each forward row (attention kept within each sequence), so little padding is
    # computed; needs max_tokens_per_microbatch. Off by default: it changes the attention call (a packed-sequence
    # mask under sdpa/eager, varlen under flash_attention_2)
    pack: bool = False
    # the longest packed row, in tokens (null: the batch's longest sequence). Under sdpa/eager a packed row's
    # attention spans the whole row, so rows much longer than a sequence cost attention that padding would not
    # (on an H100, 0.5B model, rows of 16,384 tokens made an update 2.2x slower than padded rows); under
    # flash_attention_2 (varlen) rows as long as max_tokens_per_microbatch cost nothing extra
    pack_row_tokens: int | None = None
    # torch.compile (dynamic=True) the policy's decoder: fused kernels on GPU, paid for by a compile on the first
    # micro-batches; the LM head stays eager (rlvr.logprob's chunked Function)
    compile: bool = False


def _check_learner(lc: LearnerConfig) -> None:
    _require(lc.micro_batch_size >= 1, "learner.micro_batch_size", "must be >= 1")
    _require(lc.logprob_chunk_size >= 1, "learner.logprob_chunk_size", "must be >= 1")
    budget = lc.max_tokens_per_microbatch
    _require(
        budget is None or budget > 0,
        "learner.max_tokens_per_microbatch",
        f"must be > 0 or null (micro_batch_size sequences), got {budget}",
    )
    _require(
        not lc.pack or budget is not None,
        "learner.pack",
        "needs learner.max_tokens_per_microbatch (the tokens of a micro-batch's packed rows)",
    )
    row_tokens = lc.pack_row_tokens
    _require(
        row_tokens is None or (row_tokens > 0 and lc.pack),
        "learner.pack_row_tokens",
        f"must be > 0 and needs learner.pack=true, or null (the longest sequence), got {row_tokens}",
    )


@dataclass
class MonitorConfig:
    """What the entropy observatory watches (rlvr/metrics/collapse.py)."""

    # entropy/above_threshold_frac counts tokens above this entropy (nats); 0.672 is the 80th percentile
    # reported for Qwen3 in "Beyond the 80/20 rule" (Wang et al. 2025)
    entropy_threshold: float = 0.672
    # collapse warning when mean token entropy falls below this (nats; null = off). Collapsed RLVR runs end
    # near 0.05 or lower (Cui et al. 2025, DAPO); healthy runs sit well above (the quickstart: 0.47 -> 0.22)
    entropy_floor: float | None = 0.05
    # ... or when it falls by more than this fraction of its highest value in the last `window` steps (null = off)
    entropy_drop_frac: float | None = 0.5
    window: int = 50


def _check_monitor(m: MonitorConfig) -> None:
    _require(
        m.entropy_threshold >= 0,
        "monitor.entropy_threshold",
        f"must be >= 0 (nats), got {m.entropy_threshold}",
    )
    _require(
        m.entropy_floor is None or m.entropy_floor >= 0,
        "monitor.entropy_floor",
        f"must be >= 0 (nats) or null (off), got {m.entropy_floor}",
    )
    _require(
        m.entropy_drop_frac is None or 0 < m.entropy_drop_frac < 1,
        "monitor.entropy_drop_frac",
        f"must be in (0, 1) or null (off), got {m.entropy_drop_frac}",
    )
    _require(m.window >= 1, "monitor.window", f"must be >= 1, got {m.window}")


@dataclass
class LoggerConfig:
    console_every: int = 10
    wandb: bool = False
    wandb_project: str = "rlvr"
    wandb_mode: str | None = None  # offline | online | disabled; default offline without WANDB_API_KEY


def _check_logger(lg: LoggerConfig) -> None:
    _one_of(lg.wandb_mode, (None, "offline", "online", "disabled"), "logger.wandb_mode")


@dataclass
class RLVRConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="rlvr_schema", node=RLVRConfig)


def _validate_reward_functions(r: RewardConfig) -> None:
    """Each term names a loadable function once (loaded here, in this process: a bad path or import fails before
    any model loads), and accuracy names the math verdict or a term: the reward's own check (rlvr.reward)."""
    from rlvr.reward.checks import check_reward_config

    check_reward_config(r)


def _kl_plateau_needs_eval(cfg: RLVRConfig) -> None:
    _require(
        cfg.algo.kl.reset_on_plateau is None or cfg.eval.every > 0,
        "algo.kl.reset_on_plateau",
        "watches the held-out eval/pass@1, and eval.every=0 turns evaluation off: set eval.every > 0",
    )


def _overlong_cache_fits_rollout(cfg: RLVRConfig) -> None:
    o, max_new = cfg.algo.overlong, cfg.rollout.max_new_tokens
    _require(
        0 <= o.cache_len < max_new,
        "algo.overlong.cache_len",
        f"must be in [0, rollout.max_new_tokens={max_new}), got {o.cache_len}",
    )


def _minibatches_divide_step(cfg: RLVRConfig) -> None:
    """Mini-batches hold whole groups: a group's advantages, and Clip-Cov's token counts, belong together."""
    a, per_step = cfg.algo, cfg.trainer.prompts_per_step
    mb = a.minibatch_prompts
    _require(
        mb is None or per_step % mb == 0,
        "algo.minibatch_prompts",
        f"must divide trainer.prompts_per_step={per_step}, got {mb}",
    )
    _require(
        per_step % a.num_minibatches == 0,
        "algo.num_minibatches",
        f"must divide trainer.prompts_per_step={per_step} (mini-batches hold whole groups)",
    )


def _eval_has_rows(cfg: RLVRConfig) -> None:
    e, d = cfg.eval, cfg.data
    _require(
        e.every == 0
        or d.eval_files
        or d.eval_dataset.path is not None
        or bool(e.sets)
        or cfg.model.builtin is not None,
        "data.eval_files",
        "eval.every > 0 needs a held-out split in data.eval_files, data.eval_dataset or eval.sets",
    )


def _heldout_name_free(cfg: RLVRConfig) -> None:
    """With eval.sets, data.eval_files / data.eval_dataset is evaluated as one more set named HELDOUT."""
    d = cfg.data
    _require(
        not (HELDOUT in cfg.eval.sets and (d.eval_files or d.eval_dataset.path is not None)),
        f"eval.sets.{HELDOUT}",
        "names the held-out split of data.eval_files / data.eval_dataset: give the set another name, "
        "or set data.eval_files=[] to evaluate on eval.sets alone",
    )


# the rules between sections, in the order `validate` applies them
_CROSS_SECTION_RULES = (
    _kl_plateau_needs_eval,
    _overlong_cache_fits_rollout,
    _minibatches_divide_step,
    _eval_has_rows,
    _heldout_name_free,
)


def _check_paths(cfg: RLVRConfig) -> None:
    """The file-system checks: the model directory (or a hub id) and a trainer.resume checkpoint dir exist."""
    from rlvr.model_source import is_hub_id

    m = cfg.model
    _require(
        m.builtin is not None or os.path.isdir(m.path) or is_hub_id(m.path),
        "model.path",
        f"no model directory at {m.path!r} (and it is not a hub id such as Qwen/Qwen2.5-Math-1.5B)",
    )
    t = cfg.trainer
    _require(
        t.resume in ("auto", "never") or os.path.isdir(t.resume),
        "trainer.resume",
        f"must be 'auto', 'never' or an existing checkpoint dir, got {t.resume!r}",
    )


def validate(cfg: RLVRConfig) -> None:
    """Check each section's values, then the rules between sections, then the paths that must exist; raise
    ConfigError naming the first offending key."""
    check_algo(cfg.algo)
    _check_rollout(cfg.rollout)
    _check_reward(cfg.reward)
    _check_optim(cfg.optim)
    _check_learner(cfg.learner)
    _check_data(cfg.data)
    _check_model(cfg.model)
    check_trainer(cfg.trainer)
    check_eval(cfg.eval)
    _check_logger(cfg.logger)
    _check_monitor(cfg.monitor)
    for rule in _CROSS_SECTION_RULES:
        rule(cfg)
    _check_paths(cfg)
