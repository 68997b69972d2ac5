"""Batched scoring against a pair-at-a-time loop, per method, at the MSR-VTT widths (`make benchmark`).

For every registered method at ViT-B/32 sizes (D=512, L=32, F=12; random weights, real encoders on random
inputs, states tiled to the block): the method's batched ``score`` on a block of texts x videos against the same
pairs scored one at a time in a Python loop (``score`` on 1 x 1 state slices). Both must give the same logits;
the benchmark reports pairs/s of each and the speedup, and projects both to the 1,000 x 1,000 MSR-VTT matrix.
(The loop-based spec transcriptions of the unit tests are pure-Python scalar loops, orders of magnitude slower
still; they prove correctness at tiny sizes, this measures what batching buys at paper sizes.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared 2-core machine)

import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tvr_bench.bench.registry import METHODS  # noqa: E402

BLOCK = (4, 64)  # texts x videos scored batched
LOOP_BUDGET_S = 4.0  # the loop scores as many of the block's pairs as fit in this


@pytest.fixture(scope="module")
def setup():
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.efficiency import PAPER_SHAPES, shared_inputs

    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-32").eval()
    return backbone, shared_inputs(backbone, PAPER_SHAPES["msrvtt"], n_real=2, device=torch.device("cpu"))


@pytest.mark.parametrize("name", METHODS.names())
def test_batched_scoring_vs_pair_loop(benchmark, setup, name):
    from tvr_bench.bench.efficiency import real_text_states, real_video_states, slice_state, tile_state

    backbone, inputs = setup
    cls = METHODS.get(name)
    torch.manual_seed(0)
    method = cls(backbone, cls.default_options(), max_frames=12, max_words=32).eval()
    n_t, n_v = BLOCK
    text = tile_state(real_text_states(method, 2, 32, "cpu"), n_t)
    video = tile_state(real_video_states(method, inputs), n_v)
    out: dict = {}

    @torch.no_grad()
    def run():
        t0 = time.perf_counter()
        batched = method.score(text, video)
        out["batched_s"] = time.perf_counter() - t0
        loop, t0 = [], time.perf_counter()
        for i in range(n_t):  # the naive baseline: one (text, video) pair per call
            for j in range(n_v):
                loop.append(((i, j), method.score(slice_state(text, slice(i, i + 1)),
                                                  slice_state(video, slice(j, j + 1)))[0, 0]))
                if time.perf_counter() - t0 > LOOP_BUDGET_S:
                    break
            if time.perf_counter() - t0 > LOOP_BUDGET_S:
                break
        out["loop_s"] = time.perf_counter() - t0
        out["batched"], out["loop"] = batched, loop

    benchmark.pedantic(run, rounds=1, iterations=1)
    batched, loop = out["batched"], out["loop"]
    ref = torch.stack([v for _, v in loop])
    got = torch.stack([batched[i, j] for (i, j), _ in loop])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(batched.abs().max()))  # same outputs
    batched_pps = n_t * n_v / out["batched_s"]
    loop_pps = len(loop) / out["loop_s"]
    benchmark.extra_info.update(batched_pairs_per_s=batched_pps, loop_pairs_per_s=loop_pps,
                                speedup=batched_pps / loop_pps, loop_pairs=len(loop), block=list(BLOCK),
                                projected_1k_batched_s=1e6 / batched_pps, projected_1k_loop_s=1e6 / loop_pps)
    print(f"\n{name}: batched {batched_pps:,.0f} pairs/s, loop {loop_pps:,.0f} pairs/s "
          f"({batched_pps / loop_pps:.1f}x); 1k x 1k: {1e6 / batched_pps:,.1f} s vs {1e6 / loop_pps:,.0f} s")
    assert batched_pps > loop_pps
