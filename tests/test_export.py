import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.checkpoint import save_checkpoint
from rlvr.cli.export import main


def test_export_latest_checkpoint_of_a_run(tmp_path, tiny_model, tokenizer):
    run = tmp_path / "run"
    save_checkpoint(run, 1, tiny_model, tokenizer, None, {"step": 1}, keep_last=2)
    with torch.no_grad():
        tiny_model.model.norm.weight.add_(1.0)  # step 2 differs from step 1
    save_checkpoint(run, 2, tiny_model, tokenizer, None, {"step": 2}, keep_last=2)

    assert main([str(run), str(tmp_path / "hf")]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    for (name, p), q in zip(tiny_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "hf")("12+3=")["input_ids"]
        == tokenizer("12+3=")["input_ids"]
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_errors(tmp_path, tiny_model, tokenizer, capsys):
    assert main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err
    ckpt = save_checkpoint(tmp_path / "run", 3, tiny_model, tokenizer, None, {}, keep_last=1)
    (tmp_path / "taken").mkdir()
    assert main([str(ckpt), str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["only-one"]])
def test_export_usage(argv):
    with pytest.raises(SystemExit):
        main(argv)
