"""Build an embedded model: tokenizer, warm-started tiny Qwen2 model and its task's data splits.

python scripts/build_tiny_model.py [--task tiny-addition] [--out $RLVR_CACHE_DIR/<task>] [--target-accuracy A]
python scripts/build_tiny_model.py --task tiny-fork --ship    # rebuild the copy shipped in rlvr/assets/<task>

The trainer installs the shipped copy on first use; a build of your own replaces it in the cache until the
recipe changes (rlvr.tiny_model.TASKS[task].recipe).
"""

import argparse
import os

from rlvr.tiny_model import TASKS, build_tiny_assets


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="tiny-addition")
    parser.add_argument("--out", help="default: $RLVR_CACHE_DIR/<task>")
    parser.add_argument(
        "--ship", action="store_true", help="write the model and build.json into rlvr/assets/<task>"
    )
    parser.add_argument("--target-accuracy", type=float, help="default: the task's")
    parser.add_argument("--max-sft-steps", type=int, help="default: the task's")
    parser.add_argument("--seed", type=int, default=0)
    return parser


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    task = TASKS[args.task]
    out = (
        task.shipped
        if args.ship
        else args.out or os.path.join(os.environ.get("RLVR_CACHE_DIR", ".cache/rlvr"), task.name)
    )
    target = task.target_accuracy if args.target_accuracy is None else args.target_accuracy
    path = build_tiny_assets(out, task, args.max_sft_steps, target, args.seed, data=not args.ship)
    print(path)
    print((path.parent / "build.json").read_text())
