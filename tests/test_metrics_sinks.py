import json
import math
import os
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from rlvr.metrics.entropy_stats import ENTROPY_HIST_EDGES
from rlvr.metrics.sinks import ConsoleSink, JsonlSink, MetricsLogger, WandbSink, resolve_wandb_mode

HIST = list(range(len(ENTROPY_HIST_EDGES) - 1))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_jsonl_writes_parseable_lines_step_first(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.log(0, {"reward/mean": torch.tensor(0.25), "acc/mean": np.float32(0.5), "entropy/hist": HIST})
    sink.log(1, {"kl/ref": float("nan"), "grad/norm": float("inf"), "lr": np.float64(1e-6), "ref/resets": 2})
    sink.log(2, {"step": 99, "loss/policy": torch.tensor([1.5]), "entropy/hist": torch.tensor(HIST)})
    sink.close()

    lines = _lines(path)
    assert len(lines) == 3
    assert all(line.startswith('{"step": ') for line in lines)
    recs = [json.loads(line) for line in lines]  # strict JSON: no NaN/Infinity tokens
    assert recs[0] == {"step": 0, "reward/mean": 0.25, "acc/mean": 0.5, "entropy/hist": HIST}
    assert recs[1] == {"step": 1, "kl/ref": None, "grad/norm": None, "lr": 1e-6, "ref/resets": 2}
    assert "null" in lines[1] and "NaN" not in lines[1]
    assert recs[2] == {"step": 2, "loss/policy": [1.5], "entropy/hist": HIST}  # the argument step wins


def test_jsonl_appends_and_truncate_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    for step in range(5):
        sink.log(step, {"reward/mean": step / 10})
    sink.close()

    sink = JsonlSink(path)  # a resumed run appends
    sink.log(5, {"reward/mean": 0.5})
    sink.truncate_after(2)
    assert [json.loads(line)["step"] for line in _lines(path)] == [0, 1, 2]
    sink.log(3, {"reward/mean": 0.33})  # still writable after the rewrite
    sink.close()
    assert [json.loads(line)["step"] for line in _lines(path)] == [0, 1, 2, 3]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_jsonl_partial_last_line_after_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "acc/mean": 0.1}\n{"step": 1, "acc/m')
    sink = JsonlSink(path)
    sink.log(1, {"acc/mean": 0.2})
    # the fragment stays on its own line; the new step is parseable
    assert json.loads(_lines(path)[-1]) == {"step": 1, "acc/mean": 0.2}
    sink.truncate_after(1)  # and resume drops the fragment
    sink.close()
    assert [json.loads(line) for line in _lines(path)] == [
        {"step": 0, "acc/mean": 0.1},
        {"step": 1, "acc/mean": 0.2},
    ]


def test_jsonl_has_the_mode_of_the_other_run_files(tmp_path):
    # the trainer opens the sink and truncates it to the resumed step on every start: that rewrite went
    # through a 0600 temporary file, so metrics.jsonl alone was unreadable to the group and others
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "config.yaml").write_text("a: 1\n")  # how the other run files are written
        sink = JsonlSink(tmp_path / "metrics.jsonl")
        sink.truncate_after(0)
        sink.log(1, {"acc/mean": 0.5})
        sink.close()
    finally:
        os.umask(old_umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"config.yaml": 0o644, "metrics.jsonl": 0o644}

    (tmp_path / "metrics.jsonl").chmod(0o640)  # a mode the user chose survives the rewrite
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.truncate_after(0)
    sink.close()
    assert stat.S_IMODE((tmp_path / "metrics.jsonl").stat().st_mode) == 0o640


def test_console_sink_compact_line():
    out: list[str] = []
    sink = ConsoleSink(every=2, printer=out.append)
    metrics = {
        "reward/mean": 0.4375,
        "acc/mean": torch.tensor(0.40625),
        "entropy/mean": np.float32(0.83),
        "entropy/hist": HIST,
        "timing/step_s": 3.214,
        "eval/pass@4": 0.7,
    }
    sink.log(1, metrics)  # not a multiple of every
    sink.log(2, metrics)
    assert out == [
        "step 2 | reward 0.4375 | acc 0.4062 | entropy 0.83 | timing/step_s 3.214 | eval/pass@4 0.7"
    ]

    out.clear()
    ConsoleSink(keys=["entropy/hist", "kl/ref", "acc/mean"], printer=out.append).log(3, metrics)
    assert out == ["step 3 | acc 0.4062"]  # histograms and missing keys are left out


def test_metrics_logger_fans_out_and_closes_all(tmp_path):
    class Failing:
        def log(self, step, metrics):
            pass

        def close(self):
            raise RuntimeError("boom")

    out: list[str] = []
    jsonl = JsonlSink(tmp_path / "metrics.jsonl")
    logger = MetricsLogger([Failing(), jsonl, ConsoleSink(printer=out.append)])
    logger.log(7, {"acc/mean": 0.5})
    with pytest.raises(RuntimeError, match="boom"):
        logger.close()
    assert jsonl._file.closed  # closed despite the failure before it
    assert json.loads(_lines(tmp_path / "metrics.jsonl")[0]) == {"step": 7, "acc/mean": 0.5}
    assert out == ["step 7 | acc 0.5"]


def test_resolve_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    assert resolve_wandb_mode("offline") == "offline"


# --- reading the .wandb transaction log back -------------------------------------------------
# wandb >= 0.19 no longer ships a Python reader (wandb/sdk/internal/datastore.py is gone; the
# writer is the Go wandb-core). The format is the one that datastore.py and wandb-core's
# core/pkg/leveldb/record.go document: a 7-byte header (":W&B", uint16 magic 0xBEE1, uint8
# version 0), then LevelDB log blocks of 32 KiB; each chunk is uint32 CRC-32 (IEEE, over the
# type byte + payload), uint16 length, uint8 type (1 full, 2 first, 3 middle, 4 last) and the
# payload; a block tail shorter than a chunk header is zero padding. A record's payload is a
# serialized wandb.proto.wandb_internal_pb2.Record.


def _read_wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "unknown .wandb header"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # zero padding at the end of a block
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):  # zeroed rest of block
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + payload) == crc, f"bad checksum at byte {pos}"
        pos += 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_records(path: Path, timeout_s: float = 30.0):
    """The records of a finished run's .wandb file. ``run.finish()`` (and even the training process's exit) can
    return before wandb-core has flushed the file, so wait until the run's closing "exit" record is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records = _read_wandb_records(path)
        except AssertionError:  # a header or chunk still being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _history_rows(records) -> dict[int, dict]:
    """step -> nested dict of the logged values, from the history records."""
    rows = {}
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in r.history.item:
            keys = list(item.nested_key) or [item.key]
            node = row
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = json.loads(item.value_json)
        rows[r.history.step.num] = row
    return rows


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb_dir"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB__DISABLE_STATS": "true",  # no system-metrics sampling on a shared 2-core box
    }.items():
        monkeypatch.setenv(var, value)
    return tmp_path / "run"


def _logged_run(run_dir: Path) -> Path:
    sink = WandbSink(run_dir, project="rlvr-test", name="sink-test", config={"algo": {"group_size": 4}})
    assert sink.mode == "offline"
    hist = [int(c) for c in np.arange(len(ENTROPY_HIST_EDGES) - 1) * 3]
    sink.log(
        3, {"reward/mean": 0.5, "acc/mean": torch.tensor(0.25), "entropy/hist": hist, "other/list": [1, 2]}
    )
    sink.log(4, {"reward/mean": np.float32(0.75)})
    sink.close()
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return wandb_file


def test_wandb_offline_logs_histogram(wandb_env):
    wandb_file = _logged_run(wandb_env)
    assert wandb_file.stat().st_size > 0

    rows = _history_rows(_wandb_records(wandb_file))
    assert set(rows) == {3, 4}
    assert rows[3]["reward/mean"] == 0.5 and rows[3]["acc/mean"] == 0.25
    assert rows[4]["reward/mean"] == 0.75
    h = rows[3]["entropy/hist"]
    assert h["_type"] == "histogram"
    assert h["values"] == [3 * i for i in range(len(ENTROPY_HIST_EDGES) - 1)]
    np.testing.assert_allclose(h["bins"], ENTROPY_HIST_EDGES)
    assert "other/list" not in rows[3]  # lists that are not histograms are skipped


def test_wandb_leet_inspect_agrees(wandb_env):
    # wandb's own reader: `wandb leet inspect --json` (wandb-core) prints one JSON object per record.
    wandb_file = _logged_run(wandb_env)
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    history = [r["history"] for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "history"]
    row = next(h["item"] for h in history if h["step"]["num"] == 3)
    assert row["entropy/hist._type"] == "histogram"
    assert row["entropy/hist.values"] == [3 * i for i in range(len(ENTROPY_HIST_EDGES) - 1)]
    assert math.isclose(row["reward/mean"], 0.5)


def test_metrics_logger_sends_samples_only_to_sinks_that_show_them(tmp_path):
    class Tables:
        def __init__(self):
            self.got = []

        def log(self, step, metrics):
            pass

        def log_samples(self, step, rows):
            self.got.append((step, rows))

        def close(self):
            pass

    tables = Tables()
    jsonl = JsonlSink(tmp_path / "metrics.jsonl")
    with MetricsLogger([jsonl, tables]) as logger:
        logger.log_samples(4, [{"prompt": "1+2=", "reward": 1.0}])
    assert tables.got == [(4, [{"prompt": "1+2=", "reward": 1.0}])]
    assert _lines(tmp_path / "metrics.jsonl") == []  # samples never enter metrics.jsonl


def test_wandb_offline_samples_table(wandb_env):
    sink = WandbSink(wandb_env, project="rlvr-test", name="samples-test", config={})
    rows = [
        {"prompt": "1+2=", "completion": "\\boxed{3}", "verdict": "correct", "reward": 1.0},
        {"prompt": "2+2=", "completion": "\\boxed{5}", "verdict": "incorrect", "reward": np.float32(0.0)},
    ]
    sink.log_samples(5, rows)  # before the step's metrics, as the trainer does
    sink.log(5, {"reward/mean": 0.5})
    sink.log_samples(6, [])  # nothing to show: nothing logged
    sink.close()
    (wandb_file,) = wandb_env.glob("wandb/offline-run-*/run-*.wandb")
    rows_by_step = _history_rows(_wandb_records(wandb_file))
    table = rows_by_step[5]["samples"]
    assert table["_type"] == "table-file" and (table["nrows"], table["ncols"]) == (2, 5)
    assert rows_by_step[5]["reward/mean"] == 0.5 and 6 not in rows_by_step
    (table_file,) = wandb_file.parent.glob("files/" + table["path"])
    content = json.loads(table_file.read_text())
    assert content["columns"] == ["step", "prompt", "completion", "verdict", "reward"]
    assert content["data"] == [
        [5, "1+2=", "\\boxed{3}", "correct", 1.0],
        [5, "2+2=", "\\boxed{5}", "incorrect", 0.0],
    ]
