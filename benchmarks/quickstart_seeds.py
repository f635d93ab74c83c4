"""The quickstart over several run seeds, from an empty cache: the README's table.

    python benchmarks/quickstart_seeds.py [--seeds 0,1,2] [--out runs/quickstart_seeds] [overrides ...]

Each seed runs `rlvr-train experiment=quickstart trainer.seed=S` to the end, one after another (two runs
on 2 cores slow each other several times over), with RLVR_CACHE_DIR a fresh directory under --out, so the first run
installs the embedded model as a new user's would. Prints a markdown table of held-out pass@1 (first -> last
eval, best), pass@4, entropy, the steps with a clipped token and the wall time, then the mean and range of the
gains. Extra arguments are passed to rlvr-train as overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(seed: int, out: Path, cache: Path, overrides: list[str]) -> dict:
    run_dir = out / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.time()
    subprocess.run(
        [
            str(BIN / "rlvr-train"),
            "experiment=quickstart",
            f"trainer.seed={seed}",
            f"trainer.output_dir={run_dir}",
            *overrides,
        ],
        env={**os.environ, "RLVR_CACHE_DIR": str(cache)},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=(out / f"seed{seed}.log").open("w"),
    )
    seconds = time.time() - started
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [d for d in lines if "eval/pass@1" in d]
    steps = [d for d in lines if "entropy/mean" in d]
    return {
        "seed": seed,
        "seconds": seconds,
        "pass1": (evals[0]["eval/pass@1"], evals[-1]["eval/pass@1"], max(d["eval/pass@1"] for d in evals)),
        "pass4": (evals[0].get("eval/pass@4"), evals[-1].get("eval/pass@4")),
        "entropy": (steps[0]["entropy/mean"], steps[-1]["entropy/mean"]),
        "clipped": sum(1 for d in steps if d.get("clip/low_frac", 0) > 0 or d.get("clip/high_frac", 0) > 0),
        "steps": len(steps),
        # rollout.max_staleness 1 and rollout.is_mode: the policy lag after the first step, the share corrected
        "lag": sorted({d["rollout/policy_lag"] for d in steps[1:] if "rollout/policy_lag" in d}),
        "is_frac": [d["rollout/tis_clip_frac"] for d in steps if "rollout/tis_clip_frac" in d],
    }


def table(rows: list[dict]) -> str:
    out = [
        "| trainer.seed | held-out pass@1, first → last eval (best) | pass@4 | `entropy/mean` | steps with a clipped token | time |",
        "| ---: | --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        (p0, p1, best), (q0, q1), (e0, e1) = r["pass1"], r["pass4"], r["entropy"]
        out.append(
            f"| {r['seed']} | {p0:.3f} → {p1:.3f} ({best:.3f}) | {q0:.2f} → {q1:.2f} | {e0:.2f} → {e1:.2f} "
            f"| {r['clipped']}/{r['steps']} | {r['seconds']:.0f} s |"
        )
    gains = [r["pass1"][1] - r["pass1"][0] for r in rows]
    firsts = [r["pass1"][0] for r in rows]
    lasts = [r["pass1"][1] for r in rows]
    out.append("")
    out.append(
        f"Mean pass@1 {sum(firsts) / len(rows):.3f} → {sum(lasts) / len(rows):.3f} (first evals "
        f"{min(firsts):.3f}–{max(firsts):.3f}, last {min(lasts):.3f}–{max(lasts):.3f}): a gain of "
        f"+{100 * sum(gains) / len(gains):.1f} points on average, +{100 * min(gains):.1f} to +{100 * max(gains):.1f}."
    )
    for r in rows:
        if r["lag"] or r["is_frac"]:
            frac = r["is_frac"] or [0.0]
            out.append(
                f"Seed {r['seed']}: `rollout/policy_lag` after step 1 {r['lag']}; `rollout/tis_clip_frac` mean "
                f"{sum(frac) / len(frac):.4f}, max {max(frac):.4f}."
            )
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/quickstart_seeds")
    parser.add_argument("overrides", nargs="*", help="passed on to rlvr-train (key=value)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    overrides = args.overrides
    out = Path(args.out).resolve()
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(run(seed, out, cache, overrides))
        print(f"seed {seed}: pass@1 {rows[-1]['pass1'][0]:.3f} -> {rows[-1]['pass1'][1]:.3f}", flush=True)
    print(table(rows))
    (out / "table.md").write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
