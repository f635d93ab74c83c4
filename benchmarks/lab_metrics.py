"""Per setting of a seed sweep, the mean over its seeds and steps of some logged metrics (docs/ENTROPY_LAB.md).

python benchmarks/lab_metrics.py runs/lab clip/low_frac clip/high_frac kl/ref loss/policy
"""

import argparse
from pathlib import Path

from rlvr.report.runs import load_runs
from rlvr.report.seeds import group_by_setting


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs test parses the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep dir (rlvr-train -m ... hydra.sweep.dir=DIR)")
    parser.add_argument("keys", nargs="+", metavar="KEY", help="metric keys of metrics.jsonl")
    return parser


def main(sweep: str, keys: list[str]) -> None:
    groups = group_by_setting(load_runs([Path(sweep)]))
    print("| setting | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for group in groups:
        cells = []
        for key in keys:
            values = [v for run in group.runs for v in run.series(key)[1].tolist()]
            cells.append(f"{sum(values) / len(values):.3g}" if values else "n/a")
        print(f"| {group.label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    args = build_parser().parse_args()
    main(args.sweep, args.keys)
