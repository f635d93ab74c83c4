"""Learner throughput: time `rlvr.learner.Learner.update` (forward, loss, backward, optimizer step) on a
synthetic rollout batch, for randomly initialised Qwen2 models of named shapes.

    python benchmarks/learner_throughput.py [--shapes tiny,qwen2-24m] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--seqs 16] [--prompt-len 64] [--response-len 128] [--min-response-len N]
        [--gradient-checkpointing] [--attn-implementation sdpa] [--warmup 1] [--repeats 3] [--peak-tflops 989]
        [learner.* flags: --micro-batch-size 8 --max-tokens-per-microbatch N --pack --compile ...]

The model and the Learner are built as rlvr/trainer.py builds them: float32 weights, and for bfloat16 an
accelerate Accelerator with bf16 mixed precision (autocast; the optimizer keeps fp32 master weights); the
default algorithm (GRPO, one PPO epoch, one mini-batch, no KL reference; the batch is one group of --seqs
answers, so any --seqs works), so an update is exactly one forward
and one backward per sequence. The batch: --seqs rows of --prompt-len random prompt tokens and a random
response of --response-len tokens (or of a length drawn uniformly from [--min-response-len, --response-len]),
right-padded. Every LearnerConfig field is a flag (made from the dataclass, so new learner options appear here
by themselves). --warmup untimed updates (default 1), then --repeats timed ones; the table reports the median.

Columns: learner tokens/s counts every real token in the forward passes (prompt + response; padding excluded),
as the trainer's `throughput/learner_tokens_per_s` does; response tokens/s counts the tokens in the loss.

MFU = model FLOPs per update / median update time / --peak-tflops (989: H100 SXM, bf16 dense). Model FLOPs,
with N the non-embedding parameters (the decoder layers and final norm), V·H the LM head, L layers, H hidden
size, and len_i the length of sequence i:

    6·N·(all tokens) + 6·V·H·(response tokens) + 12·L·H·Σ_i len_i²

6 = 2 (multiply-add) × 3 (forward + backward). The LM head is counted only for the response tokens because
the learner forms logits only there. The attention term is PaLM's 12·L·H·seq per token (the QKᵀ and AV
matmuls, not halved for the causal mask), summed over each sequence's tokens. Recomputation (gradient
checkpointing, the LM-head chunks' backward) and padding are work the hardware does but the model does not
need, so they lower MFU. On CPU MFU is printed as "-" (no meaningful peak).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import resource
import statistics
import time

import torch
from rollout_throughput import (  # benchmarks/ is on sys.path when this file runs as a script
    MODELS,
    machine,
    qwen2_shape,
    random_qwen2,
)

from rlvr.config import (
    AlgoConfig,
    ConfigError,
    DataConfig,
    LearnerConfig,
    ModelConfig,
    OptimConfig,
    RLVRConfig,
    validate,
)
from rlvr.learner import Learner, RolloutBatch
from rlvr.tiny_model import build_tokenizer

QWEN25_VOCAB = 151936
# name -> Qwen2 shape overrides (None: the embedded tiny model's shape); no vocab_size: the tiny tokenizer's
SHAPES: dict[str, dict | None] = {
    **MODELS,
    "qwen2.5-0.5b": qwen2_shape(hidden=896, layers=24, heads=14, intermediate=4864, vocab_size=QWEN25_VOCAB),
    "qwen2.5-1.5b": qwen2_shape(hidden=1536, layers=28, heads=12, intermediate=8960, vocab_size=QWEN25_VOCAB),
}


def build(name: str, tokenizer, max_len: int, device: str, attn_implementation: str):
    """Randomly initialised (seed 0) float32 Qwen2 of shape `name`, created on `device`, tied embeddings."""
    with torch.device(device):  # initialise on the GPU: a 1.5B model's random init is slow on CPU
        model = random_qwen2(SHAPES[name], tokenizer, max_len)
    model.set_attn_implementation(attn_implementation)
    return model


def synthetic_batch(
    n: int, prompt_len: int, min_response: int, max_response: int, vocab: int, pad_id: int, seed: int = 0
) -> RolloutBatch:
    """n right-padded rows [n, prompt_len + max_response]: random prompt and response tokens, response lengths
    uniform in [min_response, max_response], advantages ~ N(0, 1), zero rollout logprobs."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_response, max_response + 1, (n,), generator=g)
    width = prompt_len + max_response
    pos = torch.arange(width)
    attention = pos < prompt_len + lengths[:, None]
    ids = torch.randint(0, vocab, (n, width), generator=g).masked_fill(~attention, pad_id)
    response = attention & (pos >= prompt_len)
    return RolloutBatch(ids, attention.long(), response, torch.randn(n, generator=g), torch.zeros(n, width))


def update_flops(model, batch: RolloutBatch) -> float:
    """Model FLOPs of one update (one forward + backward over the batch): the module docstring's formula."""
    cfg = model.config
    head = cfg.vocab_size * cfg.hidden_size
    body = (
        sum(p.numel() for p in model.get_decoder().parameters()) - model.get_input_embeddings().weight.numel()
    )
    lengths = batch.attention_mask.sum(-1).double()
    tokens, responses = float(lengths.sum()), float(batch.response_mask.sum())
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths**2).sum())
    return 6 * body * tokens + 6 * head * responses + attention


def time_updates(
    learner: Learner, batch: RolloutBatch, warmup: int, repeats: int, cuda: bool
) -> tuple[list[float], dict]:
    """Seconds of `repeats` updates, after `warmup` untimed ones (first-call costs: allocator, Adam state),
    and the last update's metrics."""
    times = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        metrics = learner.update(batch, seed=i).metrics
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times, metrics


def add_learner_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per LearnerConfig field (--micro-batch-size, --max-tokens-per-microbatch, --pack, ...),
    defaulting to rlvr's, so the benchmark drives whatever options this version of the learner has."""
    group = parser.add_argument_group("learner.* (rlvr.config.LearnerConfig; defaults are rlvr's)")
    for f in dataclasses.fields(LearnerConfig):
        flag, help_ = "--" + f.name.replace("_", "-"), f"learner.{f.name} (default {f.default})"
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:  # annotations are strings here: "int", "int | None", ...
            kind = next(t for t in (int, float, str) if t.__name__ in f.type)
            group.add_argument(flag, type=kind, default=f.default, help=help_)


def learner_config(args, parser: argparse.ArgumentParser) -> LearnerConfig:
    """The LearnerConfig of the flags, checked by rlvr.config.validate (whose message names the key)."""
    cfg = LearnerConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LearnerConfig)})
    # the batch is synthetic: a placeholder for the training rows validate requires of a run
    rows = DataConfig(train_files=["<synthetic batch>"])
    try:
        validate(
            RLVRConfig(
                model=ModelConfig(path="", builtin="tiny-addition", dtype=args.dtype), data=rows, learner=cfg
            )
        )
    except ConfigError as e:
        parser.error(f"--{e.key.removeprefix('learner.').replace('_', '-')}: {e}")
    return cfg


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,qwen2-24m", help=f"comma-separated, from {list(SHAPES)}")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seqs", type=int, default=16, help="sequences in the rollout batch")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=128, help="(longest) response length")
    parser.add_argument(
        "--min-response-len", type=int, help="draw response lengths in [this, --response-len]"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--attn-implementation",
        default="sdpa",
        help="model.attn_implementation: sdpa | eager | flex_attention | ...",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed updates (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first (more with --compile)")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="MFU denominator (H100 SXM bf16 dense)"
    )
    add_learner_flags(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"--shapes: unknown shape {s!r}; choose from {list(SHAPES)}")
    min_response = args.response_len if args.min_response_len is None else args.min_response_len
    if not 1 <= min_response <= args.response_len:
        parser.error("--min-response-len: must be in [1, --response-len]")
    if min(args.prompt_len, args.seqs, args.repeats) < 1 or args.warmup < 0:
        parser.error("--prompt-len, --seqs and --repeats must be >= 1, --warmup >= 0")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    learner_cfg = learner_config(args, parser)

    from accelerate import Accelerator

    # as rlvr/trainer.py creates it: bf16 = autocast over float32 weights (fp32 master weights)
    accelerator = Accelerator(mixed_precision="bf16" if args.dtype == "bfloat16" else "no", cpu=not cuda)
    tokenizer = build_tokenizer()
    max_len = args.prompt_len + args.response_len
    load_before = os.getloadavg()[0]
    rows = []
    for name in shapes:
        model = build(name, tokenizer, max_len, args.device, args.attn_implementation)
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()  # transformers checkpoints layers only in train mode (no dropout in Qwen2: same math)
        n_params = sum(p.numel() for p in model.parameters())
        batch = synthetic_batch(
            args.seqs,
            args.prompt_len,
            min_response,
            args.response_len,
            model.config.vocab_size,
            tokenizer.pad_token_id,
        )
        flops = update_flops(model, batch)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        learner = Learner(
            model,
            accelerator,
            # the batch as one group: the learner takes whole groups, and --seqs need not be a multiple of G
            AlgoConfig(group_size=args.seqs),
            OptimConfig(),
            learner_cfg,
            temperature=1.0,
            total_steps=args.warmup + args.repeats,
        )
        times, metrics = time_updates(learner, batch, args.warmup, args.repeats, cuda)
        # CUDA: the most memory torch allocated during the updates (weights, grads, Adam state, activations);
        # CPU: the process's peak resident set since it started (covers earlier shapes too)
        peak = (
            torch.cuda.max_memory_allocated()
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        median = statistics.median(times)
        tokens, responses = int(batch.attention_mask.sum()), int(batch.response_mask.sum())
        response_desc = (
            f"{args.response_len}"
            if min_response == args.response_len
            else f"{min_response}..{args.response_len}"
        )
        mfu = flops / median / (args.peak_tflops * 1e12)
        cells = [
            name,
            f"{n_params / 1e6:,.1f}M",
            "bf16 autocast" if args.dtype == "bfloat16" else "float32",
            args.device,
            f"{args.seqs} × ({args.prompt_len}+{response_desc})",
            f"{tokens / median:,.0f}",
            f"{responses / median:,.0f}",
            f"{median:.3f} ({min(times):.3f} – {max(times):.3f})",
            f"{100 * metrics['learner/padding_frac']:.0f}%",
            fmt_bytes(peak),
            f"{flops / median / 1e12:.3g}",
            f"{100 * mfu:.1f}%" if cuda else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
        accelerator.free_memory()
        del learner, model
        gc.collect()

    settings = {
        **dataclasses.asdict(learner_cfg),
        "gradient_checkpointing": args.gradient_checkpointing,
        "attn_implementation": args.attn_implementation,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "peak_tflops": args.peak_tflops if cuda else None,
    }
    print(f"\nMachine: {machine()}")
    print(
        f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(other processes skew it)"
    )
    print("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(
        f"Median of {args.repeats} timed updates after {args.warmup} warm-up; peak memory: "
        + (
            "torch.cuda.max_memory_allocated"
            if cuda
            else "process peak RSS (ru_maxrss, cumulative over shapes)"
        )
        + "\n"
    )
    print(
        "| shape | params | dtype | device | seqs × (prompt+response) | learner tokens/s | response tokens/s "
        "| update s (min – max) | padding | peak memory | model TFLOP/s | MFU |"
    )
    print("|" + " --- |" * 12)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
