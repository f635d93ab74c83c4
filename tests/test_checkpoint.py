import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.checkpoint import (
    find_latest,
    load_state,
    remove_stale_writes,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rlvr.tiny_model import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return build_model(len(tok), tok.eos_token_id, tok.pad_token_id, seed=0), tok


def _names(root):
    return sorted(p.name for p in root.iterdir())


def test_save_writes_loadable_policy_state_and_latest(tmp_path, tiny):
    model, tok = tiny
    state = {"step": 3, "sampler": {"epoch": 1, "position": 4}, "optimizer": {"m": torch.arange(3.0)}}
    final = save_checkpoint(tmp_path, 3, model, tok, None, state, keep_last=2)

    root = tmp_path / "checkpoints"
    assert final == root / "step_000003"
    assert _names(root) == ["latest", "step_000003"]  # no .tmp-* left behind
    assert (root / "latest").read_text().strip() == "step_000003"
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "policy", "state.pt"]  # no reference

    loaded = AutoModelForCausalLM.from_pretrained(final / "policy")
    expected = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert (
        build_tokenizer()("1+2=")["input_ids"]
        == type(tok).from_pretrained(final / "policy")("1+2=")["input_ids"]
    )

    restored = load_state(final)
    assert restored["step"] == 3 and restored["sampler"] == {"epoch": 1, "position": 4}
    assert torch.equal(restored["optimizer"]["m"], torch.arange(3.0))
    assert find_latest(tmp_path) == final


def test_reference_is_saved_when_given(tmp_path, tiny):
    model, tok = tiny
    final = save_checkpoint(tmp_path, 1, model, tok, model, {}, keep_last=1)
    assert (final / "reference" / "config.json").is_file()


def test_keep_last_keeps_the_newest(tmp_path, tiny):
    model, tok = tiny
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tok, None, {"step": step}, keep_last=2)
    root = tmp_path / "checkpoints"
    assert _names(root) == ["latest", "step_000002", "step_000003"]
    assert (root / "latest").read_text().strip() == "step_000003"
    assert load_state(root / "step_000002")["step"] == 2


def test_find_latest_without_pointer_takes_newest_complete_dir(tmp_path):
    root = tmp_path / "checkpoints"
    assert find_latest(tmp_path) is None  # no checkpoints dir yet
    for name in ("step_000005", "step_000007", ".tmp-step_000009"):  # .tmp-*: a crash mid-write
        (root / name).mkdir(parents=True)
    assert find_latest(tmp_path) == root / "step_000007"
    assert remove_stale_writes(tmp_path) == [root / ".tmp-step_000009"]
    assert _names(root) == ["step_000005", "step_000007"]
    assert remove_stale_writes(tmp_path / "no-run") == []


@pytest.mark.parametrize("pointer", ["step_000008", ".tmp-step_000009", ""])  # missing, partial, empty
def test_find_latest_ignores_a_bad_pointer(tmp_path, pointer):
    root = tmp_path / "checkpoints"
    for name in ("step_000005", "step_000007", ".tmp-step_000009"):
        (root / name).mkdir(parents=True)
    (root / "latest").write_text(pointer + "\n")
    assert find_latest(tmp_path) == root / "step_000007"


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_checkpoint(tmp_path, tiny):
    model, tok = tiny
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _draws()  # move every generator off its seeded start
    final = save_checkpoint(tmp_path, 1, model, tok, None, {"rng": rng_state()}, keep_last=1)
    after_save = _draws()
    _draws()  # wander further
    set_rng_state(load_state(final)["rng"])
    after_restore = _draws()
    assert after_restore == after_save


def test_save_draws_no_progress_bar_and_leaves_transformers_bars_as_they_were(tmp_path, tiny, capsys):
    """transformers' "Writing model shards" bar, drawn by every save, would break the trainer's progress bar."""
    from transformers.utils import logging as hf_logging

    model, tok = tiny
    assert hf_logging.is_progress_bar_enabled()
    save_checkpoint(tmp_path, 1, model, tok, model, {"step": 1}, keep_last=1)
    assert "Writing model shards" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # other users of transformers keep their bars
