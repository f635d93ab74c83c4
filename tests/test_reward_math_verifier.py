import os
import signal
import threading
import time

import pytest

from rlvr.reward import MathVerifier, Verdict, rewards_from_verdicts, verify_one
from rlvr.reward.math_verifier import box_around, fast_verdict, tail_for_verify

# Correct, Wrong, No answer, Timeout
C, W, N, T = Verdict.CORRECT, Verdict.INCORRECT, Verdict.NO_ANSWER, Verdict.TIMEOUT
TIMEOUT_S = 2.0

# (gold, completion, expected verdict): MATH-style golds, completions written like model outputs.
PAIRS = [
    (r"\frac{1}{2}", r"Dividing both sides by 4, the answer is $\boxed{0.5}$.", C),
    (r"\frac{1}{2}", r"So the probability is $\boxed{\dfrac{1}{2}}$.", C),
    (r"\frac{1}{2}", r"Hence $p = \boxed{\tfrac12}$.", C),
    (r"\frac{1}{2}", "Half of the marbles are red, so the answer is 1/2.", C),
    (r"\frac{1}{2}", r"Thus the ratio is $\boxed{\frac{1}{3}}$.", W),
    (r"\frac{1}{2}", r"I first wrote $\boxed{\frac{1}{3}}$, but correcting: $\boxed{\frac{1}{2}}$.", C),
    (r"\frac{1}{2}", r"First guess $\boxed{\frac{1}{2}}$; after checking, $\boxed{\frac{1}{3}}$.", W),
    (r"\frac{9}{4}", r"The area is $\boxed{2.25}$.", C),
    (r"\frac{1}{3}", r"So $x = \boxed{0.333}$.", W),  # rounded too early
    (r"-\frac{1}{2}", r"The slope is $\boxed{-0.5}$.", C),
    (r"2\sqrt{3}", r"Simplifying, the side length is $\boxed{\sqrt{12}}$.", C),
    (r"\frac{\sqrt{2}}{2}", r"Therefore $\sin 45^\circ = \boxed{\frac{1}{\sqrt{2}}}$.", C),
    (r"3\sqrt{2}", r"The distance is $\boxed{2\sqrt{3}}$.", W),
    (r"(-\infty, 3]", r"So $x \in \boxed{(-\infty, 3]}$.", C),
    (r"(-\infty, 3]", r"The solution set is $\boxed{\left(-\infty, 3\right]}$.", C),
    (r"(-\infty, 3]", r"So $x \in \boxed{(-\infty, 3)}$.", W),
    (r"[1, 2)", r"The range is $\boxed{[1,2)}$.", C),
    (r"\{1,2,3\}", r"The roots are $\boxed{\{3,2,1\}}$.", C),
    (r"\{1,2,3\}", r"The possible values are $\boxed{3, 2, 1}$.", C),
    (r"\{1,2,3\}", r"The roots are $\boxed{\{1,2,4\}}$.", W),
    (r"\left( 3, \frac{\pi}{2} \right)", r"In polar form: $\boxed{\left(3,\frac{\pi}{2}\right)}$.", C),
    (r"(1,2)", r"The intersection point is $\boxed{(2,1)}$.", W),
    (r"-\!5", r"The minimum value is $\boxed{-5}$.", C),
    (r"1,\!000", r"There are $\boxed{1000}$ such numbers.", C),
    (r"30^\circ", r"So the angle measures $\boxed{30}$ degrees.", C),
    (r"30", r"Angle $ABC$ is $\boxed{30^\circ}$.", C),
    (r"12\text{ cm}", r"The perimeter is $\boxed{12}$.", C),
    (r"12", r"The perimeter is $\boxed{12\text{ cm}}$.", C),
    (r"2\pi", r"The circumference is $\boxed{2\pi}$.", C),
    (r"2\pi", r"The circumference is $\boxed{6.28}$.", W),
    (r"-3", r"Therefore $k = \boxed{-3}$.", C),
    (r"-3", r"Therefore $k = \boxed{3}$.", W),
    (r"10\%", r"The price rose by $\boxed{10\%}$.", C),
    (r"x^2+2x+1", r"Expanding, we get $\boxed{(x+1)^2}$.", C),
    (r"x^2+2x+1", r"Expanding, we get $\boxed{(x-1)^2}$.", W),
    (r"y=-2x+3", r"The line is $\boxed{y = 3 - 2x}$.", C),
    (r"\$18.90", r"She paid $\boxed{\$18.90}$ in total.", C),
    (r"\text{Monday}", r"The party is on $\boxed{\text{Monday}}$.", C),
    (r"\text{Monday}", r"The party is on $\boxed{\text{Tuesday}}$.", W),
    ("$5$", r"**Final Answer**\n\[\boxed{5}\]", C),
    (r"\boxed{7}", "Adding 3 and 4 gives 7. The final answer is $7$. I hope it is correct.", C),
    ("5", "I am not sure how to solve this problem.", N),
    ("5", "", N),
    ("5", r"The answer is $\boxed{}$.", N),
    # Known math-verify gaps here (see verify_one's docstring): percent literals fail to parse under
    # antlr4 4.9.3 (pinned by hydra-core), so `10\%` only matches the identical string.
    pytest.param(
        r"10\%", r"The price rose by $\boxed{10}$ percent.", C, marks=pytest.mark.xfail(strict=True)
    ),
    pytest.param(r"10\%", r"The price rose by $\boxed{10 \%}$.", C, marks=pytest.mark.xfail(strict=True)),
]


def _hang_or_verify(completion: str, gold: str, timeout_s: float) -> Verdict:
    """Test hook: hang in a way no signal interrupts (like C code in sympy), or crash, when told to."""
    if completion == "DIE":
        os._exit(1)
    if completion == "HANG":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    return verify_one(completion, gold, timeout_s)


def _main_thread_check(completion: str, gold: str, timeout_s: float) -> Verdict:
    return Verdict.CORRECT if threading.current_thread() is threading.main_thread() else Verdict.INCORRECT


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(num_workers=2, timeout_s=TIMEOUT_S) as v:
        yield v


@pytest.fixture(scope="module")
def pair_verdicts(verifier):
    pairs = [p.values if hasattr(p, "values") else p for p in PAIRS]
    verdicts = verifier.verify([c for _, c, _ in pairs], [g for g, _, _ in pairs])
    return dict(zip([(g, c) for g, c, _ in pairs], verdicts))


@pytest.mark.parametrize("gold,completion,expected", PAIRS)
def test_answer_pairs(pair_verdicts, gold, completion, expected):
    assert pair_verdicts[(gold, completion)] == expected


def test_verify_one_in_process_and_off_main_thread():
    assert verify_one(r"so the answer is $\boxed{\frac{1}{2}}$.", "0.5", TIMEOUT_S) == C
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_catch(verify_one, r"$\boxed{1}$", "1", 1.0)))
    thread.start()
    thread.join()
    assert isinstance(errors[0], RuntimeError)  # fails loudly instead of silently scoring 0


def _catch(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return e


HOSTILE = {
    "code_boxed": r"So the answer is $\boxed{__import__('os').system('touch /tmp/rlvr_pwned')}$",
    "code_plain": "The answer is __import__('os').system('touch /tmp/rlvr_pwned')",
    "code_eval": "answer: eval(\"__import__('os').system('touch /tmp/rlvr_pwned')\")",
    "tower_latex": r"The answer is $\boxed{9^{9^{9^{9}}}}$.",
    "tower_plain": "The answer is 9**9**9**9",
    "factorial": r"$\boxed{(10^{10})!}$",
    "nested_parens": r"$\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}$",
    "nested_braces": r"$\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}$",
    "nested_fracs": r"$\boxed{" + r"\frac{1}{" * 500 + "2" + "}" * 500 + "}$",
    "unclosed": r"$\boxed{" + "(" * 100_000,
    "megabyte_text": "blah " * 200_000 + r"so the answer is $\boxed{5}$.",
    "megabyte_digits": "1" * 1_000_000,
    "megabyte_latex": r"$\boxed{" + "1+" * 500_000 + "1}$",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completions_get_a_verdict_in_time(verifier, name):
    start = time.monotonic()
    [verdict] = verifier.verify([HOSTILE[name]], ["5"])
    elapsed = time.monotonic() - start
    assert isinstance(verdict, Verdict)
    assert elapsed < TIMEOUT_S * 2 + 2, f"{name}: {elapsed:.1f}s"
    assert not os.path.exists("/tmp/rlvr_pwned")
    if name == "megabyte_text":
        assert verdict == C  # the answer at the end survives truncation


def test_deadline_fires_inside_the_worker(verifier):
    pids = [w.proc.pid for w in verifier.pool.workers]
    start = time.monotonic()
    assert verifier.verify([HOSTILE["tower_latex"]], ["5"]) == [T]
    assert time.monotonic() - start < verifier.hard_limit_s  # before the parent's backstop could act
    assert [w.proc.pid for w in verifier.pool.workers] == pids  # nobody was killed


def test_stuck_or_dead_worker_is_replaced():
    with MathVerifier(num_workers=1, timeout_s=0.5, verify_fn=_hang_or_verify) as v:
        pid = v.pool.workers[0].proc.pid
        start = time.monotonic()
        verdicts = v.verify([r"$\boxed{2}$", "HANG", r"$\boxed{3}$"], ["2", "1", "4"])
        assert verdicts == [C, T, W]
        assert time.monotonic() - start < 10
        assert v.pool.workers[0].proc.pid != pid
        assert v.verify([r"so $\boxed{\frac{1}{2}}$", "HANG", "DIE", "7"], ["0.5", "1", "1", "7"]) == [
            C,
            T,
            T,
            C,
        ]
        assert v.verify([r"$\boxed{4}$"], ["4"]) == [C]
    v.close()  # idempotent
    with pytest.raises(RuntimeError):
        v.verify(["1"], ["1"])


def test_workers_verify_on_their_main_thread():
    with MathVerifier(num_workers=1, timeout_s=1.0, verify_fn=_main_thread_check) as v:
        assert v.verify(["a", "b"], ["a", "b"]) == [C, C]


def test_verify_keeps_order_and_checks_lengths(verifier):
    golds = [str(n) for n in range(40)]
    completions = [rf"The answer is $\boxed{{{n if n % 3 else n + 1}}}$." for n in range(40)]
    assert verifier.verify(completions, golds) == [C if n % 3 else W for n in range(40)]
    assert verifier.verify([], []) == []
    with pytest.raises(ValueError):
        verifier.verify(["1"], [])


def test_rewards_from_verdicts():
    assert rewards_from_verdicts([C, W, N, T]) == [1.0, 0.0, 0.0, 0.0]
    assert rewards_from_verdicts(
        [C, W, N, T], correct=2.0, incorrect=-1.0, no_answer=-0.5, timeout=-0.25
    ) == [
        2.0,
        -1.0,
        -0.5,
        -0.25,
    ]


# (completion, gold) pairs beyond PAIRS and HOSTILE for the fast-path comparison: real completions of the
# embedded tiny model (8 forced tokens: junk follows the answer), boxes holding the gold verbatim, and texts
# where "the last box equals the gold" would be wrong but math-verify reads something else.
MORE = [
    (r"\boxed{76}+17}", "76"),
    (r"\boxed{100}}03", "100"),
    (r"\boxed{135}N\boxed{3", "135"),
    (r"\boxed{75}0}u\boxed{", "76"),
    (r"Expanding: \[\boxed{ x^2+2x+1 }\]", "x^2+2x+1"),
    (r"So the set is $\boxed{\{1,2,3\}}$.", r"\{1,2,3\}"),
    (HOSTILE["code_boxed"], "__import__('os').system('touch /tmp/rlvr_pwned')"),
    (r"$\boxed{1}$ and $\boxed{2}$", "2"),  # math-verify reads {1, 2}
    (r"\boxed{5} \fbox{6}", "5"),  # it reads \fbox as a box too
    (r"\boxed{5}. The final answer is $6$. I hope it is correct.", "5"),  # it reads 6
    (r"\boxed{132}1}", "111"),  # different integers
    (r"So $x = \boxed{ -3 }$.", "3"),
    (r"\boxed{12}^\circ", "13"),
]


def test_fast_path_gives_the_full_paths_verdicts(verifier):
    pairs = [p.values if hasattr(p, "values") else p for p in PAIRS]
    # of HOSTILE only the one the fast path answers: the others reach the workers either way (and time out there,
    # which test_hostile_completions_get_a_verdict_in_time checks once)
    completions = [c for _, c, _ in pairs] + [HOSTILE["megabyte_text"]] + [c for c, _ in MORE]
    golds = [g for g, _, _ in pairs] + ["5"] + [g for _, g in MORE]
    answered_fast = [
        fast_verdict(c[-verifier.max_chars :], g) is not None for c, g in zip(completions, golds)
    ]
    assert sum(answered_fast) == 15  # 6 from PAIRS, megabyte_text, 8 from MORE: the comparison covers it
    fast = verifier.verify(completions, golds)
    verifier.fast_path = False
    try:
        full = verifier.verify(completions, golds)
    finally:
        verifier.fast_path = True
    assert fast == full
    assert full[-6:] == [W, W, W, W, W, W]
    assert not os.path.exists("/tmp/rlvr_pwned")


def _always_incorrect(completion: str, gold: str, timeout_s: float) -> Verdict:
    return Verdict.INCORRECT


def test_fast_path_answers_without_the_workers():
    completions = [r"So $x = \boxed{\frac{1}{2}}$.", r"So $x = \boxed{0.5}$.", r"So $x = \frac{1}{2}$."]
    with MathVerifier(num_workers=1, timeout_s=1.0, verify_fn=_always_incorrect) as v:
        assert v.verify(completions, [r" \frac{1}{2}"] * 3) == [C, W, W]  # only the first skipped the worker
        v.fast_path = False
        assert v.verify(completions, [r" \frac{1}{2}"] * 3) == [W, W, W]


def test_require_boxed_leaves_no_answer_outside_a_box(verifier):
    """math-verify reads a last bare number as the answer; with require_boxed that earns no_answer, while a box
    is verified as before."""
    completions = ["23+14=37,37+58=95", "37+58=95,\\boxed{95}", "so $\\boxed{95}$.", "\\boxed{94}"]
    assert verifier.verify(completions, ["95"] * 4)[0] == C  # the reading require_boxed refuses
    with MathVerifier(num_workers=1, timeout_s=TIMEOUT_S, require_boxed=True) as strict:
        assert strict.verify(completions, ["95"] * 4) == [Verdict.NO_ANSWER, C, C, W]


@pytest.mark.parametrize(
    "completion,gold,expected",
    [
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}", C),  # nested braces
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2", None),
        (r"$\boxed{\{1\}}$", r"\{1\}", C),  # escaped braces count, as in math-verify
        (r"$\boxed{ 5 }$", " 5", C),
        (r"\boxed{76}+17}", "76", C),  # closers after the box
        (r"$\boxed{\frac{1}{2}$", r"\frac{1}{2}", None),  # unbalanced
        (r"$\boxed{\frac{1}{2}$", r"\frac{1", None),
        (r"$\boxed{5", "5", None),
        (r"$\boxed {5}$", "5", None),
        (r"$\boxed{}$", "", None),
        (r"$\boxed{1}$, no: $\boxed{2}$", "2", None),  # several boxes: math-verify may join them
        (r"$\boxed{2}$, no: $\boxed{1}$", "2", None),
        (r"\fbox{1} $\boxed{2}$", "2", None),
        (r"The final answer is $\boxed{2}$. I hope it is correct.", "2", None),
        (r"$\boxed{10}$\%", "10", None),
        (r"$\boxed{10}$ Percent", "10", None),
        (r"$\boxed{\$5}$", r"\$5", None),  # the box would hold a math environment's end
        (r"\(\boxed{a\)b}\)", r"a\)b", None),
        (r"\boxed{4}", "5", W),  # two different integers: math-verify's verdict too
        (r"$\boxed{ -3 }$.", "3", W),
        (r"\boxed{132}1}", "111", W),  # the 8-token benchmark's junk after the box
        (r"\boxed{10}$\%", "11", None),  # a percentage: math-verify decides
        (r"\boxed{007}", "7", None),  # the same integer written differently: math-verify decides
        (r"\boxed{0.5}", r"\frac{1}{2}", None),  # not equal as strings, not integers: it may be equivalent
        (r"\boxed{4.0}", "5", None),
        (r"\boxed{1234567890123456}", "1234567890123457", None),  # 16 digits: floats may not tell them apart
    ],
)
def test_fast_verdict(completion, gold, expected):
    assert fast_verdict(completion, gold) == expected


def test_several_boxes_are_not_the_last_box():
    """Why the fast path declines several boxes instead of taking the last: math-verify joins them."""
    assert fast_verdict(r"$\boxed{1}$ and $\boxed{2}$", "2") is None
    assert verify_one(r"$\boxed{1}$ and $\boxed{2}$", "2", TIMEOUT_S) == W
    assert verify_one(r"$\boxed{1}$, no wait: $\boxed{2}$", "2", TIMEOUT_S) == C


def test_identical_samples_are_verified_once(verifier):
    # a group's G samples of a collapsed policy: four distinct (completion, gold) pairs among seven samples
    three, four = r"$\boxed{3}$", r"$\boxed{4}$"
    completions = [three, four, three, three, "no idea", four, "3"]
    golds = ["3", "3", "3", "3", "3", "3", "4"]
    verifier.fast_path = False
    try:
        assert verifier.verify(completions, golds) == [C, W, C, C, N, W, W]
        assert verifier.last_sent == 4  # boxed 3, boxed 4 and "no idea" against 3; "3" against 4
    finally:
        verifier.fast_path = True
    assert verifier.verify(completions, golds) == [C, W, C, C, N, W, W]
    assert verifier.last_sent == 2  # the fast path settled boxed 3 and boxed 4 against 3


def test_gold_parse_is_cached_per_process():
    from rlvr.reward.math_verifier import parse_gold

    gold = r"\frac{7}{13}"
    assert verify_one(r"$\boxed{\frac{14}{26}}$", gold, 5.0) == C
    hits = parse_gold.cache_info().hits
    assert verify_one(r"$\boxed{0.5}$", gold, 5.0) == W
    assert parse_gold.cache_info().hits == hits + 1


# ---- the cut to the last max_chars characters never lands inside a box ---------------------------------


def test_box_longer_than_the_cut_is_no_answer(verifier):
    # the case: 20,001 ones summed in one box, 40,009 characters. Its last 10,000 characters end in
    # "+1+1}", which read as the answer 1: CORRECT against the gold 1 although the box holds 20001.
    completion = r"\boxed{" + "+".join(["1"] * 20_001) + "}"
    assert len(completion) == 40_009 and verifier.max_chars == 10_000
    assert verifier.verify([completion, r"so $\boxed{1}$"], ["1", "1"]) == [N, C]
    assert verifier.last_box_too_long == [True, False]
    assert verifier.verify([r"$\boxed{1}$"], ["1"]) and verifier.last_box_too_long == [False]  # per call


def test_box_split_by_the_cut_is_verified_whole(verifier):
    # the last 40 characters start inside the box, at "2}}$ as computed...": a reading of "2", not of 1/2
    completion = r"The answer is $\boxed{\frac{1}{2}}$ as computed above, and that is all."
    assert completion[-40:].startswith("2}}$")
    verifier.max_chars = 40
    try:
        assert verifier.verify([completion, completion], ["2", r"\frac{1}{2}"]) == [W, C]
        assert verifier.last_box_too_long == [False, False]
    finally:
        verifier.max_chars = 10_000


@pytest.mark.parametrize(
    "text,pos,expected",
    [
        (r"ab\boxed{12}cd", 5, (2, 12)),  # inside the command word
        (r"ab\boxed{12}cd", 10, (2, 12)),  # inside the content
        (r"ab\boxed{12}cd", 2, None),  # at the box's start: it stays whole
        (r"ab\boxed{12}cd", 12, None),  # just after its closing brace
        (r"\boxed{1} x \boxed{2}", 11, None),  # between two boxes
        (r"\boxed{\frac{1}{2}} x", 14, (0, 19)),  # nested braces: the box, not the inner group
        (r"\boxed{\boxed{7}} x", 10, (0, 17)),  # nested boxes: the outermost
        (r"{a} \fbox {5}}", 9, (4, 13)),  # \fbox counts, spaces before its brace too; a stray } is ignored
        (r"x \boxed{1+1+1", 8, (2, 14)),  # never closed: math-verify reads it to the end
        (r"x \boxed 1+1+1", 8, None),  # no brace: not a box
        ("no box at all", 5, None),
    ],
)
def test_box_around(text, pos, expected):
    assert box_around(text, pos) == expected


def test_tail_for_verify():
    box = r"\boxed{" + "9" * 12 + "}"  # 20 characters
    text = "x" * 30 + box + "y" * 10  # the box spans [30, 50)
    assert tail_for_verify("abc", 3) == "abc"
    assert tail_for_verify("x" * 30 + "end", 5) == "xxend"
    assert tail_for_verify(text, 10) == "y" * 10  # cut just after the box
    assert tail_for_verify(text, 30) == box + "y" * 10  # cut at the box's start
    assert tail_for_verify(text, 25) == box + "y" * 10  # cut 5 into it: from its start, 30 characters in all
    assert tail_for_verify(text, 15) is None  # cut into a box longer than the limit: no answer
    assert tail_for_verify(box, 19) is None and tail_for_verify(box, 20) == box


def test_the_deadline_restores_the_handler_and_disarms_the_timer():
    """One deadline for math-verify and the user's terms: it fires inside its block, and leaves no timer armed
    and the previous handler in place whether it fired or not."""
    from rlvr.reward.deadline import DeadlineExceeded, deadline

    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(DeadlineExceeded), deadline(0.05):
        time.sleep(5)
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with deadline(5.0):
        pass
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
