import json

import pytest

from rlvr.config import ConfigError, DataConfig
from rlvr.data.prompts import (
    MAX_CHARS_PER_TOKEN,
    DataError,
    Problem,
    PromptSampler,
    encode_prompts,
    load_problems,
    read_rows,
)
from rlvr.tiny_model import build_tokenizer

ROWS = [
    {"question": "What is 2+3?", "answer": 5, "topic": "add"},
    {"question": "What is 7+8?", "answer": 15, "topic": "add"},
    {"question": "What is 9-4?", "answer": 5, "topic": "sub"},
]
TEMPLATE = "[{topic}] {question}"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _cfg(**kw) -> DataConfig:
    return DataConfig(train_files=[], prompt_template=kw.pop("prompt_template", TEMPLATE), **kw)


def _jsonl(path, rows, raw_lines=()):
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _write(fmt: str, tmp_path) -> str:
    if fmt == "jsonl":
        return _jsonl(tmp_path / "d.jsonl", ROWS)
    if fmt == "json":
        (tmp_path / "d.json").write_text(json.dumps(ROWS))
        return str(tmp_path / "d.json")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
        return str(tmp_path / "d.parquet")
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "datasets_dir"])
def test_every_format_loads_the_same_problems(tmp_path, fmt):
    path = _write(fmt, tmp_path)
    problems = load_problems([path], _cfg(), "data.train_files")
    assert problems == [
        Problem("[add] What is 2+3?", "5", f"{path}: row 1"),
        Problem("[add] What is 7+8?", "15", f"{path}: row 2"),
        Problem("[sub] What is 9-4?", "5", f"{path}: row 3"),
    ]


def test_answers_become_stripped_strings_and_files_concatenate(tmp_path):
    a = _jsonl(
        tmp_path / "a.jsonl",
        [{"question": "q1", "answer": 2.5}, {"question": "q2", "answer": " \\frac{1}{2} "}],
    )
    b = _jsonl(tmp_path / "b.jsonl", [{"question": "q3", "answer": 0}])
    problems = load_problems([a, b], _cfg(prompt_template="{question}"), "data.train_files")
    assert [(p.prompt, p.answer, p.origin) for p in problems] == [
        ("q1", "2.5", f"{a}: row 1"),
        ("q2", "\\frac{1}{2}", f"{a}: row 2"),
        ("q3", "0", f"{b}: row 1"),
    ]


# ---- bad input: the message names the file and the row --------------------------------------------------


def test_invalid_json_line_names_row(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", ROWS[:2], ['{"question": "x", "answer": '])
    with pytest.raises(DataError, match="not valid JSON") as info:
        load_problems([path], _cfg(), "data.train_files")
    assert f"{path}: row 3:" in str(info.value)


def test_missing_answer_names_row(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"question": "q", "topic": "t"}, ROWS[2]])
    with pytest.raises(DataError, match="'answer'") as info:
        load_problems([path], _cfg(), "data.train_files")
    assert f"{path}: row 2:" in str(info.value)


def test_empty_question_names_row(tmp_path):
    (tmp_path / "bad.json").write_text(
        json.dumps([ROWS[0], ROWS[1], {"question": "  ", "answer": 1, "topic": "t"}])
    )
    path = str(tmp_path / "bad.json")
    with pytest.raises(DataError, match="'question'") as info:
        load_problems([path], _cfg(), "data.train_files")
    assert f"{path}: row 3:" in str(info.value)


def test_template_with_missing_field_names_row(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match="prompt_template") as info:
        load_problems([path], _cfg(prompt_template="{question} ({hint})"), "data.train_files")
    assert f"{path}: row 1:" in str(info.value) and "hint" in str(info.value)


def test_missing_file_names_key_and_path(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError) as info:
        load_problems([path], _cfg(), "data.eval_files")
    assert str(info.value) == f"data.eval_files: {path}: no such file or directory"


def test_unsupported_extension_names_file(tmp_path):
    (tmp_path / "d.csv").write_text("question,answer\nq,1\n")
    path = str(tmp_path / "d.csv")
    with pytest.raises(DataError, match="unsupported format") as info:
        load_problems([path], _cfg(), "data.train_files")
    assert str(info.value).startswith(f"{path}:")


def test_saved_dataset_dict_is_rejected(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="several splits.*train"):
        read_rows(tmp_path / "dd")


def test_too_long_prompt_names_row(tmp_path, tok):
    rows = [{"question": "1+1", "answer": 2}, {"question": "12345678901", "answer": 1}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    cfg = _cfg(prompt_template="{question}", max_prompt_tokens=10)  # byte-level: one token per character
    problems = load_problems([path], cfg, "data.train_files")
    with pytest.raises(DataError) as info:
        encode_prompts(tok, problems, cfg)
    assert str(info.value).startswith(f"{path}: row 2: prompt has 11 tokens > data.max_prompt_tokens=10")
    cfg.max_prompt_tokens = 11  # exactly at the limit is fine, never cut
    _, ids = encode_prompts(tok, problems, cfg)
    assert [tok.decode(i) for i in ids] == ["1+1", "12345678901"]


class SpyTokenizer:
    """The tiny tokenizer, recording the length of every text it is given."""

    def __init__(self, tok):
        self.tok, self.lengths = tok, []

    def __call__(self, text, **kw):
        self.lengths.append(len(text))
        return self.tok(text, **kw)

    @property
    def chat_template(self):
        return self.tok.chat_template

    def apply_chat_template(self, messages, **kw):
        self.lengths.append(sum(len(m["content"]) for m in messages))
        return self.tok.apply_chat_template(messages, **kw)


def test_huge_row_is_refused_by_its_length_before_tokenizing(tmp_path):
    # the 50 MB one-row prompt, at 4 MB: refused when read, named by file and row, before any tokenizer
    huge = "1+" * 2_000_000
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "1+1", "answer": 2}, {"question": huge, "answer": 1}])
    cfg = _cfg(prompt_template="{question}", max_prompt_tokens=16)
    with pytest.raises(DataError) as info:
        load_problems([path], cfg, "data.train_files")
    assert str(info.value) == (
        f"{path}: row 2: prompt has 4000000 characters > data.max_prompt_tokens=16 x {MAX_CHARS_PER_TOKEN} "
        "characters a token (refused before tokenizing)"
    )


@pytest.mark.parametrize("chat", [False, True])
def test_encode_never_hands_the_tokenizer_a_huge_prompt(chat):
    spy = SpyTokenizer(build_tokenizer())  # its own: the shared fixture stays template-free
    spy.tok.chat_template = CHAT_TEMPLATE
    cfg = _cfg(max_prompt_tokens=64, use_chat_template=chat, system_prompt="Be brief.")
    problems = [Problem("1+1", "2", "f: row 1"), Problem("1+" * 2_000_000, "1", "f: row 2")]
    with pytest.raises(
        DataError, match=r"^f: row 2: prompt has 4000010 characters > data\.max_prompt_tokens=64"
    ):
        encode_prompts(spy, problems, cfg)  # the system prompt counts: 9 characters and a newline
    assert spy.lengths and max(spy.lengths) < 100  # only the first prompt was tokenized


def test_prompt_within_the_character_cap_is_still_counted_in_tokens(tmp_path, tok):
    cap = 16 * MAX_CHARS_PER_TOKEN  # 4096 characters for 16 tokens
    cfg = _cfg(prompt_template="{question}", max_prompt_tokens=16)
    over = _jsonl(tmp_path / "over.jsonl", [{"question": "7" * (cap + 1), "answer": 1}])
    with pytest.raises(DataError, match=r"row 1: prompt has 4097 characters > data\.max_prompt_tokens=16"):
        load_problems([over], cfg, "data.train_files")
    at = _jsonl(tmp_path / "at.jsonl", [{"question": "7" * cap, "answer": 1}])
    problems = load_problems([at], cfg, "data.train_files")  # at the cap: read, then tokenized
    with pytest.raises(DataError) as info:
        encode_prompts(tok, problems, cfg)
    assert str(info.value) == f"{at}: row 1: prompt has 4096 tokens > data.max_prompt_tokens=16"


def test_non_utf8_jsonl_names_file_row_and_column(tmp_path):
    # row 1 is UTF-8 (≠ is 3 bytes, one column); row 2 was saved as Latin-1 after a UTF-8 ≠ (é is byte 0xe9)
    path = tmp_path / "mixed.jsonl"
    row1 = json.dumps({"question": "2+2 ≠ 5?", "answer": 4}, ensure_ascii=False).encode("utf-8")
    row2 = '{"question": "≠ caf'.encode() + 'é?", "answer": 1}'.encode("latin-1")
    path.write_bytes(row1 + b"\n" + row2 + b"\n")
    with pytest.raises(DataError) as info:
        load_problems([str(path)], _cfg(prompt_template="{question}"), "data.train_files")
    assert (
        str(info.value) == f"{path}: row 2: not valid UTF-8 (byte 0xe9 at column 20); save the file as UTF-8"
    )
    path.write_bytes(row1 + b"\n")
    assert load_problems([str(path)], _cfg(prompt_template="{question}"), "data.train_files")[0].prompt == (
        "2+2 ≠ 5?"
    )


def test_non_utf8_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "latin1.json"
    text = '[\n  {"question": "2+2", "answer": 4},\n  {"question": "l\'été?", "answer": 1}\n]\n'
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_problems([str(path)], _cfg(prompt_template="{question}"), "data.train_files")
    assert (
        str(info.value) == f"{path}: line 3: not valid UTF-8 (byte 0xe9 at column 19); save the file as UTF-8"
    )


# ---- chat template and system prompt -------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_chat_template_renders_system_and_user():
    tok = build_tokenizer()  # its own: the shared fixture stays template-free
    tok.chat_template = CHAT_TEMPLATE
    problems = [Problem("What is 2+3?", "5", "f: row 1")]
    cfg = _cfg(use_chat_template=True, system_prompt="Answer in \\boxed{}.")
    _, (ids,) = encode_prompts(tok, problems, cfg)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == "<system>Answer in \\boxed{}.\n<user>What is 2+3?\n<assistant>"

    cfg.system_prompt = None
    _, (ids,) = encode_prompts(tok, problems, cfg)
    assert tok.decode(ids) == "<user>What is 2+3?\n<assistant>"


def test_system_prompt_without_chat_template(tok):
    _, (ids,) = encode_prompts(
        tok, [Problem("What is 2+3?", "5", "f: row 1")], _cfg(system_prompt="Be brief.")
    )
    assert tok.decode(ids) == "Be brief.\nWhat is 2+3?"


# ---- PromptSampler -------------------------------------------------------------------------------------


def _draw(sampler: PromptSampler, sizes) -> list[int]:
    return [i for n in sizes for i in sampler.next_indices(n)]


def test_sampler_is_deterministic_per_seed():
    assert _draw(PromptSampler(10, seed=1), [3, 4, 5]) == _draw(PromptSampler(10, seed=1), [3, 4, 5])
    assert _draw(PromptSampler(10, seed=1), [12]) != _draw(PromptSampler(10, seed=2), [12])


def test_sampler_covers_each_epoch_once_and_reshuffles():
    s = PromptSampler(10, seed=0)
    drawn = _draw(s, [3, 3, 3, 3, 3, 3, 2])  # 20 = two epochs, batches straddling the boundary
    first, second = drawn[:10], drawn[10:]
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second and first != list(range(10))
    assert s.next_indices(25)[:10] != first  # a batch larger than the dataset spans epochs too


@pytest.mark.parametrize("drawn", [7, 10])  # mid-epoch and exactly at the epoch boundary
def test_sampler_resume_continues_exactly(drawn):
    uninterrupted = PromptSampler(10, seed=3)
    before = _draw(uninterrupted, [drawn])
    expected = _draw(uninterrupted, [4, 9])

    first = PromptSampler(10, seed=3)
    assert _draw(first, [drawn]) == before
    state = json.loads(json.dumps(first.state_dict()))  # plain values only
    resumed = PromptSampler(10, seed=99)  # the checkpoint's seed wins
    resumed.load_state_dict(state)
    assert _draw(resumed, [4, 9]) == expected


def test_sampler_load_rejects_other_dataset_size():
    state = PromptSampler(10, seed=0).state_dict()
    with pytest.raises(DataError, match="10 prompts, now 11"):
        PromptSampler(11, seed=0).load_state_dict(state)


# ---- fields, golds, hygiene -----------------------------------------------------------------------------------


def test_chat_rows_with_a_nested_gold_render_through_the_chat_template(tmp_path):
    """DAPO-Math-17k's shape: `prompt` a list of messages, the gold in reward_model.ground_truth; the system
    prompt replaces the row's own system message."""
    rows = [{"prompt": [{"role": "system", "content": "old"}, {"role": "user", "content": "2+3?"}],
             "reward_model": {"ground_truth": "5", "style": "rule"}}]  # fmt: skip
    path = _jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(prompt_key="prompt", answer_key="reward_model.ground_truth", system_prompt="Box it.")
    (problem,) = load_problems([path], cfg, "data.train_files")
    assert problem.answer == "5" and problem.messages == (("system", "old"), ("user", "2+3?"))
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    _, (ids,) = encode_prompts(tok, [problem], cfg)
    assert tok.decode(ids) == "<system>Box it.\n<user>2+3?\n<assistant>"
    plain = build_tokenizer()
    plain.chat_template = None
    with pytest.raises(
        ConfigError, match="data.prompt_key: the prompts are chat messages but .* no chat template"
    ):
        encode_prompts(plain, [problem], cfg)


def test_answer_pattern_cuts_the_gold_out_of_a_solution(tmp_path):
    rows = [
        {"question": "q", "answer": "She sold 48/2 = 24 clips.\n#### 72"},
        {"question": "r", "answer": "no mark"},
    ]
    path = _jsonl(tmp_path / "gsm8k.jsonl", rows)
    cfg = DataConfig(answer_pattern=r"####\s*(.+)$")
    with pytest.raises(DataError, match=r"row 2: data.answer_pattern .* finds no gold in field 'answer'"):
        load_problems([path], cfg, "data.train_files")
    assert load_problems([_jsonl(tmp_path / "one.jsonl", rows[:1])], cfg, "k")[0].answer == "72"


def test_dedup_and_skipped_overlong_prompts_are_counted(tmp_path, tok, caplog):
    rows = [{"question": "1+1", "answer": 2}] * 3 + [
        {"question": "1+1", "answer": 3},
        {"question": "9" * 40, "answer": 9},
    ]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(dedup=True, overlong_prompts="skip", max_prompt_tokens=20)
    with caplog.at_level("INFO", logger="rlvr.data.prompts"):
        problems = load_problems([path], cfg, "data.train_files")
        kept, ids = encode_prompts(tok, problems, cfg, "data.train_files")
    assert [(p.prompt, p.answer, p.origin.split(": ")[-1]) for p in kept] == [
        ("1+1", "2", "row 1"),
        ("1+1", "3", "row 4"),
    ]
    assert len(ids) == 2
    assert "data.dedup removed 2 duplicate row(s) of 5" in caplog.text
    assert "skipped 1 prompt(s) over data.max_prompt_tokens" in caplog.text
    cfg.overlong_prompts = "error"
    with pytest.raises(DataError, match="row 5: prompt has 40 tokens"):
        encode_prompts(tok, problems, cfg)


def test_a_hub_style_dataset_dir_loads_offline(tmp_path, monkeypatch):
    """A local directory laid out like a hub dataset repo (parquet shards under data/), named by path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlvr.config import DatasetSpec

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    repo = tmp_path / "dapo-math"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS), repo / "data" / "train-00000-of-00001.parquet")
    problems = load_problems(
        [], _cfg(prompt_template=None), "data.train_dataset", DatasetSpec(path=str(repo))
    )
    assert [p.prompt for p in problems] == [r["question"] for r in ROWS]
    with pytest.raises(DataError, match=r"dapo-math\[test\]: cannot be loaded"):
        load_problems([], _cfg(), "data.train_dataset", DatasetSpec(path=str(repo), split="test"))


def test_config_takes_rows_from_one_source_and_reads_the_old_key_name(tmp_path):
    from helpers import compose_config

    from rlvr.config import validate

    c = compose_config("data.train_dataset.path=some/dataset")
    with pytest.raises(ConfigError, match="data.train_files: and data.train_dataset are both set"):
        validate(c)
    c.data.train_files = []
    validate(c)
    c.data.train_dataset.path = None
    with pytest.raises(ConfigError, match="data.train_files: no training rows"):
        validate(c)
    path = _jsonl(tmp_path / "d.jsonl", [{"problem": "2+3?", "answer": 5}])
    old = DataConfig(question_key="problem")  # a config written before prompt_key
    assert load_problems([path], old, "k")[0].prompt == "2+3?"
    c = compose_config("data.question_key=problem", "data.prompt_key=other")
    with pytest.raises(ConfigError, match="data.question_key: is the former name of data.prompt_key"):
        validate(c)
