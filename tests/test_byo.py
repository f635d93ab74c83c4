"""Bring your own data, as a user meets it: the real trainer, 2 steps each, offline, on the shipped tiny model
(held-out accuracy 0.21: rewards are nonzero for sure, where the test cache's 300-step model answers 3%)."""

import json
import shlex

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import metrics_lines, run_train

from rlvr.config import ConfigError, eval_sets
from rlvr.tiny_model import install_tiny_assets

FAST = (
    "rollout=hf",
    "eval.every=0",
    "trainer.total_steps=2",
    "trainer.prompts_per_step=8",
    "trainer.save_every=0",
)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return install_tiny_assets(tmp_path_factory.mktemp("shipped") / "tiny-addition")


def _own_model(model) -> tuple[str, ...]:
    return ("model.builtin=null", f"model.path={model}")


def _gsm8k(path, n=16):
    """GSM8K's shape: the gold is a worked solution ending in '#### N'."""
    rows = [{"question": f"{a}+{a + 7}=", "answer": f"{a} plus {a + 7} is {2 * a + 7}.\n#### {2 * a + 7}"}
            for a in range(10, 10 + n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_golds_stop_before_any_model_loads_unless_their_answer_is_cut_out(shipped, tmp_path):
    data = _gsm8k(tmp_path / "gsm8k.jsonl")
    common = (*_own_model(shipped), f"data.train_files=[{data}]", "data.eval_files=[]", *FAST)
    raw = run_train(shipped.parent.parent, tmp_path / "raw", *common, check=False)
    assert raw.returncode == 2, raw.stderr[-2000:]
    assert (
        f"rlvr-train: error: data.train_files: 16 of 16 gold answers are unusable: {data}: row 1:"
        in raw.stderr
    )
    hint = "'data.answer_pattern=\"####\\s*(.+)$\"'"
    assert hint in raw.stderr
    assert "Loading weights" not in raw.stderr  # stopped before the model
    # the hint as printed, split as bash splits it, trains
    run_train(shipped.parent.parent, tmp_path / "cut", *common, *shlex.split(hint))
    rewards = [m["reward/mean"] for m in metrics_lines(tmp_path / "cut")]
    assert len(rewards) == 2 and max(rewards) > 0


def test_a_dapo_math_shaped_hub_dataset_dir_with_chat_prompts_and_duplicates(shipped, tmp_path):
    """DAPO-Math-17k's shape: a chat `prompt`, the gold in reward_model.ground_truth, every row repeated; a
    local dir laid out like a hub dataset repo, read offline."""
    rows = [{"data_source": "math", "prompt": [{"role": "user", "content": f"{a}+{a}="}],
             "reward_model": {"ground_truth": str(2 * a), "style": "rule"}} for a in range(10, 22)]  # fmt: skip
    repo = tmp_path / "DAPO-Math-17k"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows * 5), repo / "data" / "train-00000-of-00001.parquet")
    out = tmp_path / "run"
    run_train(
        shipped.parent.parent, out, *_own_model(shipped), "data.train_files=[]", "data.eval_files=[]",
        f"data.train_dataset.path={repo}", "data.prompt_key=prompt", "data.answer_key=reward_model.ground_truth",
        "data.dedup=true", "data.max_prompt_tokens=64", *FAST, env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert (
        "data.train_dataset: data.dedup removed 48 duplicate row(s) of 60" in (out / "train.log").read_text()
    )
    assert [m["step"] for m in metrics_lines(out)] == [1, 2]


def _hub_cache(tmp_path, model_dir, repo="rlvr/tiny-addition"):
    """A hub cache (HF_HUB_CACHE) holding `model_dir` as repo's main revision, as huggingface_hub lays it out."""
    import shutil

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, entry / "snapshots" / commit)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    return cache, entry / "snapshots" / commit


def test_resolve_model_reads_a_hub_id_from_the_offline_cache(shipped, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from rlvr.model_source import is_hub_id, resolve_model

    cache, snapshot = _hub_cache(tmp_path, shipped)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_CACHE when first imported, which an earlier test in this process may have done
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    assert is_hub_id("rlvr/tiny-addition") and is_hub_id("gpt2")
    assert not is_hub_id("./models/x") and not is_hub_id("/models/x") and not is_hub_id("a/b/c")
    assert resolve_model(str(shipped)) == str(shipped)
    assert resolve_model("rlvr/tiny-addition") == str(snapshot)
    with pytest.raises(
        ConfigError, match=r"model.path: the hub model 'rlvr/missing' cannot be resolved \(HF_HUB_OFFLINE"
    ):
        resolve_model("rlvr/missing")
    with pytest.raises(ConfigError, match="model.path: no model directory at '/no/such/dir'"):
        resolve_model("/no/such/dir")


def test_train_from_a_hub_id_offline(shipped, tmp_path):
    cache, _ = _hub_cache(tmp_path, shipped)
    out = tmp_path / "run"
    data = shipped.parent
    run_train(
        data.parent, out, "model.builtin=null", "model.path=rlvr/tiny-addition", f"data.train_files=[{data}/train.jsonl]",
        "data.eval_files=[]", *FAST, env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert [m["step"] for m in metrics_lines(out)] == [1, 2]
    assert "path: rlvr/tiny-addition" in (out / "config.yaml").read_text()  # the id, not the snapshot
    # the checkpoint holds the hub model's tokenizer: rlvr-export gives a model dir that needs no hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.cli.export import main as export

    assert export([str(out), str(tmp_path / "exported")]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert tok("12+34=")["input_ids"] == AutoTokenizer.from_pretrained(shipped)("12+34=")["input_ids"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "exported").num_parameters() > 0


def test_two_eval_sets_each_log_their_pass_at_k_and_their_mean(tiny_cache, tmp_path):
    """Two named sets with their own fields, k, n and temperature: eval/<set>/pass@k for each, eval/pass@1 the
    mean of the two (what the entropy law and the plateau reset read)."""
    rows = [
        json.loads(line) for line in (tiny_cache / "tiny-addition" / "eval.jsonl").read_text().splitlines()
    ]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    nested = tmp_path / "nested.jsonl"  # another schema: its own keys
    nested.write_text(
        "".join(
            json.dumps({"problem": r["question"], "sol": {"value": r["answer"]}}) + "\n" for r in rows[12:20]
        )
    )
    out = tmp_path / "run"
    run_train(
        tiny_cache, out, "rollout=hf", "trainer.total_steps=1", "trainer.prompts_per_step=8", "trainer.save_every=0",
        "eval.every=1", "data.eval_files=[]", f"+eval.sets.plain={{files:[{plain}],k:[1,2]}}",
        f"+eval.sets.nested={{files:[{nested}],prompt_key:problem,answer_key:sol.value,n:4,temperature:0.5}}",
    )  # fmt: skip
    evals = [m for m in metrics_lines(out) if "eval/pass@1" in m]
    assert [m["step"] for m in evals] == [0, 1]
    for m in evals:
        assert {"eval/plain/pass@1", "eval/plain/pass@2", "eval/nested/pass@1"} <= m.keys()
        assert "eval/nested/pass@2" not in m and "eval/pass@2" in m
        assert m["eval/pass@1"] == pytest.approx((m["eval/plain/pass@1"] + m["eval/nested/pass@1"]) / 2)
        assert m["eval/pass@2"] == m["eval/plain/pass@2"]


def test_rlvr_eval_writes_each_sets_results_and_samples(shipped, tmp_path):
    import subprocess

    from helpers import BIN

    rows = [json.loads(line) for line in (shipped.parent / "eval.jsonl").read_text().splitlines()]
    nested = tmp_path / "nested.jsonl"
    nested.write_text(
        "".join(
            json.dumps({"problem": r["question"], "sol": {"value": r["answer"]}}) + "\n" for r in rows[:6]
        )
    )
    sets = tmp_path / "sets.yaml"
    sets.write_text(
        f"addition: {{files: ['{shipped.parent / 'eval.jsonl'}'], max_prompts: 5, k: [1, 2]}}\n"
        f"nested: {{files: ['{nested}'], prompt_key: problem, answer_key: sol.value, n: 3}}\n"
    )
    out = tmp_path / "eval"
    cmd = [
        str(BIN / "rlvr-eval"),
        str(shipped),
        "--sets",
        str(sets),
        "--max-new-tokens",
        "8",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["eval/addition/prompts"] == 5 and result["eval/nested/prompts"] == 6
    assert result["eval/pass@1"] == pytest.approx(
        (result["eval/addition/pass@1"] + result["eval/nested/pass@1"]) / 2
    )
    assert json.loads((out / "nested.json").read_text())["eval/nested/n"] == 3
    samples = [json.loads(line) for line in (out / "addition.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 * 2 and {s["verdict"] for s in samples} <= {"correct", "incorrect", "no_answer"}
    assert len((out / "nested.samples.jsonl").read_text().splitlines()) == 6 * 3


def _hub_dir(root, name, splits: dict[str, list[dict]]):
    """A local copy of a hub dataset repo: data/<split>-00000-of-00001.parquet."""
    repo = root / name
    (repo / "data").mkdir(parents=True)
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), repo / "data" / f"{split}-00000-of-00001.parquet")
    return repo


def test_the_public_schema_presets_read_copies_of_their_datasets(shipped, tmp_path, monkeypatch):
    """data=gsm8k and data=dapo_math, pointed at local copies made in the public schemas, are read, checked and
    tokenized (prepare: everything before a model loads)."""
    from helpers import compose_config

    from rlvr.trainer import prepare

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    gsm = [{"question": f"{a}+{a}=", "answer": f"Double {a}.\n#### {2 * a}"} for a in range(10, 16)]
    gsm8k = _hub_dir(tmp_path, "gsm8k", {"train": gsm, "test": gsm[:2]})
    cfg = compose_config("data=gsm8k", f"model.path={shipped}", "model.builtin=null",
                         f"data.train_dataset.path={gsm8k}", "data.train_dataset.name=null",
                         f"data.eval_dataset.path={gsm8k}", "data.eval_dataset.name=null")  # fmt: skip
    prep = prepare(cfg, tmp_path / "gsm8k-run")
    assert [p.answer for p in prep.train] == [str(2 * a) for a in range(10, 16)]
    assert [s.golds for s in prep.eval_sets] == [["20", "22"]]

    dapo = [{"data_source": "math_dapo", "prompt": [{"content": f"{a}+{a}=", "role": "user"}], "ability": "MATH",
             "reward_model": {"ground_truth": str(2 * a), "style": "rule-lighteval/MATH_v2"},
             "extra_info": {"index": str(a)}} for a in range(10, 14)] * 3  # fmt: skip
    aime = [{"id": i, "problem": f"{i}+1=", "solution": "...", "answer": str(i + 1), "url": "", "year": "2024"}
            for i in range(3)]  # fmt: skip
    math500 = [
        {
            "problem": "1+1=",
            "solution": "2",
            "answer": "2",
            "subject": "Algebra",
            "level": 1,
            "unique_id": "a",
        }
    ]
    cfg = compose_config(
        "data=dapo_math", f"model.path={shipped}", "model.builtin=null",
        f"data.train_dataset.path={_hub_dir(tmp_path, 'dapo', {'train': dapo})}",
        f"eval.sets.aime24.dataset.path={_hub_dir(tmp_path, 'aime', {'train': aime})}",
        f"eval.sets.math500.dataset.path={_hub_dir(tmp_path, 'math500', {'test': math500})}",
    )  # fmt: skip
    prep = prepare(cfg, tmp_path / "dapo-run")
    assert len(prep.train) == 4 and prep.train[0].messages == (("user", "10+10="),)
    assert {s.name: (s.golds, s.n) for s in prep.eval_sets} == {
        "aime24": (["1", "2", "3"], 32),
        "math500": (["2"], 4),
    }


def test_eval_set_presets_are_shared_by_runs_and_rlvr_eval(shipped):
    """configs/eval/sets: a run adds them with +eval/sets=[...] (data=dapo_math does), rlvr-eval --sets names
    them; either way the same sets."""
    from helpers import compose_config

    from rlvr.cli.eval import _config, _parser

    run = eval_sets(compose_config("+eval/sets=[aime24,math500]").eval)
    assert list(run) == ["aime24", "math500"] and run["aime24"].dataset.path == "HuggingFaceH4/aime_2024"
    assert eval_sets(compose_config("data=dapo_math").eval) == run
    args = _parser().parse_args([str(shipped), "--sets", "aime24", "math500"])
    assert eval_sets(_config(args, shipped).eval) == run
    with pytest.raises(
        ConfigError, match=r"--sets: 'aime25' is neither a YAML file nor a preset \(aime24, math500\)"
    ):
        _config(_parser().parse_args([str(shipped), "--sets", "aime25"]), shipped)
