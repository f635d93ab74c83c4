"""Verify math answers with math-verify, in a pool of worker processes.

Completions are untrusted text: they are only ever parsed by math-verify (regexes, an ANTLR LaTeX grammar,
sympy), never evaluated by us. Parsing or comparing can still hang sympy (`\\boxed{9^{9^{9^9}}}`), so each
sample runs under a SIGALRM deadline inside a worker process - signals work only on a process's main thread,
which is why verification never runs in a thread - and the parent kills a worker that overruns even that.
The one shortcut: a completion whose only `\\boxed{}` holds exactly the gold text is CORRECT without a worker
(`fast_verdict`), a string comparison that runs in linear time.
Long completions are cut to their last characters (`tail_for_verify`), never inside a box: the tail of a box
is another answer (`\\boxed{1+1+...+1}` cut to `1+1}`), so a box too long to keep whole is NO_ANSWER.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import threading
from collections.abc import Callable, Sequence

from rlvr.reward.deadline import DeadlineExceeded, deadline
from rlvr.reward.pool import WorkerPool


class Verdict(str, enum.Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    NO_ANSWER = "no_answer"
    TIMEOUT = "timeout"


def _gold_text(gold: str) -> str:
    gold = gold.strip()
    if "\\boxed" in gold or (len(gold) > 1 and gold[0] == "$" and gold[-1] == "$"):
        return gold
    return f"\\boxed{{{gold}}}"


# Signs that math-verify may read an answer other than the one box; `fast_verdict` then leaves it to it.
_FINAL_ANSWER_IS = re.compile(r"(?i:final answer is)")  # "final answer is X. I hope" ranks as high as a box
# a math environment ($..$, \[..\], \(..\), " [..] ") may end here, cutting the box short
_ENV_END = re.compile(r"\$|\\\]|\\\)|\]\s")
_PERCENT = re.compile(r"%|[Pp]ercent|[Pp]ct")  # after the math, it makes the answer a percentage
_BRACE = re.compile(r"[{}]")
# what math-verify reads as a box (latex2sympy2_extended's extract_boxed_content): \boxed or \fbox, spaces, {
_BOX_OR_BRACE = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
# a box, as math-verify reads one (`require_boxed`)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# a plain integer that a float holds exactly, so no comparison (exact or rounded) can call two different ones equal
_INTEGER = re.compile(r"-?\d{1,15}")


def fast_verdict(completion: str, gold: str) -> Verdict | None:
    """CORRECT when `completion` holds a single `\\boxed{...}` whose content, stripped, is exactly `gold`
    stripped; INCORRECT when both are plain integers (at most 15 digits) of different values; None (ask
    math-verify) otherwise.

    Saves the worker round trip and sympy (~0.8 ms a sample) for the commonest verdicts. It gives
    math-verify's verdict because math-verify then reads the box's content as the answer and compares the
    same strings (equal after its normalization) or the same two integers (different under any rounding
    of 15 digits) - as long as nothing else in the text wins its answer extraction, hence the guards:
    math-verify joins several boxed answers into a set (`$\\boxed{1}$ and $\\boxed{2}$` is not 2), also reads
    `\\fbox`, ranks "final answer is X. I hope" as high as a box, reads a following `%` as a percentage, and
    cuts a box at the end of an enclosing math environment. Braces are counted raw, as math-verify does (`\\{`
    counts too). Where math-verify would time out or fail on the gold itself, this still answers. Plain string
    work: linear in the length of the (already truncated) completion, never evaluates anything.
    """
    gold = gold.strip()
    if not gold or completion.count("\\boxed") != 1 or "\\fbox" in completion:
        return None
    box = completion.find("\\boxed{")
    if box < 0 or _FINAL_ANSWER_IS.search(completion):
        return None
    start = box + len("\\boxed{")
    depth = 1
    for brace in _BRACE.finditer(completion, start):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            content = completion[start : brace.start()]
            if _ENV_END.search(content) or _PERCENT.search(completion, brace.end()):
                return None
            content = content.strip()
            if content == gold:
                return Verdict.CORRECT
            if _INTEGER.fullmatch(content) and _INTEGER.fullmatch(gold) and int(content) != int(gold):
                return Verdict.INCORRECT
            return None
    return None  # unbalanced


def box_around(text: str, pos: int) -> tuple[int, int] | None:
    """The outermost box of `text` that the cut `text[pos:]` would split: (start, end) with
    start < pos < end, `text[start:end]` from the backslash of `\\boxed`/`\\fbox` to its closing brace
    (end = len(text) for a box never closed, which math-verify reads to the end); None if no box straddles `pos`.

    Braces are counted raw, as math-verify does; a stray `}` outside any group is ignored. One pass over the
    text: linear time, nothing evaluated."""
    depth = 0
    start, box_depth = None, 0  # the outermost open box, and the brace depth inside it
    for m in _BOX_OR_BRACE.finditer(text):
        if start is None and m.start() >= pos:
            return None  # no box open at the cut
        token = m.group()
        if token == "}":
            if depth == 0:
                continue
            depth -= 1
            if start is not None and depth < box_depth:
                if start < pos < m.end():
                    return start, m.end()
                start = None
        else:
            depth += 1
            if token != "{" and start is None:
                start, box_depth = m.start(), depth
    return (start, len(text)) if start is not None and start < pos else None


def tail_for_verify(completion: str, max_chars: int) -> str | None:
    """What of `completion` is verified: all of it if it has at most `max_chars` characters, else its last
    `max_chars`, started earlier at the box that cut would split (at most 2 * max_chars in all); None when that
    box alone is longer than `max_chars`: its verdict is NO_ANSWER, never a reading of the box's tail.

    The final answer is at the end, and the cut bounds the work a megabyte-long completion can cause."""
    cut = len(completion) - max_chars
    if cut <= 0:
        return completion
    box = box_around(completion, cut)
    if box is None:
        return completion[cut:]
    start, end = box
    return completion[start:] if end - start <= max_chars else None


@functools.lru_cache(maxsize=4096)
def parse_gold(gold: str) -> list:
    """math-verify's parse of a gold answer, cached: a group's G samples share their gold, and parsing it is
    most of a sample's time (0.18 of 0.23 ms for the quickstart's answers). An interrupted parse (the deadline)
    raises, so it is not cached."""
    from math_verify import LatexExtractionConfig, parse

    return parse(_gold_text(gold), [LatexExtractionConfig()], parsing_timeout=None)


def gold_problem(gold: str, timeout_s: float = 2.0) -> str | None:
    """Why `gold` cannot serve as a gold answer, or None: a worked solution rather than an answer (a line
    break, GSM8K's `####` marker), or text math-verify parses to nothing (within `timeout_s`; call it on the
    main thread)."""
    if "####" in gold:
        return "holds a '####' marker: a worked solution, not its answer"
    if "\n" in gold.strip():
        return "spans several lines: a worked solution, not its answer"
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning: we time it
    try:
        with deadline(timeout_s):
            parsed = parse_gold(gold)
    except DeadlineExceeded:
        return f"math-verify could not parse it within {timeout_s} s"
    except Exception as e:  # the grammar or sympy failing on it
        return f"math-verify cannot parse it ({type(e).__name__})"
    return None if parsed else "math-verify parses no answer from it"


def verify_one(completion: str, gold: str, timeout_s: float) -> Verdict:
    """Compare the final answer of `completion` with `gold`; call it on a process's main thread.

    The gold may be bare LaTeX or a number (`\\frac{1}{2}`, `[1, 2)`) or already `$...$`/`\\boxed{}`-wrapped.
    The completion's answer is its last `\\boxed{}` if any, else math-verify's other forms ("the answer is 5",
    `$...$`, a final bare number). math-verify's own time limits are off: they take whole seconds (a float
    one makes `parse` silently return nothing), and they return the same empty result as a parse failure.
    Instead one SIGALRM deadline of `timeout_s` covers the whole sample and is caught here as TIMEOUT.
    Text math-verify cannot parse or compare is its documented "no match", not an error.
    Known gap: under antlr4 4.9.3 (hydra-core's pin) latex2sympy fails on percent literals, so `10\\%`
    matches only the identical string, not `10` or `0.1`.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("verify_one needs the main thread: its SIGALRM deadline cannot fire elsewhere")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    try:
        with deadline(timeout_s):
            gold_parsed = parse_gold(gold)
            if not gold_parsed:
                raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
            extraction = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
            answer = parse(completion, extraction, parsing_timeout=None)
            if not answer:
                return Verdict.NO_ANSWER
            return Verdict.CORRECT if verify(gold_parsed, answer, timeout_seconds=None) else Verdict.INCORRECT
    except DeadlineExceeded:  # also when it fires as the timer is disarmed, just as the answer came in
        return Verdict.TIMEOUT


def warm_math_worker() -> None:
    """A verifier worker's start: quiet math-verify's "timeout disabled" warning (we time it), import sympy and
    warm math-verify's caches."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verify_one("$\\boxed{1}$", "1", 30.0)


class MathVerifier:
    """Verify completions against gold answers in `num_workers` reusable 'spawn' processes.

    Each sample gets `timeout_s` inside its worker; a worker that has not answered a sample within
    `timeout_s * 2 + 1` s (stuck in C code that never checks signals), or that dies, is killed and replaced,
    and that sample is TIMEOUT. Completions are cut to their last `max_chars` characters before sending, never
    inside a box (`tail_for_verify`): a box longer than `max_chars` is NO_ANSWER, flagged in `last_box_too_long`
    (one bool per sample of the last call, in input order; the metric verify/box_too_long_frac).
    With `require_boxed`, a completion with no `\\boxed{}` (or `\\fbox{}`) is NO_ANSWER, whatever else
    math-verify would read in it (a last bare number, "the answer is 5"): a strict answer format.
    With `fast_path` (the default), a sample that `fast_verdict` settles is not sent to a worker. Identical
    (completion, gold) pairs in one call are verified once (a low-entropy policy repeats itself);
    `last_sent` counts the samples the last call sent to workers.
    `verify_fn(completion, gold, timeout_s) -> Verdict` (picklable; default `verify_one`) is what the workers run
    on each sample that needs them; the processes are `pool` (rlvr.reward.pool.WorkerPool).
    Not thread-safe: call `verify` from one thread at a time.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        max_chars: int = 10_000,
        fast_path: bool = True,
        require_boxed: bool = False,
        verify_fn: Callable[[str, str, float], Verdict] = verify_one,
    ):
        if num_workers < 1 or timeout_s <= 0 or max_chars < 1:
            raise ValueError(f"bad num_workers={num_workers}, timeout_s={timeout_s} or max_chars={max_chars}")
        self.timeout_s, self.max_chars, self.fast_path = timeout_s, max_chars, fast_path
        self.require_boxed = require_boxed
        self.last_sent = 0
        self.last_box_too_long: list[bool] = []
        self.pool = WorkerPool(verify_fn, num_workers, timeout_s, warmup=warm_math_worker, label="verifier")
        self.hard_limit_s = self.pool.hard_limit_s

    def verify(self, completions: Sequence[str], golds: Sequence[str]) -> list[Verdict]:
        """Verdicts in input order."""
        if self.pool.closed:
            raise RuntimeError("MathVerifier is closed")
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
        tails = [tail_for_verify(c, self.max_chars) for c in completions]
        self.last_box_too_long = [t is None for t in tails]
        if self.require_boxed:  # None: NO_ANSWER below
            tails = [t if t is not None and _BOX.search(t) else None for t in tails]
        given = list(zip(tails, golds))
        items = list(dict.fromkeys(given))  # each distinct pair once, in first-seen order
        results: list[Verdict | None] = [
            Verdict.NO_ANSWER if c is None else (fast_verdict(c, g) if self.fast_path else None)
            for c, g in items
        ]
        pending = [i for i, v in enumerate(results) if v is None]
        self.last_sent = len(pending)
        for i, verdict in zip(pending, self.pool.map([items[i] for i in pending])):
            results[i] = Verdict.TIMEOUT if verdict is None else verdict  # None: the worker was killed
        verdicts = dict(zip(items, results))
        return [verdicts[item] for item in given]  # type: ignore[misc]

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rewards_from_verdicts(
    verdicts: Sequence[Verdict],
    correct: float = 1.0,
    incorrect: float = 0.0,
    no_answer: float = 0.0,
    timeout: float = 0.0,
) -> list[float]:
    reward = {
        Verdict.CORRECT: correct,
        Verdict.INCORRECT: incorrect,
        Verdict.NO_ANSWER: no_answer,
        Verdict.TIMEOUT: timeout,
    }
    return [reward[v] for v in verdicts]
