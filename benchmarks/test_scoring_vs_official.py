"""tvr-bench's scoring against a vectorised port of how the official code computes the test matrix.

Not a unit test (`make benchmark`; figures printed with ``-s`` and kept in ``extra_info``-style dicts). Both
sides start from the same cached CLIP outputs at MSR-VTT ViT-B/32 shapes (D = 512, L = 32, F = 12; the
temporal encoder at ViT-B/32 widths, random init: speed and equality do not depend on trained weights), fp32,
``TVR_OFFICIAL_N`` texts x videos (default 1,000). The machine may be shared: figures are noisy; each side
runs in the same process, official first, then tvr-bench.

GLCCL, official (JingXiaolun/GLCCL, ``main_glccl.py`` eval loop and ``modules/modeling_glccl.py``): the test
set is cut into ``batch_size_val`` = 64 blocks (the MSR-VTT script); for every (text block, video block) the
model's similarity call re-runs the seqTransf temporal encoder on the video block, pools the frames with the
[EOT] feature, then pools them once per word position in a Python loop over the L positions, normalises the
[64, 64, L, D] word-guided features and forms the four X-CLIP scores from them. The port below is written from
reading that code (its layout: scores with the text-word axis before the video axis), not copied.

tvr-bench: the temporal encoder once per video (offline state), then ``similarity_matrix`` in the block chosen
from the default ``eval.memory_budget`` with GLCCL's exact Gram-matrix scoring.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machine)

import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

N = int(os.environ.get("TVR_OFFICIAL_N", "1000"))
OFFICIAL_BATCH_VAL = 64
D, L, F = 512, 32, 12


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _official_glim(query: torch.Tensor, frames: torch.Tensor, temperature: float) -> torch.Tensor:
    """[a, d] queries, [b, f, d] frames -> [a, b, d]: softmax over frames of raw dot products / T."""
    w = torch.softmax(torch.einsum("ad,bfd->abf", query, frames) / temperature, dim=-1)
    return torch.einsum("abf,bfd->abd", w, frames)


def _aosm_pool(sim: torch.Tensor, dim: int, mat: torch.Tensor, tau: float) -> torch.Tensor:
    weights = (torch.softmax(sim / tau, dim=dim).movedim(dim, -1) @ mat).movedim(-1, dim)
    return (sim * weights).sum(dim=dim)


def official_glccl_block(method, sentence, words, frames_raw, video_mask) -> torch.Tensor:
    """One (text block, video block) as the official similarity call computes it."""
    sc, opts = method.scores, method.options
    tau, temp = opts["aosm_temperature"], opts["glim_temperature"]
    z = method.temporal(frames_raw, video_mask)  # recomputed for every block, as the official call does
    video = _unit(_official_glim(sentence, z, temp))  # [a, b, d]
    frames = _unit(torch.stack([_official_glim(words[:, i], z, temp) for i in range(words.shape[1])], dim=-2))
    t_hat, w_hat = _unit(sentence), _unit(words)
    kappa = method.backbone.logit_scale()
    s_vs = torch.einsum("ad,abd->ab", t_hat @ sc.global_mat_weight, video)
    s_vw = _aosm_pool(torch.einsum("abd,atd->atb", video, w_hat), 1, sc.word_logit_weight, tau)
    s_sf = _aosm_pool(torch.einsum("ad,abtd->abt", t_hat, frames), -1, sc.frame_logit_weight, tau)
    fine = torch.einsum("atd,abvd->atbv", w_hat @ sc.local_mat_weight, frames)  # [a, words, b, features]
    word_level = _aosm_pool(fine, 1, sc.word_mat_weight, tau)  # [a, b, features]
    feat_level = _aosm_pool(fine, -1, sc.frame_mat_weight, tau)  # [a, words, b]
    s_fw = (_aosm_pool(word_level, -1, sc.frame_mat_weight2, tau) + _aosm_pool(feat_level, 1, sc.word_mat_weight2, tau)) / 2
    return kappa * (s_vs + s_vw + s_sf + s_fw) / 4


def official_glccl_matrix(method, sentence, words, frames_raw, video_mask, bs=OFFICIAL_BATCH_VAL):
    rows = []
    for ts in range(0, sentence.shape[0], bs):
        rows.append(torch.cat([official_glccl_block(method, sentence[ts: ts + bs], words[ts: ts + bs],
                                                    frames_raw[vs: vs + bs], video_mask[vs: vs + bs])
                               for vs in range(0, frames_raw.shape[0], bs)], dim=1))
    return torch.cat(rows, dim=0)


def _block_peak(fn) -> int:
    from tvr_bench.bench.cost.efficiency import LiveTensorBytes

    with torch.no_grad(), LiveTensorBytes() as tracker:
        fn()
    return tracker.peak


def _flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@pytest.fixture(scope="module")
def glccl():
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.registry import METHODS

    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-32").eval()
    cls = METHODS.get("glccl")
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random AOSM matrices near the identity: identity hides layout bugs
        for p in m.scores.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def test_glccl_vs_official(glccl):
    from tvr_bench.bench.cost.efficiency import dense_matmul_flops_per_s
    from tvr_bench.bench.evaluate import block_side, similarity_matrix

    g = torch.Generator().manual_seed(0)
    sentence = torch.randn(N, D, generator=g)
    words = torch.randn(N, L, D, generator=g)
    frames_raw = 0.5 * torch.randn(N, F, D, generator=g)
    video_mask = torch.ones(N, F, dtype=torch.long)
    video_mask[::3, 8:] = 0  # padded videos
    text_mask = torch.ones(N, L, dtype=torch.long)
    glccl.backbone.encode_text_tokens = lambda tokens: (sentence, words)
    nullctx = torch.autograd.grad_mode.no_grad
    fig: dict = {"n": N, "threads": torch.get_num_threads()}
    with torch.no_grad():
        t0 = time.perf_counter()
        official = official_glccl_matrix(glccl, sentence, words, frames_raw, video_mask)
        fig["official_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        text = glccl.encode_text(torch.zeros(N, L, dtype=torch.long), text_mask)
        video = glccl.video_from_frames(frames_raw, video_mask)
        side = block_side(glccl, limit=N)
        ours = similarity_matrix(glccl, text, video, side, nullctx)
        fig["tvr_bench_s"] = time.perf_counter() - t0
        fig["tvr_bench_block"] = side

        b = OFFICIAL_BATCH_VAL
        fig["official_block_peak_bytes"] = _block_peak(
            lambda: official_glccl_block(glccl, sentence[:b], words[:b], frames_raw[:b], video_mask[:b]))
        t_blk = {k: v[:side] for k, v in text.items()}
        v_blk = {k: v[:side] for k, v in video.items()}
        fig["tvr_bench_block_peak_bytes"] = _block_peak(lambda: glccl.score(t_blk, v_blk))
        k = min(side, 64)
        t_k = {kk: v[:k] for kk, v in text.items()}
        v_k = {kk: v[:k] for kk, v in video.items()}
        flops_pair = _flops(lambda: glccl.score(t_k, v_k)) / (k * k)
        fig["official_flops_per_pair"] = _flops(
            lambda: official_glccl_block(glccl, sentence[:8], words[:8], frames_raw[:8], video_mask[:8])) / 64
    fig["tvr_bench_flops_per_pair"] = flops_pair
    fig["speedup"] = fig["official_s"] / fig["tvr_bench_s"]
    fig["tvr_bench_gflops"] = flops_pair * N * N / fig["tvr_bench_s"] / 1e9
    dense = dense_matmul_flops_per_s("cpu")
    fig["dense_gemm"] = dense
    span = float(official.max() - official.min())
    fig["max_abs_diff_over_range"] = float((ours - official).abs().max()) / span
    print("\nglccl vs official:", fig)
    assert fig["max_abs_diff_over_range"] <= 1e-4
