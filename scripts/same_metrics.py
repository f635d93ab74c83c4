"""Compare the metrics.jsonl of runs made before and after a change that must not change behaviour.

    python scripts/same_metrics.py [--new KEY ...] BEFORE_DIR AFTER_DIR [BEFORE_DIR AFTER_DIR ...]

Each pair of run dirs must hold the same steps with the same keys and bit-identical values, timings and
throughputs aside (`timing/*`, `throughput/*`: wall-clock). `--new KEY`: a key the change adds (absent before)
is listed, not a difference; a key it changes still is. Exit 0 when every pair matches, else 1 with the first
differing steps and keys of each pair. scripts/behaviour_runs.sh makes the runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WALL_CLOCK = ("timing/", "throughput/")


def lines(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)} for row in rows]


def differences(before: list[dict], after: list[dict], new: frozenset[str] = frozenset()) -> list[str]:
    if [r["step"] for r in before] != [r["step"] for r in after]:
        return [f"steps differ: {[r['step'] for r in before]} vs {[r['step'] for r in after]}"]
    out = []
    for b, a in zip(before, after):
        keys = sorted(set(b) | set(a))
        added = {k for k in keys if k not in b and k in new}
        bad = [k for k in keys if k not in added and json.dumps(b.get(k)) != json.dumps(a.get(k))]
        if bad:
            out.append(
                f"step {b['step']}: " + ", ".join(f"{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in bad[:6])
            )
    return out


def main(argv: list[str]) -> int:
    new: set[str] = set()
    while len(argv) >= 2 and argv[0] == "--new":
        new.add(argv[1])
        argv = argv[2:]
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    ok = True
    for before, after in zip(argv[::2], argv[1::2]):
        old_rows, new_rows = lines(Path(before)), lines(Path(after))
        found = differences(old_rows, new_rows, frozenset(new))
        added = sorted({k for b, a in zip(old_rows, new_rows) for k in a if k not in b and k in new})
        extra = f", added: {', '.join(added)}" if added else ""
        print(f"{'SAME' if not found else 'DIFFERENT'}: {before} vs {after} ({len(old_rows)} lines{extra})")
        for d in found[:3]:
            print("  " + d)
        ok &= not found
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
