"""A step-time model: the seconds of one RL step from its phase times and `rollout.max_staleness`.

    python benchmarks/step_time_model.py                                   # the 7B projection (docs/SCALE_OUT.md)
    python benchmarks/step_time_model.py --phases GEN VERIFY LEARN SYNC OTHER [--tokens N]

The model (docs/SCALE_OUT.md, "A step-time model"):
- staleness 0 (sample, verify, learn, sync, in order): step = gen + verify + learn + sync + other;
- staleness 1 (rlvr.rollouts: the next batch is generated while the learner updates): step = max(gen, learn) +
  verify + sync + other. In rlvr the verifier scores a batch after it is generated and the weights are sent before
  the next generation starts, both on the trainer's critical path; only generation and the update overlap.
`other` is whatever else a step spends (logging, batching, the Python between phases), taken as measured.
Throughput is the generated tokens of a step over its seconds.

With --phases it predicts both step times (and tokens/s with --tokens) from the phases of a synchronous run
(benchmarks/staleness_overlap.py prints them). Without it, it prints the projection to a 7B model on 16 and 64
GPUs from verl's published phase times (PUBLISHED below), under the assumptions listed there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Phases:
    """Seconds per step of each phase, as the trainer logs them (timing/rollout_s, timing/verify_s,
    timing/learner_s, timing/sync_s; other: timing/step_s minus their sum)."""

    gen: float
    verify: float
    learn: float
    sync: float
    other: float = 0.0


def step_s(p: Phases, staleness: int) -> float:
    """Seconds per step: the phases in sequence (0), or generation hidden behind the update (1)."""
    if staleness == 0:
        return p.gen + p.verify + p.learn + p.sync + p.other
    if staleness == 1:
        return max(p.gen, p.learn) + p.verify + p.sync + p.other
    raise ValueError(f"staleness must be 0 or 1, got {staleness}")


# verl's one-step-off recipe (docs/advance/one_step_off.md, "Experimental Results"): Qwen2.5-Math-7B, DAPO, vLLM +
# FSDP2, max response 20,480 tokens, 2 nodes of H20. Colocated synchronous on 16 GPUs: step 749 s, of which
# generate_sequences 247 s, old_log_prob 88 s, update_actor 286 s. One step off with 4 generation and 12 training
# GPUs: step 520 s, generate_sequences 458 s, old_log_prob 108 s, update_actor 337 s, wait_prev_gen 45 s.
PUBLISHED = {
    "sync16": {"step": 749.0, "gen": 247.0, "learn": 88.0 + 286.0},
    "async4+12": {"step": 520.0, "gen": 458.0, "learn": 108.0 + 337.0, "wait": 45.0},
}


def fit_generation(gpus_a: int, gen_a: float, gpus_b: int, gen_b: float) -> tuple[float, float]:
    """Generation seconds as tail + work / gpus through two measurements: (tail s, work GPU-s). The tail is
    what more GPUs do not shorten (the longest answers decode one token at a time)."""
    work = (gen_b - gen_a) / (1 / gpus_b - 1 / gpus_a)
    return gen_a - work / gpus_a, work


def projection(gpus: int, rest_sync: float, rest_async: float) -> dict:
    """A 7B DAPO step on `gpus` GPUs: colocated synchronous (every GPU generates, then learns) against one step
    off with the best split of generation and training GPUs; rest_*: the other seconds of a step on the critical
    path in each mode (reward, weight sync, bookkeeping)."""
    pub = PUBLISHED
    tail, work = fit_generation(16, pub["sync16"]["gen"], 4, pub["async4+12"]["gen"])
    learn_gpu_s = pub["sync16"]["learn"] * 16  # learning scales as 1/GPUs (data parallel, same batch)

    def gen(n: int) -> float:
        return tail + work / n

    sync = step_s(Phases(gen(gpus), 0.0, learn_gpu_s / gpus, 0.0, rest_sync), 0)
    splits = [
        (step_s(Phases(gen(r), 0.0, learn_gpu_s / (gpus - r), 0.0, rest_async), 1), r) for r in range(1, gpus)
    ]
    best, r = min(splits)
    return {"gpus": gpus, "sync_s": sync, "async_s": best, "gen_gpus": r, "tail": tail, "work": work}


def print_projection() -> None:
    pub = PUBLISHED
    s, a = pub["sync16"], pub["async4+12"]
    rest_sync = s["step"] - s["gen"] - s["learn"]
    rest_async = a["step"] - a["wait"] - a["learn"]
    tail, work = fit_generation(16, s["gen"], 4, a["gen"])
    print(
        f"generation fit: {tail:.0f} s + {work:.0f} GPU-s / GPUs; learning {s['learn'] * 16:.0f} GPU-s / GPUs"
    )
    print(
        f"rest on the critical path: {rest_sync:.0f} s (verl's synchronous run), {rest_async:.0f} s (one step off)"
    )
    check = step_s(Phases(tail + work / 4, 0.0, s["learn"] * 16 / 12, 0.0, rest_async), 1)
    print(f"check, 4 + 12 GPUs one step off: model {check:.0f} s, verl measured {a['step']:.0f} s\n")
    print("| GPUs | rest s: synchronous, one step off | synchronous, colocated s/step "
          "| one step off s/step (generation GPUs) | ratio |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: |")
    for gpus in (16, 64):
        for rest in (rest_async, rest_sync):  # verl's overlap of the rest; none of it overlapped
            p = projection(gpus, rest_sync, rest)
            print(
                f"| {gpus} | {rest_sync:.0f}, {rest:.0f} | {p['sync_s']:.0f} | {p['async_s']:.0f} ({p['gen_gpus']}) "
                f"| {p['async_s'] / p['sync_s']:.2f} |"
            )


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phases", nargs=5, type=float, metavar=("GEN", "VERIFY", "LEARN", "SYNC", "OTHER"), default=None
    )
    parser.add_argument("--tokens", type=float, default=None, help="generated tokens per step")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.phases is None:
        print_projection()
        return
    p = Phases(*args.phases)
    for s in (0, 1):
        t = step_s(p, s)
        rate = f", {args.tokens / t:,.0f} generated tokens/s" if args.tokens else ""
        print(f"staleness {s}: {t:.3f} s/step{rate}")
    print(f"ratio 1 / 0: {step_s(p, 1) / step_s(p, 0):.3f}")


if __name__ == "__main__":
    main()
