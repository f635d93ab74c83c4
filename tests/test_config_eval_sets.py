"""Named evaluation sets beside the run's own held-out split (issue 25, item 5): `+eval/sets=[aime24,math500]`
composes with data.eval_files / data.eval_dataset, which becomes one more set named "heldout"; a run without
eval.sets evaluates the split alone, unnamed, with the same metric keys and values as before sets existed."""

import json

import pytest
from helpers import compose_config

from rlvr.config import HELDOUT, ConfigError, validate
from rlvr.evaluate import build_eval_sets, evaluate_pass_at_k, evaluate_sets
from rlvr.reward import Verdict
from rlvr.rollout.base import Completion, SamplingParams


def _rows(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


def test_eval_sets_compose_with_the_default_heldout_split():
    cfg = compose_config("+eval/sets=[aime24,math500]")
    assert cfg.data.eval_files and list(cfg.eval.sets) == ["aime24", "math500"]
    validate(cfg)  # refused before: "eval.sets: and data.eval_files / data.eval_dataset are both set"


def test_a_set_named_heldout_beside_the_split_is_refused():
    cfg = compose_config("+eval.sets.heldout={files:[x.jsonl]}")
    with pytest.raises(
        ConfigError, match=r"^eval\.sets\.heldout: names the held-out split of data\.eval_files"
    ):
        validate(cfg)
    cfg.data.eval_files = []  # the name is free when there is no split to give it
    validate(cfg)


def test_built_sets_put_the_heldout_split_first_with_eval_settings(tmp_path, tokenizer):
    split = _rows(tmp_path / "eval.jsonl", [("1+2=", "3"), ("4+5=", "9")])
    other = _rows(tmp_path / "other.jsonl", [("7+7=", "14")])
    cfg = compose_config(f"data.eval_files=[{split}]", f"+eval.sets.other={{files:[{other}],k:[1],n:2}}")
    validate(cfg)
    sets = build_eval_sets(cfg, tokenizer)
    assert [s.name for s in sets] == [HELDOUT, "other"] == ["heldout", "other"]
    assert [s.golds for s in sets] == [["3", "9"], ["14"]]
    assert (sets[0].ks, sets[0].n) == (cfg.eval.k, cfg.eval.n) and (sets[1].ks, sets[1].n) == ([1], 2)
    cfg.eval.sets = {}  # the same split alone: unnamed, read and sampled the same way
    (alone,) = build_eval_sets(cfg, tokenizer)
    assert alone.name == "" and (alone.prompt_ids, alone.golds, alone.ks, alone.n, alone.params) == (
        sets[0].prompt_ids, sets[0].golds, sets[0].ks, sets[0].n, sets[0].params,
    )  # fmt: skip


class _Engine:
    """Completion i of prompt p answers "1" when i < p's own first token id mod (n + 1): fixed correct counts."""

    def generate(self, prompt_ids, n, params, seed, first_index=0):
        return [
            [Completion([1], [0.0], "stop", "1" if i < p[0] % (n + 1) else "0") for i in range(n)]
            for p in prompt_ids
        ]


class _Verifier:
    def verify(self, texts, golds):
        return [Verdict.CORRECT if t == g else Verdict.INCORRECT for t, g in zip(texts, golds)]


def test_metric_keys_heldout_named_and_in_the_mean_alone_unchanged():
    from rlvr.evaluate import EvalSet

    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    # correct counts of 4: heldout [2, 0] -> pass@1 (0.5 + 0) / 2 = 0.25; other [4] -> pass@1 1.0
    heldout = EvalSet("", [[2], [5]], ["1", "1"], [1, 4], 4, params)
    other = EvalSet("other", [[4]], ["1"], [1], 4, params)
    engine, verifier = _Engine(), _Verifier()
    alone = evaluate_sets(engine, verifier, [heldout], seed=0)
    # a run without eval.sets: the keys and values evaluate_pass_at_k gave before sets existed
    assert alone == evaluate_pass_at_k(engine, verifier, [[2], [5]], ["1", "1"], [1, 4], 4, params, 0)
    assert alone == {"eval/pass@1": 0.25, "eval/pass@4": 0.5}
    heldout.name = HELDOUT
    both = evaluate_sets(engine, verifier, [heldout, other], seed=0)
    assert both == {
        "eval/heldout/pass@1": 0.25,
        "eval/heldout/pass@4": 0.5,
        "eval/other/pass@1": 1.0,
        "eval/pass@1": (0.25 + 1.0) / 2,
        "eval/pass@4": 0.5,  # only heldout has k = 4
    }
