"""Reward functions of the user's own (rlvr/reward/): loading, the weighted sum, a function that raises, hangs
or returns what is not a reward costing only that sample's value (and named), a term that fails on every sample
stopping the run, and the real trainer logging every component."""

import json
import math
from pathlib import Path

import pytest
from helpers import metrics_lines, run_train

from rlvr.config import ConfigError, RewardConfig, RewardFunctionConfig, validate
from rlvr.errors import RunDiverged
from rlvr.reward import RewardModel, RewardRule, TermFailureGuard, Verdict, component_metrics
from rlvr.reward.functions import (
    ERROR,
    OK,
    SKIPPED,
    TIMEOUT,
    FunctionSpec,
    TermRunner,
    format_reward,
    load_function,
    run_functions,
    specs_from_config,
)
from rlvr.reward.model import combine, term_value
from rlvr.reward.scorer import TermScorer

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


def test_what_is_not_a_reward_is_the_terms_error_and_gets_its_fallback():
    """NaN, 1e300 (beyond reward.max_abs 1e6), a string, a dict with an infinite part: each an ERROR with the
    term's fallback and a traceback that says what came back; the other terms of the sample are unaffected."""
    names = ("not_a_number", "huge", "wordy", "half_broken")
    specs = tuple(FunctionSpec(n, f"{FAULTY}:{n}", fallback=-0.5) for n in names)
    specs += (FunctionSpec("work", f"{EXAMPLE}:shows_work"),)
    out = run_functions(specs, "3+4= \\boxed{7}", json.dumps({"question": "3+4="}), 2.0, max_abs=1e6)
    assert [(s, v) for s, v, _ in out[:4]] == [(ERROR, {n: -0.5}) for n in names]
    assert "nan" in out[0][2] and "1e+300" in out[1][2] and "returned str" in out[2][2]
    assert "half_broken/broken" in out[3][2]
    assert out[4] == (OK, {"work/boxed": 1.0, "work/restates": 1.0}, None)
    # the bound is the config's: 1e300 passes under a bound above it
    assert run_functions(specs[1:2], "x", "{}", 2.0, max_abs=1e301)[0][:2] == (OK, {"huge": 1e300})


def test_a_term_that_hangs_on_samples_in_a_row_is_skipped_for_the_rest_of_the_batch():
    """skip_after 2: sleepy runs out of time on two samples in a row, then is skipped (its fallback, no wait) -
    and the term after it, no longer starved of time, runs. A new batch tries it again."""
    specs = (
        FunctionSpec("sleepy", f"{FAULTY}:sleepy", kwargs_json='{"seconds": 30}', fallback=-2.0),
        FunctionSpec("work", f"{EXAMPLE}:shows_work"),
    )
    runner = TermRunner(specs, skip_after=2)
    row = json.dumps({"question": "q"})
    got = [runner("\\boxed{2}", row, 1, 0.2) for _ in range(3)]
    assert [[s for s, _, _ in r] for r in got] == [[TIMEOUT, TIMEOUT], [TIMEOUT, TIMEOUT], [SKIPPED, OK]]
    assert got[2][0][1] == {"sleepy": -2.0}
    assert [s for s, _, _ in runner("\\boxed{3}", row, 1, 0.2)] == [SKIPPED, OK]  # the rest of batch 1
    assert [s for s, _, _ in runner("\\boxed{2}", row, 2, 0.2)] == [TIMEOUT, TIMEOUT]  # batch 2: tried again
    # not in a row: a success in between resets the count
    runner = TermRunner(specs, skip_after=2)
    texts = ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}", "\\boxed{3}"]
    assert [runner(t, row, 1, 0.2)[0][0] for t in texts] == [TIMEOUT, OK, TIMEOUT, OK]


def test_scorer_in_worker_processes_names_each_failing_term_once(caplog, tmp_path, monkeypatch):
    """In the workers: a raise, NaN, 1e300 and a string each give the fallback and one warning naming the term;
    a `module:callable` in the directory rlvr-train ran from imports there, in the workers too."""
    (tmp_path / "mymod.py").write_text("def tenth(completion, row):\n    return 0.1\n")
    monkeypatch.chdir(tmp_path)
    terms = [RewardFunctionConfig(name="picky", fn=f"{FAULTY}:picky", fallback=-1.0)]
    terms += [RewardFunctionConfig(name=n, fn=f"{FAULTY}:{n}") for n in ("not_a_number", "huge", "wordy")]
    terms += [RewardFunctionConfig(name="mine", fn="mymod:tenth")]
    specs = specs_from_config(terms)
    monkeypatch.chdir(ROOT)  # the workers import mymod from where the run started, not from their cwd
    scorer = TermScorer(specs, num_workers=1, timeout_s=2.0)
    try:
        with caplog.at_level("WARNING", logger="rlvr.reward.scorer"):
            values, statuses = scorer.score(["\\boxed{1}", "\\boxed{3}", "\\boxed{11}"], ["{}"] * 3)
    finally:
        scorer.close()
    assert [v["picky"] for v in values] == [-1.0, 0.5, -1.0]
    assert [s["picky"] for s in statuses] == [ERROR, OK, ERROR]
    for name in ("not_a_number", "huge", "wordy"):
        assert [(v[name], s[name]) for v, s in zip(values, statuses)] == [(0.0, ERROR)] * 3
        assert caplog.text.count(f"reward function {name} ") == 1
    assert [(v["mine"], s["mine"]) for v, s in zip(values, statuses)] == [(0.1, OK)] * 3
    assert caplog.text.count("reward function picky") == 1 and "picky does not like ones" in caplog.text


class ScriptedTerms:
    """Stands in for TermScorer: fixed values and statuses per sample."""

    def __init__(self, values, statuses):
        self.values, self.statuses = values, statuses

    def score(self, texts, rows):
        return [dict(v) for v in self.values], [dict(s) for s in self.statuses]

    def close(self):
        pass


class ScriptedVerifier:
    def __init__(self, verdicts):
        self.verdicts = verdicts

    def verify(self, texts, golds):
        return list(self.verdicts)

    def close(self):
        pass


def test_reward_model_composes_terms_accuracy_and_each_terms_metrics_by_hand():
    """math (weight 1) + work (weight 0.5, a dict term) over 2 samples; accuracy on work >= 1.5.
    Rewards: 1 + 0.5 x (1 + 1) = 2.0 and 0 + 0.5 x (1 + 0) = 0.5. work's value, as it enters the reward: 2 and 1,
    so reward/work/mean = 1.5; math's verdicts CORRECT and TIMEOUT: reward/math/timeout_frac 0.5, error_frac 0."""
    V = Verdict
    terms = ScriptedTerms(
        [{"work/boxed": 1.0, "work/restates": 1.0}, {"work/boxed": 1.0, "work/restates": 0.0}],
        [{"work": OK}, {"work": ERROR}],
    )
    rule = RewardRule(terms=(("math", 1.0), ("work", 0.5)), accuracy="work", accuracy_threshold=1.5)
    model = RewardModel(ScriptedVerifier([V.CORRECT, V.TIMEOUT]), terms, rule)
    s = model.score(["a", "b"], ["1", "1"], ["{}", "{}"])
    assert s.rewards == [2.0, 0.5]
    assert s.verdicts == [V.CORRECT, V.INCORRECT]  # work: 2 >= 1.5, 1 < 1.5
    assert s.statuses == [{"work": OK, "math": OK}, {"work": ERROR, "math": TIMEOUT}]
    m = component_metrics(s.components, s.statuses, 2)
    assert m["reward/work/mean"] == 1.5 and m["reward/work/boxed/mean"] == 1.0
    assert m["reward/work/restates/mean"] == 0.5 and m["reward/math/mean"] == 0.5
    assert m["reward/math/timeout_frac"] == 0.5 and m["reward/math/error_frac"] == 0.0
    assert m["reward/work/error_frac"] == 0.5
    # without a math term: no math component, no math status, and the verdicts stay math's for accuracy=math
    rule = RewardRule(terms=(("work", 1.0),))
    s = RewardModel(ScriptedVerifier([V.CORRECT, V.TIMEOUT]), terms, rule).score(
        ["a", "b"], ["1", "1"], ["", ""]
    )
    assert s.rewards == [2.0, 1.0] and s.verdicts == [V.CORRECT, V.TIMEOUT]
    assert all("math" not in c for c in s.components) and all("math" not in x for x in s.statuses)
    assert all(math.isfinite(r) for r in s.rewards)


def test_a_term_failing_on_every_sample_warns_then_stops_the_run(caplog):
    """warn after 2 steps in a row, stop after 3: 'bad' fails on all samples (errors 0.25 + timeouts 0.75 = 1)
    on steps 1-3; 'flaky' fails on all at step 1 only, then on 3 of 4: its count restarts."""
    guard = TermFailureGuard(warn_steps=2, max_steps=3)

    def metrics(flaky_errors):
        return {"reward/bad/error_frac": 0.25, "reward/bad/timeout_frac": 0.75,
                "reward/flaky/error_frac": flaky_errors, "reward/flaky/timeout_frac": 0.0}  # fmt: skip

    with caplog.at_level("WARNING", logger="rlvr.reward.health"):
        guard.observe(1, metrics(1.0))
        assert caplog.text == ""
        guard.observe(2, metrics(0.75))
        assert "reward function bad failed on every sample for 2 step(s)" in caplog.text
        assert "flaky" not in caplog.text
        with pytest.raises(RunDiverged, match=r"step 3: reward function bad .*reward.fail_max_steps=3"):
            guard.observe(3, metrics(0.75))
    assert guard.state_dict() == {"runs": {"bad": 3, "flaky": 0}}
    quiet = TermFailureGuard(None, None)
    for step in range(1, 30):
        quiet.observe(step, metrics(1.0))  # null: never


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
    c.reward.functions = [RewardFunctionConfig(name="short", fn=f"{EXAMPLE}:concise", fallback=2e6)]
    c.reward.accuracy = "short"
    with pytest.raises(ConfigError, match=r"reward.functions\[0\].fallback: must be finite and within"):
        validate(c)
    c.reward.functions[0].fallback = 0.0
    c.reward.max_abs = float("inf")
    with pytest.raises(ConfigError, match="reward.max_abs: must be a finite number > 0"):
        validate(c)
    c.reward.max_abs = 1e6
    c.reward.fail_max_steps = 0
    with pytest.raises(ConfigError, match=r"reward.fail_max_steps: must be >= 1 or null"):
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
        f"{{name:sleepy,fn:'{FAULTY}:sleepy',weight:0.0,kwargs:{{seconds:30}}}},"
        f"{{name:work,fn:'{EXAMPLE}:shows_work',weight:0.0}}]"
    )
    run_train(
        tiny_cache, out, "rollout=hf", "eval.every=0", "trainer.total_steps=2", "trainer.prompts_per_step=8",
        "algo.dynamic_sampling.enabled=false", "algo.overlong.shaping=false", "reward.timeout_s=0.5",
        "trainer.no_signal_max_steps=null", "reward.timeout_skip_after=null", terms,
    )  # fmt: skip
    lines = metrics_lines(out)
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        for key in (
            "reward/math/mean",
            "reward/concise/mean",
            "reward/picky/error_frac",
            "reward/sleepy/timeout_frac",
            "reward/math/error_frac",
            "reward/math/timeout_frac",
        ):
            assert key in m, key
        # a dict-valued term: its parts, and their sum as it enters the reward
        assert m["reward/work/mean"] == pytest.approx(
            m["reward/work/boxed/mean"] + m["reward/work/restates/mean"], abs=1e-9
        )
        assert 0 < m["reward/concise/mean"] <= 1
        assert m["reward/mean"] == pytest.approx(
            m["reward/math/mean"] + 0.5 * m["reward/concise/mean"], abs=1e-6
        )
    # completions of digits: some hold a 1 (picky raises), some a 2 (sleepy hangs), never all
    assert 0 < sum(m["reward/picky/error_frac"] for m in lines) < 2
    assert 0 < sum(m["reward/sleepy/timeout_frac"] for m in lines) < 2
