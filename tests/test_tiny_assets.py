"""The embedded tiny model's cache: assets built by another recipe are rebuilt, not silently reused."""

import json

import torch
from safetensors.torch import load_file

from rlvr import tiny_model
from rlvr.config import RLVRConfig
from rlvr.tiny_model import RECIPE, assets_current, build_tiny_assets
from rlvr.trainer import ensure_builtin_assets


def _set_recipe(out, recipe) -> None:
    info = json.loads((out / "build.json").read_text())
    info["recipe"] = recipe
    (out / "build.json").write_text(json.dumps(info))


def test_a_build_of_another_recipe_is_replaced(tmp_path):
    out = tmp_path / "tiny-addition"
    build_tiny_assets(out, sft_steps=2)
    assert assets_current(out) and json.loads((out / "build.json").read_text())["recipe"] == RECIPE
    before = load_file(out / "model" / "model.safetensors")
    _set_recipe(out, RECIPE - 1)
    assert not assets_current(out)
    build_tiny_assets(out, sft_steps=6)  # over the stale build
    assert assets_current(out) and not (out / "model.old").exists()
    after = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    (out / "build.json").unlink()  # a build that stopped before its build.json is not current either
    assert not assets_current(out)


def test_ensure_builtin_assets_rebuilds_only_another_recipe(tmp_path, monkeypatch):
    out = tmp_path / "tiny-addition"
    build_tiny_assets(out, sft_steps=2)
    calls = []
    monkeypatch.setattr(tiny_model, "build_tiny_assets", lambda root: calls.append(root) or root / "model")
    cfg = RLVRConfig()
    cfg.model.builtin, cfg.model.path = "tiny-addition", str(out / "model")
    ensure_builtin_assets(cfg)
    assert calls == []  # current: reused
    _set_recipe(out, None)  # as a build.json from before recipes were recorded
    ensure_builtin_assets(cfg)
    assert calls == [out]
