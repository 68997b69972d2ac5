"""Speed benchmarks (pytest-benchmark), kept out of the unit tests: `make benchmark`.

- smoke run per method (target: under 60 s on 2 CPU cores);
- the chunked rank computation at the MSR-VTT 1k x 1k shape;
- GLCCL scoring throughput on a 1k-text block at tiny width.
Targets are reported in ``extra_info`` and asserted loosely; timings belong here, not in unit tests.
"""

from __future__ import annotations

import os
import time

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    os.environ.setdefault("TVR_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("method", ["meanp", "glccl"])
def test_smoke_run_per_method(benchmark, tmp_path, method):
    from tvr_bench.bench.runner import run_one

    def once():
        run_one(method, "synthetic", 0, out_dir=tmp_path / f"r{time.perf_counter_ns()}", preset="smoke",
                log=lambda m: None)

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=1)  # warm-up generates the data
    benchmark.extra_info["target_s"] = 60
    assert benchmark.stats.stats.max < 60


def test_ranks_msrvtt_1k(benchmark):
    from tvr_bench.bench.metrics import retrieval_metrics

    sim = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(0))
    benchmark(lambda: retrieval_metrics(sim, list(range(1000))))


def test_glccl_scoring_block(benchmark):
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("glccl")
    m = cls(build_backbone("tvr-tiny"), cls.default_options(), max_frames=8, max_words=32).eval()
    g = torch.Generator().manual_seed(0)
    text = m.encode_text(torch.randint(1, 1000, (64, 32), generator=g), torch.ones(64, 32, dtype=torch.long))
    video = m.video_from_frames(torch.randn(64, 8, 64, generator=g), torch.ones(64, 8, dtype=torch.long))
    with torch.no_grad():
        benchmark(lambda: m.score(text, video))
    benchmark.extra_info["pairs"] = 64 * 64
