"""Content hashes of files (checkpoint manifests, the shipped models' build records, the prompt token cache) and
the run's derived seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks (a checkpoint's weights never whole)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from (run seed, purpose, step, round ...): distinct inputs never share a stream by accident."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
