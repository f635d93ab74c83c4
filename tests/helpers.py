"""Scaffolding shared by the test modules (imported as `helpers`: pytest puts tests/ on sys.path).

Running the real `rlvr-train` command on the tiny model (tests/conftest.py's `tiny_cache` holds its assets) and
reading back the run's metrics.jsonl; a hand-made RolloutBatch for the learner tests.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from margins import within

from rlvr import distributed as dist
from rlvr.batch import BatchLayout
from rlvr.learner import RolloutBatch, layout_of

BIN = Path(sys.executable).parent  # the venv's bin/: rlvr-train, rlvr-report, rlvr-eval
RLVR_TRAIN = BIN / "rlvr-train"


# the short run that conftest's two_step_run makes once (a resume replaces its total_steps)
TWO_STEPS = (
    "rollout.backend=vllm",  # the quickstart samples with hf; the multi-process runs check vLLM's paths
    "trainer.total_steps=2",
    "eval.every=0",
    "trainer.prompts_per_step=8",
    "trainer.progress_bar=false",
)


def train_env(cache, **extra: str) -> dict[str, str]:
    """This process's environment with RLVR_CACHE_DIR at `cache` and the `extra` variables on top."""
    return {**os.environ, "RLVR_CACHE_DIR": str(cache), **extra}


def train_cmd(out, *overrides: str) -> list[str]:
    """`rlvr-train experiment=quickstart trainer.output_dir=out *overrides`."""
    return [str(RLVR_TRAIN), "experiment=quickstart", f"trainer.output_dir={out}", *overrides]


def run_train(
    cache, out, *overrides: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `train_cmd(out, *overrides)` to the end in out's parent directory, with `train_env(cache, **env)`;
    with `check`, fail the test (the end of stderr in the message) unless it exits 0."""
    proc = subprocess.run(
        train_cmd(out, *overrides),
        env=train_env(cache, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out.parent,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics_lines(out) -> list[dict]:
    """The run's metrics.jsonl, one dict a line."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(
    got: list[dict], expected: list[dict], abs_tol: float = 1e-6, skip: tuple = ()
) -> None:
    """Two runs' metrics.jsonl lines: the same steps and keys, and the same values (timings aside) within 1e-5
    relative or `abs_tol` (float32 rounding of values near 0: a 10th-percentile entropy, a policy loss; what a
    bug moves is a reward's 1/256 steps, entropies by 1e-2).

    `rollout/logp_diff_*` (how far the sampler's log-probs are from the learner's) is float rounding itself,
    ~1e-6 in float32, so runs that differ by rounding (abs_tol > 0) do not compare it: each run's must be below
    1e-4, where an engine left with stale weights is off by the step's update (measured: at most 7.2e-5 over the
    300 quickstart steps). Runs that must match exactly (abs_tol=0: a resume) compare it like any value. `skip`:
    prefixes of keys not compared (those of the process layout: learner/padding_frac, dist/*)."""
    assert [d["step"] for d in got] == [d["step"] for d in expected]
    for g, e in zip(got, expected):
        assert g.keys() == e.keys(), e["step"]
        for key, value in e.items():
            if key.startswith(("timing/", "throughput/", *skip)):
                continue
            if key.startswith("rollout/logp_diff") and abs_tol > 0:
                for run, v in (("got", g[key]), ("expected", value)):
                    within(v, 1e-4, f"step {e['step']} {key} ({run})")
            elif isinstance(value, float):
                within(abs(g[key] - value), max(1e-5 * abs(value), abs_tol), f"step {e['step']} {key}")
            else:
                assert g[key] == value, (e["step"], key)


def max_rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want|: float32 rounding grows with the tensor's scale, not elementwise (an
    elementwise atol tuned on one CPU failed on another's kernels)."""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def rollout_batch(tokenizer, n: int, seed: int = 0, longer: int = 0) -> RolloutBatch:
    """n right-padded `i+(i+3)=` prompt rows with random responses of longer + 1 + 2i mod 5 tokens, random
    advantages (drawn after the response tokens, from the same generator) and zero rollout logprobs."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tokenizer(f"{i}+{i + 3}=", add_special_tokens=False)["input_ids"] for i in range(n)]
    responses = [torch.randint(0, 250, (longer + 1 + (i * 2) % 5,), generator=g).tolist() for i in range(n)]
    ids, att, resp = right_pad(list(zip(prompts, responses)), tokenizer.pad_token_id)
    return RolloutBatch(ids, att, resp, torch.randn(n, generator=g), torch.zeros(ids.shape))


def rank_share(whole: RolloutBatch, algo) -> tuple[RolloutBatch, BatchLayout]:
    """This rank's rows of the batch `whole` (its slice of each mini-batch, as rlvr.share gives the trainer's
    learner) and their layout, for `Learner.update` under several processes (one: the whole batch)."""
    layout = layout_of(
        len(whole) // algo.group_size,
        algo.group_size,
        algo.minibatch_prompts,
        algo.num_minibatches,
        dist.rank(),
        dist.world_size(),
    )
    return whole.select(layout.rows), layout


def compose_config(*overrides: str):
    """The typed RLVRConfig that `rlvr-train OVERRIDES...` would run (configs/ composed by Hydra)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rlvr.config import RLVRConfig, register_configs
    from rlvr.train import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=list(overrides)))
    assert isinstance(cfg, RLVRConfig)
    return cfg


def right_pad(rows, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [N, T], attention_mask [N, T], response_mask [N, T] bool) of N (prompt ids, response ids) rows,
    right-padded with pad_id to the longest row, T: the learner's layout (rlvr.batch.RolloutBatch)."""
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r))
        att[i, : len(p) + len(r)] = 1
        resp[i, len(p) : len(p) + len(r)] = True
    return ids, att, resp


def hf_greedy(model, prompts, tokenizer, max_new_tokens: int = 12) -> list[list[int]]:
    """Each prompt's greedy continuation by transformers' own `generate`, one prompt at a time (no padding): the
    reference the rollout engines' greedy samples are held to."""
    out = []
    for p in prompts:
        ids = model.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        out.append(ids[0, len(p) :].tolist())
    return out
