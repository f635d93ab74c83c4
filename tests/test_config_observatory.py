"""Config of the entropy observatory: algo.cov.* (Clip-Cov / KL-Cov presets) and monitor.*."""

import copy

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlvr.config import ConfigError, MonitorConfig, RLVRConfig, register_configs, validate
from rlvr.train import CONFIG_DIR


def _compose(*overrides: str) -> RLVRConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


@pytest.fixture(scope="module")
def quickstart() -> RLVRConfig:
    return _compose()


def test_defaults_cov_off_and_monitor_documented(quickstart):
    assert quickstart.algo.cov.mode is None
    assert quickstart.monitor == MonitorConfig()
    m = quickstart.monitor
    assert (m.entropy_threshold, m.entropy_floor, m.entropy_drop_frac, m.window) == (0.672, 0.05, 0.5, 50)


def test_clip_cov_preset_has_the_paper_defaults():
    a = _compose("algo=clip_cov").algo
    assert a.name == "clip_cov" and a.cov.mode == "clip_cov"
    assert (a.cov.clip_frac, a.cov.clip_bound_low, a.cov.clip_bound_high) == (2e-4, 1.0, 5.0)
    # on top of GRPO as the authors' recipe (7b_clip_cov.sh): clip ratio 1 both ways (ratios clipped to [0, 2]:
    # covariance control, not the PPO clip, holds the update), no dual clip, token-level loss, no KL
    assert (a.advantage, a.clip.eps_low, a.clip.eps_high, a.clip.dual_c, a.loss_agg, a.kl.coef) == (
        "grpo",
        1.0,
        1.0,
        None,
        "token_mean",
        0.0,
    )


def test_kl_cov_preset_has_the_paper_defaults():
    a = _compose("algo=kl_cov").algo
    assert a.name == "kl_cov" and a.cov.mode == "kl_cov"
    assert (a.cov.kl_frac, a.cov.kl_coef) == (2e-3, 1.0)
    assert a.loss_agg == "token_mean" and a.kl.coef == 0.0
    # the penalty needs a policy that has moved from the rollout policy: several optimizer steps a batch
    assert a.minibatch_prompts == 8 and _compose("algo=kl_cov").trainer.prompts_per_step == 32


@pytest.mark.parametrize("preset", ["clip_cov", "kl_cov"])
def test_cov_presets_validate_on_quickstart(preset):
    validate(_compose(f"algo={preset}"))


def test_cov_mode_from_the_command_line():
    assert _compose("algo.cov.mode=kl_cov").algo.cov.mode == "kl_cov"


REJECTED = [
    ("algo.cov.mode", "algo.cov.mode", "clip-cov"),
    ("algo.cov.clip_frac", "algo.cov.clip_frac", 0.0),
    ("algo.cov.clip_frac", "algo.cov.clip_frac", 1.5),
    ("algo.cov.clip_bound_high", "algo.cov.clip_bound_high", 0.5),  # below clip_bound_low = 1
    ("algo.cov.kl_frac", "algo.cov.kl_frac", 0.0),
    ("algo.cov.kl_coef", "algo.cov.kl_coef", -1.0),
    ("monitor.entropy_threshold", "monitor.entropy_threshold", -0.1),
    ("monitor.entropy_floor", "monitor.entropy_floor", -0.01),
    ("monitor.entropy_drop_frac", "monitor.entropy_drop_frac", 1.0),
    ("monitor.entropy_drop_frac", "monitor.entropy_drop_frac", 0.0),
    ("monitor.window", "monitor.window", 0),
]


def _set(cfg, path, value):
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)


@pytest.mark.parametrize(("key", "path", "value"), REJECTED, ids=[f"{k}={v}" for k, _, v in REJECTED])
def test_validate_rejects_naming_the_key(quickstart, key, path, value):
    cfg = copy.deepcopy(quickstart)
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")


ACCEPTED = [
    ("algo.cov.mode", "clip_cov"),
    ("algo.cov.mode", "kl_cov"),
    ("algo.cov.clip_frac", 1.0),
    ("algo.cov.clip_bound_high", 1.0),  # == clip_bound_low
    ("algo.cov.kl_coef", 0.0),
    ("monitor.entropy_threshold", 0.0),
    ("monitor.entropy_floor", None),
    ("monitor.entropy_drop_frac", None),
    ("monitor.window", 1),
]


@pytest.mark.parametrize(("path", "value"), ACCEPTED, ids=[f"{p}={v}" for p, v in ACCEPTED])
def test_validate_accepts_boundaries(quickstart, path, value):
    cfg = copy.deepcopy(quickstart)
    _set(cfg, path, value)
    validate(cfg)
