"""Prompts with gold answers from local files or datasets, checked row by row before any model loads.

Accepted sources: JSON Lines (.jsonl), a JSON list (.json), Parquet (.parquet), a directory written by
`datasets.Dataset.save_to_disk` (data.*_files), or a dataset by hub id or local dataset dir through
`datasets.load_dataset` (data.*_dataset). Rows are numbered from 1 in error messages (for JSON Lines: the line).
A prompt is a string field (through data.prompt_template) or a list of chat messages (through the tokenizer's
chat template); the gold is a field reached by a dotted path, optionally cut out by data.answer_pattern.
Text files are read as UTF-8. Data is untrusted input: a row's cost is bounded before it reaches the
tokenizer (`check_prompt_chars`), so one huge row is refused in time and memory proportional to its size.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.config import DataConfig, DatasetSpec
from rlvr.data import token_cache
from rlvr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


# A cost cap, not a measurement: no characters-per-token bound holds for every tokenizer (a normalizer may fold
# a run of spaces into one token, vocabularies hold tokens for long runs of spaces or punctuation, a chat
# model's special tokens are a dozen characters or more). Natural text averages a few characters a token
# (about 4 for English under GPT-style BPE); a prompt averaging more than this many would have to be mostly
# runs its tokenizer folds away. Above it the prompt is refused before tokenizing, which bounds the tokenizer's
# work (and its per-token memory: ids, offsets, masks) to max_prompt_tokens * this characters; below it the
# exact token count decides, as before.
MAX_CHARS_PER_TOKEN = 256


@dataclass(frozen=True)
class Problem:
    prompt: str  # the rendered prompt text (template applied, chat template not yet); chat rows: the messages' text
    answer: str  # the gold answer, as text
    origin: str  # "file:row", for messages and sample logs
    messages: tuple[tuple[str, str], ...] | None = None  # a chat row's (role, content) messages
    row_json: str = field(default="{}", compare=False)  # the whole row, for the user's reward.functions


class _Overlong(DataError):
    """A prompt over data.max_prompt_tokens: an error, or a row to skip (data.overlong_prompts=skip)."""


def decode_utf8(data: bytes, path: Path, row: int | None = None) -> str:
    """`data` (the whole file, or JSON Lines row `row`) as UTF-8 text.

    A bad byte is a DataError naming the file, the row (else the line) and the column, instead of a
    UnicodeDecodeError that names neither."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[line_start : e.start].decode("utf-8")) + 1  # all valid before the bad byte
        line = data.count(b"\n", 0, e.start) + 1
        where = f"row {row}" if row is not None else f"line {line}"
        raise DataError(
            f"{path}: {where}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def check_prompt_chars(text: str, origin: str, max_prompt_tokens: int) -> None:
    """Refuse `text` when it has more characters than a prompt of `max_prompt_tokens` tokens could plausibly
    hold (MAX_CHARS_PER_TOKEN a token): a length check, so a 50 MB row never reaches the tokenizer."""
    limit = max_prompt_tokens * MAX_CHARS_PER_TOKEN
    if len(text) > limit:
        raise _Overlong(
            f"{origin}: prompt has {len(text)} characters > data.max_prompt_tokens={max_prompt_tokens} "
            f"x {MAX_CHARS_PER_TOKEN} characters a token (refused before tokenizing)"
        )


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of one file or saved dataset, as dicts."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{p}: holds several splits ({', '.join(ds)}); point at one split's directory")
        return [dict(r) for r in ds]
    if p.suffix == ".jsonl":
        rows = []
        with p.open("rb") as f:  # bytes: a decode error then names its line (JSON Lines ends rows with \n)
            for line_no, raw in enumerate(f, start=1):
                line = decode_utf8(raw, p, line_no)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}: row {line_no}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{p}: row {line_no}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if p.suffix == ".json":
        try:
            rows = json.loads(decode_utf8(p.read_bytes(), p))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{p}: expected a JSON list of objects")
        return rows
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    raise DataError(f"{p}: unsupported format (use .jsonl, .json, .parquet or a datasets directory)")


def field_at(row: dict[str, Any], dotted: str) -> Any:
    """row["a"]["b"] for "a.b" (a key holding the dot itself wins); None where a step is missing."""
    if dotted in row:
        return row[dotted]
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _messages(value: list, origin: str, key: str) -> tuple[tuple[str, str], ...]:
    if not value or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise DataError(
            f"{origin}: field {key!r} (data.prompt_key) is a list but not of {{role, content}} messages"
        )
    return tuple((m["role"], m["content"]) for m in value)


def _problem_from_row(row: dict[str, Any], origin: str, cfg: DataConfig) -> Problem:
    key = cfg.question_key or cfg.prompt_key
    value = field_at(row, key)
    messages = None
    if isinstance(value, list):
        messages = _messages(value, origin, key)
        prompt = "\n".join(content for _, content in messages)
    elif isinstance(value, str) and value.strip():
        try:
            prompt = cfg.prompt_template.format(**row) if cfg.prompt_template else value
        except (KeyError, IndexError, ValueError) as e:
            raise DataError(
                f"{origin}: data.prompt_template cannot be filled from this row ({e!r})"
            ) from None
    else:
        raise DataError(
            f"{origin}: field {key!r} (data.prompt_key) is missing, or neither a non-empty string nor a list of "
            "chat messages"
        )
    answer = field_at(row, cfg.answer_key)
    if isinstance(answer, bool) or not isinstance(answer, str | int | float) or str(answer).strip() == "":
        raise DataError(f"{origin}: field {cfg.answer_key!r} (data.answer_key) is missing or empty")
    answer = str(answer).strip()
    if cfg.answer_pattern is not None:
        found = re.search(cfg.answer_pattern, answer, re.MULTILINE)
        if found is None or not (found.group(1) or "").strip():
            raise DataError(
                f"{origin}: data.answer_pattern {cfg.answer_pattern!r} finds no gold in field {cfg.answer_key!r} "
                f"({answer[-80:]!r})"
            )
        answer = found.group(1).strip()
    check_prompt_chars(prompt, origin, cfg.max_prompt_tokens)
    row_json = json.dumps(row, default=str, ensure_ascii=False)
    return Problem(prompt=prompt, answer=answer, origin=origin, messages=messages, row_json=row_json)


def read_dataset(spec: DatasetSpec) -> list[dict[str, Any]]:
    """The rows of a dataset by hub id or local dataset dir (`datasets.load_dataset`)."""
    import datasets

    try:
        ds = datasets.load_dataset(spec.path, spec.name, split=spec.split)
    except Exception as e:  # datasets raises many kinds: not found, offline, no such split or subset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{_dataset_name(spec)}: cannot be loaded ({first})") from None
    return [dict(r) for r in ds]


def _dataset_name(spec: DatasetSpec) -> str:
    return f"{spec.path}{f' ({spec.name})' if spec.name else ''}[{spec.split}]"


def load_problems(
    files: Sequence[str], cfg: DataConfig, key: str, dataset: DatasetSpec | None = None
) -> list[Problem]:
    """Read and check every row of `files`, or of `dataset` (the config key `key` names them in errors).

    A prompt too long in characters is an error, or skipped with data.overlong_prompts=skip; with data.dedup,
    a row whose (prompt, gold) repeats an earlier row's is dropped. Both counts are logged once."""
    if dataset is not None:
        sources = [(_dataset_name(dataset), read_dataset(dataset))]
    else:
        if len(files) == 0:
            raise DataError(f"{key}: no files given")
        for path in files:
            if not Path(path).exists():
                raise DataError(f"{key}: {path}: no such file or directory")
        sources = [(str(path), read_rows(path)) for path in files]
    problems: list[Problem] = []
    skipped = 0
    for name, rows in sources:
        for i, row in enumerate(rows, start=1):
            try:
                problems.append(_problem_from_row(row, f"{name}: row {i}", cfg))
            except _Overlong:
                if cfg.overlong_prompts != "skip":
                    raise
                skipped += 1
    if skipped:
        log.warning(
            "%s: skipped %d prompt(s) too long for data.max_prompt_tokens (data.overlong_prompts=skip)",
            key,
            skipped,
        )
    if cfg.dedup:
        unique = list({(p.messages or p.prompt, p.answer): p for p in reversed(problems)}.values())[::-1]
        log.info(
            "%s: data.dedup removed %d duplicate row(s) of %d",
            key,
            len(problems) - len(unique),
            len(problems),
        )
        problems = unique
    if not problems:
        raise DataError(f"{key}: {', '.join(name for name, _ in sources)}: no rows")
    return problems


MAX_BAD_GOLD_FRAC = 0.01  # more unusable golds than this stop the run before any model loads


def check_golds(problems: Sequence[Problem], key: str, problem_of: Callable[[str], str | None]) -> None:
    """Stop before compute when more than MAX_BAD_GOLD_FRAC of the golds cannot serve as answers under the
    reward (`problem_of(gold)` says why one cannot, else None): every reward would be the floor and nothing
    would be learned, silently. Fewer are logged. Each distinct gold is checked once."""
    verdicts = {gold: problem_of(gold) for gold in dict.fromkeys(p.answer for p in problems)}
    bad = [p for p in problems if verdicts[p.answer] is not None]
    if not bad:
        return
    examples = "; ".join(f"{p.origin}: {p.answer[-60:]!r} {verdicts[p.answer]}" for p in bad[:3])
    hint = ""
    if any("####" in p.answer for p in bad):
        hint = (
            " (GSM8K-style golds: set 'data.answer_pattern=\"####\\s*(.+)$\"' to take the answer after ####)"
        )
    message = f"{key}: {len(bad)} of {len(problems)} gold answers are unusable: {examples}{hint}"
    if len(bad) > MAX_BAD_GOLD_FRAC * len(problems):
        raise DataError(message)
    log.warning("%s; those rows can only earn the lowest reward", message)


def _chat_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "data.prompt_key", "the prompts are chat messages but the model's tokenizer has no chat template"
        )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_prompts(
    tokenizer, problems: Sequence[Problem], cfg: DataConfig, key: str = "data"
) -> tuple[list[Problem], list[list[int]]]:
    """(the problems kept, the token ids of each prompt): chat rows through the chat template, with
    data.system_prompt replacing their system message (or put first); string prompts as they are, or as one
    user message with data.use_chat_template. A prompt over data.max_prompt_tokens is an error, or skipped
    with data.overlong_prompts=skip (counted, logged once). Characters are checked before tokenizing
    (`check_prompt_chars`), tokens after. With data.token_cache the ids come from, or go to, the machine's
    cache (rlvr/data/token_cache.py): one process per machine tokenizes a dataset, once."""
    fingerprint = (
        token_cache.tokenizer_fingerprint(getattr(tokenizer, "name_or_path", "")) if cfg.token_cache else None
    )
    if fingerprint is None:
        kept, ids = _tokenize(tokenizer, problems, cfg)
    else:
        import tokenizers
        import transformers

        settings = {
            "tokenizer": fingerprint,
            "class": type(tokenizer).__name__,
            "chat_template": getattr(tokenizer, "chat_template", None),  # as loaded, or set after loading
            "versions": [transformers.__version__, tokenizers.__version__],
            "data": [cfg.system_prompt, cfg.use_chat_template, cfg.max_prompt_tokens, cfg.overlong_prompts],
        }
        digest = token_cache.cache_key(settings, ([p.prompt, p.messages] for p in problems))
        kept, ids = token_cache.load_or_build(
            token_cache.cache_dir(), digest, lambda: _tokenize(tokenizer, problems, cfg)
        )
    if len(kept) < len(problems):
        log.warning(
            "%s: skipped %d prompt(s) over data.max_prompt_tokens tokens (data.overlong_prompts=skip)",
            key,
            len(problems) - len(kept),
        )
    if not kept:
        raise DataError(f"{key}: every prompt is over data.max_prompt_tokens={cfg.max_prompt_tokens}")
    return [problems[i] for i in kept], ids


def _tokenize(tokenizer, problems: Sequence[Problem], cfg: DataConfig) -> tuple[list[int], list[list[int]]]:
    """(indices of the problems kept, their prompts' token ids); see encode_prompts."""
    kept, out = [], []
    for i, prob in enumerate(problems):
        try:
            if prob.messages is not None:
                messages = [{"role": r, "content": c} for r, c in prob.messages]
                if cfg.system_prompt is not None:
                    messages = [m for m in messages if m["role"] != "system"]
                    messages.insert(0, {"role": "system", "content": cfg.system_prompt})
                check_prompt_chars(
                    "".join(m["content"] for m in messages), prob.origin, cfg.max_prompt_tokens
                )
                ids = _chat_ids(tokenizer, messages)
            else:
                text = f"{cfg.system_prompt}\n{prob.prompt}" if cfg.system_prompt else prob.prompt
                check_prompt_chars(text, prob.origin, cfg.max_prompt_tokens)
                if cfg.use_chat_template:
                    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
                    ids = _chat_ids(tokenizer, [*messages, {"role": "user", "content": prob.prompt}])
                else:
                    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > cfg.max_prompt_tokens:
                raise _Overlong(
                    f"{prob.origin}: prompt has {len(ids)} tokens > data.max_prompt_tokens={cfg.max_prompt_tokens}"
                )
        except _Overlong:
            if cfg.overlong_prompts != "skip":
                raise
            continue
        kept.append(i)
        out.append(list(ids))
    return kept, out


class PromptSampler:
    """Epoch-wise shuffled prompt indices; its position is part of a checkpoint so resume is exact."""

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self) -> list[int]:
        order = list(range(self.num_items))
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order

    def next_indices(self, count: int) -> list[int]:
        out: list[int] = []
        order = self._order()
        while len(out) < count:
            if self.position == self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            take = min(count - len(out), self.num_items - self.position)
            out.extend(order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "num_items": self.num_items,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_items"] != self.num_items:
            raise DataError(
                f"resume: the checkpoint's dataset had {state['num_items']} prompts, now {self.num_items}"
            )
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]
