"""Seconds per RL step with generation overlapped with learning (`rollout.max_staleness` 1) against in order (0).

    python benchmarks/staleness_overlap.py [--rounds 3] [--steps 10] [--warmup 2] [--model qwen2-3m]
        [--prompts 4] [--group-size 8] [--max-new-tokens 64] [--out runs/bench_staleness]

Disaggregated as on GPUs, on a 2-core machine: the rollout server (`rlvr-rollout-server`, vLLM) runs on core 0
(`taskset -c 0`, `VLLM_CPU_OMP_THREADS_BIND=0`) and the trainer (`rlvr-train`, learner and verifier) on core 1
(`taskset -c 1`, one torch thread), the trainer connecting to the running server (`rollout.server_launch=false`).
The model is a randomly initialised Qwen2 of --model's shape (rollout_throughput.MODELS) with the tiny
tokenizer and the quickstart's addition prompts. On CPU a token costs the learner (pre-pass, forward, backward, in torch) several
times what it costs vLLM to generate, so the defaults (a 3.2M-parameter model, 4 prompts x G 8 = 32 answers of 64
tokens) keep generation a visible share of a step: the overlap can only hide the shorter phase (the step-time
model, benchmarks/step_time_model.py). Every answer is exactly --max-new-tokens long (`rollout.ignore_eos`),
dynamic sampling, overlong shaping, evaluation and samples are off, so every step does the same work; rewards are
mostly 0 on a random model and the learner still runs every forward and backward. Both arms use
`rollout.is_mode=token_mask` (staleness 1 requires a correction), with the quickstart's 4 mini-batches a step.

A round runs both arms, one after the other, in alternating order (0 then 1, then 1 then 0), each with a fresh
server; the first --warmup steps of a run are dropped; a run's time is the median of its `timing/step_s`. Each
run starts once the machine is idle and is redone (at most --retries times) when other processes used more than
--max-others cores during it. Prints markdown tables: per round the two medians and their ratio, the mean ratio
and its range, and the synchronous step's phases (generation, verify, learn, sync) that docs/SCALE_OUT.md's
step-time model takes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rollout_throughput import MODELS, machine, random_qwen2  # noqa: E402
from step_time_model import Phases, step_s  # noqa: E402
from step_vs_trl import busy_cpu_s, children_cpu_s, spread, wait_idle  # noqa: E402

BIN = Path(sys.executable).parent
PHASES = ("timing/rollout_s", "timing/verify_s", "timing/learner_s", "timing/sync_s")
WAITS = ("timing/learner_wait_s", "timing/rollout_wait_s", "rollout/policy_lag")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen:
    """The rollout server pinned to core 0, once it answers /health."""
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0", "OMP_NUM_THREADS": "1"}
    cmd = ["taskset", "-c", "0", str(BIN / "rlvr-rollout-server"), str(model), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the rollout server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"the rollout server did not answer in 600 s; see {log}")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live processes of process group `pgid` (the server and its engine, which
    RUSAGE_CHILDREN would miss: the server's own children are not reaped by this process)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def train_argv(args: argparse.Namespace, model: Path, port: int, staleness: int, out: Path) -> list[str]:
    """`rlvr-train` on core 1 against the server at `port`, the same work every step."""
    return [
        *("taskset", "-c", "1", str(BIN / "rlvr-train"), "experiment=quickstart"),
        f"model.path={model}",
        "model.builtin=null",
        "rollout=server",
        f"rollout.server_url=http://127.0.0.1:{port}",
        "rollout.server_launch=false",
        f"rollout.max_staleness={staleness}",
        "rollout.is_mode=token_mask",
        "rollout.ignore_eos=true",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"algo.group_size={args.group_size}",
        f"algo.minibatch_prompts={args.prompts // 4}",
        "algo.dynamic_sampling.enabled=false",
        "algo.overlong.shaping=false",
        f"trainer.prompts_per_step={args.prompts}",
        f"trainer.total_steps={args.steps}",
        "trainer.save_every=0",
        "trainer.samples_every=0",
        "trainer.no_signal_warn_steps=null",
        "trainer.no_signal_max_steps=null",
        "eval.every=0",
        f"trainer.output_dir={out}",
    ]


def run_arm(args: argparse.Namespace, model: Path, staleness: int, out: Path) -> dict:
    """One run of one arm: its steps' metrics and the cores other processes used meanwhile."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    busy, ours, started = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    server = start_server(model, port, out / "server.log")
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RLVR_CACHE_DIR": str(out.parent / "cache")}
        with (out / "train.log").open("w") as log:
            subprocess.run(
                train_argv(args, model, port, staleness, out / "run"),
                env=env,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # before the server stops: its engine processes die unreaped, their CPU time is read from /proc
        others = (busy_cpu_s() - busy) - (children_cpu_s() - ours) - group_cpu_s(server.pid)
        seconds = time.perf_counter() - started
    finally:
        stop_server(server)
    lines = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [d for d in lines if "timing/step_s" in d]
    return {"steps": steps, "others_cores": max(others, 0.0) / seconds}


def median_of(run: dict, key: str, warmup: int) -> float:
    return statistics.median(d.get(key, 0.0) for d in run["steps"][warmup:])


def report(runs: dict[int, list[dict]], warmup: int) -> None:
    print("| round | staleness 0 s/step (median) | staleness 1 s/step (median) | 1 / 0 |")
    print("| ---: | ---: | ---: | ---: |")
    ratios = []
    for r, (s0, s1) in enumerate(zip(runs[0], runs[1], strict=True)):
        a, b = median_of(s0, "timing/step_s", warmup), median_of(s1, "timing/step_s", warmup)
        ratios.append(b / a)
        print(f"| {r} | {a:.3f} | {b:.3f} | {b / a:.3f} |")
    print(f"\nRatio staleness 1 / 0: mean {statistics.mean(ratios):.3f}, range {spread(ratios)}.\n")
    keys = ("timing/step_s", *PHASES, *WAITS)
    print("| staleness | " + " | ".join(f"`{k}`" for k in keys) + " |")
    print("| ---: |" + " ---: |" * len(keys))
    for s in (0, 1):
        cells = [statistics.mean(median_of(run, k, warmup) for run in runs[s]) for k in keys]
        print(f"| {s} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print("\n(medians over a run's timed steps, averaged over the rounds)")
    phase = {
        k: statistics.mean(median_of(run, k, warmup) for run in runs[0]) for k in ("timing/step_s", *PHASES)
    }
    p = Phases(*(phase[k] for k in PHASES), other=phase["timing/step_s"] - sum(phase[k] for k in PHASES))
    measured = statistics.mean(median_of(run, "timing/step_s", warmup) for run in runs[1])
    print(
        f"\nStep-time model (benchmarks/step_time_model.py) from the staleness-0 phases (other {p.other:.3f} s): "
        f"staleness 1 predicted {step_s(p, 1):.3f} s/step, measured {measured:.3f}; ratio predicted "
        f"{step_s(p, 1) / step_s(p, 0):.3f}."
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", default="qwen2-3m", choices=list(MODELS))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="runs/bench_staleness")
    parser.add_argument("--max-others", type=float, default=0.15)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--retries", type=int, default=2)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps - 1:
        parser.error("--warmup must be in [0, --steps - 1)")
    if args.prompts % 4:
        parser.error("--prompts must be a multiple of 4 (4 mini-batches a step)")
    from rlvr.tiny_model import build_tokenizer, install_tiny_assets

    root = Path(args.out).resolve()
    model = root / "model"
    tokenizer = build_tokenizer()
    policy = random_qwen2(MODELS[args.model], tokenizer, 256)
    policy.save_pretrained(model, safe_serialization=True)
    tokenizer.save_pretrained(model)
    params = sum(p.numel() for p in policy.parameters())
    print(f"{args.model}: {params / 1e6:.2f}M parameters in {model}", file=sys.stderr)
    install_tiny_assets(root / "cache" / "tiny-addition")  # the addition prompts (data=addition)
    runs: dict[int, list[dict]] = {0: [], 1: []}
    started = time.perf_counter()
    for r in range(args.rounds):
        for s in (0, 1) if r % 2 == 0 else (1, 0):
            for attempt in range(args.retries + 1):
                idle = wait_idle(args.max_others, args.idle_timeout)
                run = run_arm(args, model, s, root / f"round{r}-s{s}-try{attempt}")
                print(
                    f"round {r} staleness {s} try {attempt}: median "
                    f"{median_of(run, 'timing/step_s', args.warmup):.3f} s/step (idle before: {idle}; "
                    f"other processes {run['others_cores']:.2f} cores)",
                    file=sys.stderr,
                    flush=True,
                )
                if run["others_cores"] <= args.max_others:
                    break
            runs[s].append(run)
    print(f"Machine: {machine()}; wall time {time.perf_counter() - started:.0f} s\n")
    report(runs, args.warmup)


if __name__ == "__main__":
    main()
