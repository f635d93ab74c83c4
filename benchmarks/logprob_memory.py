"""Peak memory and time of log-prob + entropy of response tokens, forward + backward: rlvr's chunked autograd
Function (`rlvr.logprob.chunked_logp_entropy`) against the plain full-logits computation.

    .venv/bin/python benchmarks/logprob_memory.py                      # Qwen2.5-0.5B's head, CPU, float32
    .venv/bin/python benchmarks/logprob_memory.py --device cuda --dtype bfloat16

Each measurement runs in its own subprocess, so one variant's allocations cannot inflate another's peak. It
allocates hidden [tokens, H] and the head weight [V, H] (both requiring grad), then measures one
forward + backward (`--warmup` untimed ones first; the median time of `--repeats`; the largest peak):
- cuda: torch.cuda.max_memory_allocated() minus the memory allocated before the first timed pass;
- cpu: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) minus its resident set
  before the first timed pass.
Both include the gradients of hidden and weight. On CPU the process's address space is capped at its size
before allocating the inputs plus --mem-limit-gib (RLIMIT_AS): a variant that needs more is reported as
"did not fit" instead of exhausting the machine; on CUDA, an out-of-memory error is.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

GIB = 1024**3


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(a: argparse.Namespace) -> dict:
    """One variant at one size, in this process: {"peak_gib", "time_s"} or {"error"}."""
    import torch

    from rlvr.logprob import chunked_logp_entropy, plain_logp_entropy

    fn = {"chunked": chunked_logp_entropy, "plain": plain_logp_entropy}[a.variant]
    cuda = a.device == "cuda"
    if not cuda:
        (torch.ones(256, 256) @ torch.ones(256, 256)).sum()  # start torch's threads (their stacks) first
        budget = _status_kib("VmSize") * 1024 + int(a.mem_limit_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (budget, resource.getrlimit(resource.RLIMIT_AS)[1]))
    dtype = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(a.tokens, a.hidden, generator=g).to(a.device, dtype).requires_grad_()
    weight = (torch.randn(a.vocab, a.hidden, generator=g) * 0.02).to(a.device, dtype).requires_grad_()
    labels = torch.randint(0, a.vocab, (a.tokens,), generator=g).to(a.device)
    grad_out = torch.randn(a.tokens, generator=g).to(a.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step():
        hidden.grad = weight.grad = None
        logp, _ = fn(hidden, weight, labels, 1.0, a.chunk_size)
        logp.backward(grad_out)
        sync()

    try:
        for _ in range(a.warmup):
            step()
        hidden.grad = weight.grad = None
        sync()
        if cuda:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _status_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
        times = []
        for _ in range(a.repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    except torch.OutOfMemoryError:
        return {"error": f"did not fit in the GPU's {torch.cuda.mem_get_info()[1] / GIB:.0f} GiB"}
    except MemoryError:
        return {"error": f"did not fit in {a.mem_limit_gib:g} GiB"}
    except RuntimeError as e:  # the CPU allocator's failure under RLIMIT_AS
        if "allocate" not in str(e):
            raise
        return {"error": f"did not fit in {a.mem_limit_gib:g} GiB"}
    return {"peak_gib": (peak - base) / GIB, "time_s": statistics.median(times)}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=151_936, help="V (default: Qwen2.5's)")
    p.add_argument("--hidden", type=int, default=896, help="H (default: Qwen2.5-0.5B's)")
    p.add_argument("--tokens", type=_ints, default=[2048, 4096, 16384], help="comma-separated token counts")
    p.add_argument("--chunk-size", type=_ints, default=[2048], help="comma-separated chunk sizes (chunked)")
    p.add_argument("--variants", default="chunked,plain")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--mem-limit-gib", type=float, default=20.0, help="address-space budget per variant (cpu only)"
    )
    p.add_argument("--warmup", type=int, help="untimed passes first (default: 0 on cpu, 2 on cuda)")
    p.add_argument("--repeats", type=int, help="timed passes (default: 1 on cpu, 5 on cuda)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # set in the measuring subprocess
    return p


def main() -> None:
    p = build_parser()
    a = p.parse_args()
    if a.variant:  # the measuring subprocess: one variant, one token count, one chunk size
        a.tokens, a.chunk_size = a.tokens[0], a.chunk_size[0]
        print(json.dumps(measure(a)))
        return
    a.warmup = a.warmup if a.warmup is not None else (2 if a.device == "cuda" else 0)
    a.repeats = a.repeats if a.repeats is not None else (5 if a.device == "cuda" else 1)
    print(f"V={a.vocab} H={a.hidden} {a.dtype} on {a.device}; peak = growth over the inputs, grads included")
    print("| tokens | variant | chunk | peak memory (GiB) | time (s) | plain / chunked peak |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for tokens in a.tokens:
        runs = [("chunked", c) for c in a.chunk_size if "chunked" in a.variants]
        runs += [("plain", None)] if "plain" in a.variants else []
        results = {}
        for variant, chunk in runs:
            cmd = [sys.executable, __file__, f"--variant={variant}", f"--tokens={tokens}"]
            cmd += [f"--chunk-size={chunk or 1}", f"--vocab={a.vocab}", f"--hidden={a.hidden}"]
            cmd += [f"--device={a.device}", f"--dtype={a.dtype}", f"--mem-limit-gib={a.mem_limit_gib}"]
            cmd += [f"--warmup={a.warmup}", f"--repeats={a.repeats}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                r = {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
            else:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant, chunk] = r
        plain = results.get(("plain", None), {})
        for (variant, chunk), r in results.items():
            if "error" in r:
                print(f"| {tokens:,} | {variant} | {chunk or '-'} | {r['error']} | - | - |", flush=True)
                continue
            ratio = (
                f"{plain['peak_gib'] / r['peak_gib']:.1f}"
                if variant == "chunked" and "peak_gib" in plain
                else "-"
            )
            print(
                f"| {tokens:,} | {variant} | {chunk or '-'} | {r['peak_gib']:.2f} | {r['time_s']:.2f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
