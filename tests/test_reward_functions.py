"""Reward functions of the user's own (rlvr/reward/functions.py): loading, the weighted sum, a function that
raises or hangs costing only that sample's value, and the real trainer logging every component."""

import json
from pathlib import Path

import pytest
from helpers import metrics_lines, run_train

from rlvr.config import ConfigError, RewardConfig, RewardFunctionConfig, validate
from rlvr.reward.functions import (
    ERROR,
    OK,
    TIMEOUT,
    FunctionSpec,
    RewardScorer,
    combine,
    format_reward,
    load_function,
    run_functions,
    specs_from_config,
    term_value,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "reward_functions.py"
FAULTY = Path(__file__).resolve().parent / "fixtures" / "faulty_rewards.py"


def test_load_function_by_builtin_module_and_file():
    assert load_function("format") is format_reward
    assert load_function("json:dumps") is json.dumps
    concise = load_function(f"{EXAMPLE}:concise")
    assert concise("x" * 40, {}) == 1.0 and concise("x" * 60, {}) == 0.5 and concise("x" * 99, {}) == 0.0
    with pytest.raises(ConfigError, match=r"reward.functions\[0\].fn: .*no_such.py: no such file"):
        load_function("no_such.py:f", "reward.functions[0].fn")
    with pytest.raises(ConfigError, match="has no callable 'nope'"):
        load_function(f"{EXAMPLE}:nope")
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_function("concise")


def test_format_reward():
    pattern = r"^<think>.+</think>.*\\boxed\{.+\}"
    assert format_reward("<think>7+8\nis 15</think> so \\boxed{15}", {}, pattern) == 1.0
    assert format_reward("\\boxed{15}", {}, pattern) == 0.0


def test_the_reward_is_the_weighted_sum_of_the_terms_by_hand():
    values = [{"math": 1.0, "concise": 0.5, "shows_work/boxed": 1.0, "shows_work/restates": 0.0},
              {"math": 0.0, "concise": 1.0, "shows_work/boxed": 1.0, "shows_work/restates": 1.0}]  # fmt: skip
    assert term_value("shows_work", values[1]) == 2.0 and term_value("shows", values[1]) == 0.0
    terms = [("math", 1.0), ("concise", 0.2), ("shows_work", -0.5)]
    assert combine(terms, values) == [1.0 + 0.1 - 0.5, 0.0 + 0.2 - 1.0]


def test_run_functions_isolates_a_raise_and_a_hang():
    specs = (
        FunctionSpec("picky", f"{FAULTY}:picky", fallback=-1.0),
        FunctionSpec("sleepy", f"{FAULTY}:sleepy", fallback=-2.0),
        FunctionSpec("work", f"{EXAMPLE}:shows_work"),
    )
    row = json.dumps({"question": "3+4="})
    fine = run_functions(specs, "3+4= \\boxed{7}", row, 1.0)
    assert [(s, v) for s, v, _ in fine] == [(OK, {"picky": 0.5}), (OK, {"sleepy": 0.25}),
                                            (OK, {"work/boxed": 1.0, "work/restates": 1.0})]  # fmt: skip
    raised = run_functions(specs, "\\boxed{1}", row, 1.0)
    assert (
        raised[0][0] == ERROR
        and raised[0][1] == {"picky": -1.0}
        and "picky does not like ones" in raised[0][2]
    )
    assert raised[1][0] == OK
    hung = run_functions(specs, "\\boxed{2}", row, 0.3)
    assert [s for s, _, _ in hung] == [OK, TIMEOUT, TIMEOUT]  # the hang spent the sample's time
    assert hung[1][1] == {"sleepy": -2.0} and hung[2][1] == {"work": 0.0}


def test_scorer_in_worker_processes_logs_the_first_traceback_once(caplog):
    specs = specs_from_config([RewardFunctionConfig(name="picky", fn=f"{FAULTY}:picky", fallback=-1.0)])
    scorer = RewardScorer(specs, num_workers=1, timeout_s=2.0)
    try:
        with caplog.at_level("WARNING", logger="rlvr.reward.functions"):
            values, statuses = scorer.score(["\\boxed{1}", "\\boxed{3}", "\\boxed{11}"], ["{}"] * 3)
    finally:
        scorer.close()
    assert values == [{"picky": -1.0}, {"picky": 0.5}, {"picky": -1.0}]
    assert statuses == [{"picky": ERROR}, {"picky": OK}, {"picky": ERROR}]
    assert caplog.text.count("reward function picky") == 1 and "picky does not like ones" in caplog.text


def test_config_checks_the_terms_before_any_model_loads():
    from helpers import compose_config

    c = compose_config()
    c.reward = RewardConfig(functions=[RewardFunctionConfig(name="math", fn="math"),
                                       RewardFunctionConfig(name="short", fn=f"{EXAMPLE}:concise")])  # fmt: skip
    validate(c)
    c.reward.accuracy = "nope"
    with pytest.raises(
        ConfigError, match="reward.accuracy: must be math or the name of a reward.functions term"
    ):
        validate(c)
    c.reward.accuracy = "short"
    c.reward.functions[1].fn = "no/such/file.py:f"
    with pytest.raises(ConfigError, match=r"reward.functions\[1\].fn: .*no such file"):
        validate(c)
    c.reward.functions[1] = RewardFunctionConfig(name="math", fn="format")
    with pytest.raises(ConfigError, match="'math' names two terms"):
        validate(c)
    c.reward.functions = [RewardFunctionConfig(name="math", fn="format")]
    c.reward.accuracy = "math"
    with pytest.raises(
        ConfigError, match=r"reward.functions\[0\]: the math verdicts are the term named math"
    ):
        validate(c)


# ---- as a user meets it -------------------------------------------------------------------------------------


def test_training_with_a_file_reward_weighted_with_math_and_faulty_terms(tiny_cache, tmp_path):
    """Two steps: every term's mean is logged; the raising and the hanging term cost only their samples."""
    out = tmp_path / "run"
    terms = (
        "+reward.functions=["
        "{name:math,fn:math},"
        f"{{name:concise,fn:'{EXAMPLE}:concise',weight:0.5,kwargs:{{max_chars:6}}}},"
        f"{{name:picky,fn:'{FAULTY}:picky',weight:0.0,fallback:-1.0}},"
        f"{{name:sleepy,fn:'{FAULTY}:sleepy',weight:0.0,kwargs:{{seconds:30}}}}]"
    )
    run_train(
        tiny_cache, out, "rollout=hf", "eval.every=0", "trainer.total_steps=2", "trainer.prompts_per_step=8",
        "algo.dynamic_sampling.enabled=false", "algo.overlong.shaping=false", "reward.timeout_s=0.5",
        "trainer.no_signal_max_steps=null", terms,
    )  # fmt: skip
    lines = metrics_lines(out)
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        for key in (
            "reward/math/mean",
            "reward/concise/mean",
            "reward/picky/error_frac",
            "reward/sleepy/timeout_frac",
        ):
            assert key in m, key
        assert 0 < m["reward/concise/mean"] <= 1
        assert m["reward/mean"] == pytest.approx(
            m["reward/math/mean"] + 0.5 * m["reward/concise/mean"], abs=1e-6
        )
    # completions of digits: some hold a 1 (picky raises), some a 2 (sleepy hangs), never all
    assert 0 < sum(m["reward/picky/error_frac"] for m in lines) < 2
    assert 0 < sum(m["reward/sleepy/timeout_frac"] for m in lines) < 2
