"""Prompt token ids are tokenized once per machine and read back by every later process with the same prompts,
tokenizer files and prompt settings (rlvr/data/token_cache.py)."""

import multiprocessing
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlvr.config import DataConfig
from rlvr.data import token_cache
from rlvr.data.prompts import Problem, encode_prompts
from rlvr.tiny_model import build_tokenizer


class Counting:
    """A tokenizer that counts the prompts it is given."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0
        self.name_or_path = tok.name_or_path

    def __call__(self, text, **kw):
        self.calls += 1
        return self.tok(text, **kw)

    @property
    def chat_template(self):
        return self.tok.chat_template

    def apply_chat_template(self, messages, **kw):
        self.calls += 1
        return self.tok.apply_chat_template(messages, **kw)


@pytest.fixture
def tok_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE_DIR", str(tmp_path / "cache"))
    build_tokenizer().save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


PROBLEMS = [Problem(f"{a}+{a}=", str(2 * a), f"f: row {a}") for a in range(10, 30)] + [
    Problem("9" * 40, "9", "f: row 99")
]


def _encode(tok_dir, chat_template=None, **kw):
    tok = Counting(AutoTokenizer.from_pretrained(tok_dir))
    if chat_template is not None:
        tok.tok.chat_template = chat_template  # set after loading, as a user's script may
    cfg = DataConfig(max_prompt_tokens=kw.pop("max_prompt_tokens", 20), overlong_prompts="skip", **kw)
    kept, ids = encode_prompts(tok, PROBLEMS, cfg, "data.train_files")
    return tok.calls, kept, ids


def test_a_second_encode_reads_the_cache_and_any_change_that_matters_tokenizes_again(tok_dir, caplog):
    calls, kept, ids = _encode(tok_dir)
    assert (
        calls == 21 and len(kept) == 20 and kept[-1].origin == "f: row 29"
    )  # the 40-token prompt is skipped
    assert ids[0] == AutoTokenizer.from_pretrained(tok_dir)("10+10=", add_special_tokens=False)["input_ids"]
    with caplog.at_level("INFO"):
        again = _encode(tok_dir)
    assert again == (0, kept, ids)
    assert "read 20 prompts from" in caplog.text and "skipped 1 prompt(s)" in caplog.text  # still reported
    assert _encode(tok_dir, max_prompt_tokens=64)[0] == 21  # a setting that decides the ids
    assert _encode(tok_dir, system_prompt="Add.")[0] == 21
    assert _encode(tok_dir, token_cache=False)[0] == 21
    chat = {"use_chat_template": True, "max_prompt_tokens": 64}
    marked = _encode(tok_dir, chat_template="<u>{{ messages[0].content }}", **chat)
    bare = _encode(tok_dir, chat_template="{{ messages[0].content }}", **chat)
    assert marked[0] == bare[0] == 21  # a template set after loading is part of the key
    assert len(marked[2][0]) == len(ids[0]) + 3 and marked[2][0][3:] == ids[0]  # "<u>": 3 byte tokens
    assert bare[2][:20] == ids
    (tok_dir / "tokenizer_config.json").write_text(
        (tok_dir / "tokenizer_config.json").read_text().replace("}", ', "rlvr_test": 1}', 1)
    )
    assert _encode(tok_dir)[0] == 21  # the tokenizer's files changed
    assert _encode(tok_dir)[0] == 0


def test_a_damaged_cache_file_is_rebuilt(tok_dir, caplog):
    _encode(tok_dir)
    (cached,) = token_cache.cache_dir().glob("*.safetensors")
    cached.write_bytes(b"not safetensors")
    with caplog.at_level("WARNING"):
        calls, kept, ids = _encode(tok_dir)
    assert calls == 21 and "is unreadable" in caplog.text
    assert _encode(tok_dir) == (0, kept, ids)


def _build_slowly(root, log):
    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        return [0, 2], [[1, 2, 3], [4]]

    return token_cache.load_or_build(root, "k" * 64, build)


def test_concurrent_processes_on_one_machine_build_once(tmp_path):
    """Every rank of a run asks at once; the first takes the lock and builds, the rest wait and read."""
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.starmap(_build_slowly, [(tmp_path, tmp_path / "log")] * 3)
    assert (tmp_path / "log").read_text() == "built\n"
    assert results == [([0, 2], [[1, 2, 3], [4]])] * 3
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_build_writes_nothing(tmp_path):
    def fail():
        raise ValueError("row 3: too long")

    with pytest.raises(ValueError, match="row 3"):
        token_cache.load_or_build(tmp_path, "f" * 64, fail)
    assert not list(tmp_path.glob("*.safetensors"))


def test_an_unusable_cache_costs_only_the_saving(tmp_path, caplog, monkeypatch):
    """A cache dir that cannot be made, and a full disk at the write: the ids are built and used, the reason
    logged, nothing raised, nothing left behind."""
    (tmp_path / "file").write_text("not a directory")
    built = ([0], [[5, 6]])
    with caplog.at_level("WARNING"):
        assert (
            token_cache.load_or_build(tmp_path / "file" / "prompt_tokens", "a" * 64, lambda: built) == built
        )
    assert "cannot be used" in caplog.text

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with caplog.at_level("WARNING"):
        assert token_cache.load_or_build(tmp_path / "full", "b" * 64, lambda: built) == built
    assert "not written (" in caplog.text and "No space left on device" in caplog.text
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["b" * 64 + ".lock"]
