import pytest
import torch

from rlvr.tiny_model import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer):
    """A randomly initialised tiny Qwen2 model (float32, CPU)."""
    torch.manual_seed(0)
    return build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
