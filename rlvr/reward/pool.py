"""A pool of reusable 'spawn' worker processes that runs one picklable function over many samples, each under
a time limit, for the verifier (math-verify) and the user's reward functions alike.

Each sample gets `timeout_s` inside its worker (the function enforces it, with `rlvr.reward.deadline`); a
worker that has not answered a sample within `timeout_s * 2 + 1` s (stuck in C code that never checks
signals), or that dies, is killed and replaced, and that sample's result is None. Workers run the function on
their main thread, where signals work.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from multiprocessing.connection import wait
from typing import Any

logger = logging.getLogger(__name__)

STARTUP_S = 60.0  # a worker that cannot warm up within this is broken, not slow
MAX_CHUNK = 16  # samples per message: fewer round trips, while the deadline is still per sample


def _worker_main(conn, fn: Callable[..., Any], timeout_s: float, warmup: Callable[[], Any] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pool
    if warmup is not None:
        warmup()  # imports and caches, before saying ready: not charged to the first sample's deadline
    conn.send("ready")
    try:
        while (batch := conn.recv()) is not None:
            for item in batch:
                try:
                    conn.send((fn(*item, timeout_s), None))
                except Exception:
                    conn.send((None, traceback.format_exc()))
    except EOFError:  # the parent went away
        pass


class Worker:
    """One worker process and the samples it holds: `todo` (indices sent, not answered yet, in order)."""

    def __init__(self, ctx, fn, timeout_s: float, warmup):
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, fn, timeout_s, warmup), daemon=True)
        self.proc.start()
        child_conn.close()
        self.ready = False
        self.todo: deque[int] = deque()
        self.since = time.monotonic()  # start of the process, or of the sample todo[0]

    def due(self, hard_limit_s: float) -> float:
        return self.since + (hard_limit_s if self.ready else STARTUP_S)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


class WorkerPool:
    """`num_workers` processes running `fn(*item, timeout_s)` for each item of `map`.

    `fn` and `warmup` must be picklable (module-level functions, or instances of module-level classes: an
    instance is copied into each worker once, so state it keeps is per worker). `label` names the pool in its
    log lines and errors. Not thread-safe: call `map` from one thread at a time.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        num_workers: int,
        timeout_s: float,
        warmup: Callable[[], Any] | None = None,
        label: str = "verifier",
    ):
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError(f"bad num_workers={num_workers} or timeout_s={timeout_s}")
        self.label = label
        self.hard_limit_s = timeout_s * 2 + 1
        ctx = mp.get_context("spawn")
        self._spawn = lambda: Worker(ctx, fn, timeout_s, warmup)
        self.closed = False
        self.workers = [self._spawn() for _ in range(num_workers)]
        try:
            self.map([])  # returns once every worker is ready
        except BaseException:
            self.close()
            raise

    def map(self, items: Sequence[tuple[Hashable, ...]]) -> list[Any]:
        """fn's result for each item, in input order; None where the worker was killed (over the hard limit, or
        dead). Identical items are run once. A worker's traceback raises RuntimeError here."""
        if self.closed:
            raise RuntimeError(f"the {self.label} pool is closed")
        distinct = list(dict.fromkeys(items))
        results: list[Any] = [None] * len(distinct)
        pending = deque(range(len(distinct)))
        chunk = max(1, min(MAX_CHUNK, math.ceil(len(pending) / (4 * len(self.workers)))))
        try:
            while pending or any(w.todo or not w.ready for w in self.workers):
                for i, w in enumerate(self.workers):
                    if w.ready and not w.todo and pending and not w.proc.is_alive():  # died while idle
                        w.kill()
                        w = self.workers[i] = self._spawn()
                    if w.ready and not w.todo and pending:
                        w.todo.extend(pending.popleft() for _ in range(min(chunk, len(pending))))
                        w.conn.send([distinct[j] for j in w.todo])
                        w.since = time.monotonic()
                waiting = [w for w in self.workers if w.todo or not w.ready]
                first_due = min(w.due(self.hard_limit_s) for w in waiting)
                readable = wait([w.conn for w in waiting], timeout=max(0.0, first_due - time.monotonic()))
                for i, w in enumerate(self.workers):
                    if w.conn in readable:
                        self._receive(i, results, pending)
                    elif w in waiting and time.monotonic() > w.due(self.hard_limit_s):
                        self._fail(i, results, pending, "did not answer in time")
        except BaseException:  # busy workers would answer this call's samples in the next call: replace them
            for i, w in enumerate(self.workers):
                if w.todo:
                    w.kill()
                    self.workers[i] = self._spawn()
            raise
        found = dict(zip(distinct, results))
        return [found[item] for item in items]

    def _receive(self, i: int, results: list, pending: deque) -> None:
        w = self.workers[i]
        try:
            message = w.conn.recv()
        except EOFError:
            return self._fail(i, results, pending, f"died (exit code {w.proc.exitcode})")
        if not w.ready:
            w.ready = message == "ready"
            return
        result, error = message
        if error is not None:
            raise RuntimeError(f"{self.label} worker raised:\n{error}")
        results[w.todo.popleft()] = result
        w.since = time.monotonic()

    def _fail(self, i: int, results: list, pending: deque, why: str) -> None:
        w = self.workers[i]
        if not w.ready:
            raise RuntimeError(f"{self.label} worker {why} while starting")
        logger.warning(
            "%s worker %d %s; sample %d is TIMEOUT, restarting it", self.label, w.proc.pid, why, w.todo[0]
        )
        results[w.todo.popleft()] = None
        pending.extendleft(reversed(w.todo))
        w.kill()
        self.workers[i] = self._spawn()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.workers:
            with contextlib.suppress(OSError):  # already dead
                w.conn.send(None)
        for w in self.workers:
            w.proc.join(timeout=1.0)
            w.kill()
