"""Sharded checkpoints (trainer.checkpoint_format=sharded, rlvr/sharded_checkpoint.py) in one process: the layout,
the round trip of weights, Adam's state and the reference, the background write, a damaged shard, the export to a
Hugging Face directory, and what is refused. The 2-process run (a shard per rank, resumed in 1 and in 2 processes)
is tests/test_distributed.py's FSDP2 and DDP cases."""

import copy
import json
from unittest import mock

import pytest
import torch
from test_sharded import _adam, _step, assert_close_adam
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr import checkpoint, sharded_checkpoint
from rlvr.cli.eval import main as eval_main
from rlvr.cli.export import main as export_main
from rlvr.config import ConfigError
from rlvr.config_trainer import TrainerConfig, check_trainer
from rlvr.errors import CheckpointSaveError
from rlvr.hashing import file_sha256


def _trained(tiny_model):
    """The tiny model after one Adam step (its optimizer state filled), and the optimizer."""
    model = copy.deepcopy(tiny_model)
    optimizer = _adam(model)
    _step(model, optimizer)
    return model, optimizer


def _save(run, step, model, optimizer, tokenizer, reference=None, asynchronous=False, keep_last=2):
    writer = sharded_checkpoint.ShardWriter(run, tokenizer, keep_last, asynchronous)
    writer.save(step, model, optimizer, reference, {"step": step})
    writer.close()
    return run / "checkpoints" / checkpoint.step_name(step)


def test_sharded_checkpoint_round_trips_and_exports(tmp_path, tiny_model, tokenizer, capsys):
    """Layout, manifest; weights, Adam's moments and the reference back exactly in fresh modules; rlvr-export's
    Hugging Face directory holds the trained tensors and the tokenizer; rlvr-eval asks for that export."""
    model, optimizer = _trained(tiny_model)
    reference = copy.deepcopy(tiny_model)  # the base model: differs from the trained policy
    hashed = []  # what the commit's manifest read: not the shard, whose writer recorded its digest
    with mock.patch.object(
        checkpoint, "file_sha256", side_effect=lambda p: hashed.append(p) or file_sha256(p)
    ):
        saved = _save(tmp_path / "run", 1, model, optimizer, tokenizer, reference)
    assert hashed and not any(str(p).endswith(".distcp") for p in hashed)

    assert sorted(p.name for p in saved.iterdir()) == [
        "manifest.json",
        "policy_config",
        "sharded",
        "state.pt",
    ]
    assert sorted(p.name for p in (saved / "sharded").iterdir()) == [
        ".digests-0.json",
        ".metadata",
        "__0_0.distcp",
    ]
    listed = json.loads((saved / "manifest.json").read_text())["files"]
    assert listed["sharded/__0_0.distcp"]["sha256"] == file_sha256(saved / "sharded/__0_0.distcp")
    assert checkpoint.verify_checkpoint(saved) is None
    assert checkpoint.find_resumable(tmp_path / "run") == (saved, [])
    assert checkpoint.load_state(saved) == {"step": 1}

    fresh_model, fresh_reference = copy.deepcopy(tiny_model), copy.deepcopy(model)
    fresh_optimizer = _adam(fresh_model)
    sharded_checkpoint.load(saved, fresh_model, fresh_optimizer, fresh_reference)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor), name
        assert torch.equal(fresh_reference.state_dict()[name], reference.state_dict()[name]), name
    assert fresh_model.lm_head.weight is fresh_model.model.embed_tokens.weight  # still tied
    full = checkpoint.gather_full_state
    assert_close_adam(full(model, optimizer)[1], full(fresh_model, fresh_optimizer)[1], rel=0.0)

    assert export_main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert exported.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name
    assert exported.lm_head.weight is exported.model.embed_tokens.weight
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "hf")("12+3=")["input_ids"]
        == tokenizer("12+3=")["input_ids"]
    )
    assert eval_main([str(saved), "--data", str(tmp_path / "rows.jsonl")]) == 2  # rlvr-eval: export it first
    assert f"merge it first, rlvr-export {saved} OUT_DIR" in capsys.readouterr().err


def test_async_save_writes_the_state_of_its_step_and_commits_by_close(tmp_path, tiny_model, tokenizer):
    """The background write holds the weights as they were at save (copied first), not as training changed
    them since; the checkpoint is committed (manifest, `latest`) by close at the latest; keep_last applies."""
    model, optimizer = _trained(tiny_model)
    at_save = {k: v.clone() for k, v in model.state_dict().items()}
    writer = sharded_checkpoint.ShardWriter(tmp_path, tokenizer, 1, asynchronous=True)
    writer.save(1, model, optimizer, None, {"step": 1})
    _step(model, optimizer)  # training goes on while the shards are written
    writer.save(2, model, optimizer, None, {"step": 2})  # waits for step 1's write and commit first
    writer.close()
    latest = checkpoint.find_latest(tmp_path)
    assert latest.name == "step_000002" and checkpoint.verify_checkpoint(latest) is None
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name != "latest"] == ["step_000002"]
    weights = sharded_checkpoint.read_full(latest)
    changed = [k for k in weights if not torch.equal(weights[k], at_save[k])]
    assert changed and all(torch.equal(weights[k], model.state_dict()[k]) for k in weights)


def test_damaged_shard_fails_verify_and_resume_falls_back(tmp_path, tiny_model, tokenizer):
    model, optimizer = _trained(tiny_model)
    run = tmp_path / "run"
    first = _save(run, 1, model, optimizer, tokenizer)
    second = _save(run, 2, model, optimizer, tokenizer)
    shard = second / "sharded" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-10])  # a truncated copy
    assert checkpoint.verify_checkpoint(second) == f"{shard} has {shard.stat().st_size} bytes, " + (
        f"{shard.stat().st_size + 10} were written"
    )
    assert checkpoint.find_resumable(run) == (first, [(second, checkpoint.verify_checkpoint(second))])


def test_fresh_optimizer_is_saved_and_loaded_fresh(tmp_path, tiny_model, tokenizer):
    """An empty Adam state (e.g. just reset with the reference) comes back empty, not as the zeros of the zero-lr
    step torch takes to learn its layout (a resume would count it as Adam's first step)."""
    model = copy.deepcopy(tiny_model)
    optimizer = _adam(model)
    saved = _save(tmp_path, 1, model, optimizer, tokenizer)
    assert not optimizer.state
    loaded_model, fresh_model = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    loaded = _adam(loaded_model)
    sharded_checkpoint.load(saved, loaded_model, loaded)
    assert not loaded.state
    _step(fresh_model, _adam(fresh_model))
    _step(loaded_model, loaded)
    for name, tensor in fresh_model.state_dict().items():
        assert torch.equal(loaded_model.state_dict()[name], tensor), name


def test_a_failed_write_raises_one_line_and_leaves_no_temp_dir(tmp_path, tiny_model, tokenizer):
    model, optimizer = _trained(tiny_model)
    (tmp_path / "checkpoints").write_text("a file where the checkpoints dir should be")
    with pytest.raises(CheckpointSaveError, match="could not write checkpoint step_000001 .* is intact"):
        _save(tmp_path, 1, model, optimizer, tokenizer)


def test_sharded_config_and_zero3_are_checked_naming_the_key(tmp_path):
    check_trainer(TrainerConfig(checkpoint_format="sharded", checkpoint_async=True))
    with pytest.raises(ConfigError, match="trainer.checkpoint_format: 'dcp' is not one of 'full', 'sharded'"):
        check_trainer(TrainerConfig(checkpoint_format="dcp"))
    with pytest.raises(
        ConfigError, match="trainer.checkpoint_async: needs trainer.checkpoint_format=sharded"
    ):
        check_trainer(TrainerConfig(checkpoint_async=True))
    sharded_checkpoint.check_supported("FSDP2", "sharded", None)
    with pytest.raises(ConfigError, match="trainer.checkpoint_format: sharded checkpoints are not supported"):
        sharded_checkpoint.check_supported("ZeRO-3", "sharded", None)
    (tmp_path / "sharded").mkdir()
    with pytest.raises(
        ConfigError, match="trainer.resume: .* is a sharded checkpoint, which DeepSpeed ZeRO-3"
    ):
        sharded_checkpoint.check_supported("ZeRO-3", "full", tmp_path)
