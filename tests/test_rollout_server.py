"""vLLM as a separate rollout server (`rollout.mode=server`) on CPU, over loopback.

One server serves the module: launched the way the trainer launches it (`LaunchedServer`: the
`rlvr-rollout-server` module in its own process group), serving the embedded tiny model (tests/conftest.py's
`tiny_cache`). Its samples are checked against the colocated engine's on the same weights, its weights against
the learner's after each sync (vLLM's weight transfer; gloo on CPU), and a 3-step `rlvr-train` run through it
against the same run colocated, also with 2 trainer processes under `accelerate launch`.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import torch
from helpers import TWO_STEPS, assert_same_metrics, hf_greedy, metrics_lines, train_cmd, train_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_distributed import SHARD_ON_CPU, launch

from rlvr.cli.rollout_server import (
    KEEP_ALIVE_S,
    _flags,
    build_parser,
    set_server_environment,
    vllm_serve_argv,
)
from rlvr.config import ConfigError, RLVRConfig, RolloutConfig, register_configs, validate
from rlvr.data import synthetic
from rlvr.rollout import server_transfer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.server import (
    LaunchedServer,
    ModelWeights,
    ServerRolloutEngine,
    _free_port,
    check_reachable,
    launch_address,
    server_dtype,
)
from rlvr.rollout.vllm_engine import VLLMRolloutEngine
from rlvr.train import CONFIG_DIR

PROBLEMS = [(12, 34), (5, 7), (99, 1), (40, 40), (3, 58), (71, 26), (0, 0), (88, 9)]
SETTINGS = dict(backend="vllm", max_model_len=128)


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(synthetic.question(a, b), add_special_tokens=False)["input_ids"] for a, b in PROBLEMS]


@pytest.fixture(scope="module")
def model_dir(tiny_cache):
    return tiny_cache / "tiny-addition" / "model"


@pytest.fixture(scope="module")
def policy(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def server(model_dir, tokenizer, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "rollout_server.log"
    cfg = RolloutConfig(**SETTINGS, mode="server")  # server_launch: as the trainer does
    engine = ServerRolloutEngine(str(model_dir), tokenizer, cfg, seed=0, log_path=log_path)
    yield engine
    proc = engine.server.proc
    engine.close()
    assert proc.poll() is not None, "the launched server outlived close()"


@pytest.fixture(scope="module")
def colocated(model_dir, tokenizer):
    engine = VLLMRolloutEngine(str(model_dir), tokenizer, RolloutConfig(**SETTINGS), seed=0)
    yield engine
    engine.close()


def _samples(out) -> list[list[tuple]]:
    return [[(c.token_ids, c.logprobs, c.finish_reason, c.text) for c in group] for group in out]


def _greedy(engine, prompts) -> list[list[int]]:
    out = engine.generate(prompts, 1, SamplingParams(temperature=0.0, max_new_tokens=12), seed=0)
    return [group[0].token_ids for group in out]


def test_samples_equal_the_colocated_engines(server, colocated, policy, tokenizer):
    """Same weights, same seeds: the server samples exactly what the colocated engine samples, with the same
    (processed) logprobs, finish reasons and texts; `first_index` selects the same per-prompt streams."""
    server.sync_weights(policy)
    colocated.sync_weights(policy)
    prompts = _prompts(tokenizer)
    for params, first_index in (
        (SamplingParams(temperature=1.0, max_new_tokens=10), 0),
        (SamplingParams(temperature=0.8, top_p=0.9, top_k=5, max_new_tokens=10), 3),
    ):
        got = _samples(server.generate(prompts, 4, params, seed=7, first_index=first_index))
        assert got == _samples(colocated.generate(prompts, 4, params, seed=7, first_index=first_index))
        assert len({tuple(s[0]) for group in got for s in group}) > len(prompts)  # sampled, not all alike
    reasons = {s[2] for group in got for s in group}
    assert "stop" in reasons  # the policy ends answers with EOS, which stays in the sample
    assert got != _samples(server.generate(prompts, 4, params, seed=8, first_index=3))


def test_weights_follow_the_learner_after_each_sync(server, colocated, policy, tokenizer):
    """After each sync the server's greedy answers are the learner's (transformers) greedy answers, and its
    samples equal the colocated engine's holding the same update: the weights went over whole."""
    prompts = _prompts(tokenizer)
    updated = copy.deepcopy(policy).train()
    opt = torch.optim.Adam(updated.parameters(), lr=0.05)  # Adam's first step moves every weight by ~lr
    ids = torch.tensor([prompts[0] + prompts[1]])
    updated(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    updated.eval()
    old_greedy = hf_greedy(policy, prompts, tokenizer)
    new_greedy = hf_greedy(updated, prompts, tokenizer)
    assert old_greedy != new_greedy

    fp32_bytes = sum(t.numel() * 4 for t in policy.state_dict().values())
    assert server.sync_weights(policy) == fp32_bytes  # a float32 engine (CPU): sync/bytes is the float32 copy
    assert _greedy(server, prompts) == old_greedy
    server.sync_weights(updated)
    assert _greedy(server, prompts) == new_greedy  # same prompts: no stale prefix-cache KV either
    colocated.sync_weights(updated)
    params = SamplingParams(temperature=1.0, max_new_tokens=10)
    assert _samples(server.generate(prompts, 4, params, seed=3)) == _samples(
        colocated.generate(prompts, 4, params, seed=3)
    )
    server.sync_weights(policy)
    assert _greedy(server, prompts) == old_greedy


def test_three_step_run_through_the_server_matches_colocated(server, tiny_cache, tmp_path):
    """`rlvr-train rollout=server` against the running server logs the same metrics as the colocated run: the
    same keys every step and, sampling alike on weights synced alike, the same values (timings aside)."""
    common = ("rollout.backend=vllm", "trainer.total_steps=3", "eval.every=0", "trainer.progress_bar=false")
    server_mode = ("rollout=server", f"rollout.server_url={server.url}", "rollout.server_launch=false")
    runs = {"server": (*common, *server_mode), "colocated": common}
    procs = {}
    for name, overrides in runs.items():  # side by side: the two runs mostly wait on different processes
        with open(tmp_path / f"{name}.log", "w") as log:
            cmd = train_cmd(tmp_path / name, *overrides)
            procs[name] = subprocess.Popen(
                cmd, env=train_env(tiny_cache), cwd=tmp_path, stdout=log, stderr=log
            )
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    got, expected = metrics_lines(tmp_path / "server"), metrics_lines(tmp_path / "colocated")
    assert [d["step"] for d in expected] == [1, 2, 3]
    assert_same_metrics(got, expected, abs_tol=1e-6)


def test_one_update_behind_through_the_server_and_its_exact_resume(server, tiny_cache, tmp_path):
    """rollout.max_staleness=1: every batch after the first is sampled one update behind (rollout/policy_lag 0,
    1, 1) and the learner's pre-pass sees it (rollout/logp_diff > 0 then, 0 on the first step, where nothing
    is stale). Resumed from step 2's checkpoint, which holds step 3's batch in flight, step 3 is the straight
    run's exactly."""
    overrides = ("trainer.total_steps=3", "trainer.save_every=2", "eval.every=0", "trainer.progress_bar=false",
                 "rollout=server", f"rollout.server_url={server.url}", "rollout.server_launch=false",
                 "rollout.max_staleness=1", "rollout.is_mode=token_mask")  # fmt: skip
    straight = tmp_path / "straight"
    subprocess.run(train_cmd(straight, *overrides), env=train_env(tiny_cache), cwd=tmp_path, check=True)
    lines = metrics_lines(straight)
    assert [d["rollout/policy_lag"] for d in lines] == [0, 1, 1]
    assert lines[0]["rollout/logp_diff_max"] < 1e-4 < lines[1]["rollout/logp_diff_max"]
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000003")
    (resumed / "checkpoints" / "latest").write_text("step_000002\n")
    out = subprocess.run(train_cmd(resumed, *overrides), env=train_env(tiny_cache), cwd=tmp_path,
                         check=True, capture_output=True, text=True)  # fmt: skip
    assert "resumed from" in out.stdout + out.stderr
    assert_same_metrics(metrics_lines(resumed), lines, abs_tol=0.0)


def test_two_sharded_trainer_processes_through_a_launched_server_match_one_colocated(
    tiny_cache, two_step_run, tmp_path
):
    """ZeRO-3 (2 processes under `accelerate launch`, rank 0 launching the server and sending the weights
    gathered from both ranks' shards, each rank sampling its share from the server) logs what one colocated
    process logs. The server path is the same for every learner layout (each rank joins the sender's iteration
    over `checkpoint_names`); what differs is how that iteration gathers a tensor and reads its full shape,
    which test_distributed.py checks for DDP and FSDP2 (colocated) and this test for ZeRO-3, whose partitions
    hide their shape (`ds_shape`)."""
    cmd = train_cmd(tmp_path / "server", *TWO_STEPS, "rollout=server")
    cmd[0] = str(SHARD_ON_CPU)
    launch(2, *cmd, config="zero3.yaml", env=train_env(tiny_cache), cwd=tmp_path)
    got, expected = metrics_lines(tmp_path / "server"), metrics_lines(two_step_run)
    assert [d["step"] for d in expected] == [1, 2]
    # the process layout's metrics aside: each rank lays out its own rows (learner/padding_frac) and receives
    # what crosses ranks (dist/bytes_received, 0 in one process), as in test_distributed.py
    assert_same_metrics(got, expected, skip=("learner/padding_frac", "dist/"))
    assert all(d["dist/bytes_received"] > 0 for d in got)


def test_transfer_group_opens_under_a_torchrun_launcher(monkeypatch):
    """Under `torchrun`/`accelerate launch` (TORCHELASTIC_USE_AGENT_STORE=True: torch's TCP rendezvous then
    makes every rank a store client) the trainer still hosts the transfer group's store, and a broadcast from
    it arrives."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setattr(server_transfer, "TIMEOUT", timedelta(seconds=20))  # a failure fails fast
    port = _free_port("127.0.0.1")
    listen = socket.create_server(("127.0.0.1", port))
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(server_transfer._open_group, "127.0.0.1", port, 1, 2)
        trainer = server_transfer._open_group("127.0.0.1", port, 0, 2, listen)
        worker = worker.result(timeout=30)
        sent, received = torch.arange(6.0), torch.zeros(6)
        arrived = pool.submit(lambda: worker.broadcast(received, 0).wait())
        trainer.broadcast(sent, 0).wait()
        arrived.result(timeout=30)
    assert torch.equal(received, sent)
    for group in (trainer, worker):
        server_transfer._close_group(group)


def test_launched_server_stops_when_its_trainer_is_killed(model_dir, tmp_path):
    """A trainer killed outright (no cleanup runs) still takes its server down: the server watches its parent."""
    script = (
        "import os, sys; from pathlib import Path; from rlvr.config import RolloutConfig; "
        "from rlvr.rollout.server import LaunchedServer; "
        f"s = LaunchedServer({str(model_dir)!r}, RolloutConfig(backend='vllm', mode='server'), 0, "
        f"Path({str(tmp_path / 'server.log')!r})); "
        "print(s.proc.pid, flush=True); os.kill(os.getpid(), 9)"
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert parent.returncode == -signal.SIGKILL, parent.stderr[-2000:]
    server_pid = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 60
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(server_pid), f"server {server_pid} still running after its parent was killed"


def _alive(pid: int) -> bool:
    """Running (not merely a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_launched_server_that_fails_says_why(tmp_path, tokenizer):
    cfg = RolloutConfig(**SETTINGS, mode="server", server_start_timeout_s=120)
    with pytest.raises(RuntimeError, match="exited with code .* before it was ready") as err:
        ServerRolloutEngine(str(tmp_path / "no-model"), tokenizer, cfg, seed=0, log_path=tmp_path / "s.log")
    assert "no-model" in str(err.value)  # the end of the server's log names the problem


def test_no_server_at_url_is_a_config_error(tokenizer, tmp_path):
    url = f"http://127.0.0.1:{_free_port('127.0.0.1')}"
    cfg = RolloutConfig(
        **SETTINGS, mode="server", server_url=url, server_launch=False, server_start_timeout_s=2
    )
    with pytest.raises(ConfigError, match="rollout.server_url: no rollout server answered"):
        ServerRolloutEngine("unused", tokenizer, cfg, seed=0, log_path=tmp_path / "unused.log")


# ---- config and command line ------------------------------------------------------------------------------


def _compose(*overrides: str) -> RLVRConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def test_server_preset_and_validation():
    cfg = _compose("rollout=server")
    r = cfg.rollout
    assert (r.backend, r.mode, r.server_launch, r.server_url, r.max_new_tokens) == (
        "vllm",
        "server",
        True,
        None,
        8,
    )
    validate(cfg)
    assert _compose().rollout.mode == "colocated"
    for overrides, key in (
        ({"backend": "hf"}, "rollout.mode"),
        ({"mode": "remote"}, "rollout.mode"),
        ({"server_launch": False}, "rollout.server_url"),
        ({"server_url": "127.0.0.1:8000"}, "rollout.server_url"),
        ({"enable_sleep_mode": True}, "rollout.enable_sleep_mode"),
        ({"server_start_timeout_s": 0.0}, "rollout.server_start_timeout_s"),
        ({"server_bind": "http://0.0.0.0"}, "rollout.server_bind"),
        ({"server_advertise": "node-a:8000"}, "rollout.server_advertise"),
        (
            {"server_launch": False, "server_url": "http://h:1", "server_bind": "0.0.0.0"},
            "rollout.server_bind",
        ),
    ):
        bad = copy.deepcopy(cfg)
        for name, value in overrides.items():
            setattr(bad.rollout, name, value)
        with pytest.raises(ConfigError) as err:
            validate(bad)
        assert err.value.key == key, overrides


def test_server_command_line(model_dir):
    """rlvr's settings become `vllm serve` flags: the colocated engine's (dtype, processed logprobs, CPU KV
    cache), the generate route, and the weight-transfer backend of the platform."""
    assert _flags({"a_b": True, "c": False, "d": None, "e": 3}) == ["--a-b", "--no-c", "--e", "3"]
    args = build_parser().parse_args([str(model_dir), "--no-enable-prefix-caching"])
    cpu = vllm_serve_argv(args, on_cpu=True)
    expected = {
        "--dtype": "float32",
        "--logprobs-mode": "processed_logprobs",
        "--port": "8000",
        "--weight-transfer-config": '{"backend": "rlvr_gloo"}',
        "--worker-extension-cls": "rlvr.rollout.server_transfer.GlooWorkerExtension",
    }
    assert {k: cpu[cpu.index(k) + 1] for k in expected} == expected
    assert {"--enforce-eager", "--enable-scale-out", "--no-enable-prefix-caching"} <= set(cpu)
    assert "--kv-cache-memory-bytes" in cpu or os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    gpu = vllm_serve_argv(args, on_cpu=False)
    assert gpu[gpu.index("--weight-transfer-config") + 1] == '{"backend": "nccl"}'
    assert gpu[gpu.index("--dtype") + 1] == "auto"
    assert "--enforce-eager" not in gpu and "--worker-extension-cls" not in gpu


def test_launched_server_command_carries_the_rollout_settings(tmp_path, monkeypatch):
    """The trainer launches `rlvr.cli.rollout_server` with its rollout settings, on the devices it names."""
    seen = {}

    class FakePopen:
        def __init__(self, cmd, env, **kwargs):
            seen.update(cmd=cmd, env=env, kwargs=kwargs)
            self.pid = 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    launcher = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    for name, value in {**launcher, "ACCELERATE_MIXED_PRECISION": "no", "RLVR_KEEP": "1"}.items():
        monkeypatch.setenv(name, value)
    cfg = RolloutConfig(
        backend="vllm",
        mode="server",
        server_url="http://127.0.0.1:8123",
        server_devices="2,3",
        dtype="bfloat16",
        max_model_len=256,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        enable_prefix_caching=False,
    )
    server = LaunchedServer("/models/m", cfg, seed=5, log_path=tmp_path / "s.log")
    atexit.unregister(server.stop)
    cmd = seen["cmd"]
    assert (
        cmd[:3] == [sys.executable, "-m", "rlvr.cli.rollout_server"] and server.url == "http://127.0.0.1:8123"
    )
    args, passthrough = build_parser().parse_known_args(cmd[3:])
    assert passthrough == []
    assert vars(args) == dict(
        model="/models/m",
        host="127.0.0.1",
        port=8123,
        dtype="bfloat16",
        max_model_len=256,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        enable_prefix_caching=False,
        seed=5,
        parent_pid=os.getpid(),
    )
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "2,3" and seen["kwargs"]["start_new_session"]
    # the server is not a rank of the trainer's data-parallel world: the launcher's variables stay behind
    assert (
        not {*launcher, "ACCELERATE_MIXED_PRECISION"} & set(seen["env"]) and seen["env"]["RLVR_KEEP"] == "1"
    )
    cfg.server_bind, cfg.server_advertise = "0.0.0.0", "node-a"  # other nodes dial node-a; it listens on all
    server = LaunchedServer("/models/m", cfg, seed=5, log_path=tmp_path / "s.log")
    atexit.unregister(server.stop)
    assert build_parser().parse_args(seen["cmd"][3:]).host == "0.0.0.0" and server.url == "http://node-a:8123"


def test_the_server_keeps_idle_connections_across_a_learner_step():
    """vLLM closes an idle connection after 5 s by default, and a request sent on it as it closes is reset (a
    three-step test run failed so): the server keeps them an hour, unless the user chose otherwise."""
    env: dict[str, str] = {}
    set_server_environment(env)
    assert env == {"VLLM_SERVER_DEV_MODE": "1", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": KEEP_ALIVE_S}
    assert int(KEEP_ALIVE_S) >= 600
    mine = {"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "30"}
    set_server_environment(mine)
    assert mine["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "30"


def test_weights_go_in_the_engines_dtype_half_the_bytes_for_bf16(policy):
    """A bf16 engine is declared and sent bf16 tensors: half the float32 bytes (sync/bytes)."""
    fp32, bf16 = ModelWeights(policy), ModelWeights(policy, torch.bfloat16)
    assert {m.dtype for m in fp32.metadata()} == {torch.float32}
    assert {m.dtype for m in bf16.metadata()} == {torch.bfloat16}
    pairs = list(bf16)
    assert {t.dtype for _, t in pairs} == {torch.bfloat16} and [n for n, _ in pairs] == [n for n, _ in fp32]
    assert bf16.bytes * 2 == fp32.bytes == sum(t.numel() * 4 for t in policy.state_dict().values())
    assert server_dtype({"vllm_config": {"model_config": {"dtype": "torch.bfloat16"}}}) is torch.bfloat16
    with pytest.raises(RuntimeError, match="unknown model dtype"):
        server_dtype({"vllm_config": {"model_config": {"dtype": "torch.nonsense"}}})


def test_bind_and_advertised_address(monkeypatch):
    """Loopback by default; a wildcard bind is advertised under this node's name; server_url's host and port,
    then server_advertise, override (the launched command's --host is the bind address: the test above)."""
    monkeypatch.setattr(socket, "getfqdn", lambda: "node-a.cluster")
    assert launch_address(RolloutConfig()) == ("127.0.0.1", "127.0.0.1", None)
    assert launch_address(RolloutConfig(server_bind="0.0.0.0")) == ("0.0.0.0", "node-a.cluster", None)
    url = RolloutConfig(server_url="http://10.0.0.5:8000", server_bind="0.0.0.0")
    assert launch_address(url) == ("0.0.0.0", "10.0.0.5", 8000)
    both = RolloutConfig(server_bind="0.0.0.0", server_advertise="10.1.2.3")
    assert launch_address(both) == ("0.0.0.0", "10.1.2.3", None)


def test_a_loopback_server_across_nodes_is_a_config_error():
    """Ranks on two nodes (LOCAL_WORLD_SIZE 2 of 4) cannot share a loopback URL; one node can."""
    check_reachable("http://127.0.0.1:8000", {"LOCAL_WORLD_SIZE": "4"}, 4)
    check_reachable("http://node-a:8000", {"LOCAL_WORLD_SIZE": "2"}, 4)
    check_reachable("http://127.0.0.1:8000", {}, 1)
    with pytest.raises(ConfigError, match="rollout.server_bind: .* loopback, but the ranks span nodes"):
        check_reachable("http://127.0.0.1:8000", {"LOCAL_WORLD_SIZE": "2"}, 4)
