"""The embedded default model: a byte-level tokenizer and a small Qwen2 model, warm-started on the synthetic task.

No model can be downloaded here, so the project builds its own. `build_tiny_assets(out_dir)` writes

    out_dir/model/        a Hugging Face model dir (config.json, model.safetensors, tokenizer files)
    out_dir/train.jsonl   the train split of two-digit addition
    out_dir/eval.jsonl    the disjoint held-out split
    out_dir/build.json    how it was built, the held-out accuracy it starts RL with, the weights' sha256

The warm start is a supervised phase on a noisy teacher (see rlvr.data.synthetic), stopped when the model answers
correctly a fifth of the time at temperature 1, so that a group of G answers holds both outcomes and RL has signal
from step 0.

The same recipe and seed give a different model on another CPU (thousands of steps amplify float rounding), so
one build is shipped in the repo (SHIPPED, 1.3 MB, made by scripts/build_tiny_model.py --ship) and
`install_tiny_assets` copies it where the config points: every machine starts RL from the same weights. A
rebuild (scripts/build_tiny_model.py) is optional; its calibrated stop puts it near the same accuracy.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
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
RECIPE = 3
# Where the warm start stops: held-out accuracy at temperature 1 (see build_tiny_assets).
TARGET_ACCURACY = 0.20
# The model shipped in the repo, built by scripts/build_tiny_model.py with these defaults, with its build.json.
SHIPPED = Path(__file__).parent / "assets" / "tiny-addition"


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


def _batch(seqs: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], completion [N, T]) from `_sequence`s: right-padded (a causal model never sees the padding
    after a sequence), `completion` True at each completion token."""
    width = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), width), pad_id)
    completion = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, (s, n_prompt) in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        completion[i, n_prompt : len(s)] = True
    return x, completion


@torch.no_grad()
def expected_accuracy(model, tokenizer, problems: list[tuple[int, int]]) -> float:
    """Mean probability of sampling exactly the right completion at temperature 1 (exact, by teacher forcing)."""
    model.eval()
    x, completion = _batch([_sequence(tokenizer, a, b, a + b) for a, b in problems], tokenizer.pad_token_id)
    logp = F.log_softmax(model(x).logits[:, :-1].double(), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return logp.masked_fill(~completion[:, 1:], 0.0).sum(-1).exp().mean().item()


def warm_start(
    model,
    tokenizer,
    train: list[tuple[int, int]],
    max_steps: int,
    p_correct: float,
    seed: int,
    done=None,
    check_every: int = 250,
) -> int:
    """Supervised phase on the noisy teacher, loss on completion tokens only, lr warmed up over 100 steps then
    cosine-decayed over `max_steps`. With `done(model) -> bool`, asked every `check_every` steps, it stops at the
    first check that holds. Returns the steps taken."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(max_steps):
        model.train()
        seqs = [
            _sequence(tokenizer, a, b, synthetic.teacher_answer(a, b, rng, p_correct))
            for a, b in rng.choices(train, k=64)
        ]
        x, completion = _batch(seqs, tokenizer.pad_token_id)
        loss_mask = completion.float()
        logits = model(x).logits[:, :-1]
        token_loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        loss = (token_loss * loss_mask[:, 1:]).sum() / loss_mask[:, 1:].sum()
        lr = 3e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / max_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if done is not None and (step + 1) % check_every == 0 and done(model):
            return step + 1
    return max_steps


def assets_current(out_dir: str | Path) -> bool:
    """Whether out_dir holds a complete build of this RECIPE (its model dir and a build.json that names it)."""
    out = Path(out_dir)
    try:
        info = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "model").is_dir() and info.get("recipe") == RECIPE


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_assets(out: Path, write_model, info: dict, data: bool = True) -> Path:
    """The data splits (with `data`), then the model dir (written by `write_model(dir)` aside and renamed into
    place), then build.json last: a directory with a current build.json is complete."""
    if data:
        train, held_out = synthetic.addition_splits()
        synthetic.write_jsonl(train, out / "train.jsonl")
        synthetic.write_jsonl(held_out, out / "eval.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp)
    (out / "build.json").unlink(missing_ok=True)  # until the new one is written, the assets are not current
    if (out / "model").exists():  # another recipe's: moved aside, then removed
        (out / "model").replace(out / "model.old")
        shutil.rmtree(out / "model.old")
    tmp.replace(out / "model")  # the model dir appears complete or not at all
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / "model"


def install_tiny_assets(out_dir: str | Path) -> Path:
    """The shipped model (SHIPPED, built once by build_tiny_assets and kept in the repo with its build.json)
    and the data splits, written into out_dir: the same weights on every machine, in a second."""
    info = {**json.loads((SHIPPED / "build.json").read_text()), "installed_from": "shipped"}
    return _write_assets(Path(out_dir), lambda tmp: shutil.copytree(SHIPPED / "model", tmp), info)


def build_tiny_assets(
    out_dir: str | Path,
    max_sft_steps: int = 10_000,
    target_accuracy: float | None = TARGET_ACCURACY,
    p_correct: float = 0.35,
    seed: int = 0,
    check_every: int = 250,
    data: bool = True,
) -> Path:
    """Build the tokenizer, warm-started model and data splits into out_dir (see module docstring).

    The warm start is calibrated: it stops at the first check (every `check_every` steps) where the held-out
    accuracy at temperature 1 reaches `target_accuracy`, so that RL starts from the same accuracy on every
    machine whatever its float rounding (3,000 fixed steps gave 0.106 on an AMD EPYC, 0.19 on an Intel Xeon).
    With `target_accuracy=None` it runs all `max_sft_steps`. Without `data`, only the model and build.json (the
    shipped copy: the splits are written wherever it is installed)."""
    out = Path(out_dir)
    started = time.time()
    train, held_out = synthetic.addition_splits()
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    done = None
    if target_accuracy is not None:
        done = lambda m: expected_accuracy(m, tokenizer, held_out) >= target_accuracy  # noqa: E731
    steps = warm_start(model, tokenizer, train, max_sft_steps, p_correct, seed, done, check_every)
    accuracy = expected_accuracy(model, tokenizer, held_out)
    if target_accuracy is not None and accuracy < target_accuracy:
        raise RuntimeError(
            f"the warm start reached held-out accuracy {accuracy:.3f} in {max_sft_steps} steps, short of "
            f"target_accuracy {target_accuracy}: raise max_sft_steps"
        )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def write_model(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info["model_sha256"] = file_sha256(tmp / "model.safetensors")

    info = {
        "recipe": RECIPE,
        "task": "two-digit addition, noisy teacher",
        "p_correct": p_correct,
        "seed": seed,
        "target_accuracy": target_accuracy,
        "max_sft_steps": max_sft_steps,
        "check_every": check_every,
        "sft_steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_expected_accuracy_t1": round(accuracy, 4),
        "built_on": f"{_cpu_name()}, torch {torch.__version__}",
        "build_seconds": round(time.time() - started, 1),
    }
    return _write_assets(out, write_model, info, data)
