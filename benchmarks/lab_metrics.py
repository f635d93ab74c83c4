"""Per setting of a seed sweep, the mean over its seeds and steps of some logged metrics (docs/ENTROPY_LAB.md).

python benchmarks/lab_metrics.py runs/lab clip/low_frac clip/high_frac kl/ref loss/policy
"""

import sys
from pathlib import Path

from rlvr.report.runs import load_runs
from rlvr.report.seeds import group_by_setting


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
    main(sys.argv[1], sys.argv[2:])
