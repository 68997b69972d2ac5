"""kill -9 at chosen instants (mid-training, inside a checkpoint save, inside the record write): the next run
finishes with the record an uninterrupted run writes, and leaves no temp file behind.

The kills are real SIGKILLs of a `bench run` subprocess, placed by the harness's failpoints
(``TVR_BENCH_FAILPOINT=<point>:<n>``, see bench/atomic.py): no cleanup code can run, exactly as with kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke", "--set", "train.epochs=2",
       "--no-table", "--quiet"]
RECORD = "meanp__synthetic__seed0.json"


def bench(out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TVR_BENCH_FAILPOINT"}
    if failpoint:
        env["TVR_BENCH_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "tvr_bench.cli", *RUN, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)


def comparable(path: Path) -> dict:
    """The record minus what legitimately differs between two identical runs (clock times, measured cost)."""
    rec = json.loads(path.read_text())
    for key in ("timings", "provenance"):
        rec.pop(key)
    rec["cost"] = {k: v for k, v in rec["cost"].items() if k in ("params", "flops")}
    for entry in rec["training"]["history"]:
        entry.pop("seconds")
    return rec


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    res = bench(out)
    assert res.returncode == 0, res.stderr
    return comparable(out / RECORD)


@pytest.mark.parametrize("point,leaves_temp", [
    ("train_step:20", False),  # mid-epoch 2 (16 steps per epoch): resumes from epoch 1's last.pt
    ("save_last:2", True),     # inside epoch 2's last.pt save, between the temp file and the rename
    ("save_best:1", True),     # inside the first best.pt save: no checkpoint yet, the rerun starts over
    ("record_write:1", True),  # inside the record write: training done, the rerun only evaluates
])
def test_a_killed_run_reruns_to_the_uninterrupted_record(tmp_path, reference, point, leaves_temp):
    out = tmp_path / "out"
    killed = bench(out, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / RECORD).exists()
    if leaves_temp:  # proves the kill landed inside the write: what a kill -9 leaves there
        assert temp_files(out), "the failpoint did not fire inside a write"
    again = bench(out)
    assert again.returncode == 0, again.stderr
    assert comparable(out / RECORD) == reference
    assert temp_files(out) == []


def test_a_record_is_reused_only_for_its_own_settings(tmp_path, reference):
    out = tmp_path / "out"
    assert bench(out).returncode == 0
    before = (out / RECORD).read_bytes()
    again = bench(out)
    assert again.returncode == 0 and "exists with these settings" in again.stdout
    other = subprocess.run([sys.executable, "-m", "tvr_bench.cli", *RUN, "--set", "train.lr=2e-3", "--out", str(out)],
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "other settings (train.lr: 0.001 in the record, 0.002 requested)" in other.stderr
    assert (out / RECORD).read_bytes() == before
