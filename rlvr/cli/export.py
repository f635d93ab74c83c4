"""`rlvr-export CHECKPOINT_OR_RUN_DIR OUT_DIR`: a checkpoint's policy as a Hugging Face model directory.

    rlvr-export runs/quickstart OUT_DIR                           # the run's newest complete checkpoint
    rlvr-export runs/quickstart/checkpoints/step_000100 OUT_DIR   # a given checkpoint

The result (config.json, model.safetensors, tokenizer files, generation_config.json) loads with
`AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `vllm.LLM(OUT_DIR)`. OUT_DIR appears complete or not at all.
A sharded checkpoint (trainer.checkpoint_format=sharded) is merged here, in one process: every rank's shard read
into full float32 tensors, so this process needs the policy's size in memory (4 bytes a parameter).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rlvr import checkpoint, sharded_checkpoint


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint dir (full: with policy/; sharded: with sharded/), or the newest complete one of a run dir."""
    if (path / "policy").is_dir() or sharded_checkpoint.is_sharded(path):
        return path
    latest = checkpoint.find_latest(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path}: neither a checkpoint (no policy/ or sharded/) nor a run dir with complete checkpoints"
        )
    return latest


def export(source: Path, out: Path) -> Path:
    """Write `source`'s policy (a checkpoint, or a run's newest) to the new dir `out`: a full checkpoint's
    policy/ copied, a sharded one's shards merged into safetensors. Returns the checkpoint dir."""
    found = resolve_checkpoint(source)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new directory")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if sharded_checkpoint.is_sharded(found):
        sharded_checkpoint.export_hf(found, tmp)
    else:
        shutil.copytree(found / "policy", tmp)
    tmp.rename(out)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    p = argparse.ArgumentParser(prog="rlvr-export", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a checkpoint dir (checkpoints/step_N) or a run dir")
    p.add_argument("out", type=Path, help="new directory for the Hugging Face model")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        policy = export(args.source, args.out)
    except (FileNotFoundError, FileExistsError) as e:
        print(f"rlvr-export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {policy} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
