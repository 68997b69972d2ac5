"""Scoring throughput at the MSR-VTT 1k x 1k shapes against this machine's dense GEMM (`make benchmark`).

For every registered method: counted scoring FLOPs (FlopCounterMode, 2·MAC) / measured time of the chunked
1,000 x 1,000 score matrix at ViT-B/32 widths (D=512, L=32, F=12), next to a dense fp32 GEMM's FLOP/s measured in
the same run (``bench.efficiency.scoring_throughput`` / ``dense_matmul_flops_per_s``, the functions the
``bench efficiency`` records use). Target: at least half the dense rate. A method that cannot reach it is
listed in ``BELOW_HALF`` with what bounds it, and reported as xfail with its measured fraction; any other
method below half fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared 2-core machine)

import pytest  # noqa: E402
import torch  # noqa: E402

from tvr_bench.bench.registry import METHODS  # noqa: E402

MAX_SECONDS = 6.0  # per method: blocks of the 1k x 1k matrix scored within this, time extrapolated per pair
TARGET = 0.5

#: Why a method's scoring cannot reach half of a dense GEMM on this CPU (what bounds it), from the profiles.
BELOW_HALF: dict[str, str] = {
    "glccl": "per pair it materialises, L2-normalises and re-reads [L, D] word-guided features (64 KiB) and runs "
             "softmaxes over [L, F] and [L, L]: ~45 % of the time is memory-bound elementwise work, and its GLIM "
             "aggregation is a batched [L, F] x [F, D] product with inner dimension F = 12, too shallow for GEMM speed",
    "textpool": "per pair a batched [F] x [F, D] aggregation (inner dimension F = 12) writes a D-vector that is then "
                "normalised: ~2 FLOPs per byte, so the normalisation passes (~45 % of the time) and the shallow "
                "products are memory-bound",
    "xclip": "the AOSM softmaxes and re-weightings over [t, v, L, F] / [t, v, L] / [t, v, F] (~65 % of the time) are "
             "elementwise and memory-bound; the matmuls are batched small products (L x F outputs, D deep)",
    "ts2net": "its per-pair work is tiny (F x D MACs) while the softmax over frames and the elementwise weighting "
              "(~65 % of the time) are memory-bound: the scoring is bound by memory traffic, not arithmetic",
    "drl": "the word x frame similarities are batched [L, D] x [D, F] products with only L x F = 384 outputs per pair, "
           "and the max over frames / words plus the padding masks are elementwise passes over [t, v, L, F] "
           "(~45 % of the time)",
    "xpool": "beside the two D x D projections per pair (GEMMs near peak), two LayerNorms, a residual add and a "
             "copy over the [t, v, D] pooled features are memory-bound (~30 % of the time); measured 41-49 %",
}


@pytest.fixture(scope="module")
def setup():
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.cost.efficiency import paper_shapes, dense_matmul_flops_per_s, shared_inputs

    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-32").eval()
    inputs = shared_inputs(backbone, paper_shapes()["msrvtt"], n_real=2, device=torch.device("cpu"))
    dense = dense_matmul_flops_per_s("cpu")
    return backbone, inputs, dense


@pytest.mark.parametrize("name", METHODS.names())
def test_scoring_throughput_msrvtt_1k(benchmark, setup, name):
    from tvr_bench.bench.cost.efficiency import scoring_throughput

    backbone, inputs, dense = setup
    cls = METHODS.get(name)
    torch.manual_seed(0)
    method = cls(backbone, cls.default_options(), max_frames=12, max_words=32).eval()
    result: dict = {}

    def run():
        result.update(scoring_throughput(method, inputs, device="cpu", max_seconds=MAX_SECONDS, dense=dense))

    benchmark.pedantic(run, rounds=1, iterations=1)
    frac = result["fraction_of_dense"]
    benchmark.extra_info.update(
        scoring_flops_per_s=result["flops_per_s"], dense_matmul_flops_per_s=dense["flops_per_s"],
        fraction_of_dense=frac, chunk=result["chunk"], pairs_timed=result["pairs"], seconds=result["seconds"],
        dense_gemm=f"{dense['dtype']} {dense['n']}x{dense['n']}, {dense['threads']} threads")
    print(f"\n{name}: scoring {result['flops_per_s'] / 1e9:.1f} GFLOP/s = {frac:.0%} of dense "
          f"{dense['flops_per_s'] / 1e9:.1f} GFLOP/s (block {result['chunk']}, {result['pairs']:,} pairs timed)")
    if frac < TARGET:
        if name in BELOW_HALF:
            pytest.xfail(f"{frac:.0%} of dense GEMM: {BELOW_HALF[name]}")
        pytest.fail(f"{name} scores at {frac:.0%} of the dense GEMM rate (target {TARGET:.0%}) and BELOW_HALF "
                    "does not say why")
