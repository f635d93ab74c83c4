"""The two checks every config section's validator is written with (rlvr.config, rlvr.config_algo)."""

from __future__ import annotations

from rlvr.errors import ConfigError


def require(ok: bool, key: str, message: str) -> None:
    """ConfigError(key, message) unless ok."""
    if not ok:
        raise ConfigError(key, message)


def one_of(value: object, allowed: tuple, key: str) -> None:
    """ConfigError naming `key` unless value is one of `allowed`."""
    require(value in allowed, key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")
