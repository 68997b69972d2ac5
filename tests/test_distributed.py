"""Multi-process data-parallel training (torchrun): the global batch's per-rank slices, and a real 2-process
gloo run of `bench run` whose parameters equal the single-process run's after every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.train import GlobalBatchSlices, epoch_loader

DRIVER = Path(__file__).with_name("_ddp_driver.py")


def slices(n, batch, world, seed=7):
    return [[b.tolist() for b in epoch_loader(range(n), batch, torch.Generator().manual_seed(seed), rank=r,
                                              world=world)]
            for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_slices_are_disjoint_and_concatenate_to_the_single_process_batch(world):
    n, batch = 37, 8
    # the loader the trainer built before multi-process training: one process must see exactly its batches
    single = [b.tolist() for b in torch.utils.data.DataLoader(
        range(n), batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(7))]
    per_rank = slices(n, batch, world)
    assert all(len(r) == len(single) == n // batch for r in per_rank)
    for k, global_batch in enumerate(single):
        parts = [r[k] for r in per_rank]
        assert all(len(p) == batch // world for p in parts)
        assert sum(parts, []) == global_batch  # in rank order: rank r holds [r*b, (r+1)*b)
        assert len(set(sum(parts, []))) == batch  # disjoint


def test_a_global_batch_not_divisible_by_the_world_size_is_refused():
    with pytest.raises(ConfigError, match=r"train.batch_size=6 .* divisible by the number of processes \(4\)"):
        GlobalBatchSlices(20, 6, rank=0, world=4, generator=torch.Generator())


# meanP training its randomly initialised CLIP (not the embedded default: frozen, pretrained): the gradients reach
# the encoders
ARGS = ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke", "--set", "train.epochs=1",
        "--set", "train.max_steps=3", "--set", "train.batch_size=8", "--set", "backbone.frozen=false",
        "--set", "backbone.pretrained=none",
        "--device", "cpu", "--no-table", "--quiet"]  # gloo on the CPU, also on a machine with a GPU


def drive(tmp: Path, name: str, nproc: int | None, *extra: str) -> tuple[Path, list[dict]]:
    out, traces = tmp / name / "out", tmp / name / "trace"
    traces.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone"]
                if nproc else [sys.executable])
    p = subprocess.run([*launcher, str(DRIVER), str(traces), *ARGS, *extra, "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return out, [torch.load(traces / f"rank{r}.pt") for r in range(nproc or 1)]


def test_two_gloo_ranks_train_exactly_as_one_process_with_the_same_global_batch(tmp_path):
    _, (single,) = drive(tmp_path, "single", None)
    out, ranks = drive(tmp_path, "ddp", 2, "--set", "train.gather_backward=exact")
    steps = len(single["params"])
    assert steps == 3
    for k in range(steps):
        a, b = ranks[0]["batches"][k], ranks[1]["batches"][k]
        assert not set(a) & set(b) and a + b == single["batches"][k]
        torch.testing.assert_close(ranks[0]["params"][k], ranks[1]["params"][k], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["params"][k], single["params"][k], rtol=0, atol=1e-5)
        torch.testing.assert_close(ranks[0]["grads"][k], single["grads"][k], rtol=1e-4, atol=1e-6)
    # and training moved the weights, so the comparison above is not of two untouched initialisations
    assert not torch.equal(single["params"][0], single["params"][-1])
    assert ranks[0]["saves"] >= 1 and ranks[0]["records"] == 1
    assert ranks[1]["saves"] == 0 and ranks[1]["records"] == 0
    (record,) = out.glob("*.json")
    training = json.loads(record.read_text())["training"]
    assert (training["world_size"], training["global_batch"], training["per_rank_batch"]) == (2, 8, 4)
    assert json.loads(record.read_text())["training"]["gather_backward"] == "exact"


def test_the_official_gather_trains_the_encoders_with_one_over_world_of_the_gradient(tmp_path):
    """CLIP4Clip's rule (the default): the gather passes back this rank's slice and the ranks' gradients are
    averaged, so the encoders get 1/world of the one-process gradient and the logit scale (used after the
    gather) all of it. First step, clipping out of the way, so both runs start from the same weights."""
    no_clip = ("--set", "train.grad_clip=1e9", "--set", "train.max_steps=1")
    _, (single,) = drive(tmp_path, "single", None, *no_clip)
    out, ranks = drive(tmp_path, "ddp", 2, *no_clip)
    names = single["names"]
    sizes = [n for _, n in names]
    one = dict(zip([k for k, _ in names], torch.split(single["grads"][0], sizes)))
    two = dict(zip([k for k, _ in names], torch.split(ranks[0]["grads"][0], sizes)))
    assert any("logit_scale" in k for k in one) and len(one) > 1
    for k in one:
        want = one[k] if "logit_scale" in k else one[k] / 2
        torch.testing.assert_close(two[k], want, rtol=1e-4, atol=1e-7)
    (record,) = out.glob("*.json")
    assert json.loads(record.read_text())["training"]["gather_backward"] == "official"


def test_a_batch_the_ranks_cannot_share_is_one_line_before_any_data(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                        "-m", "tvr_bench.cli", *ARGS, "--set", "train.batch_size=7", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    lines = [x for x in (p.stdout + p.stderr).splitlines() if "error: train.batch_size=7" in x]
    assert len(lines) == 1 and "divisible by the number of processes (2)" in lines[0]  # rank 0 alone says it
    # no rank's traceback; the one left is torchrun's own report that its children exited non-zero
    assert (p.stdout + p.stderr).count("Traceback") <= 1 and "ChildFailedError" in p.stderr
    assert not list(out.glob("**/*.json")) and not list(out.glob("**/*.pt"))
