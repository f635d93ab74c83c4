"""The algorithm's config (the `algo` section: clip, KL, entropy mask, Clip-Cov / KL-Cov, the entropy
regulariser, DAPO's dynamic sampling and overlong shaping), each dataclass followed by its validator.
Re-exported by rlvr.config, whose `validate` calls `check_algo` and then the rules between algo and the other
sections."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.config_rules import one_of, require


@dataclass
class ClipConfig:
    eps_low: float = 0.2
    eps_high: float = 0.2  # DAPO clip-higher: 0.28
    dual_c: float | None = None  # dual-clip PPO lower bound for negative advantages (e.g. 3.0)


def check_clip(c: ClipConfig) -> None:
    """algo.clip: 0 <= eps_low <= 1 (1: the ratio's lower bound 0 never binds, as the Clip-Cov authors' scripts
    run), eps_high >= eps_low, dual_c > 1 or null."""
    require(0 <= c.eps_low <= 1, "algo.clip.eps_low", f"must be in [0, 1], got {c.eps_low}")
    require(
        c.eps_high >= c.eps_low,
        "algo.clip.eps_high",
        f"must be >= algo.clip.eps_low ({c.eps_low}), got {c.eps_high}",
    )
    require(
        c.dual_c is None or c.dual_c > 1,
        "algo.clip.dual_c",
        f"must be > 1 or null, got {c.dual_c}",
    )


@dataclass
class KLConfig:
    coef: float = 0.0
    estimator: str = "k3"  # k1 | k2 | k3
    reset_every: int | None = None  # ProRL hard reset: reference := current policy every N steps
    # ... and when eval/pass@1 has not improved on its best for P consecutive evaluations (needs eval.every > 0)
    reset_on_plateau: int | None = None
    reset_optimizer: bool = False  # also clear the optimizer moments at each reset


def check_kl(k: KLConfig) -> None:
    """algo.kl: a known estimator, and resets only of a reference that exists (coef > 0)."""
    from rlvr.algo import KL_ESTIMATORS

    require(k.coef >= 0, "algo.kl.coef", f"must be >= 0, got {k.coef}")
    one_of(k.estimator, KL_ESTIMATORS, "algo.kl.estimator")
    require(
        k.reset_every is None or k.reset_every >= 1,
        "algo.kl.reset_every",
        f"must be >= 1 or null, got {k.reset_every}",
    )
    require(
        not k.reset_every or k.coef > 0,
        "algo.kl.reset_every",
        "resets the KL reference, and there is none with algo.kl.coef=0: set algo.kl.coef > 0",
    )
    p = k.reset_on_plateau
    require(p is None or p >= 1, "algo.kl.reset_on_plateau", f"must be >= 1 or null, got {p}")
    require(
        p is None or k.coef > 0,
        "algo.kl.reset_on_plateau",
        "resets the KL reference, and there is none with algo.kl.coef=0: set algo.kl.coef > 0",
    )


@dataclass
class EntropyMaskConfig:
    top_frac: float | None = (
        None  # the policy gradient on the top fraction of tokens by entropy (0.2 = 80/20)
    )
    # top: those top_frac tokens (the paper's method); bottom: every other response token, the 1 - top_frac of
    # lowest entropy (the paper's "bottom 80%" ablation, Wang et al. 2025 Table 1)
    keep: str = "top"


def check_entropy_mask(m: EntropyMaskConfig) -> None:
    f = m.top_frac
    require(f is None or 0 < f <= 1, "algo.entropy_mask.top_frac", f"must be in (0, 1] or null, got {f}")
    require(m.keep in ("top", "bottom"), "algo.entropy_mask.keep", f"must be top or bottom, got {m.keep!r}")
    require(
        m.keep == "top" or (f is not None and f < 1),
        "algo.entropy_mask.keep",
        f"bottom keeps the tokens below the top_frac quantile: set algo.entropy_mask.top_frac in (0, 1), got {f}",
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


def check_cov(c: CovConfig) -> None:
    from rlvr.algo import COV_MODES

    one_of(c.mode, COV_MODES, "algo.cov.mode")
    require(0 < c.clip_frac <= 1, "algo.cov.clip_frac", f"must be in (0, 1], got {c.clip_frac}")
    require(
        c.clip_bound_low <= c.clip_bound_high,
        "algo.cov.clip_bound_high",
        f"must be >= algo.cov.clip_bound_low ({c.clip_bound_low}), got {c.clip_bound_high}",
    )
    require(0 < c.kl_frac <= 1, "algo.cov.kl_frac", f"must be in (0, 1], got {c.kl_frac}")
    require(c.kl_coef >= 0, "algo.cov.kl_coef", f"must be >= 0, got {c.kl_coef}")


@dataclass
class EntropyRegConfig:
    """An entropy regulariser: loss = policy loss - coef * H, H the token entropy aggregated with algo.loss_agg's
    token weights. Off (the default) while coef is 0 and target null."""

    coef: float = 0.0  # the fixed bonus (verl's entropy_coeff); with a target, the starting coefficient
    # Skywork-OR1's adaptive entropy control: after each step, coef moves by `step` up while the batch's mean
    # entropy is below `target`, down otherwise, within [0, max_coef]; it applies only while below the target
    target: float | None = None
    step: float = 1.0e-4  # Skywork-OR1's delta
    max_coef: float = 5.0e-3  # Skywork-OR1's

    @property
    def enabled(self) -> bool:
        """Whether the regulariser is on: a coefficient, or a target to steer one toward."""
        return self.coef > 0 or self.target is not None


def check_entropy_reg(r: EntropyRegConfig) -> None:
    """algo.entropy_reg: coef >= 0; with a target (> 0), step > 0 and 0 <= coef <= max_coef."""
    require(r.coef >= 0, "algo.entropy_reg.coef", f"must be >= 0, got {r.coef}")
    if r.target is None:
        return
    require(r.target > 0, "algo.entropy_reg.target", f"must be > 0 (nats) or null, got {r.target}")
    require(
        r.step > 0, "algo.entropy_reg.step", f"must be > 0 with algo.entropy_reg.target set, got {r.step}"
    )
    require(
        r.max_coef >= r.coef,
        "algo.entropy_reg.max_coef",
        f"must be >= algo.entropy_reg.coef ({r.coef}), the starting coefficient, got {r.max_coef}",
    )


@dataclass
class DynamicSamplingConfig:
    enabled: bool = False
    max_rounds: int = 3  # extra sampling rounds to refill the batch with groups that carry signal
    # each round draws ceil(oversample x the groups still needed) prompts and keeps at most what it needs (DAPO
    # oversamples once, up front; 1: draw exactly what is needed, and refill by rounds)
    oversample: float = 1.0


def check_dynamic_sampling(s: DynamicSamplingConfig) -> None:
    require(s.max_rounds >= 0, "algo.dynamic_sampling.max_rounds", "must be >= 0")
    require(s.oversample >= 1, "algo.dynamic_sampling.oversample", f"must be >= 1, got {s.oversample}")


@dataclass
class OverlongConfig:
    shaping: bool = False  # DAPO soft overlong punishment over the last `cache_len` tokens
    cache_len: int = 0
    penalty: float = 1.0
    filter: bool = False  # drop truncated responses from the loss


def check_overlong(o: OverlongConfig) -> None:
    """The cache's upper bound, rollout.max_new_tokens, is a rule between sections (rlvr.config)."""
    require(
        not o.shaping or o.cache_len > 0,
        "algo.overlong.cache_len",
        "must be > 0 when algo.overlong.shaping is on",
    )


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
    entropy_reg: EntropyRegConfig = field(default_factory=EntropyRegConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)


def check_algo(a: AlgoConfig) -> None:
    """algo and each of its sub-sections; the rules that read trainer, rollout or eval are in rlvr.config."""
    from rlvr.algo import ADVANTAGE_MODES, LOSS_AGG_MODES

    require(
        a.group_size >= 2,
        "algo.group_size",
        f"must be >= 2 (a group needs two answers to compare), got {a.group_size}",
    )
    one_of(a.advantage, ADVANTAGE_MODES, "algo.advantage")
    one_of(a.loss_agg, LOSS_AGG_MODES, "algo.loss_agg")
    require(a.ppo_epochs >= 1, "algo.ppo_epochs", f"must be >= 1, got {a.ppo_epochs}")
    require(a.num_minibatches >= 1, "algo.num_minibatches", f"must be >= 1, got {a.num_minibatches}")
    check_clip(a.clip)
    check_kl(a.kl)
    check_cov(a.cov)
    check_entropy_mask(a.entropy_mask)
    check_entropy_reg(a.entropy_reg)
    check_dynamic_sampling(a.dynamic_sampling)
    check_overlong(a.overlong)
    # mini-batches hold whole groups: a group's advantages, and Clip-Cov's token counts, belong together
    mb = a.minibatch_prompts
    require(mb is None or mb >= 1, "algo.minibatch_prompts", f"must be >= 1 or null, got {mb}")
    require(
        mb is None or a.num_minibatches == 1,
        "algo.minibatch_prompts",
        f"and algo.num_minibatches={a.num_minibatches} both set the mini-batches: set one of them",
    )
