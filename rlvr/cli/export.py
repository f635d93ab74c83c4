"""`rlvr-export CHECKPOINT_OR_RUN_DIR OUT_DIR`: a checkpoint's policy as a Hugging Face model directory.

    rlvr-export runs/quickstart OUT_DIR                           # the run's newest complete checkpoint
    rlvr-export runs/quickstart/checkpoints/step_000100 OUT_DIR   # a given checkpoint

The result (config.json, model.safetensors, tokenizer files, generation_config.json) loads with
`AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `vllm.LLM(OUT_DIR)`. OUT_DIR appears complete or not at all.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rlvr import checkpoint


def resolve_policy_dir(path: Path) -> Path:
    """The policy dir of a checkpoint, or of the newest complete checkpoint of a run dir."""
    if (path / "policy").is_dir():
        return path / "policy"
    latest = checkpoint.find_latest(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path}: neither a checkpoint (no policy/) nor a run dir with complete checkpoints"
        )
    return latest / "policy"


def export(source: Path, out: Path) -> Path:
    policy = resolve_policy_dir(source)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new directory")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(policy, tmp)
    tmp.rename(out)
    return policy


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
