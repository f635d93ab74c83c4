"""Exactness on a GPU: the checks that tests/test_logprob.py and tests/test_learner_packing.py make on CPU,
run on CUDA kernels (cuBLAS, SDPA's fused attention, flash-attn when installed), where the numerics differ.

    python benchmarks/gpu_exactness.py [--device cuda] [--attn sdpa,eager,flash_attention_2]

1. Chunked log-prob/entropy (`rlvr.logprob.chunked_logp_entropy`) and the full-logits path
   (`plain_logp_entropy`), float32 and bfloat16, against the full-logits path in float64; vocabulary 151,936,
   1,000 tokens (not a multiple of the chunk): logp, entropy and the gradients w.r.t. hidden and the LM head.
2. Packed rows (rows of 2, 1 and 2 sequences, positions restarting) against padded rows, for each attention
   implementation: logp, entropy and every parameter's gradient of a random Qwen2 (float32, then bfloat16 weights).
3. No attention across packed sequences: changing sequence A leaves B's log-probs unchanged.

Prints one table: the largest difference relative to the reference's largest magnitude per quantity, and the
bound it must stay under (float32: 1e-5 as in the CPU tests, 1e-4 for gradients summed over many tokens; bf16:
2e-2, bf16's precision). Exits 1 if any row fails. Needs torch and transformers; no vllm, no network.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from rlvr.learner import pack_rows, response_logp_entropy, unpack_rows
from rlvr.logprob import chunked_logp_entropy, plain_logp_entropy

BOUND = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
ROWS: list[tuple[str, float, float]] = []


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def record(name: str, value: float, bound: float) -> None:
    ROWS.append((name, value, bound))


def check_logprob(device: str, dtype: torch.dtype) -> None:
    """Both paths against the full-logits path in float64: entropy sums 151,936 terms, so float32's own
    rounding (which the plain path shares) is near 1e-5; the chunked path must be as close as the plain one."""
    torch.manual_seed(0)
    n, hidden_size, vocab = 1000, 896, 151936
    h0 = torch.randn(n, hidden_size, device=device).to(dtype)
    w0 = (torch.randn(vocab, hidden_size, device=device) * hidden_size**-0.5).to(dtype)
    labels = torch.randint(0, vocab, (n,), device=device)
    upstream = torch.randn(n, device=device)
    results = {}
    for name, fn, cast in (
        ("chunked", chunked_logp_entropy, dtype),
        ("plain", plain_logp_entropy, dtype),
        ("float64", plain_logp_entropy, torch.float64),
    ):
        h, w = h0.to(cast, copy=True).requires_grad_(), w0.to(cast, copy=True).requires_grad_()
        logp, ent = fn(h, w, labels, 0.7, 384)  # 1,000 tokens in chunks of 384 (plain ignores it)
        (logp * upstream.to(logp.dtype)).sum().backward()
        results[name] = (logp.detach(), ent.detach(), h.grad, w.grad)
        del h, w, logp, ent
    tag = f"logprob {str(dtype).removeprefix('torch.')}"
    for i, what in enumerate(("logp", "entropy", "grad hidden", "grad weight")):
        ref = results["float64"][i]
        chunked, plain = rel(results["chunked"][i], ref), rel(results["plain"][i], ref)
        bound = max(BOUND[dtype], 2 * plain)  # float32: 1e-5 as on CPU; never worse than twice the plain path
        record(f"{tag}: {what}, chunked vs float64 (plain: {plain:.1e})", chunked, bound)


def varied_batch(device: str, vocab: int):
    """Five right-padded rows whose prompt and response lengths differ (as in tests/test_learner_packing.py,
    longer)."""
    g = torch.Generator().manual_seed(0)
    n_prompt, n_resp = (20, 90, 50, 130, 10), (60, 10, 40, 30, 70)
    width = max(p + r for p, r in zip(n_prompt, n_resp))
    ids = torch.zeros((5, width), dtype=torch.long)
    att = torch.zeros((5, width), dtype=torch.long)
    resp = torch.zeros((5, width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(n_prompt, n_resp)):
        ids[i, : p + r] = torch.randint(0, vocab, (p + r,), generator=g)
        att[i, : p + r] = 1
        resp[i, p : p + r] = True
    return ids.to(device), att.to(device), resp.to(device)


def random_model(device: str, dtype: torch.dtype, attn: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=4096,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,  # head dim 32
        num_key_value_heads=2,
        intermediate_size=768,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    config._attn_implementation = attn
    with torch.device(device):
        return Qwen2ForCausalLM(config).to(dtype)


def check_packing(device: str, dtype: torch.dtype, attn: str) -> None:
    tag = f"packed {attn} {str(dtype).removeprefix('torch.')}"
    try:
        model = random_model(device, dtype, attn)
    except (ImportError, ValueError) as e:  # flash-attn not installed, or not supported for this dtype
        print(f"skip {tag}: {e}", file=sys.stderr)
        return
    other = copy.deepcopy(model)
    ids, att, resp = varied_batch(device, model.config.vocab_size)
    # rows of 2, 1 and 2 sequences: positions restart within a row, and the shorter rows end in padding
    pids, pos, presp, index = pack_rows(ids, resp, att.sum(-1), [2, 1, 2])
    logp, ent = response_logp_entropy(model, pids, None, presp, 0.7, 64, position_ids=pos)
    logp, ent = unpack_rows(logp, index, tuple(ids.shape)), unpack_rows(ent, index, tuple(ids.shape))
    ref_logp, ref_ent = response_logp_entropy(other, ids, att, resp, 0.7, 64)
    w = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1)).to(device)
    (logp * w).sum().backward()
    (ref_logp * w).sum().backward()
    bound = BOUND[dtype]
    record(f"{tag}: logp vs padded", rel(logp, ref_logp), bound)
    record(f"{tag}: entropy vs padded", rel(ent, ref_ent), bound)
    worst = max(rel(p.grad, q.grad) for p, q in zip(model.parameters(), other.parameters()))
    record(f"{tag}: worst parameter grad vs padded", worst, 1e-4 if dtype == torch.float32 else 5e-2)
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        a, a2, b = (torch.randint(0, 4096, (k,), generator=g).to(device) for k in (90, 120, 60))

        def b_after(prefix: torch.Tensor) -> torch.Tensor:
            row = torch.cat([prefix, b])[None]
            positions = torch.cat([torch.arange(len(prefix)), torch.arange(len(b))])[None].to(device)
            mask = torch.zeros_like(row, dtype=torch.bool)
            mask[0, len(prefix) + 1 :] = True
            lp, _ = response_logp_entropy(model, row, None, mask, 1.0, 64, position_ids=positions)
            return lp[0, len(prefix) + 1 :]

        record(f"{tag}: B after A vs B after A' (leak)", rel(b_after(a), b_after(a2)), bound)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--attn", default="sdpa,eager,flash_attention_2")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.device == "cuda":
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for dtype in (torch.float32, torch.bfloat16):
        check_logprob(args.device, dtype)
    for attn in args.attn.split(","):
        for dtype in (torch.float32, torch.bfloat16):
            check_packing(args.device, dtype, attn)
    width = max(len(name) for name, _, _ in ROWS)
    print(f"{'check':<{width}}  {'rel. diff':>9}  {'bound':>7}  ok")
    for name, value, bound in ROWS:
        print(f"{name:<{width}}  {value:9.2e}  {bound:7.0e}  {'yes' if value < bound else 'NO'}")
    return 0 if all(value < bound for _, value, bound in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
