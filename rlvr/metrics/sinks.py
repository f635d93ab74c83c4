"""Where per-step metrics go: metrics.jsonl (the record), the console, Weights & Biases.

Each sink takes ``log(step, metrics)`` with a flat mapping of metric key -> value (keys as in
DESIGN.md). Values may be Python numbers, 0-d/1-element tensors, numpy scalars, or lists
(``entropy/hist``: counts over ``ENTROPY_HIST_EDGES``). ``MetricsLogger`` fans out to several.
A sink may also have ``log_samples(step, rows)`` (a few completions as flat dicts): ``WandbSink`` makes
a table of them; the complete samples are in ``samples/step_NNNNNN.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rlvr.metrics.entropy_stats import ENTROPY_HIST_EDGES

logger = logging.getLogger(__name__)

_HIST_EDGES: dict[str, Sequence[float]] = {"entropy/hist": ENTROPY_HIST_EDGES}
"""Histogram metrics (counts) and the bin edges they count over."""


class MetricsSink(Protocol):
    def log(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values and nested containers -> JSON types; NaN and +-inf -> None.

    Strict JSON has no NaN/Infinity; null keeps every line parseable by any reader.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and numpy scalars
    if callable(tolist):
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        return to_jsonable(value.tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return to_jsonable(item())
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON-serializable: {value!r}")


def _scalar(value: Any) -> float | None:
    """A real number from a Python/numpy/tensor scalar (bool and int included), else None."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    n = numel() if callable(numel) else numel
    if n == 1 and callable(getattr(value, "item", None)):
        v = value.item()
        if isinstance(v, (bool, int, float)):
            return float(v)
    return None


class JsonlSink:
    """Appends one JSON object per ``log`` call to ``path`` (``<run_dir>/metrics.jsonl``).

    Each line is ``{"step": step, <metric>: <value>, ...}`` with "step" first. The line is
    flushed and fsync'ed before ``log`` returns, so a crash loses at most the step in progress.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open across steps)
        self._terminate_partial_line()

    def _terminate_partial_line(self) -> None:
        # A crash mid-write can leave a line without its newline; appending to it would merge
        # two steps into one unparseable line. Readers skip the lone fragment.
        if self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
        if last != b"\n":
            logger.warning("%s ends in a partial line (crash mid-write?); starting a new line", self.path)
            self._write_line("")

    def _write_line(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            if key != "step":
                record[key] = to_jsonable(value)
        self._write_line(json.dumps(record, allow_nan=False))

    def truncate_after(self, step: int) -> None:
        """Drop every line with ``"step" > step`` (on resume from a checkpoint at ``step``).

        Unparseable lines (a partial line from a crash) are dropped too. The file is rewritten
        to a temporary file and renamed over the original, so it is never half-written.
        """
        self._file.close()
        kept: list[str] = []
        dropped = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record_step = json.loads(line)["step"]
                except (ValueError, KeyError, TypeError):
                    dropped += 1
                    continue
                if record_step <= step:
                    kept.append(line)
                else:
                    dropped += 1
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                # mkstemp makes the file 0600; keep the mode the file had (the umask's, like every run file)
                os.fchmod(f.fileno(), stat.S_IMODE(self.path.stat().st_mode))
                f.writelines(line + "\n" for line in kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        if dropped:
            logger.info("%s: dropped %d lines after step %d", self.path, dropped, step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


DEFAULT_CONSOLE_KEYS: tuple[str, ...] = (
    "reward/mean",
    "acc/mean",
    "entropy/mean",
    "kl/ref",
    "response/len_mean",
    "timing/step_s",
)


class ConsoleSink:
    """One compact line every ``every`` steps, e.g.
    ``step 12 | reward 0.4375 | acc 0.4062 | entropy 0.8312 | kl/ref 0.0012 | timing/step_s 3.21``.

    keys: metric keys to show, in order (missing ones are left out); default
    ``DEFAULT_CONSOLE_KEYS`` plus any ``eval/pass@K`` in the step. Lists (histograms) are never
    printed. printer: where the line goes; default ``logging`` (logger ``rlvr.metrics.sinks``)
    when the root logger has handlers (Hydra configures them), else ``print``.
    """

    def __init__(
        self,
        every: int = 1,
        keys: Sequence[str] | None = None,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"ConsoleSink every must be >= 1, got {every}")
        self.every = every
        self.keys = tuple(keys) if keys is not None else None
        self._printer = printer

    def format(self, step: int, metrics: Mapping[str, Any]) -> str:
        keys = self.keys
        if keys is None:
            keys = DEFAULT_CONSOLE_KEYS + tuple(sorted(k for k in metrics if k.startswith("eval/pass@")))
        parts = [f"step {step}"]
        for key in keys:
            value = _scalar(metrics.get(key))
            if value is None:
                continue
            label = key.removesuffix("/mean")
            parts.append(f"{label} {value:.4g}")
        return " | ".join(parts)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if step % self.every != 0:
            return
        line = self.format(step, metrics)
        if self._printer is not None:
            self._printer(line)
        elif logging.getLogger().hasHandlers():
            logger.info(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        pass


def resolve_wandb_mode(mode: str | None) -> str:
    """``mode`` if given; else ``$WANDB_MODE`` if set; else "online" with ``$WANDB_API_KEY``, "offline" without."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbSink:
    """Logs each step to a Weights & Biases run whose files live under ``<run_dir>/wandb/``.

    Scalars are logged as they are; a histogram metric (``entropy/hist``: counts over the fixed
    ``ENTROPY_HIST_EDGES``) becomes ``wandb.Histogram(np_histogram=(counts, edges))``; other
    lists and strings are skipped (they are in metrics.jsonl). Mode: see ``resolve_wandb_mode``.
    Extra keyword arguments go to ``wandb.init`` (e.g. ``id=..., resume="allow"`` to continue a run).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        project: str,
        name: str | None,
        config: Mapping[str, Any],
        mode: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        import wandb  # lazy: importing wandb costs ~0.3 s and most runs/tests never need it

        self._wandb = wandb
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = resolve_wandb_mode(mode)
        self.run = wandb.init(
            project=project,
            name=name,
            dir=str(run_dir),
            config=dict(config),
            mode=self.mode,
            **init_kwargs,
        )

    def _convert(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in metrics.items():
            if key == "step":
                continue
            if key in _HIST_EDGES:
                edges = _HIST_EDGES[key]
                counts = to_jsonable(value)
                if isinstance(counts, list) and len(counts) == len(edges) - 1:
                    data[key] = self._wandb.Histogram(np_histogram=(counts, list(edges)))
                else:
                    logger.warning(
                        "step %d: %s is not %d bin counts; not sent to wandb", step, key, len(edges) - 1
                    )
                continue
            scalar = _scalar(value)
            if scalar is not None:
                data[key] = scalar
        return data

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(self._convert(step, metrics), step=int(step))

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]], key: str = "samples") -> None:
        """A ``wandb.Table`` under ``key`` at ``step``: one row per completion, columns ``step`` and the keys of
        the first row (values JSON-converted; missing ones empty). Log it before that step's metrics (wandb
        steps only go forward)."""
        if not rows:
            return
        columns = ["step", *rows[0].keys()]
        data = [[int(step), *(to_jsonable(row.get(c)) for c in columns[1:])] for row in rows]
        self.run.log({key: self._wandb.Table(columns=columns, data=data)}, step=int(step))

    def close(self) -> None:
        self.run.finish()


class MetricsLogger:
    """Sends each step's metrics to every sink; ``close`` closes them all (even if one fails)."""

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        self.sinks = list(sinks)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Sends a few completions to the sinks that show samples (those with ``log_samples``)."""
        for sink in self.sinks:
            log_samples = getattr(sink, "log_samples", None)
            if log_samples is not None:
                log_samples(step, rows)

    def close(self) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # close the others before reporting
                logger.exception("closing %s failed", type(sink).__name__)
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
