"""The evaluation's config (the `eval` section and its named sets) and DatasetSpec, the dataset a split or a set
is read from; each dataclass followed by its validator. Re-exported by rlvr.config, whose `validate` calls
`check_eval` and then the rules between eval and data.

With eval.sets and a held-out split of data.eval_files / data.eval_dataset, the split is evaluated as one more
set named HELDOUT ("heldout"): it logs eval/heldout/pass@K, and joins the mean eval/pass@K. Without eval.sets the
split stays the one unnamed set, logged as eval/pass@K alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlvr.config_rules import require
from rlvr.errors import ConfigError

# the name of data.eval_files / data.eval_dataset's split among eval.sets (rlvr.evaluate.build_eval_sets)
HELDOUT = "heldout"


@dataclass
class DatasetSpec:
    """A dataset by hub id or local dataset dir, read with `datasets.load_dataset(path, name, split=split)` (offline
    with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1: a hub cache, or a local dir laid out like a hub repo)."""

    path: str | None = None  # the hub id or dataset dir (null: no dataset)
    name: str | None = None  # the subset (configuration)
    split: str = "train"


@dataclass
class EvalSetConfig:
    """One named evaluation set (eval.sets.<name>): its rows, their fields, and how it is sampled; a null
    setting takes eval's (k, n, temperature), then rollout's (top_p, max_new_tokens), then data's (the rest)."""

    files: list[str] = field(default_factory=list)  # .jsonl / .json / .parquet, or a save_to_disk dir
    dataset: DatasetSpec = field(default_factory=DatasetSpec)  # or a hub id / dataset dir (one of the two)
    prompt_key: str = "question"
    answer_key: str = "answer"
    answer_pattern: str | None = None
    prompt_template: str | None = None
    system_prompt: str | None = None
    use_chat_template: bool | None = None
    max_prompts: int | None = None  # only the first N rows
    k: list[int] | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None


@dataclass
class EvalConfig:
    every: int = 0  # evaluate pass@k on the held-out split every N steps (0 = off)
    k: list[int] = field(default_factory=lambda: [1])
    n: int | None = None  # samples per prompt (default max(k))
    at_start: bool = True  # evaluate before the first step too
    temperature: float | None = None  # default: rollout.temperature
    # the name of the evaluation's sampler seed stream (with trainer.seed): another name draws other samples from
    # the same policies, and changes nothing else in the run (the entropy lab's negative control)
    seed_stream: str = "eval"
    # named evaluation sets (each an EvalSetConfig's keys), each logged as eval/<name>/pass@<k>; eval/pass@<k> is
    # then their mean (over the sets that have that k). The held-out split of data.eval_files / data.eval_dataset,
    # if any, is one more set named "heldout" (HELDOUT); empty: that split alone, logged as eval/pass@<k>. Untyped
    # here so that `+eval.sets.NAME={files:[...],k:[1,8]}` works on the command line (OmegaConf cannot add a typed
    # entry from an override); `eval_sets` checks each against EvalSetConfig
    sets: dict[str, Any] = field(default_factory=dict)


def eval_sets(e: EvalConfig) -> dict[str, EvalSetConfig]:
    """eval.sets, each entry checked against EvalSetConfig (unknown keys, wrong types: ConfigError naming it)."""
    from omegaconf import OmegaConf

    out = {}
    for name, raw in e.sets.items():
        if isinstance(raw, EvalSetConfig):
            out[str(name)] = raw
            continue
        try:
            out[str(name)] = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalSetConfig), raw))
        except Exception as err:
            raise ConfigError(f"eval.sets.{name}", str(err).strip().splitlines()[0]) from None
    return out


def check_eval(e: EvalConfig) -> None:
    """eval's values and each named set's; whether there is a split to evaluate reads data (rlvr.config)."""
    require(e.every >= 0, "eval.every", "must be >= 0 (0 = off)")
    require(
        len(e.k) >= 1 and all(k >= 1 for k in e.k),
        "eval.k",
        f"must be a non-empty list of ints >= 1, got {list(e.k)}",
    )
    require(e.n is None or e.n >= max(e.k), "eval.n", f"must be >= max(eval.k) = {max(e.k)}, got {e.n}")
    require(e.temperature is None or e.temperature > 0, "eval.temperature", "must be > 0 or null")
    for name, es in eval_sets(e).items():
        check_eval_set(name, es, e)


def check_eval_set(name: str, es: EvalSetConfig, e: EvalConfig) -> None:
    key = f"eval.sets.{name}"
    require(bool(name) and "/" not in name, key, "a set's name must be non-empty, without '/'")
    require(
        bool(es.files) != (es.dataset.path is not None),
        f"{key}.files",
        f"or {key}.dataset.path: set exactly one",
    )
    k = es.k or e.k
    require(
        len(k) >= 1 and all(x >= 1 for x in k),
        f"{key}.k",
        f"must be a non-empty list of ints >= 1, got {k}",
    )
    require(es.n is None or es.n >= max(k), f"{key}.n", f"must be >= max(k) = {max(k)}, got {es.n}")
    require(es.temperature is None or es.temperature > 0, f"{key}.temperature", "must be > 0 or null")
