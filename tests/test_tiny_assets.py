"""The embedded tiny model: the shipped copy is the model its build.json describes, it is installed on first use,
a rebuild stops at its target accuracy, and assets of another recipe are replaced, not silently reused."""

import json

import pytest
import torch
from margins import within
from safetensors.torch import load_file

from rlvr import tiny_model
from rlvr.config import ConfigError, RLVRConfig
from rlvr.data import synthetic
from rlvr.hashing import file_sha256
from rlvr.tiny_model import (
    RECIPE,
    SHIPPED,
    TASKS,
    assets_current,
    build_tiny_assets,
    expected_accuracy,
)
from rlvr.trainer import ensure_builtin_assets


def _set_recipe(out, recipe) -> None:
    info = json.loads((out / "build.json").read_text())
    info["recipe"] = recipe
    (out / "build.json").write_text(json.dumps(info))


def _cfg(model_dir) -> RLVRConfig:
    cfg = RLVRConfig()
    cfg.model.builtin, cfg.model.path = "tiny-addition", str(model_dir)
    return cfg


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_shipped_model_is_the_one_its_build_json_describes(name):
    """Same bytes, this recipe, the calibrated stop, and (computed again on this CPU) the held-out accuracy it
    recorded, to the 4 digits build.json keeps (5e-5; another CPU's float rounding adds ~1e-6): bound 1e-3, where
    the models of other warm-start lengths differ by 1e-2 and more."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = TASKS[name]
    info = json.loads((task.shipped / "build.json").read_text())
    assert info["builtin"] == name and info["recipe"] == task.recipe
    assert info["target_accuracy"] == task.target_accuracy
    assert file_sha256(task.shipped / "model" / "model.safetensors") == info["model_sha256"]
    if task.target_accuracy is None:  # a fixed-length warm start (the fork task's two phases)
        assert info["sft_steps"] == info["max_sft_steps"]
    else:  # the calibrated stop, at a check
        assert info["sft_steps"] % info["check_every"] == 0 and info["sft_steps"] < info["max_sft_steps"]
    model = AutoModelForCausalLM.from_pretrained(task.shipped / "model")
    assert model.config.num_hidden_layers == task.num_layers
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    accuracy = expected_accuracy(
        model, AutoTokenizer.from_pretrained(task.shipped / "model"), task.splits()[1], task
    )
    if task.target_accuracy is not None:
        assert task.target_accuracy <= accuracy < 0.3  # stopped at the first check past the target
    within(
        abs(accuracy - info["heldout_expected_accuracy_t1"]), 1e-3, f"{name}: held-out accuracy vs build.json"
    )


def test_first_use_installs_the_shipped_model_and_the_data(tmp_path):
    out = tmp_path / "tiny-addition"
    ensure_builtin_assets(_cfg(out / "model"))
    assert assets_current(out)
    assert file_sha256(out / "model" / "model.safetensors") == file_sha256(
        SHIPPED / "model" / "model.safetensors"
    )
    info = json.loads((out / "build.json").read_text())
    assert info["installed_from"] == "shipped" and info["recipe"] == RECIPE
    train, held_out = synthetic.addition_splits()
    assert len((out / "train.jsonl").read_text().splitlines()) == len(train)
    assert len((out / "eval.jsonl").read_text().splitlines()) == len(held_out)
    with pytest.raises(ConfigError, match="model.path"):
        ensure_builtin_assets(_cfg(tmp_path / "elsewhere" / "weights"))


def test_a_rebuild_stops_at_its_target_accuracy(tmp_path):
    out = tmp_path / "tiny-addition"
    build_tiny_assets(out, max_sft_steps=2000, target_accuracy=0.02, check_every=50)
    info = json.loads((out / "build.json").read_text())
    assert info["sft_steps"] < 2000 and info["sft_steps"] % 50 == 0
    assert info["heldout_expected_accuracy_t1"] >= 0.02
    assert file_sha256(out / "model" / "model.safetensors") == info["model_sha256"]
    with pytest.raises(RuntimeError, match="raise max_sft_steps"):
        build_tiny_assets(tmp_path / "short", max_sft_steps=10, target_accuracy=0.5, check_every=5)


def test_a_build_of_another_recipe_is_replaced(tmp_path):
    out = tmp_path / "tiny-addition"
    build_tiny_assets(out, max_sft_steps=2, target_accuracy=None)
    assert assets_current(out) and json.loads((out / "build.json").read_text())["recipe"] == RECIPE
    before = load_file(out / "model" / "model.safetensors")
    _set_recipe(out, RECIPE - 1)
    assert not assets_current(out)
    build_tiny_assets(out, max_sft_steps=6, target_accuracy=None)  # over the stale build
    assert assets_current(out) and not (out / "model.old").exists()
    after = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    (out / "build.json").unlink()  # a build that stopped before its build.json is not current either
    assert not assets_current(out)


def test_ensure_builtin_assets_replaces_only_another_recipe(tmp_path, monkeypatch):
    out = tmp_path / "tiny-addition"
    build_tiny_assets(out, max_sft_steps=2, target_accuracy=None)
    calls = []
    monkeypatch.setattr(
        tiny_model, "install_tiny_assets", lambda root, task: calls.append(root) or root / "model"
    )
    ensure_builtin_assets(_cfg(out / "model"))
    assert calls == []  # current (a rebuild of this recipe): kept
    _set_recipe(out, None)  # as a build.json from before recipes were recorded
    ensure_builtin_assets(_cfg(out / "model"))
    assert calls == [out]
