"""Command-line overrides checked against the typed schema before Hydra composes anything.

Hydra refuses a mistyped key (`algo.clip.eps_hihg`) but advises adding it with `+`, and with the `+` the typo
is added to the config and the run trains with `eps_high` unchanged. Here every key an override sets, adds or
deletes must be a key of `RLVRConfig` (or of a set under `eval.sets.<name>`, or below a free-form dict such as a
reward term's `kwargs`); any other is refused with one line that names it and the nearest real key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from rlvr.config import EvalSetConfig, RLVRConfig
from rlvr.errors import ConfigError

# dicts whose keys are names the user picks, each value typed: eval.sets.<name>.<EvalSetConfig key>
_NAMED_ENTRIES: dict[str, type] = {"eval.sets": EvalSetConfig}
# config dirs that are not Hydra groups: what they are, for the one-line refusal
_NOT_GROUPS = {
    "accelerate": "configs/accelerate/ holds `accelerate launch --config_file` files, not a config group: "
    "accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes N $(which rlvr-train) ...",
}


def _unwrap(t: Any) -> Any:
    """X | None -> X (the schema's optional fields)."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return t


def _child(t: Any, part: str, path: str) -> tuple[bool, Any]:
    """(found, type) of key `part` below a node of type `t` reached by dotted `path`."""
    if path in _NAMED_ENTRIES:
        return True, _NAMED_ENTRIES[path]
    if dataclasses.is_dataclass(t):
        hints = typing.get_type_hints(t)
        return (part in hints), _unwrap(hints.get(part))
    origin = typing.get_origin(t)
    if origin is list:
        return part.isdigit(), _unwrap(typing.get_args(t)[0])
    if t is Any or origin is dict or t is dict:
        return True, Any  # free-form (a reward term's kwargs): any key
    return False, None  # a leaf value has no keys below it


def _known_keys(t: Any, prefix: str, depth: int = 0) -> list[str]:
    """Every dotted key below a node of type `t` (the candidates of a suggestion)."""
    if not dataclasses.is_dataclass(t) or depth > 6:
        return []
    out = []
    for name, hint in typing.get_type_hints(t).items():
        key = f"{prefix}{name}"
        out.append(key)
        out.extend(_known_keys(_unwrap(hint), key + ".", depth + 1))
    return out


def _candidates(parts: list[str]) -> list[str]:
    """The real keys a mistyped key is compared with: the schema's, or an entry's under eval.sets.<name>."""
    for named, entry_type in _NAMED_ENTRIES.items():
        depth = named.count(".") + 2  # eval, sets, <name>
        if ".".join(parts[: depth - 1]) == named and len(parts) > depth:
            return _known_keys(entry_type, ".".join(parts[:depth]) + ".")
    return _known_keys(RLVRConfig, "")


def unknown_key_message(key: str) -> str | None:
    """None when `key` (dotted) names a key of the schema; else the refusal, with the nearest real key."""
    parts = key.split(".")
    t: Any = RLVRConfig
    for i, part in enumerate(parts):
        path = ".".join(parts[:i])
        found, t = _child(t, part, path)
        if not found:
            near = difflib.get_close_matches(key, _candidates(parts), n=1, cutoff=0.6)
            return "no such key" + (f"; did you mean {near[0]}?" if near else "")
        if t is Any:
            return None
    return None


def _is_group(name: str, config_dir: Path) -> bool:
    return (config_dir / name).is_dir() and name not in _NOT_GROUPS


def check(overrides: list[str], config_dir: str | Path) -> None:
    """Refuse (ConfigError naming the key) an override whose key the schema does not have, with or without `+`,
    and a config dir that is not a group. Hydra's own keys (`hydra.*`, `hydra/launcher=...`) and the groups of
    `config_dir` (`experiment=`, `+eval/sets=[...]`) are Hydra's to check; an override Hydra cannot parse is
    left to Hydra's message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    config_dir = Path(config_dir)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return
    for o in parsed:
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key in _NOT_GROUPS:
            raise ConfigError(key, _NOT_GROUPS[key])
        if _is_group(key, config_dir) or "/" in key:
            continue
        message = unknown_key_message(key)
        if message is not None:
            raise ConfigError(key, message)
