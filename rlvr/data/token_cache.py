"""Prompt token ids kept on disk, keyed by everything that decides them, so a machine tokenizes a dataset once.

Every rank of a run calls `load_or_build` with the same key: the first to take the key's lock (fcntl) tokenizes
and writes the file, the others on the machine wait for it and read it, and so does every later run with the
same prompts, tokenizer files and prompt settings. The file is safetensors (no code runs on load), written to a
temporary name and renamed into place, so a crash never leaves half a cache. The cache lives under
RLVR_CACHE_DIR (default .cache/rlvr)/prompt_tokens; data.token_cache=false turns it off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from rlvr.hashing import file_sha256

log = logging.getLogger(__name__)

VERSION = 1  # bump when what a cached file holds, or how prompts are tokenized, changes
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
_MAX_HASHED_FILE = 64 << 20  # tokenizer files are a few MB; anything larger is not one


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_CACHE_DIR", ".cache/rlvr")) / "prompt_tokens"


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str | None:
    """A hash of the files that define a tokenizer (every non-weight file of its dir: tokenizer.json, vocab,
    merges, chat template, configs); None when `tokenizer_dir` is not a directory (nothing to key on)."""
    d = Path(tokenizer_dir)
    if not str(tokenizer_dir) or not d.is_dir():  # "" (a tokenizer built in memory) is not the working dir
        return None
    files = sorted(p for p in d.iterdir() if p.is_file())
    digests = {
        f.name: file_sha256(f)
        for f in files
        if f.suffix not in _WEIGHTS and f.stat().st_size <= _MAX_HASHED_FILE
    }
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def cache_key(parts: dict, prompts: Iterable[object]) -> str:
    """sha256 over `parts` (JSON: tokenizer fingerprint, library versions, prompt settings) and every prompt."""
    h = hashlib.sha256(json.dumps({"version": VERSION, **parts}, sort_keys=True).encode())
    for prompt in prompts:
        h.update(json.dumps(prompt, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def load_or_build(
    root: Path, key: str, build: Callable[[], tuple[list[int], list[list[int]]]]
) -> tuple[list[int], list[list[int]]]:
    """(kept row indices, token ids of each kept prompt) from root/<key>.safetensors, built by `build` (and
    written) by whichever process takes the key's lock first. A build that raises writes nothing. The cache is
    a saving, never a failure: where it cannot be written (read-only or full disk) the ids are built, used and
    the reason logged."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "w")  # noqa: SIM115 (held across the build: the with below closes it)
    except OSError as e:
        log.warning("prompt token cache %s cannot be used (%s); tokenizing without it", root, e)
        return build()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        path = root / f"{key}.safetensors"
        if path.exists():
            try:
                return _read(path)
            except Exception as e:  # damaged by hand or by a full disk: rebuild it
                log.warning("prompt token cache %s is unreadable (%s); tokenizing again", path, e)
        kept, ids = build()
        try:
            _write(path, kept, ids)
        except OSError as e:
            log.warning("prompt token cache %s not written (%s); the next run tokenizes again", path, e)
        return kept, ids


def _read(path: Path) -> tuple[list[int], list[list[int]]]:
    from safetensors.torch import load_file

    t = load_file(path)
    offsets, flat = t["offsets"].tolist(), t["ids"].tolist()
    ids = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    log.info("prompt token ids: read %d prompts from %s", len(ids), path)
    return t["kept"].tolist(), ids


def _write(path: Path, kept: list[int], ids: list[list[int]]) -> None:
    """To a temporary name, then renamed into place: a reader sees the whole file or none."""
    import torch
    from safetensors.torch import save_file

    lengths = torch.tensor([0] + [len(x) for x in ids], dtype=torch.int64)
    tensors = {
        "ids": torch.tensor([t for x in ids for t in x], dtype=torch.int64),
        "offsets": torch.cumsum(lengths, 0),
        "kept": torch.tensor(kept, dtype=torch.int64),
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
