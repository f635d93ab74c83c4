"""Typed configuration: dataclasses registered in Hydra's ConfigStore, validated in one place.

Hydra already rejects unknown keys and values of the wrong type (naming the key). `validate` adds the
rules between values; every message names the offending key so a bad run fails before a model loads.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rlvr.errors import ConfigError


@dataclass
class ModelConfig:
    # a local Hugging Face model dir, or a hub id (org/name), resolved through huggingface_hub's cache (offline
    # with HF_HUB_OFFLINE=1; rlvr/model_source.py)
    path: str = MISSING
    revision: str | None = None  # a hub id's branch, tag or commit (null: main)
    # an embedded model (rlvr.tiny_model.TASKS: "tiny-addition", the quickstart's; "tiny-chain", the entropy
    # lab's): its shipped weights and data splits are installed at `path`'s parent if missing
    builtin: str | None = None
    dtype: str = "float32"  # learner weights: float32 | bfloat16 (fp32 master weights kept by the optimizer)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False


@dataclass
class DatasetSpec:
    """A dataset by hub id or local dataset dir, read with `datasets.load_dataset(path, name, split=split)` (offline
    with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1: a hub cache, or a local dir laid out like a hub repo)."""

    path: str | None = None  # the hub id or dataset dir (null: no dataset)
    name: str | None = None  # the subset (configuration)
    split: str = "train"


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


@dataclass
class ClipConfig:
    eps_low: float = 0.2
    eps_high: float = 0.2  # DAPO clip-higher: 0.28
    dual_c: float | None = None  # dual-clip PPO lower bound for negative advantages (e.g. 3.0)


@dataclass
class KLConfig:
    coef: float = 0.0
    estimator: str = "k3"  # k1 | k2 | k3
    reset_every: int | None = None  # ProRL hard reset: reference := current policy every N steps
    # ... and when eval/pass@1 has not improved on its best for P consecutive evaluations (needs eval.every > 0)
    reset_on_plateau: int | None = None
    reset_optimizer: bool = False  # also clear the optimizer moments at each reset


@dataclass
class EntropyMaskConfig:
    top_frac: float | None = (
        None  # keep only the top fraction of tokens by entropy in the PG loss (0.2 = 80/20)
    )


@dataclass
class CovConfig:
    """Covariance-based entropy control (Cui et al. 2025); defaults are the paper's (Qwen2.5-7B)."""

    mode: str | None = None  # null | clip_cov | kl_cov
    # Clip-Cov: drop from the policy gradient clip_frac of the tokens, drawn among those whose
    # logp-advantage covariance lies in [clip_bound_low, clip_bound_high]
    clip_frac: float = 2.0e-4
    clip_bound_low: float = 1.0
    clip_bound_high: float = 5.0
    # KL-Cov: add kl_coef * |logp - old_logp| (against the rollout policy) on the kl_frac of tokens of largest covariance
    kl_frac: float = 2.0e-3
    kl_coef: float = 1.0


@dataclass
class DynamicSamplingConfig:
    enabled: bool = False
    max_rounds: int = 3  # extra sampling rounds to refill the batch with groups that carry signal


@dataclass
class OverlongConfig:
    shaping: bool = False  # DAPO soft overlong punishment over the last `cache_len` tokens
    cache_len: int = 0
    penalty: float = 1.0
    filter: bool = False  # drop truncated responses from the loss


@dataclass
class AlgoConfig:
    name: str = "grpo"
    group_size: int = 8
    advantage: str = "grpo"  # grpo | drgrpo | batch_std
    loss_agg: str = "seq_mean_token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm
    ppo_epochs: int = 1  # mu: passes over each rollout batch
    # Optimizer steps per pass: the batch's groups, in mini-batches of this many prompts (G answers each), one
    # optimizer step each, like verl's ppo_mini_batch_size (DAPO: 512 prompts a step, 32 per mini-batch). From the
    # second step on the policy has moved away from the sampler's, so the ratios leave 1 and the clip bounds act;
    # with one step per batch every ratio is exactly 1 and eps_low/eps_high/dual_c change nothing.
    # null: algo.num_minibatches mini-batches. A short batch (dynamic sampling out of rounds) is split into
    # ceil(groups / minibatch_prompts) mini-batches of equal size give or take one group.
    minibatch_prompts: int | None = None
    num_minibatches: int = 1  # optimizer steps per pass, used when minibatch_prompts is null
    clip: ClipConfig = field(default_factory=ClipConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    entropy_mask: EntropyMaskConfig = field(default_factory=EntropyMaskConfig)
    cov: CovConfig = field(default_factory=CovConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)


@dataclass
class RolloutConfig:
    backend: str = "hf"  # hf | vllm
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    ignore_eos: bool = False  # sample past EOS: every completion is max_new_tokens long (benchmarks)
    # truncated importance sampling: weight each token's policy loss by min(pi_learner / pi_rollout, tis_cap),
    # correcting for the sampler's numerics differing from the learner's (null = off)
    tis_cap: float | None = None
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
    server_devices: str | None = None  # CUDA_VISIBLE_DEVICES of a launched server (null: inherited)
    server_start_timeout_s: float = 600.0  # how long to wait for the server to answer


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


@dataclass
class TrainerConfig:
    output_dir: str = "runs/default"
    total_steps: int = 100
    prompts_per_step: int = 16  # B prompts, each sampled G times
    seed: int = 0
    save_every: int = 50
    keep_last: int = 2
    resume: str = "auto"  # auto | never | path to a checkpoint dir
    # resume although the config changes the experiment saved in the run dir (algorithm, data, model, seed...):
    # refused otherwise, naming each changed key (rlvr/run_dir.py; an explicit trainer.resume path allows it too)
    allow_config_change: bool = False
    samples_every: int = 10  # write samples/step_NNNNNN.jsonl every N steps (0 = never)
    progress_bar: bool = True
    # the divergence guard (rlvr/guard.py): stop (exit 1) after this many steps in a row whose update had a
    # non-finite loss or gradient norm (each such optimizer step is skipped, counted in learner/nonfinite_steps)
    max_nonfinite_steps: int = 3
    # steps in a row with no learning signal (every sampled group one reward: groups/zero_std_frac 1) before a
    # warning, and before the run stops with exit 1 (null = never)
    no_signal_warn_steps: int | None = 5
    no_signal_max_steps: int | None = 20


@dataclass
class EvalSetConfig:
    """One named evaluation set (eval.sets.<name>): its rows, their fields, and how it is sampled; a null
    setting takes eval's (k, n, temperature), then rollout's (top_p, max_new_tokens), then data's (the rest)."""

    files: list[str] = field(default_factory=list)  # .jsonl / .json / .parquet, or a save_to_disk dir
    dataset: DatasetSpec = field(default_factory=DatasetSpec)  # or a hub id / dataset dir (one of the two)
    prompt_key: str = "question"
    answer_key: str = "answer"
    answer_pattern: str | None = None
    prompt_template: str | None = None
    system_prompt: str | None = None
    use_chat_template: bool | None = None
    max_prompts: int | None = None  # only the first N rows
    k: list[int] | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None


@dataclass
class EvalConfig:
    every: int = 0  # evaluate pass@k on the held-out split every N steps (0 = off)
    k: list[int] = field(default_factory=lambda: [1])
    n: int | None = None  # samples per prompt (default max(k))
    at_start: bool = True  # evaluate before the first step too
    temperature: float | None = None  # default: rollout.temperature
    # named evaluation sets (each an EvalSetConfig's keys), each logged as eval/<name>/pass@<k>; eval/pass@<k> is
    # then their mean (over the sets that have that k). Empty: the one held-out split of data.eval_files /
    # data.eval_dataset. Untyped here so that `+eval.sets.NAME={files:[...],k:[1,8]}` works on the command line
    # (OmegaConf cannot add a typed entry from an override); `eval_sets` checks each against EvalSetConfig
    sets: dict[str, Any] = field(default_factory=dict)


def eval_sets(e: EvalConfig) -> dict[str, EvalSetConfig]:
    """eval.sets, each entry checked against EvalSetConfig (unknown keys, wrong types: ConfigError naming it)."""
    from omegaconf import OmegaConf

    out = {}
    for name, raw in e.sets.items():
        if isinstance(raw, EvalSetConfig):
            out[str(name)] = raw
            continue
        try:
            out[str(name)] = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalSetConfig), raw))
        except Exception as err:
            raise ConfigError(f"eval.sets.{name}", str(err).strip().splitlines()[0]) from None
    return out


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


@dataclass
class LoggerConfig:
    console_every: int = 10
    wandb: bool = False
    wandb_project: str = "rlvr"
    wandb_mode: str | None = None  # offline | online | disabled; default offline without WANDB_API_KEY


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


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _one_of(value: object, allowed: tuple, key: str) -> None:
    _require(value in allowed, key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")


def _validate_reward_functions(r: RewardConfig) -> None:
    """Each term names a loadable function once (loaded here, in this process: a bad path or import fails before
    any model loads), and accuracy names the math verdict or a term."""
    from rlvr.reward.functions import MATH, load_function

    names = [f.name for f in r.functions]
    for i, f in enumerate(r.functions):
        key = f"reward.functions[{i}]"
        _require(
            bool(f.name) and "/" not in f.name,
            f"{key}.name",
            f"must be a non-empty name without '/', got {f.name!r}",
        )
        _require(names.count(f.name) == 1, f"{key}.name", f"{f.name!r} names two terms")
        _require(math.isfinite(f.weight), f"{key}.weight", f"must be finite, got {f.weight}")
        _require(
            (f.name == MATH) == (f.fn == MATH),
            f"{key}",
            "the math verdicts are the term named math with fn math",
        )
        if f.fn != MATH:
            load_function(f.fn, f"{key}.fn")
    _require(
        r.accuracy == MATH or r.accuracy in names,
        "reward.accuracy",
        f"must be math or the name of a reward.functions term ({', '.join(names) or 'none'}), got {r.accuracy!r}",
    )


def validate(cfg: RLVRConfig) -> None:
    """Check the rules between values; raise ConfigError naming the first offending key."""
    from rlvr.algo import ADVANTAGE_MODES, COV_MODES, KL_ESTIMATORS, LOSS_AGG_MODES

    a = cfg.algo
    _require(
        a.group_size >= 2,
        "algo.group_size",
        f"must be >= 2 (a group needs two answers to compare), got {a.group_size}",
    )
    _one_of(a.advantage, ADVANTAGE_MODES, "algo.advantage")
    _one_of(a.loss_agg, LOSS_AGG_MODES, "algo.loss_agg")
    _require(a.ppo_epochs >= 1, "algo.ppo_epochs", f"must be >= 1, got {a.ppo_epochs}")
    _require(a.num_minibatches >= 1, "algo.num_minibatches", f"must be >= 1, got {a.num_minibatches}")
    _require(0 <= a.clip.eps_low < 1, "algo.clip.eps_low", f"must be in [0, 1), got {a.clip.eps_low}")
    _require(
        a.clip.eps_high >= a.clip.eps_low,
        "algo.clip.eps_high",
        f"must be >= algo.clip.eps_low ({a.clip.eps_low}), got {a.clip.eps_high}",
    )
    _require(
        a.clip.dual_c is None or a.clip.dual_c > 1,
        "algo.clip.dual_c",
        f"must be > 1 or null, got {a.clip.dual_c}",
    )
    _require(a.kl.coef >= 0, "algo.kl.coef", f"must be >= 0, got {a.kl.coef}")
    _one_of(a.kl.estimator, KL_ESTIMATORS, "algo.kl.estimator")
    _require(
        a.kl.reset_every is None or a.kl.reset_every >= 1,
        "algo.kl.reset_every",
        f"must be >= 1 or null, got {a.kl.reset_every}",
    )
    _require(
        not a.kl.reset_every or a.kl.coef > 0,
        "algo.kl.reset_every",
        "resets the KL reference, and there is none with algo.kl.coef=0: set algo.kl.coef > 0",
    )
    p = a.kl.reset_on_plateau
    _require(p is None or p >= 1, "algo.kl.reset_on_plateau", f"must be >= 1 or null, got {p}")
    _require(
        p is None or a.kl.coef > 0,
        "algo.kl.reset_on_plateau",
        "resets the KL reference, and there is none with algo.kl.coef=0: set algo.kl.coef > 0",
    )
    _require(
        p is None or cfg.eval.every > 0,
        "algo.kl.reset_on_plateau",
        "watches the held-out eval/pass@1, and eval.every=0 turns evaluation off: set eval.every > 0",
    )
    c = a.cov
    _one_of(c.mode, COV_MODES, "algo.cov.mode")
    _require(0 < c.clip_frac <= 1, "algo.cov.clip_frac", f"must be in (0, 1], got {c.clip_frac}")
    _require(
        c.clip_bound_low <= c.clip_bound_high,
        "algo.cov.clip_bound_high",
        f"must be >= algo.cov.clip_bound_low ({c.clip_bound_low}), got {c.clip_bound_high}",
    )
    _require(0 < c.kl_frac <= 1, "algo.cov.kl_frac", f"must be in (0, 1], got {c.kl_frac}")
    _require(c.kl_coef >= 0, "algo.cov.kl_coef", f"must be >= 0, got {c.kl_coef}")
    f = a.entropy_mask.top_frac
    _require(f is None or 0 < f <= 1, "algo.entropy_mask.top_frac", f"must be in (0, 1] or null, got {f}")
    _require(a.dynamic_sampling.max_rounds >= 0, "algo.dynamic_sampling.max_rounds", "must be >= 0")
    o = a.overlong
    _require(
        0 <= o.cache_len < cfg.rollout.max_new_tokens,
        "algo.overlong.cache_len",
        f"must be in [0, rollout.max_new_tokens={cfg.rollout.max_new_tokens}), got {o.cache_len}",
    )
    _require(
        not o.shaping or o.cache_len > 0,
        "algo.overlong.cache_len",
        "must be > 0 when algo.overlong.shaping is on",
    )

    r = cfg.rollout
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
    _require(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
    _one_of(r.mode, ("colocated", "server"), "rollout.mode")
    if r.mode == "server":
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

    _require(cfg.reward.timeout_s > 0, "reward.timeout_s", f"must be > 0, got {cfg.reward.timeout_s}")
    _validate_reward_functions(cfg.reward)
    _require(cfg.reward.num_workers >= 1, "reward.num_workers", f"must be >= 1, got {cfg.reward.num_workers}")

    # AdamW's own argument checks, here so a typo fails before the model loads (NaN fails every comparison)
    o = cfg.optim
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

    _require(cfg.learner.micro_batch_size >= 1, "learner.micro_batch_size", "must be >= 1")
    _require(cfg.learner.logprob_chunk_size >= 1, "learner.logprob_chunk_size", "must be >= 1")
    budget = cfg.learner.max_tokens_per_microbatch
    _require(
        budget is None or budget > 0,
        "learner.max_tokens_per_microbatch",
        f"must be > 0 or null (micro_batch_size sequences), got {budget}",
    )
    _require(
        not cfg.learner.pack or budget is not None,
        "learner.pack",
        "needs learner.max_tokens_per_microbatch (the tokens of a micro-batch's packed rows)",
    )
    row_tokens = cfg.learner.pack_row_tokens
    _require(
        row_tokens is None or (row_tokens > 0 and cfg.learner.pack),
        "learner.pack_row_tokens",
        f"must be > 0 and needs learner.pack=true, or null (the longest sequence), got {row_tokens}",
    )
    d = cfg.data
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
    _one_of(cfg.model.dtype, ("float32", "bfloat16"), "model.dtype")
    _one_of(cfg.model.builtin, (None, "tiny-addition", "tiny-chain"), "model.builtin")
    from rlvr.model_source import is_hub_id

    _require(
        cfg.model.builtin is not None or os.path.isdir(cfg.model.path) or is_hub_id(cfg.model.path),
        "model.path",
        f"no model directory at {cfg.model.path!r} (and it is not a hub id such as Qwen/Qwen2.5-Math-1.5B)",
    )

    t = cfg.trainer
    _require(t.total_steps >= 1, "trainer.total_steps", f"must be >= 1, got {t.total_steps}")
    _require(t.prompts_per_step >= 1, "trainer.prompts_per_step", f"must be >= 1, got {t.prompts_per_step}")
    _require(t.save_every >= 0, "trainer.save_every", "must be >= 0 (0 = only at the end)")
    _require(t.keep_last >= 1, "trainer.keep_last", f"must be >= 1, got {t.keep_last}")
    _require(
        t.max_nonfinite_steps >= 1,
        "trainer.max_nonfinite_steps",
        f"must be >= 1, got {t.max_nonfinite_steps}",
    )
    for key in ("no_signal_warn_steps", "no_signal_max_steps"):
        n = getattr(t, key)
        _require(n is None or n >= 1, f"trainer.{key}", f"must be >= 1 or null, got {n}")
    _require(
        t.resume in ("auto", "never") or os.path.isdir(t.resume),
        "trainer.resume",
        f"must be 'auto', 'never' or an existing checkpoint dir, got {t.resume!r}",
    )
    # mini-batches hold whole groups: a group's advantages, and Clip-Cov's token counts, belong together
    mb = a.minibatch_prompts
    _require(mb is None or mb >= 1, "algo.minibatch_prompts", f"must be >= 1 or null, got {mb}")
    _require(
        mb is None or a.num_minibatches == 1,
        "algo.minibatch_prompts",
        f"and algo.num_minibatches={a.num_minibatches} both set the mini-batches: set one of them",
    )
    _require(
        mb is None or t.prompts_per_step % mb == 0,
        "algo.minibatch_prompts",
        f"must divide trainer.prompts_per_step={t.prompts_per_step}, got {mb}",
    )
    _require(
        t.prompts_per_step % a.num_minibatches == 0,
        "algo.num_minibatches",
        f"must divide trainer.prompts_per_step={t.prompts_per_step} (mini-batches hold whole groups)",
    )

    e = cfg.eval
    _require(e.every >= 0, "eval.every", "must be >= 0 (0 = off)")
    _require(
        len(e.k) >= 1 and all(k >= 1 for k in e.k),
        "eval.k",
        f"must be a non-empty list of ints >= 1, got {list(e.k)}",
    )
    _require(e.n is None or e.n >= max(e.k), "eval.n", f"must be >= max(eval.k) = {max(e.k)}, got {e.n}")
    _require(
        e.every == 0
        or cfg.data.eval_files
        or cfg.data.eval_dataset.path is not None
        or bool(e.sets)
        or cfg.model.builtin is not None,
        "data.eval_files",
        "eval.every > 0 needs a held-out split in data.eval_files, data.eval_dataset or eval.sets",
    )
    _require(e.temperature is None or e.temperature > 0, "eval.temperature", "must be > 0 or null")
    _require(
        not (e.sets and (cfg.data.eval_files or cfg.data.eval_dataset.path is not None)),
        "eval.sets",
        "and data.eval_files / data.eval_dataset are both set: name the held-out split as one of eval.sets",
    )
    for name, es in eval_sets(e).items():
        key = f"eval.sets.{name}"
        _require(bool(name) and "/" not in name, key, "a set's name must be non-empty, without '/'")
        _require(
            bool(es.files) != (es.dataset.path is not None),
            f"{key}.files",
            f"or {key}.dataset.path: set exactly one",
        )
        k = es.k or e.k
        _require(
            len(k) >= 1 and all(x >= 1 for x in k),
            f"{key}.k",
            f"must be a non-empty list of ints >= 1, got {k}",
        )
        _require(es.n is None or es.n >= max(k), f"{key}.n", f"must be >= max(k) = {max(k)}, got {es.n}")
        _require(es.temperature is None or es.temperature > 0, f"{key}.temperature", "must be > 0 or null")
    _one_of(cfg.logger.wandb_mode, (None, "offline", "online", "disabled"), "logger.wandb_mode")

    m = cfg.monitor
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
