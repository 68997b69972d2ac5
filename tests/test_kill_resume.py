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

# seqtransf: with the embedded default's frozen backbone meanP has nothing to train (no step, no checkpoint to kill)
RUN = ["run", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke", "--set", "train.epochs=2",
       "--no-table", "--quiet"]
RECORD = "seqtransf__synthetic__seed0.json"


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
    assert "other settings (train.lr: 0.0001 in the record, 0.002 requested)" in other.stderr
    assert (out / RECORD).read_bytes() == before


GENERATE = ("from tvr_bench.datasets.synthetic import ensure_synthetic; import sys; "
            "ensure_synthetic(sys.argv[1], n_train=6, n_val=2, n_test=4, frame_size=16)")


@pytest.mark.parametrize("point", ["video_write:5", "synthetic_annotations:1"])
def test_a_killed_dataset_generation_leaves_nothing_behind(tmp_path, point):
    """A kill inside the embedded benchmark's generation (mid-videos, or inside the annotation write) leaves a
    temp folder; the next generation removes it and produces the same files as an uninterrupted one."""
    def generate(cache: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "TVR_BENCH_FAILPOINT"}
        if failpoint:
            env["TVR_BENCH_FAILPOINT"] = failpoint
        return subprocess.run([sys.executable, "-c", GENERATE, str(cache)], env=env, capture_output=True,
                              text=True, timeout=300)

    def files(cache: Path) -> dict[str, bytes]:
        return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*"))
                if p.is_file() and not p.name.endswith(".lock")}

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    res = generate(killed, point)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert [p for p in killed.iterdir() if ".tmp-" in p.name], "the kill did not land inside the generation"
    assert generate(killed).returncode == 0
    assert generate(clean).returncode == 0
    assert [p.name for p in killed.iterdir() if not p.name.endswith(".lock")] == \
        [p.name for p in clean.iterdir() if not p.name.endswith(".lock")]
    assert files(killed).keys() == files(clean).keys() and temp_files(killed) == []
    # same annotations; videos by name only (x264 output is not guaranteed byte-identical between generations)
    ann = [k for k in files(clean) if k.endswith("annotations.json")]
    assert ann and all(files(killed)[k] == files(clean)[k] for k in ann)
