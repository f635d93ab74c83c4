"""Checkpoints: written whole or not at all, found again on resume.

    checkpoints/step_NNNNNN/policy/        Hugging Face model dir (safetensors) + tokenizer
    checkpoints/step_NNNNNN/reference/     only when the reference differs from the base model (after a reset)
    checkpoints/step_NNNNNN/state.pt       optimizer, scheduler, RNG states, sampler position, trainer state
    checkpoints/latest                     name of the newest complete checkpoint, written last

A checkpoint is first written to `checkpoints/.tmp-step_NNNNNN/`, then renamed into place; a directory named
`step_*` is therefore always complete, and a crash mid-write leaves only a `.tmp-*` directory that resume ignores.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.random.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path, step: int, policy, tokenizer, reference, state: dict[str, Any], keep_last: int
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, and keep only the newest `keep_last`."""
    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save_pretrained(tmp / "policy", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "policy")
    if reference is not None:
        reference.save_pretrained(tmp / "reference", safe_serialization=True)
    torch.save(state, tmp / "state.pt")
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(root)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name + "\n")
    with latest_tmp.open("rb") as f:
        os.fsync(f.fileno())
    latest_tmp.replace(root / LATEST)
    _fsync_dir(root)
    for old in sorted(root.glob("step_*"))[:-keep_last]:
        shutil.rmtree(old)
    return final


def find_latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run dir, or None."""
    root = Path(output_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.exists():
        name = pointer.read_text().strip()
        # only a complete step dir counts: never checkpoints/ itself (empty pointer) or a .tmp-* dir
        if re.fullmatch(r"step_\d+", name) and (root / name).is_dir():
            return root / name
    complete = sorted(root.glob("step_*")) if root.is_dir() else []
    return complete[-1] if complete else None


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    # Our own file, holding only tensors and plain Python values; weights come from safetensors.
    return torch.load(Path(checkpoint_dir) / "state.pt", map_location="cpu", weights_only=False)
