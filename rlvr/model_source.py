"""Where a model's files are: `model.path` is a local directory or a Hugging Face hub id (`org/name`, with
`model.revision`), resolved through `huggingface_hub` to a local snapshot: its cache (HF_HOME, HF_HUB_CACHE),
downloaded if missing, or read from the cache alone under HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import re

from rlvr.errors import ConfigError

# org/name or name: letters, digits, - _ . (the hub's rule); a local path starts with / . ~ or has more parts
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(path: str) -> bool:
    """Whether `path` names a hub repo rather than a local directory (which it is when it exists)."""
    return not os.path.isdir(path) and not path.startswith((".", "/", "~")) and bool(_HUB_ID.fullmatch(path))


def resolve_model(path: str, revision: str | None = None, key: str = "model.path") -> str:
    """A local directory holding the model: `path` itself, or the hub repo's snapshot. ConfigError (naming
    `key`) when it is neither a directory nor a resolvable hub id."""
    if os.path.isdir(path):
        return path
    if not is_hub_id(path):
        raise ConfigError(
            key, f"no model directory at {path!r} (and it is not a hub id such as Qwen/Qwen2.5-Math-1.5B)"
        )
    from huggingface_hub import snapshot_download

    try:
        # the environment as it is now (huggingface_hub reads HF_HUB_OFFLINE once, when first imported)
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        return snapshot_download(path, revision=revision, local_files_only=offline)
    except Exception as e:  # offline and not cached, no such repo or revision, no network, gated
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = (
            " (HF_HUB_OFFLINE is set: only the local cache was searched)"
            if os.environ.get("HF_HUB_OFFLINE")
            else ""
        )
        raise ConfigError(key, f"the hub model {path!r} cannot be resolved{offline}: {first}") from None
