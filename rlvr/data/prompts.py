"""Prompts with gold answers from local files, checked row by row before any model loads.

Accepted sources: JSON Lines (.jsonl), a JSON list (.json), Parquet (.parquet), or a directory written by
`datasets.Dataset.save_to_disk`. Rows are numbered from 1 in error messages (for JSON Lines: the line).
Text files are read as UTF-8. Data is untrusted input: a row's cost is bounded before it reaches the
tokenizer (`check_prompt_chars`), so one huge row is refused in time and memory proportional to its size.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.config import DataConfig


class DataError(ValueError):
    """A data file or row is unusable; the message names the file and row."""


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
    prompt: str  # the rendered prompt text (template applied, chat template not yet)
    answer: str  # the gold answer, as text
    origin: str  # "file:row", for messages and sample logs


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
        raise DataError(
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


def _problem_from_row(row: dict[str, Any], origin: str, cfg: DataConfig) -> Problem:
    question = row.get(cfg.question_key)
    if not isinstance(question, str) or not question.strip():
        raise DataError(
            f"{origin}: field {cfg.question_key!r} (data.question_key) is missing or not a non-empty string"
        )
    answer = row.get(cfg.answer_key)
    if isinstance(answer, bool) or not isinstance(answer, str | int | float) or str(answer).strip() == "":
        raise DataError(f"{origin}: field {cfg.answer_key!r} (data.answer_key) is missing or empty")
    try:
        prompt = cfg.prompt_template.format(**row)
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(f"{origin}: data.prompt_template cannot be filled from this row ({e!r})") from None
    check_prompt_chars(prompt, origin, cfg.max_prompt_tokens)
    return Problem(prompt=prompt, answer=str(answer).strip(), origin=origin)


def load_problems(files: Sequence[str], cfg: DataConfig, key: str) -> list[Problem]:
    """Read and check every row of `files` (the config key `key` names them in errors)."""
    if len(files) == 0:
        raise DataError(f"{key}: no files given")
    problems: list[Problem] = []
    for path in files:
        if not Path(path).exists():
            raise DataError(f"{key}: {path}: no such file or directory")
        for i, row in enumerate(read_rows(path), start=1):
            problems.append(_problem_from_row(row, f"{path}: row {i}", cfg))
    if not problems:
        raise DataError(f"{key}: {', '.join(files)}: no rows")
    return problems


def encode_prompts(tokenizer, problems: Sequence[Problem], cfg: DataConfig) -> list[list[int]]:
    """Token ids of each prompt (chat template applied if configured); too-long prompts are an error.

    Characters are checked before tokenizing (`check_prompt_chars`), tokens after."""
    out = []
    for prob in problems:
        text = f"{cfg.system_prompt}\n{prob.prompt}" if cfg.system_prompt else prob.prompt
        check_prompt_chars(text, prob.origin, cfg.max_prompt_tokens)
        if cfg.use_chat_template:
            messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
            messages.append({"role": "user", "content": prob.prompt})
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(
                ids, "input_ids"
            ):  # newer transformers return a BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > cfg.max_prompt_tokens:
            raise DataError(
                f"{prob.origin}: prompt has {len(ids)} tokens > data.max_prompt_tokens={cfg.max_prompt_tokens}"
            )
        out.append(ids)
    return out


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
