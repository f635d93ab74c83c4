"""The embedded default model: a byte-level tokenizer and a small Qwen2 model, warm-started on the synthetic task.

No model can be downloaded here, so the project builds its own. `build_tiny_assets(out_dir)` writes

    out_dir/model/        a Hugging Face model dir (config.json, model.safetensors, tokenizer files)
    out_dir/train.jsonl   the train split of two-digit addition
    out_dir/eval.jsonl    the disjoint held-out split
    out_dir/build.json    how it was built and the held-out accuracy it starts RL with

The warm start is a short supervised phase on a noisy teacher (see rlvr.data.synthetic), so that at
temperature 1 the model answers correctly about a quarter of the time and RL has signal from step 0.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rlvr.data import synthetic

EOS, PAD, BOXED = "<|endoftext|>", "<|pad|>", "\\boxed{"
# Bump when the build recipe (task, tokenizer, model shape, warm start, defaults) changes: assets built by another
# recipe are rebuilt instead of silently reused (a cache built by a 1,500-step warm start once sat under a
# 3,000-step default and started RL at 0.08 instead of 0.19).
RECIPE = 2


def build_tokenizer():
    """Byte-level tokenizer with no merges (one token per byte) plus EOS, PAD and `\\boxed{` as one token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(PAD, special=True)])
    tok.add_tokens([AddedToken(BOXED, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=128)


def build_model(vocab_size: int, eos_id: int, pad_id: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def _sequence(tokenizer, a: int, b: int, answer: int) -> tuple[list[int], int]:
    prompt = tokenizer(synthetic.question(a, b), add_special_tokens=False)["input_ids"]
    target = tokenizer(synthetic.completion(answer), add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    return prompt + target, len(prompt)


@torch.no_grad()
def expected_accuracy(model, tokenizer, problems: list[tuple[int, int]]) -> float:
    """Mean probability of sampling exactly the right completion at temperature 1 (exact, by teacher forcing)."""
    model.eval()
    total = 0.0
    for a, b in problems:
        ids, n_prompt = _sequence(tokenizer, a, b, a + b)
        x = torch.tensor([ids])
        logp = F.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
        target = x[0, 1:]
        total += math.exp(logp[n_prompt - 1 :].gather(-1, target[n_prompt - 1 :, None]).sum().item())
    return total / len(problems)


def warm_start(
    model, tokenizer, train: list[tuple[int, int]], steps: int, p_correct: float, seed: int
) -> None:
    """Supervised phase on the noisy teacher; loss on completion tokens only."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    for step in range(steps):
        seqs = [
            _sequence(tokenizer, a, b, synthetic.teacher_answer(a, b, rng, p_correct))
            for a, b in rng.choices(train, k=64)
        ]
        width = max(len(s) for s, _ in seqs)
        x = torch.full((len(seqs), width), tokenizer.pad_token_id)
        loss_mask = torch.zeros(len(seqs), width)
        for i, (s, n_prompt) in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
            loss_mask[i, n_prompt : len(s)] = 1.0
        logits = model(x).logits[:, :-1]
        token_loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        loss = (token_loss * loss_mask[:, 1:]).sum() / loss_mask[:, 1:].sum()
        lr = 3e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def assets_current(out_dir: str | Path) -> bool:
    """Whether out_dir holds a complete build of this RECIPE (its model dir and a build.json that names it)."""
    out = Path(out_dir)
    try:
        info = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "model").is_dir() and info.get("recipe") == RECIPE


def build_tiny_assets(
    out_dir: str | Path, sft_steps: int = 3000, p_correct: float = 0.35, seed: int = 0
) -> Path:
    """Write the tokenizer, warm-started model and data splits into out_dir (see module docstring)."""
    out = Path(out_dir)
    started = time.time()
    train, held_out = synthetic.addition_splits()
    synthetic.write_jsonl(train, out / "train.jsonl")
    synthetic.write_jsonl(held_out, out / "eval.jsonl")
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    warm_start(model, tokenizer, train, sft_steps, p_correct, seed)
    accuracy = expected_accuracy(model, tokenizer, held_out)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out / "model.tmp"
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (out / "build.json").unlink(missing_ok=True)  # until the new one is written, the build is not current
    if (out / "model").exists():  # another recipe's: moved aside, then removed
        (out / "model").replace(out / "model.old")
        shutil.rmtree(out / "model.old")
    tmp.replace(out / "model")  # the model dir appears complete or not at all
    info = {
        "recipe": RECIPE,
        "task": "two-digit addition, noisy teacher",
        "sft_steps": sft_steps,
        "p_correct": p_correct,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_expected_accuracy_t1": round(accuracy, 4),
        "build_seconds": round(time.time() - started, 1),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / "model"
