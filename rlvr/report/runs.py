"""The runs a report is about: finding run dirs, reading their metrics and configs, and what was swept.

A run dir holds ``metrics.jsonl`` (one JSON object per step), ``config.yaml`` (the resolved config) and, for
a Hydra multirun job, ``.hydra/overrides.yaml``. The swept keys are the keys whose values differ between the
runs; runs are labelled by their values of them.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.errors import ERROR_FILENAME
from rlvr.metrics.entropy_law import EntropyLawFit
from rlvr.metrics.entropy_stats import ENTROPY_EDGES_FILENAME, ENTROPY_HIST_EDGES


@dataclass
class Run:
    """One run's metrics: records sorted by step, one per step (the last written wins)."""

    path: Path
    label: str
    records: list[dict[str, Any]]
    hist_edges: list[float] = field(default_factory=lambda: list(ENTROPY_HIST_EDGES))
    skipped_lines: int = 0
    entropy_threshold: float | None = None  # monitor.entropy_threshold from the run's config.yaml
    name: str = ""  # the directory, relative to the sweep dir it was found in
    total_steps: int | None = None  # trainer.total_steps from the run's config.yaml
    failed: bool = False  # the run left an error.txt (rlvr-train writes it when a run fails)
    overrides: dict[str, str] | None = None  # .hydra/overrides.yaml as {key: value as typed}
    config: dict[str, Any] | None = None  # config.yaml flattened to {"a.b.c": value}
    swept: dict[str, str] = field(
        default_factory=dict
    )  # this run's values of the keys that differ between runs

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) where ``key`` is a number (null, i.e. NaN, kept as NaN to show a gap)."""
        steps, values = [], []
        for r in self.records:
            if key not in r:
                continue
            v = r[key]
            if v is None:
                v = math.nan
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            steps.append(r["step"])
            values.append(float(v))
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)

    def metric_keys(self) -> set[str]:
        return {k for r in self.records for k in r}

    def last(self, key: str) -> tuple[int, float] | None:
        """(step, value) of the last finite value of ``key``, or None."""
        steps, values = self.series(key)
        ok = np.flatnonzero(~np.isnan(values))
        return (int(steps[ok[-1]]), float(values[ok[-1]])) if len(ok) else None

    def pass_k_keys(self) -> list[str]:
        return sorted((k for k in self.metric_keys() if k.startswith("eval/pass@")), key=pass_k_sort)

    def law_fit(self) -> EntropyLawFit | None:
        """The last entropy-law fit the trainer logged."""
        last = {k: self.last(f"entropy_law/{k}") for k in ("a", "b", "r2", "n_points")}
        if last["a"] is None or last["b"] is None:
            return None
        r2 = last["r2"][1] if last["r2"] else math.nan
        n = int(last["n_points"][1]) if last["n_points"] else 0
        return EntropyLawFit(a=last["a"][1], b=last["b"][1], r2=r2, n=n)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse metrics.jsonl; returns (records sorted by step, number of unparseable lines skipped)."""
    by_step: dict[int, dict[str, Any]] = {}
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                skipped += 1  # e.g. a partial last line after a crash
                continue
            record["step"] = step
            by_step[step] = record  # a resumed run that was not truncated: the later line wins
    return [by_step[s] for s in sorted(by_step)], skipped


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    # e.g. Hydra multirun dirs named 0, 1, ... under different sweeps
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _is_run_dir(path: Path) -> bool:
    return (
        (path / "metrics.jsonl").is_file()
        or (path / ERROR_FILENAME).is_file()
        or (path / ".hydra" / "overrides.yaml").is_file()  # a Hydra job that has not logged a step (yet)
    )


def _natural_key(path: Path) -> list:
    """Sort key: digit runs by value, so that sweep job 10_... comes after 9_..."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` if it is a run dir, else the run dirs below it (not below a run dir, not in hidden dirs such
    as .submitit/), in natural order of their paths."""
    if _is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if d != root and _is_run_dir(d):
            found.append(d)
            dirnames.clear()
            continue
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root)))


def load_run(run_dir: Path, label: str) -> Run:
    records, skipped = (
        read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else ([], 0)
    )
    run = Run(path=run_dir, label=label, name=label, records=records, skipped_lines=skipped)
    edges_file = run_dir / ENTROPY_EDGES_FILENAME
    if edges_file.exists():
        run.hist_edges = [float(e) for e in json.loads(edges_file.read_text())["entropy/hist"]]
    run.config = _flat_config(run_dir / "config.yaml")
    if run.config is not None:
        run.entropy_threshold = run.config.get("monitor.entropy_threshold")
        total = run.config.get("trainer.total_steps")
        run.total_steps = total if isinstance(total, int) else None
    run.overrides = _read_overrides(run_dir / ".hydra" / "overrides.yaml")
    run.failed = (run_dir / ERROR_FILENAME).is_file()
    return run


def load_runs(dirs: Sequence[str | Path]) -> list[Run]:
    """Every run of the arguments (run dirs or dirs holding them), labelled by their swept values."""
    found: list[tuple[Path, str]] = []
    for d in map(Path, dirs):
        run_dirs = find_run_dirs(d) if d.is_dir() else []
        if not run_dirs:
            raise FileNotFoundError(
                f"{d / 'metrics.jsonl'} not found, nor any run dir below {d} (is it a run or sweep directory?)"
            )
        if run_dirs == [d]:
            found.append((d, ""))
        else:
            prefix = f"{d.resolve().name}/" if len(dirs) > 1 else ""
            found += [(r, prefix + r.relative_to(d).as_posix()) for r in run_dirs]
    plain = _labels([p.resolve() for p, name in found if not name])
    names = [name or plain.pop(0) for _, name in found]
    runs = [load_run(p, name) for (p, _), name in zip(found, names)]
    label_by_swept_values(runs)
    return runs


def _read_overrides(path: Path) -> dict[str, str] | None:
    """Hydra's record of a run's command-line overrides, as {key: value as typed}; None if absent."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a report must not fail on a damaged file
        return None
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value if sep else "(deleted)"  # +key=v adds, ~key deletes
    return overrides


def _flat_config(path: Path) -> dict[str, Any] | None:
    """The run's resolved config.yaml as {"a.b.c": value}; None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a report must not fail on a damaged config
        return None
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


_NOT_SWEPT = {"trainer.output_dir"}  # differs between the runs of any comparison; the run column shows it


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The keys whose values differ between runs: the keys of the runs' overrides, in the order they were
    typed, if any run has them (one without, e.g. a job that died before writing anything, shows n/a rather
    than costing the whole table its column), else every key of the configs."""
    if len(runs) < 2:
        return []
    by_overrides = any(r.overrides is not None for r in runs)
    if not by_overrides and not all(r.config is not None for r in runs):
        return []
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys((r.overrides or {}) if by_overrides else r.config))
    return [k for k in keys if k not in _NOT_SWEPT and len({value_of(r, k) for r in runs}) > 1]


def value_of(run: Run, key: str) -> str:
    """The value the run used (its resolved config: 0 and 0.0 typed are the same 0.0), else as typed (a config
    group such as algo=dapo, or a run without config.yaml)."""
    if run.config is not None and key in run.config:
        return _as_text(run.config[key])
    if run.overrides is not None and key in run.overrides:
        return run.overrides[key]
    return "n/a"


def label_by_swept_values(runs: Sequence[Run]) -> list[str]:
    """Set each run's ``swept`` values and label ("key=value, ..."; the directory name when nothing differs)."""
    keys = swept_keys(runs)
    for run in runs:
        run.swept = {k: value_of(run, k) for k in keys}
    labels = [", ".join(f"{k}={v}" for k, v in run.swept.items()) for run in runs]
    if keys and len(set(labels)) == len(labels):
        for run, label in zip(runs, labels):
            run.label = label
    return keys


def pass_k_sort(key: str) -> tuple[int, str]:
    """Sort key for ``eval/pass@K``: by K as a number (pass@2 before pass@16)."""
    tail = key.rsplit("@", 1)[-1]
    return (int(tail), key) if tail.isdigit() else (sys.maxsize, key)
