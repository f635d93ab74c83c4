"""The policy-gradient objective of an update, as components chosen once from `algo.*` by `build_objective`.

Two independent choices:
- which tokens carry the policy gradient (`PgTokens`): every response token, or only the forking tokens of
  highest entropy (`algo.entropy_mask.top_frac`);
- the per-token policy loss (`PolicyLoss`): the PPO clip (with clip-higher and dual clip), Clip-Cov or KL-Cov
  (`algo.cov.mode`).

Beside them, the entropy regulariser (`algo.entropy_reg`, `build_entropy_reg`): a bonus on the token entropy, whose
coefficient is fixed or steered toward a target entropy; the adaptive coefficient is the update's only state.

The arithmetic is the pure functions of `rlvr.algo`; these classes only bind their config and tell the learner
what each variant needs (a pre-pass, a token selection per mini-batch, its own metrics). Tensors are [n, L]:
n sequences of the batch (or of a mini-batch), L the batch's padded width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr import algo, sharded
from rlvr.config import AlgoConfig, ClipConfig, CovConfig, RolloutConfig
from rlvr.config_algo import EntropyRegConfig
from rlvr.errors import ConfigError


@dataclass(frozen=True)
class AllTokens:
    """Every response token carries the policy gradient (GRPO, DAPO)."""

    needs_entropy = False

    def mask(self, entropy: Tensor | None, response_mask: Tensor, rows=None, n_rows=None) -> Tensor:
        """response_mask [n, L] bool -> itself (`rows`, `n_rows`: where its rows sit, as for ForkingTokens)."""
        return response_mask


@dataclass(frozen=True)
class ForkingTokens:
    """Forking tokens (Wang et al. 2025, the 80/20 rule): the indicator H >= tau_rho^B inside DAPO's token-level
    sum, tau_rho^B the (1 - top_frac) entropy quantile of the whole rollout batch B."""

    top_frac: float
    bottom: bool = False  # the complement instead: the 1 - top_frac of lowest entropy (the paper's ablation)
    needs_entropy = True

    def mask(self, entropy: Tensor | None, response_mask: Tensor, rows=None, n_rows=None) -> Tensor:
        """entropy, response_mask: [n, L] of this rank's rows `rows` [n] of the whole batch of n_rows -> bool
        [n, L], its part of the top_frac of the whole batch's response tokens by entropy (`algo.top_entropy_mask`
        over every rank's rows: `sharded.top_frac_mask`; with `bottom`, every other response token). The learner
        takes the entropies of the policy that sampled the batch (pi_old) once per update: the same token set in
        every mini-batch and epoch, as the paper's tau^B_rho is a quantile of the batch B, not of a mini-batch
        under a policy that has already moved."""
        top = sharded.top_frac_mask(entropy, response_mask, self.top_frac, rows, n_rows)
        return response_mask.bool() & ~top if self.bottom else top


PgTokens = AllTokens | ForkingTokens


@dataclass(frozen=True)
class PPOClip:
    """DAPO Eq. 10: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), clip-higher when eps_high > eps_low, and
    dual-clip PPO's cap -dual_c A for A < 0 (`algo.ppo_clip_loss`)."""

    clip: ClipConfig
    selects = False

    def select(self, current, old_logp, adv, pg_mask, generator, rows=None, n_rows=None) -> Tensor | None:
        """No token selection (`selects` is False: the learner does not ask): None."""
        return None

    def loss(self, logp: Tensor, old: Tensor, adv: Tensor, selected: Tensor | None):
        """logp (with grad), old: [n, L]; adv: [n] -> (per-token loss [n, L], info of `algo.ppo_clip_loss`)."""
        c = self.clip
        return algo.ppo_clip_loss(logp, old, adv, c.eps_low, c.eps_high, c.dual_c)

    def selected_abs_kl(self, info: dict[str, Tensor], selected: Tensor | None) -> float:
        """The KL-Cov penalty's |logp - old| summed over the selected tokens; no penalty here: 0."""
        return 0.0

    def metrics(self, selected: float, abs_kl: float, n_tokens: int) -> dict[str, float]:
        """Metrics of this variant from the update's totals (n_tokens: response tokens x epochs): none."""
        return {}


@dataclass(frozen=True)
class _CovSelection(PPOClip):
    """A loss that acts on a few tokens of extreme logp-advantage covariance (Cui et al. 2025), chosen per
    mini-batch."""

    cov: CovConfig
    selects = True

    def select(
        self,
        current: Callable[[], Tensor],
        old_logp: Tensor,
        adv: Tensor,
        pg_mask: Tensor,
        generator: torch.Generator | None,
        rows: Tensor | None = None,
        n_rows: int | None = None,
    ) -> Tensor:
        """One mini-batch's tokens bool [n, L] (this rank's rows `rows` [n] of the mini-batch's n_rows), chosen
        as verl does at each optimizer step: from the covariance of the current policy's log-probs (`current()`,
        [n, L]) with the advantages adv [n] over all of the mini-batch's loss tokens (`pg_mask` [n, L]: the
        definitions' N; every rank's). old_logp [n, L]: pi_old's log-probs."""
        logp = current()
        cov = algo.token_covariance(logp, adv, pg_mask, total=sharded.total)
        return self._pick(cov, logp, old_logp, adv, pg_mask, generator, rows, n_rows)

    def _pick(self, cov, logp, old_logp, adv, pg_mask, generator, rows, n_rows) -> Tensor:
        """The selected tokens bool [n, L] given their covariances cov [n, L] (each variant its own rule)."""
        raise NotImplementedError

    def metrics(self, selected: float, abs_kl: float, n_tokens: int) -> dict[str, float]:
        """cov/selected_frac: selected tokens per response token (of every epoch), over the update's steps: the
        same absolute rate reads the same with or without the forking-token mask."""
        return {"cov/selected_frac": selected / n_tokens}


@dataclass(frozen=True)
class ClipCov(_CovSelection):
    """Clip-Cov (Cui et al. 2025): the PPO-clipped loss with a few tokens of high logp-advantage covariance, drawn
    at random within (clip_bound_low, clip_bound_high) among those the clip does not already clip, dropped from
    the gradient (`algo.clip_cov_select`, `algo.clip_cov_loss`)."""

    def _pick(self, cov, logp, old_logp, adv, pg_mask, generator, rows, n_rows) -> Tensor:
        """clip_frac of the tokens, drawn from `generator` among those whose ratio the PPO clip leaves alone."""
        c, clip = self.cov, self.clip
        _, info = algo.ppo_clip_loss(logp, old_logp, adv, clip.eps_low, clip.eps_high)
        clipped = info["clipped_low"] | info["clipped_high"]
        return sharded.clip_cov_select(
            cov, pg_mask, c.clip_frac, c.clip_bound_low, c.clip_bound_high, generator, clipped, rows, n_rows
        )

    def loss(self, logp: Tensor, old: Tensor, adv: Tensor, selected: Tensor | None):
        """PPOClip's loss [n, L] with the selected tokens' set to 0, and PPOClip's info."""
        pg, info = super().loss(logp, old, adv, selected)
        return algo.clip_cov_loss(pg, selected), info


@dataclass(frozen=True)
class KLCov(_CovSelection):
    """KL-Cov (Cui et al. 2025): the plain ratio objective -A r, plus kl_coef |logp - old| on the kl_frac of tokens
    of largest logp-advantage covariance (`algo.kl_cov_select`, `algo.kl_cov_loss`); no PPO clip (the penalty is
    the regulariser, as in the authors' code), so `clip` is not used."""

    def _pick(self, cov, logp, old_logp, adv, pg_mask, generator, rows, n_rows) -> Tensor:
        """The kl_frac of the tokens of largest covariance (no draw)."""
        return sharded.kl_cov_select(cov, pg_mask, self.cov.kl_frac, rows, n_rows)

    def loss(self, logp: Tensor, old: Tensor, adv: Tensor, selected: Tensor | None):
        """(per-token loss [n, L], info of `algo.kl_cov_loss`: nothing clipped, abs_kl [n, L])."""
        return algo.kl_cov_loss(logp, old, adv, selected, self.cov.kl_coef)

    def selected_abs_kl(self, info: dict[str, Tensor], selected: Tensor | None) -> float:
        """|logp - old| summed over the selected tokens."""
        return info["abs_kl"][selected].sum().item()

    def metrics(self, selected: float, abs_kl: float, n_tokens: int) -> dict[str, float]:
        """cov/selected_frac, and cov/kl_abs_mean: the penalty's mean |logp - old| per selected token."""
        return {**super().metrics(selected, abs_kl, n_tokens), "cov/kl_abs_mean": abs_kl / max(selected, 1)}


PolicyLoss = PPOClip | ClipCov | KLCov
COV_LOSSES: dict[str, type[ClipCov] | type[KLCov]] = {"clip_cov": ClipCov, "kl_cov": KLCov}


@dataclass(frozen=True)
class Objective:
    """The update's policy-gradient objective: which tokens carry the gradient, and their loss."""

    pg_tokens: PgTokens
    policy_loss: PolicyLoss

    @property
    def needs_prepass(self) -> bool:
        """Whether the whole batch's pi_old log-probs/entropies must be known before the first step: for the
        forking-token quantile, or for a covariance selection."""
        return self.pg_tokens.needs_entropy or self.policy_loss.selects


def sampler_correction(r: RolloutConfig) -> algo.ISCorrection | None:
    """The importance weights for the sampler/learner gap that rollout.is_mode (or its short form, tis_cap) names;
    None: off."""
    if r.tis_cap is not None:
        return algo.ISCorrection("token_truncate", cap=r.tis_cap)
    if r.is_mode is None:
        return None
    return algo.ISCorrection(r.is_mode, r.is_cap, *r.icepop_bounds)


def build_objective(cfg: AlgoConfig) -> Objective:
    """The components that `algo.entropy_mask.top_frac` and `algo.cov.mode` (null | clip_cov | kl_cov) name."""
    top_frac = cfg.entropy_mask.top_frac
    pg_tokens = (
        AllTokens() if top_frac is None else ForkingTokens(top_frac, cfg.entropy_mask.keep == "bottom")
    )
    if cfg.cov.mode is None:
        policy_loss = PPOClip(cfg.clip)
    elif cfg.cov.mode in COV_LOSSES:
        policy_loss = COV_LOSSES[cfg.cov.mode](cfg.clip, cfg.cov)
    else:
        raise ConfigError("algo.cov.mode", f"{cfg.cov.mode!r} is not one of null, {', '.join(COV_LOSSES)}")
    return Objective(pg_tokens, policy_loss)


def adaptive_entropy_coef(
    coef: float, entropy: float, target: float, step: float, max_coef: float
) -> tuple[float, bool]:
    """Skywork-OR1's adaptive entropy control (He et al. 2025, arXiv 2505.22312, "Adaptive Entropy Control";
    `EntController` in the authors' verl/trainer/ppo/core_algos.py), one step: from this step's coefficient and mean entropy, the next step's coefficient, coef + step while the entropy
    is below the target and coef - step otherwise, clamped to [0, max_coef], and whether it applies (only while
    the entropy is below the target). E.g. coef 1e-4, H 0.15 < target 0.2, step 1e-4 -> (2e-4, True)."""
    below = entropy < target
    return min(max(coef + (step if below else -step), 0.0), max_coef), below


@dataclass
class EntropyRegulariser:
    """loss = policy loss - c * H: H each response token's entropy (with gradient), aggregated with the policy
    loss's `algo.loss_agg` token weights over every response token (as verl's agg_loss over the response mask:
    also under the forking-token mask, which selects policy-gradient tokens only).

    Fixed (verl's entropy_coeff): c = algo.entropy_reg.coef. Adaptive (target set): c starts at coef and moves
    after each step by `adaptive_entropy_coef` on the step's mean token entropy under pi_old, so that step k uses
    the coefficient that step k-1's entropy set (as the authors' trainer, which updates its controller after each
    step's actor update); it is state, saved in checkpoints (`state_dict`)."""

    cfg: EntropyRegConfig
    coef: float
    applies: bool = True  # the adaptive form's gate: the last entropy seen was below the target

    @property
    def used(self) -> float:
        """The coefficient the next update uses (logged as entropy_reg/coef)."""
        return self.coef if self.applies else 0.0

    def observe(self, mean_entropy: float) -> None:
        """After a step: the adaptive coefficient follows that step's mean token entropy (fixed: unchanged)."""
        c = self.cfg
        if c.target is not None:
            self.coef, self.applies = adaptive_entropy_coef(
                self.coef, mean_entropy, c.target, c.step, c.max_coef
            )

    def state_dict(self) -> dict:
        """The adaptive coefficient and its gate (a fixed coefficient's never change)."""
        return {"coef": self.coef, "applies": self.applies}

    def load_state_dict(self, state: dict) -> None:
        """Back to a saved `state_dict`."""
        self.coef, self.applies = float(state["coef"]), bool(state["applies"])


def build_entropy_reg(cfg: EntropyRegConfig) -> EntropyRegulariser | None:
    """The regulariser `algo.entropy_reg` asks for, or None when it is off (coef 0, no target)."""
    return EntropyRegulariser(cfg, cfg.coef) if cfg.enabled else None
