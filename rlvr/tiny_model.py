"""The embedded models: a byte-level tokenizer and small Qwen2 models, each warm-started on a synthetic task.

No model can be downloaded here, so the project builds its own, one per TASKS entry (`model.builtin`):

    tiny-addition   two-digit addition (rlvr.data.synthetic), the quickstart's default
    tiny-fork       two-digit addition with a common shortcut and a rare right method (rlvr.data.fork), the
                    entropy lab's

`build_tiny_assets(out_dir, task)` writes

    out_dir/model/        a Hugging Face model dir (config.json, model.safetensors, tokenizer files)
    out_dir/train.jsonl   the task's train split
    out_dir/eval.jsonl    its disjoint held-out split
    out_dir/build.json    how it was built, the held-out accuracy it starts RL with, the weights' sha256

The warm start is a supervised phase on a noisy teacher, stopped when the model answers correctly at temperature
1 as often as the task's target (a fifth of the time for addition), so that a group of G answers holds both
outcomes and RL has signal from step 0.

The same recipe and seed give a different model on another CPU (thousands of steps amplify float rounding), so
each build is shipped in the repo (rlvr/assets/<name>, ~1-3 MB, made by scripts/build_tiny_model.py --ship) and
`install_tiny_assets` copies it where the config points: every machine starts RL from the same weights. A
rebuild (scripts/build_tiny_model.py) is optional; its calibrated stop puts it near the same accuracy.
"""

from __future__ import annotations

import json
import math
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rlvr.data import fork, synthetic
from rlvr.hashing import file_sha256

EOS, PAD, BOXED = "<|endoftext|>", "<|pad|>", "\\boxed{"
# chat-format prompts render as "<role>content\n" lines, then "<assistant>" (the models were not trained on it:
# it lets chat-format data run end to end)
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class TinyTask:
    """One embedded model: its task's data and teacher, the model's depth, and where its warm start stops."""

    name: str  # model.builtin, and the name of its assets' directory
    # Bump when the build recipe (task, tokenizer, model shape, warm start, defaults) changes: assets built by
    # another recipe are rebuilt instead of silently reused (a cache built by a 1,500-step warm start once sat
    # under a 3,000-step default and started RL at 0.08 instead of 0.19).
    recipe: int
    description: str
    num_layers: int
    target_accuracy: (
        float | None
    )  # where the warm start stops: held-out accuracy at temperature 1 (None: max_sft_steps)
    max_sft_steps: int
    check_every: int
    splits: Callable[[], tuple[list, list]]  # (train, held_out) problems
    # (train, rng, n, step) -> n (question, completion) pairs for warm-start step `step`
    teacher_batch: Callable[[list, random.Random, int, int], list[tuple[str, str]]]
    solutions: Callable[[object], tuple[str, list[str]]]  # a problem's question and all its right completions
    write_splits: Callable[[Path], None]
    info: dict = field(default_factory=dict)  # recorded in build.json
    # (model, tokenizer, held_out) -> more of the built model's measurements for build.json
    diagnose: Callable[[object, object, list], dict] | None = None

    @property
    def shipped(self) -> Path:
        return ASSETS / self.name


TASKS = {
    task.name: task
    for task in (
        TinyTask(
            "tiny-addition", 3, "two-digit addition, noisy teacher", 2, 0.20, 10_000, 250,
            synthetic.addition_splits, lambda train, rng, n, step: synthetic.teacher_batch(train, rng, n),
            synthetic.solutions, synthetic.write_splits,
            {"p_correct": 0.35},
        ),
        TinyTask(
            "tiny-fork", 1, "two-digit addition: a shortcut that drops the carry, a rare column method", 4,
            None, 2_000, 250, fork.fork_splits, fork.teacher_batch, fork.solutions, fork.write_splits,
            {"p_column": fork.P_COLUMN, "warm_column": fork.WARM_COLUMN, "warm_steps": fork.WARM_STEPS,
             "shortcut_slip": fork.SHORTCUT_SLIP, "column_slip": fork.COLUMN_SLIP},
            lambda model, tokenizer, held_out: fork_diagnosis(model, tokenizer, held_out),
        ),
    )
}  # fmt: skip
ADDITION = TASKS["tiny-addition"]
TASK_DEFAULT = object()  # build_tiny_assets' default target: the task's own
# The quickstart's model, and its recipe and target (kept under these names for the tests and scripts).
RECIPE, TARGET_ACCURACY, SHIPPED = ADDITION.recipe, ADDITION.target_accuracy, ADDITION.shipped


def build_tokenizer():
    """Byte-level tokenizer with no merges (one token per byte) plus EOS, PAD and `\\boxed{` as one token."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(PAD, special=True)])
    tok.add_tokens([AddedToken(BOXED, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=128
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, eos_id: int, pad_id: int, seed: int, num_layers: int = 2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def _sequence(tokenizer, question: str, completion: str) -> tuple[list[int], int]:
    prompt = tokenizer(question, add_special_tokens=False)["input_ids"]
    target = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + target, len(prompt)


def _batch(seqs: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], completion [N, T]) from `_sequence`s: right-padded (a causal model never sees the padding
    after a sequence), `completion` True at each completion token."""
    width = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), width), pad_id)
    completion = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, (s, n_prompt) in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        completion[i, n_prompt : len(s)] = True
    return x, completion


def _logps(model, tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each token [N, T-1] in float64, completion mask [N, T-1]) of (question, completion) pairs,
    teacher-forced."""
    x, completion = _batch([_sequence(tokenizer, q, c) for q, c in pairs], tokenizer.pad_token_id)
    logp = F.log_softmax(model(x).logits[:, :-1].double(), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return logp.masked_fill(~completion[:, 1:], 0.0), completion[:, 1:]


@torch.no_grad()
def fork_diagnosis(model, tokenizer, held_out: list) -> dict:
    """The fork task's starting point (rlvr.data.fork), on the held-out problems at temperature 1: the
    probability that an answer starts with the column method, that a column answer so started is carried out
    without a slip, and that an answer on the no-carry subset is the right shortcut."""
    model.eval()
    right_column = [
        fork.column(x, y, x % 10 + y % 10, x // 10 + y // 10 + fork.carries(x, y)) for x, y in held_out
    ]
    logp, mask = _logps(model, tokenizer, [(fork.question(*p), c) for p, c in zip(held_out, right_column)])
    first = mask.float().argmax(-1)  # the first completion position of each row
    p_first = logp.gather(-1, first[:, None]).squeeze(-1).exp()
    p_rest = (logp.sum(-1) - logp.gather(-1, first[:, None]).squeeze(-1)).exp()
    nocarry = [p for p in held_out if not fork.carries(*p)]
    sc, _ = _logps(model, tokenizer, [(fork.question(x, y), fork.shortcut(x + y)) for x, y in nocarry])
    return {
        "heldout_p_column_first": round(p_first.mean().item(), 4),
        "heldout_p_column_right_given_started": round(p_rest.mean().item(), 4),
        "heldout_nocarry_p_shortcut_right": round(sc.sum(-1).exp().mean().item(), 4),
    }


@torch.no_grad()
def expected_accuracy(model, tokenizer, problems: list, task: TinyTask = ADDITION) -> float:
    """Mean over problems of the probability of sampling one of its right completions at temperature 1 (exact,
    by teacher forcing each of them; for the fork task a lower bound, which leaves out answers whose slips
    cancel)."""
    model.eval()
    owners, seqs = [], []
    for i, problem in enumerate(problems):
        question, completions = task.solutions(problem)
        owners += [i] * len(completions)
        seqs += [_sequence(tokenizer, question, c) for c in completions]
    x, completion = _batch(seqs, tokenizer.pad_token_id)
    logp = F.log_softmax(model(x).logits[:, :-1].double(), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    p = logp.masked_fill(~completion[:, 1:], 0.0).sum(-1).exp()
    per_problem = torch.zeros(len(problems), dtype=torch.float64).index_add_(0, torch.tensor(owners), p)
    return per_problem.mean().item()


def warm_start(
    model,
    tokenizer,
    teacher_batch: Callable[[random.Random, int, int], list[tuple[str, str]]],
    max_steps: int,
    seed: int,
    done=None,
    check_every: int = 250,
) -> int:
    """Supervised phase on the noisy teacher, loss on completion tokens only, lr warmed up over 100 steps then
    cosine-decayed over `max_steps`. With `done(model) -> bool`, asked every `check_every` steps, it stops at the
    first check that holds. Returns the steps taken."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    for step in range(max_steps):
        model.train()
        seqs = [_sequence(tokenizer, q, c) for q, c in teacher_batch(rng, 64, step)]
        x, completion = _batch(seqs, tokenizer.pad_token_id)
        loss_mask = completion.float()
        logits = model(x).logits[:, :-1]
        token_loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        loss = (token_loss * loss_mask[:, 1:]).sum() / loss_mask[:, 1:].sum()
        lr = 3e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / max_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if done is not None and (step + 1) % check_every == 0 and done(model):
            return step + 1
    return max_steps


def assets_current(out_dir: str | Path, task: TinyTask = ADDITION) -> bool:
    """Whether out_dir holds a complete build of this task's recipe (its model dir and a build.json that names
    both)."""
    out = Path(out_dir)
    try:
        info = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "model").is_dir() and info.get("recipe") == task.recipe and info.get("builtin") == task.name


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_assets(out: Path, write_model, info: dict, task: TinyTask, data: bool = True) -> Path:
    """The data splits (with `data`), then the model dir (written by `write_model(dir)` aside and renamed into
    place), then build.json last: a directory with a current build.json is complete."""
    if data:
        task.write_splits(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(tmp)
    (out / "build.json").unlink(missing_ok=True)  # until the new one is written, the assets are not current
    if (out / "model").exists():  # another recipe's: moved aside, then removed
        (out / "model").replace(out / "model.old")
        shutil.rmtree(out / "model.old")
    tmp.replace(out / "model")  # the model dir appears complete or not at all
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / "model"


def install_tiny_assets(out_dir: str | Path, task: TinyTask = ADDITION) -> Path:
    """The task's shipped model (built once by build_tiny_assets and kept in the repo with its build.json) and
    its data splits, written into out_dir: the same weights on every machine, in a second."""
    info = {**json.loads((task.shipped / "build.json").read_text()), "installed_from": "shipped"}
    return _write_assets(Path(out_dir), lambda tmp: shutil.copytree(task.shipped / "model", tmp), info, task)


def build_tiny_assets(
    out_dir: str | Path,
    task: TinyTask = ADDITION,
    max_sft_steps: int | None = None,
    target_accuracy: float | None | object = TASK_DEFAULT,
    seed: int = 0,
    check_every: int | None = None,
    data: bool = True,
) -> Path:
    """Build the tokenizer, warm-started model and data splits of `task` into out_dir (see module docstring).

    The warm start is calibrated: it stops at the first check (every `check_every` steps, the task's by default)
    where the held-out accuracy at temperature 1 reaches `target_accuracy` (the task's by default), so that RL
    starts from the same accuracy on every machine whatever its float rounding (3,000 fixed steps of the addition
    model gave 0.106 on an AMD EPYC, 0.19 on an Intel Xeon). With `target_accuracy=None` it runs all
    `max_sft_steps` (the task's by default). Without `data`, only the model and build.json (the shipped copy: the
    splits are written wherever it is installed)."""
    out = Path(out_dir)
    max_sft_steps = task.max_sft_steps if max_sft_steps is None else max_sft_steps
    check_every = task.check_every if check_every is None else check_every
    target_accuracy = task.target_accuracy if target_accuracy is TASK_DEFAULT else target_accuracy
    started = time.time()
    train, held_out = task.splits()
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed, task.num_layers)
    done = None
    if target_accuracy is not None:
        done = lambda m: expected_accuracy(m, tokenizer, held_out, task) >= target_accuracy  # noqa: E731
    teacher = lambda rng, n, step: task.teacher_batch(train, rng, n, step)  # noqa: E731
    steps = warm_start(model, tokenizer, teacher, max_sft_steps, seed, done, check_every)
    accuracy = expected_accuracy(model, tokenizer, held_out, task)
    if target_accuracy is not None and accuracy < target_accuracy:
        raise RuntimeError(
            f"the warm start reached held-out accuracy {accuracy:.3f} in {max_sft_steps} steps, short of "
            f"target_accuracy {target_accuracy}: raise max_sft_steps"
        )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def write_model(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info["model_sha256"] = file_sha256(tmp / "model.safetensors")

    info = {
        "builtin": task.name,
        "recipe": task.recipe,
        "task": task.description,
        **task.info,
        "seed": seed,
        "target_accuracy": target_accuracy,
        "max_sft_steps": max_sft_steps,
        "check_every": check_every,
        "sft_steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_expected_accuracy_t1": round(accuracy, 4),
        **(task.diagnose(model, tokenizer, held_out) if task.diagnose else {}),
        "built_on": f"{_cpu_name()}, torch {torch.__version__}",
        "build_seconds": round(time.time() - started, 1),
    }
    return _write_assets(out, write_model, info, task, data)
