"""Token-budget micro-batches and sequence packing in the learner (learner.max_tokens_per_microbatch,
learner.pack): the plan, the packed layout, no attention across packed sequences, and exactness against the
padded path."""

import copy
import random

import pytest
import torch
from accelerate import Accelerator
from helpers import max_rel_error, rollout_batch
from margins import within

from rlvr import microbatch
from rlvr.batch import RolloutBatch
from rlvr.config import AlgoConfig, ConfigError, LearnerConfig, OptimConfig, RLVRConfig, validate
from rlvr.learner import Learner, response_logp_entropy
from rlvr.microbatch import pack_rows, padding_fraction, plan_micro_batches, unpack_rows

# ---- the plan (pure) -----------------------------------------------------------------------------------

LENGTHS = [5, 9, 3, 7, 2]

MOVED = [
    "micro_batch_positions",
    "pack_sequences",
    "plan_micro_batches",
    "flat",
    "padding_fraction",
    "pack_rows",
    "unpack_rows",
    "minibatch_indices",
    "MicroBatch",
]


@pytest.mark.parametrize("name", MOVED)
def test_old_import_path_re_exports_the_micro_batch_functions(name):
    """They moved from rlvr.learner to rlvr.microbatch; users import them from rlvr.learner."""
    import rlvr.learner

    assert getattr(rlvr.learner, name) is getattr(microbatch, name)


def test_plan_by_sequence_count_keeps_order():
    assert plan_micro_batches(LENGTHS, 2, None, pack=False) == [[[0], [1]], [[2], [3]], [[4]]]


def test_plan_packed_is_first_fit_decreasing_into_rows():
    # rows of <= 12 tokens, longest first: 9 (seq 1) opens row A; 7 (seq 3) does not fit A (16) -> row B;
    # 5 (seq 0) fits B (12); 3 (seq 2) fits A (12); 2 (seq 4) fits neither (14, 14) -> row C. A budget of 12
    # holds one such row per micro-batch
    assert plan_micro_batches(LENGTHS, 2, 12, pack=True, row_tokens=12) == [[[1, 2]], [[3, 0]], [[4]]]


def test_plan_packed_rows_default_to_the_longest_sequence():
    # rows of <= 9 tokens: 9 -> A (full); 7 -> B; 5 -> C; 3 fits C (8); 2 fits B (9). Budget 24: A + B make
    # 2 x 9 = 18, adding C would make 3 x 9 = 27 -> C starts the next micro-batch
    assert plan_micro_batches(LENGTHS, 2, 24, pack=True) == [[[1], [3, 4]], [[0, 2]]]


def test_plan_padded_counts_rows_times_longest():
    # budget 12, longest first, only the newest micro-batch is tried: 9 alone; 7: 2 x 9 = 18 > 12 -> new;
    # 5: 2 x 7 = 14 -> new; 3: 2 x 5 = 10 fits; 2: 3 x 5 = 15 -> new
    assert plan_micro_batches(LENGTHS, 2, 12, pack=False) == [[[1]], [[3]], [[0], [2]], [[4]]]


@pytest.mark.parametrize("pack", [False, True])
def test_a_row_longer_than_the_budget_gets_a_micro_batch_to_itself(pack):
    assert plan_micro_batches([3, 20, 4], 8, 10, pack) == [[[1]], [[2, 0]] if pack else [[2], [0]]]


@pytest.mark.parametrize("pack,row_tokens", [(False, None), (True, None), (True, 30), (True, 64)])
def test_plan_covers_every_sequence_once_within_the_budget(pack, row_tokens):
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(200)]
    plan = plan_micro_batches(lengths, 8, 64, pack, row_tokens)
    assert sorted(i for mb in plan for row in mb for i in row) == list(range(200))
    cap = row_tokens or max(lengths)
    for mb in plan:  # a sequence longer than the row length gets a row to itself
        assert all(len(row) == 1 or sum(lengths[i] for i in row) <= cap for row in mb)
        assert len(mb) * max(sum(lengths[i] for i in row) for row in mb) <= 64
    assert padding_fraction(lengths, plan) < (0.02 if pack else 0.1)


def test_padding_fraction_by_hand():
    # padded plan: computed 9 + 7 + 2 x 5 + 2 = 28 positions for 26 real tokens
    assert padding_fraction(LENGTHS, [[[1]], [[3]], [[0], [2]], [[4]]]) == pytest.approx(2 / 28)
    # one sequence-count micro-batch of all five rows: 5 x 9 = 45 positions
    assert padding_fraction(LENGTHS, [[[0], [1], [2], [3], [4]]]) == pytest.approx(1 - 26 / 45)
    assert padding_fraction(LENGTHS, [[[1], [3, 4]], [[0, 2]]]) == 0.0  # rows of 9, 9 | 8
    assert padding_fraction(LENGTHS, [[[1, 2], [3]]]) == pytest.approx(5 / 24)  # rows of 12 and 7


# ---- the packed layout (pure) --------------------------------------------------------------------------


def test_pack_rows_by_hand():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    resp = torch.tensor([[False, False, True, False], [True, True, False, False], [False, True, True, True]])
    packed_ids, pos, packed_resp, index = pack_rows(ids, resp, torch.tensor([3, 2, 4]), [2, 1])
    assert packed_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    # restart at 0: the same rotary positions as unpacked; the pad is a sequence of its own
    assert pos.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    # seq 1's first token is marked but never predicted (nothing precedes it unpacked): dropped, else token 3
    # of seq 0 would predict it
    assert packed_resp.tolist() == [[False, False, True, False, True], [False, True, True, True, False]]
    src_rows, src_cols, dst_rows, dst_cols = index
    assert (src_rows.tolist(), src_cols.tolist()) == (
        [0, 0, 0, 1, 1, 2, 2, 2, 2],
        [0, 1, 2, 0, 1, 0, 1, 2, 3],
    )
    assert (dst_rows.tolist(), dst_cols.tolist()) == (
        [0, 0, 0, 0, 0, 1, 1, 1, 1],
        [0, 1, 2, 3, 4, 0, 1, 2, 3],
    )
    back = unpack_rows(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]]), index, (3, 4))
    assert back.tolist() == [[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0], [6.0, 7.0, 8.0, 9.0]]


# ---- the model: packed == padded, and no attention across sequences ----------------------------------------


def _varied_batch(n_prompt=(2, 9, 5, 13, 1), n_resp=(6, 1, 4, 3, 7), seed=0) -> RolloutBatch:
    """Right-padded rows whose left contexts (prompts) and responses differ in length."""
    g = torch.Generator().manual_seed(seed)
    width = max(p + r for p, r in zip(n_prompt, n_resp))
    n = len(n_prompt)
    ids = torch.zeros((n, width), dtype=torch.long)
    att = torch.zeros((n, width), dtype=torch.long)
    resp = torch.zeros((n, width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(n_prompt, n_resp)):
        ids[i, : p + r] = torch.randint(0, 250, (p + r,), generator=g)
        att[i, : p + r] = 1
        resp[i, p : p + r] = True
    return RolloutBatch(ids, att, resp, torch.randn(n, generator=g), torch.zeros(n, width))


def _packed_logp_entropy(model, batch: RolloutBatch, row_sizes, temperature=0.7):
    lengths = batch.attention_mask.sum(-1)
    ids, pos, resp, index = pack_rows(batch.input_ids, batch.response_mask, lengths, row_sizes)
    logp, ent = response_logp_entropy(model, ids, None, resp, temperature, 5, position_ids=pos)
    shape = tuple(batch.input_ids.shape)
    return unpack_rows(logp, index, shape), unpack_rows(ent, index, shape)


@pytest.fixture(params=["sdpa", "eager"])
def model(request, tiny_model):
    tiny_model.set_attn_implementation(request.param)
    return tiny_model


@pytest.mark.parametrize("row_sizes", [[5], [2, 1, 2]], ids=["one-row", "three-rows"])
def test_packed_logp_entropy_and_grads_equal_padded(model, row_sizes):
    batch = _varied_batch()
    other = copy.deepcopy(model)
    w = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(1))
    logp, ent = _packed_logp_entropy(model, batch, row_sizes)
    ref_logp, ref_ent = response_logp_entropy(
        other, batch.input_ids, batch.attention_mask, batch.response_mask, 0.7, 5
    )
    torch.testing.assert_close(logp, ref_logp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-5)
    assert (logp[~batch.response_mask] == 0).all() and (logp[batch.response_mask] != 0).all()
    (logp * w).sum().backward()
    (ref_logp * w).sum().backward()
    for (name, p), q in zip(model.named_parameters(), other.parameters()):
        within(max_rel_error(p.grad, q.grad), 1e-4, name)


def _logp_of_b_packed_after_a(model, a_ids: torch.Tensor, b_ids: torch.Tensor, restart_positions: bool):
    """Log-probs of sequence B's tokens (all but its first) when packed right after sequence A."""
    ids = torch.cat([a_ids, b_ids])[None]
    pos = torch.cat([torch.arange(len(a_ids)), torch.arange(len(b_ids))])
    if not restart_positions:
        pos = torch.arange(ids.shape[1])
    resp = torch.zeros_like(ids, dtype=torch.bool)
    resp[0, len(a_ids) + 1 :] = True
    logp, _ = response_logp_entropy(model, ids, None, resp, 1.0, 64, position_ids=pos[None])
    return logp[0, len(a_ids) + 1 :]


@torch.no_grad()
def test_no_attention_across_packed_sequences(model):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 250, (9,), generator=g), torch.randint(0, 250, (6,), generator=g)
    a_changed = torch.randint(0, 250, (12,), generator=g)  # other tokens and another length
    b_after_a = _logp_of_b_packed_after_a(model, a, b, restart_positions=True)
    b_after_other = _logp_of_b_packed_after_a(model, a_changed, b, restart_positions=True)
    # float32 rounding of log-probs of about -5 (ulp 5e-7): measured 4.8e-7 apart; a leak moves them > 1e-3
    torch.testing.assert_close(b_after_a, b_after_other, rtol=0, atol=1e-5)
    alone, _ = response_logp_entropy(
        model, b[None], torch.ones(1, 6, dtype=torch.long), torch.arange(6)[None] > 0, 1.0, 64
    )
    torch.testing.assert_close(b_after_a, alone[0, 1:], rtol=0, atol=1e-5)
    # the check can fail: with plain 0..T-1 positions nothing marks the boundary, B attends to A and moves
    leaky = _logp_of_b_packed_after_a(model, a, b, restart_positions=False)
    leaky_other = _logp_of_b_packed_after_a(model, a_changed, b, restart_positions=False)
    assert (leaky - leaky_other).abs().max() > 1e-3


# ---- update(): packing on vs off -----------------------------------------------------------------------


def _learner(model, learner_cfg: LearnerConfig, **algo_overrides) -> Learner:
    algo_cfg = AlgoConfig(**{"loss_agg": "token_mean", "group_size": 2, **algo_overrides})
    # a large Adam eps makes the first step proportional to the gradient (see test_learner's micro-batch test)
    optim = OptimConfig(lr=1e-2, max_grad_norm=1e9, eps=1.0)
    return Learner(model, Accelerator(cpu=True), algo_cfg, optim, learner_cfg, 1.0, 10)


@pytest.mark.parametrize(
    "algo_overrides",
    [{}, {"ppo_epochs": 2, "num_minibatches": 2}],  # the second runs the no-grad pre-pass and two steps
    ids=["fused", "prepass"],
)
def test_update_with_packing_equals_padded(tiny_model, tokenizer, algo_overrides):
    batch = rollout_batch(tokenizer, n=8)
    lengths = batch.attention_mask.sum(-1).tolist()  # 5..10 tokens: a 24-token budget packs 2-4 per row
    padded = _learner(copy.deepcopy(tiny_model), LearnerConfig(micro_batch_size=8), **algo_overrides)
    budget = LearnerConfig(max_tokens_per_microbatch=24)
    packed = _learner(
        copy.deepcopy(tiny_model), LearnerConfig(max_tokens_per_microbatch=24, pack=True), **algo_overrides
    )
    one_row = LearnerConfig(max_tokens_per_microbatch=24, pack=True, pack_row_tokens=24)
    packed_one_row = _learner(copy.deepcopy(tiny_model), one_row, **algo_overrides)
    by_budget = _learner(copy.deepcopy(tiny_model), budget, **algo_overrides)
    pad, pack, one_row = (learner.update(batch) for learner in (padded, packed, packed_one_row))
    m_budget = by_budget.update(batch).metrics
    # rows of <= 10 tokens (the longest sequence), 2 in a micro-batch; or one row of <= 24 tokens
    plan, plan_one_row = packed._micro_batches(lengths), packed_one_row._micro_batches(lengths)
    assert any(len(mb) > 1 for mb in plan) and any(len(row) > 1 for mb in plan for row in mb)
    assert len(plan_one_row) > 1 and all(len(mb) == 1 for mb in plan_one_row)
    assert any(len(row) > 2 for mb in plan_one_row for row in mb)
    for m in (pack.metrics, one_row.metrics, m_budget):
        assert m["loss/policy"] == pytest.approx(pad.metrics["loss/policy"], rel=1e-5)
        assert m["grad/norm"] == pytest.approx(pad.metrics["grad/norm"], rel=1e-4)
    # the pre-pass: a few float32 ulps of log-probs near -8 (2.9e-6 measured); a packing bug moves them by > 1e-3
    for before in (pack, one_row):
        torch.testing.assert_close(before.logp, pad.logp, rtol=0, atol=5e-5)
        torch.testing.assert_close(before.entropy, pad.entropy, rtol=0, atol=5e-5)
    # relative to each tensor's largest weight: float32 rounding, ~1e-6; a packing bug (attention across
    # sequences, positions that do not restart) changes the gradients by O(1) and the weights by the update's
    # size, 1e-3 and more of the largest weight
    for learner in (packed, packed_one_row, by_budget):
        for (name, p), q in zip(learner.unwrapped.named_parameters(), padded.unwrapped.parameters()):
            within(max_rel_error(p.detach(), q.detach()), 1e-4, name)
    changed = any(
        not torch.equal(p, q) for p, q in zip(packed.unwrapped.parameters(), tiny_model.parameters())
    )
    assert changed, "the update must move the weights"
    assert (
        one_row.metrics["learner/padding_frac"] == 0.0
    )  # one row per micro-batch: every position is a real token
    assert pack.metrics["learner/padding_frac"] <= m_budget["learner/padding_frac"]


def test_update_logs_the_padding_of_the_token_budget_plan(tiny_model, tokenizer):
    batch = rollout_batch(tokenizer, n=4)
    lengths = batch.attention_mask.sum(-1).tolist()
    assert lengths == [5, 7, 9, 6]  # responses of 1, 3, 5, 2 tokens after 4-token prompts
    learner = _learner(copy.deepcopy(tiny_model), LearnerConfig(max_tokens_per_microbatch=14))
    metrics = learner.update(batch).metrics
    # longest first: 9 alone (2 x 9 > 14); 7 and 6 together (2 x 7 = 14); 5 would make 3 x 7 -> alone:
    # 9 + 14 + 5 = 28 positions computed for 27 real tokens
    assert metrics["learner/padding_frac"] == pytest.approx(1 / 28)


# ---- config --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "pack", "key"),
    [
        (0, False, "learner.max_tokens_per_microbatch"),
        (-5, True, "learner.max_tokens_per_microbatch"),
        (None, True, "learner.pack"),
        (64, False, "learner.pack_row_tokens"),
        (64, True, "learner.pack_row_tokens"),
    ],
)
def test_config_rejects_bad_budget_and_pack_without_budget(budget, pack, key):
    cfg = RLVRConfig()
    cfg.model.builtin, cfg.data.train_files = "tiny-addition", ["train.jsonl"]
    validate(cfg)
    cfg.learner.max_tokens_per_microbatch, cfg.learner.pack = budget, pack
    if key == "learner.pack_row_tokens":  # rows of 16 tokens without packing; rows of 0 tokens
        cfg.learner.pack_row_tokens = 16 if not pack else 0
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.key == key
