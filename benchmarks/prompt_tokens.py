"""Prompt tokenization: the first process on a machine, against every later one (rlvr/data/token_cache.py).

    python benchmarks/prompt_tokens.py --prompts 17398 --chars 400 --vocab 32000 --seed 0

A DAPO-Math-17k-sized set of chat prompts (one user message each, --chars characters of math-like text) goes
through `encode_prompts` with a byte-level BPE tokenizer trained here on the same text (--vocab tokens: no hub)
and a Qwen-style chat template, three times: with the cache off, into an empty cache (tokenize and write), and
from the cache (read). Prints one JSON object with the seconds of each and the cache file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _prompts(n: int, chars: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["Let", "x", "be", "the", "sum", "of", "all", "integers", "such", "that", "\\frac{1}{2}", "find",
             "the remainder", "when", "is divided by", "1000", "$", "triangle", "ABC", "with", "AB=13", "^2"]  # fmt: skip
    out = []
    for i in range(n):
        text = f"Problem {i}: "
        while len(text) < chars:
            text += rng.choice(words) + " "
        out.append(text[:chars])
    return out


def _tokenizer(texts: list[str], vocab: int, where: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(where)
    return where


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=17398)
    p.add_argument("--chars", type=int, default=400)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=0, help="draws the prompts' words")
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()

    from transformers import AutoTokenizer

    from rlvr.config import DataConfig
    from rlvr.data import token_cache
    from rlvr.data.prompts import Problem, encode_prompts

    texts = _prompts(args.prompts, args.chars, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLVR_CACHE_DIR"] = str(Path(tmp) / "cache")
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer(texts, args.vocab, Path(tmp) / "tok"))
        problems = [Problem(t, "1", f"row {i}", messages=(("user", t),)) for i, t in enumerate(texts)]
        result: dict[str, object] = {"seed": args.seed, "prompts": len(problems), "vocab": len(tokenizer)}
        ids = {}
        for name, cached in (("no_cache_s", False), ("first_s", True), ("cached_s", True)):
            cfg = DataConfig(prompt_key="prompt", max_prompt_tokens=4096, token_cache=cached)
            start = time.perf_counter()
            _, ids[name] = encode_prompts(tokenizer, problems, cfg)
            result[name] = round(time.perf_counter() - start, 3)
        assert ids["no_cache_s"] == ids["first_s"] == ids["cached_s"]
        result["tokens"] = sum(len(x) for x in ids["cached_s"])
        (file,) = token_cache.cache_dir().glob("*.safetensors")
        result["cache_mib"] = round(file.stat().st_size / 2**20, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
