import copy

import pytest
from helpers import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rlvr.config import ConfigError, RLVRConfig, validate
from rlvr.train import CONFIG_DIR

_compose = compose_config


@pytest.fixture(scope="module")
def quickstart() -> RLVRConfig:
    return _compose()


@pytest.fixture
def cfg(quickstart) -> RLVRConfig:
    return copy.deepcopy(quickstart)


# ---- presets -------------------------------------------------------------------------------------------


def test_default_is_quickstart_and_valid(quickstart):
    assert quickstart == _compose("experiment=quickstart")
    assert quickstart.model.builtin == "tiny-addition"
    # rlvr's own sampler: faster than vLLM on CPU for the tiny model (docs/PERFORMANCE.md)
    assert quickstart.rollout.backend == "hf"
    assert quickstart.rollout.max_new_tokens == 8
    assert quickstart.rollout.tis_cap is None  # TIS is off by default
    assert quickstart.algo.name == "dapo"
    # the experiment replaces dapo's 4096-token overlong cache with one that fits its 8-token budget
    assert quickstart.algo.overlong.cache_len < quickstart.rollout.max_new_tokens
    assert quickstart.eval.k == [1, 4] and quickstart.eval.n == 4
    validate(quickstart)


def test_grpo_preset():
    a = _compose("algo=grpo").algo
    assert (a.name, a.loss_agg, a.clip.eps_low, a.clip.eps_high) == ("grpo", "seq_mean_token_mean", 0.2, 0.2)
    assert a.dynamic_sampling.enabled is False and a.kl.coef == 0.0


def test_dapo_preset():
    a = _compose("algo=dapo").algo
    assert a.name == "dapo"
    assert a.clip.eps_low == 0.2 and a.clip.eps_high == 0.28
    assert a.loss_agg == "token_mean"
    assert a.dynamic_sampling.enabled is True
    assert a.kl.coef == 0.0


def test_forking_tokens_preset_inherits_dapo():
    a = _compose("algo=forking_tokens").algo
    assert a.name == "forking_tokens"
    assert a.entropy_mask.top_frac == 0.2
    assert (a.clip.eps_low, a.clip.eps_high, a.loss_agg) == (0.2, 0.28, "token_mean")
    assert a.dynamic_sampling.enabled is True


def test_prorl_preset():
    a = _compose("algo=prorl").algo
    assert a.name == "prorl"
    assert a.kl.coef > 0
    assert a.kl.reset_every is not None and a.kl.reset_every >= 1
    assert a.kl.reset_optimizer is True


PRESETS = ["grpo", "dapo", "prorl", "forking_tokens", "clip_cov", "kl_cov"]


@pytest.mark.parametrize("algo", PRESETS)
def test_every_algo_preset_validates_on_quickstart(algo):
    validate(_compose(f"algo={algo}"))


@pytest.mark.parametrize("algo", PRESETS)
def test_every_algo_preset_updates_in_mini_batches(algo):
    """One optimizer step per batch leaves every ratio at 1, where no clip bound acts: the quickstart makes 4
    optimizer steps of 8 prompts a batch with any preset."""
    c = _compose(f"algo={algo}")
    assert c.trainer.prompts_per_step // c.algo.minibatch_prompts == 4


# each preset's own update structure and clip, as its paper (docs/ALGORITHMS.md): (G, prompts per mini-batch,
# eps_low, eps_high, dynamic sampling). GRPO's mini-batches depart from DeepSeekMath's one update per batch.
PAPER = {
    "grpo": (8, 32, 0.2, 0.2, False),
    "dapo": (16, 32, 0.2, 0.28, True),
    "forking_tokens": (16, 32, 0.2, 0.28, True),
    "prorl": (16, 64, 0.2, 0.4, True),
    "clip_cov": (8, 32, 1.0, 1.0, True),  # the authors' 7b_clip_cov.sh: clip ratio 1, r clipped to [0, 2]
    "kl_cov": (8, 32, 0.2, 0.2, True),
}


@pytest.mark.parametrize("algo", PRESETS)
def test_presets_carry_their_papers_update_structure(algo, tmp_path, monkeypatch):
    # under an experiment that keeps the preset's G and mini-batch (128 prompts a step)
    (tmp_path / "Qwen2.5-Math-1.5B").mkdir()
    monkeypatch.setenv("RLVR_MODEL_DIR", str(tmp_path))
    c = _compose("experiment=qwen_math_dapo", f"algo={algo}")
    a = c.algo
    got = (a.minibatch_prompts, a.clip.eps_low, a.clip.eps_high, a.dynamic_sampling.enabled)
    assert got == PAPER[algo][1:]
    validate(c)
    assert _preset_value(algo, "group_size") == PAPER[algo][0]  # the experiment sets its own G


def _preset_value(name: str, key: str):
    """`key` of configs/algo/NAME.yaml, or of the preset it inherits from."""
    node = OmegaConf.load(f"{CONFIG_DIR}/algo/{name}.yaml")
    if key in node:
        return node[key]
    (parent,) = [d for d in node.get("defaults", []) if d != "_self_"]
    return _preset_value(parent, key)


def test_qwen_math_dapo_experiment(tmp_path, monkeypatch):
    (tmp_path / "Qwen2.5-Math-1.5B").mkdir()
    monkeypatch.setenv("RLVR_MODEL_DIR", str(tmp_path))
    c = _compose("experiment=qwen_math_dapo")
    assert c.model.path == str(tmp_path / "Qwen2.5-Math-1.5B") and c.model.builtin is None
    assert c.model.dtype == "bfloat16"
    assert c.rollout.backend == "vllm"
    assert c.algo.name == "dapo" and c.algo.clip.eps_high == 0.28 and c.algo.group_size == 16
    assert c.algo.overlong.shaping is True and c.algo.overlong.cache_len == 512
    assert c.data.use_chat_template is True and c.data.prompt_key == "problem"
    assert c.logger.wandb is True
    # DAPO's update structure: 512 prompts a step in mini-batches of 32, 16 optimizer steps (docs/ALGORITHMS.md)
    assert c.trainer.prompts_per_step // c.algo.minibatch_prompts == 16
    validate(c)


# ---- validate ------------------------------------------------------------------------------------------


def _set(path: str, value):
    def apply(c: RLVRConfig, tmp_path):
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value(tmp_path) if callable(value) else value)

    return apply


def _all(*changes):
    def apply(c: RLVRConfig, tmp_path):
        for change in changes:
            change(c, tmp_path)

    return apply


# the quickstart sets algo.minibatch_prompts; algo.num_minibatches is the other way to set the mini-batches
_NO_MB = _set("algo.minibatch_prompts", None)

# algo.kl.reset_on_plateau resets the KL reference when eval/pass@1 stalls: it needs both
_KL, _EVAL = _set("algo.kl.coef", 0.001), _set("eval.every", 5)


def _no_model(c: RLVRConfig, tmp_path):
    c.model.builtin = None
    c.model.path = str(tmp_path / "no-such-model")


REJECTED = [
    ("algo.clip.eps_high", _set("algo.clip.eps_high", 0.1)),
    ("algo.group_size", _set("algo.group_size", 1)),
    ("algo.dynamic_sampling.oversample", _set("algo.dynamic_sampling.oversample", 0.5)),
    ("rollout.max_staleness", _set("rollout.max_staleness", 2)),  # one batch in flight, no more
    ("rollout.max_staleness", _all(_set("rollout.backend", "vllm"), _set("rollout.max_staleness", 1))),
    (
        "rollout.is_mode",
        _all(
            _set("rollout.backend", "vllm"), _set("rollout.mode", "server"), _set("rollout.max_staleness", 1)
        ),
    ),  # fmt: skip
    ("algo.entropy_mask.top_frac", _set("algo.entropy_mask.top_frac", 0.0)),
    ("algo.entropy_mask.top_frac", _set("algo.entropy_mask.top_frac", 1.5)),
    ("algo.entropy_mask.keep", _set("algo.entropy_mask.keep", "middle")),
    ("algo.entropy_mask.keep", _set("algo.entropy_mask.keep", "bottom")),  # with no top_frac to complement
    ("rollout.backend", _set("rollout.backend", "sglang")),
    ("rollout.tis_cap", _set("rollout.tis_cap", 0.5)),
    ("rollout.is_mode", _set("rollout.is_mode", "tis")),
    ("rollout.tis_cap", _all(_set("rollout.tis_cap", 2.0), _set("rollout.is_mode", "sequence_mask"))),
    ("rollout.is_cap", _set("rollout.is_cap", 0.9)),
    ("rollout.icepop_bounds", _set("rollout.icepop_bounds", [2.0, 5.0])),
    ("algo.loss_agg", _set("algo.loss_agg", "seq_sum")),
    ("algo.kl.estimator", _set("algo.kl.estimator", "k4")),
    ("algo.num_minibatches", _all(_NO_MB, _set("algo.num_minibatches", 3))),  # 32 prompts: not whole groups
    ("algo.minibatch_prompts", _set("algo.minibatch_prompts", 0)),
    ("algo.minibatch_prompts", _set("algo.minibatch_prompts", 5)),  # does not divide 32 prompts
    ("algo.minibatch_prompts", _set("algo.num_minibatches", 2)),  # both set the mini-batches
    ("eval.n", _set("eval.n", 3)),  # eval.k = [1, 4]
    ("algo.kl.reset_on_plateau", _all(_KL, _EVAL, _set("algo.kl.reset_on_plateau", 0))),
    ("algo.kl.reset_on_plateau", _all(_EVAL, _set("algo.kl.reset_on_plateau", 2))),  # coef 0: no reference
    ("algo.kl.reset_on_plateau", _all(_KL, _set("eval.every", 0), _set("algo.kl.reset_on_plateau", 2))),
    ("model.path", _no_model),
    ("trainer.resume", _set("trainer.resume", lambda tmp: str(tmp / "missing" / "step_000010"))),
    ("algo.kl.reset_every", _set("algo.kl.reset_every", 5)),  # coef 0: no reference to reset
    ("optim.lr", _set("optim.lr", float("inf"))),
    ("optim.beta1", _set("optim.beta1", 1.0)),
    ("optim.beta1", _set("optim.beta1", -0.1)),
    ("optim.beta2", _set("optim.beta2", 1.0)),
    ("optim.weight_decay", _set("optim.weight_decay", -5.0)),
    ("optim.weight_decay", _set("optim.weight_decay", float("nan"))),
    ("optim.eps", _set("optim.eps", 0.0)),
    ("optim.eps", _set("optim.eps", float("inf"))),
    ("algo.clip.eps_low", _set("algo.clip.eps_low", 1.01)),
    ("algo.entropy_reg.coef", _set("algo.entropy_reg.coef", -0.01)),
    ("algo.entropy_reg.target", _set("algo.entropy_reg.target", 0.0)),
    ("algo.entropy_reg.step", _all(_set("algo.entropy_reg.target", 0.2), _set("algo.entropy_reg.step", 0.0))),
    (
        "algo.entropy_reg.max_coef",
        _all(
            _set("algo.entropy_reg.target", 0.2), _set("algo.entropy_reg.coef", 0.01)
        ),  # above max_coef 5e-3
    ),
]


@pytest.mark.parametrize(("key", "change"), REJECTED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(REJECTED)])
def test_validate_rejects_naming_the_key(cfg, tmp_path, key, change):
    change(cfg, tmp_path)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def _existing_model(c: RLVRConfig, tmp_path):
    c.model.builtin = None
    c.model.path = str(tmp_path)


ACCEPTED = [  # the boundary values just inside each rule above
    _set("algo.clip.eps_high", 0.2),
    _set("algo.group_size", 2),
    _set("algo.entropy_mask.top_frac", 1.0),
    _set("rollout.backend", "hf"),
    _set("rollout.tis_cap", 1.0),
    _all(_NO_MB, _set("algo.num_minibatches", 4)),
    _set("algo.minibatch_prompts", 32),
    _set("eval.n", 4),
    _all(_KL, _EVAL, _set("algo.kl.reset_on_plateau", 1)),
    _existing_model,
    _set("trainer.resume", lambda tmp: str(tmp)),
    _set("trainer.resume", "never"),
    _all(_KL, _set("algo.kl.reset_every", 5)),
    _set("optim.lr", 1e-3),
    _all(_set("optim.beta1", 0.0), _set("optim.beta2", 0.0)),
    _all(_set("optim.beta1", 0.99), _set("optim.beta2", 0.9999)),
    _set("optim.weight_decay", 0.0),
    _set("optim.eps", 1e-30),
    _all(_set("algo.clip.eps_low", 1.0), _set("algo.clip.eps_high", 1.0)),
    _set("algo.entropy_reg.coef", 0.01),  # fixed: max_coef does not apply
    _all(_set("algo.entropy_reg.target", 0.2), _set("algo.entropy_reg.coef", 5e-3)),
]


@pytest.mark.parametrize("change", ACCEPTED)
def test_validate_accepts_boundaries(cfg, tmp_path, change):
    change(cfg, tmp_path)
    validate(cfg)


# ---- Hydra's own checks --------------------------------------------------------------------------------


def test_hydra_rejects_unknown_key():
    with pytest.raises(ConfigCompositionException) as info:
        _compose("algo.clip.eps_hgh=0.3")
    assert "algo.clip.eps_hgh" in str(info.value)


def test_hydra_rejects_wrong_type():
    with pytest.raises(ConfigCompositionException) as info:
        _compose("algo.group_size=abc")
    assert "algo.group_size" in str(info.value)
    assert "could not be converted to Integer" in str(info.value.__cause__)


def test_reset_on_plateau_says_what_it_needs(cfg, tmp_path):
    _all(_EVAL, _set("algo.kl.reset_on_plateau", 2))(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"algo\.kl\.coef > 0"):
        validate(cfg)
    _all(_KL, _set("eval.every", 0))(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"eval\.every > 0"):
        validate(cfg)


def test_silently_ignored_settings_fail_before_the_model_loads():
    """The issue's cases as a user writes them on the command line: each names its key and what it needs."""
    with pytest.raises(ConfigError) as info:
        validate(_compose("algo.kl.reset_every=5"))  # the quickstart has algo.kl.coef=0
    assert str(info.value) == (
        "algo.kl.reset_every: resets the KL reference, and there is none with algo.kl.coef=0: set algo.kl.coef > 0"
    )
    with pytest.raises(ConfigError) as info:
        validate(_compose("optim.beta2=1.0"))
    assert str(info.value) == "optim.beta2: must be in [0, 1), got 1.0"
    with pytest.raises(ConfigError) as info:
        validate(_compose("optim.weight_decay=-5"))
    assert str(info.value) == "optim.weight_decay: must be a finite number >= 0, got -5.0"
    with pytest.raises(ConfigError) as info:
        validate(_compose("optim.lr=inf"))
    assert str(info.value) == "optim.lr: must be a finite number > 0, got inf"
