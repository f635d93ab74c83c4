"""The errors every layer raises, and the exit status `rlvr-train` gives each (the ground floor: no rlvr import).

Each message is one line a user can act on: it names the key, the file and row, or what was seen.
"""

from __future__ import annotations

ERROR_FILENAME = "error.txt"
"""Written into the run dir when the run fails (the traceback); removed when it starts again."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class DataError(ValueError):
    """A data file or row is unusable; the message names the file and row."""


class RunDirBusy(ConfigError):
    """Another process holds the run directory."""


class RunDiverged(RuntimeError):
    """The run cannot go on; the message names what was seen and its likely causes."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the message says which and why, in one line."""
