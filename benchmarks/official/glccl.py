"""GLCCL, official formulation (JingXiaolun/GLCCL: ``main_glccl.py`` eval loop, ``modules/modeling_glccl.py``).

Reproduced: the test set is cut into ``batch_size_val`` = 64 blocks (the MSR-VTT script); for every (text
block, video block) the model's similarity call re-runs the seqTransf temporal encoder on the video block,
pools the frames with the [EOT] feature, then pools them once per word position in a Python loop over the L
positions, normalises the [64, 64, L, D] word-guided features and forms the four X-CLIP scores from them, with
the text-word axis before the video axis. Written from reading that code, not copied.
"""

from __future__ import annotations

import torch

from official.common import L, F, Case, Inputs, unit, cached_states

BATCH_SIZE_VAL = 64


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
    video = unit(_official_glim(sentence, z, temp))  # [a, b, d]
    frames = unit(torch.stack([_official_glim(words[:, i], z, temp) for i in range(words.shape[1])], dim=-2))
    t_hat, w_hat = unit(sentence), unit(words)
    kappa = method.backbone.logit_scale()
    s_vs = torch.einsum("ad,abd->ab", t_hat @ sc.global_mat_weight, video)
    s_vw = _aosm_pool(torch.einsum("abd,atd->atb", video, w_hat), 1, sc.word_logit_weight, tau)
    s_sf = _aosm_pool(torch.einsum("ad,abtd->abt", t_hat, frames), -1, sc.frame_logit_weight, tau)
    fine = torch.einsum("atd,abvd->atbv", w_hat @ sc.local_mat_weight, frames)  # [a, words, b, features]
    word_level = _aosm_pool(fine, 1, sc.word_mat_weight, tau)  # [a, b, features]
    feat_level = _aosm_pool(fine, -1, sc.frame_mat_weight, tau)  # [a, words, b]
    s_fw = (_aosm_pool(word_level, -1, sc.frame_mat_weight2, tau) + _aosm_pool(feat_level, 1, sc.word_mat_weight2, tau)) / 2
    return kappa * (s_vs + s_vw + s_sf + s_fw) / 4


def official_glccl_matrix(method, sentence, words, frames_raw, video_mask, bs=BATCH_SIZE_VAL):
    rows = []
    for ts in range(0, sentence.shape[0], bs):
        rows.append(torch.cat([official_glccl_block(method, sentence[ts: ts + bs], words[ts: ts + bs],
                                                    frames_raw[vs: vs + bs], video_mask[vs: vs + bs])
                               for vs in range(0, frames_raw.shape[0], bs)], dim=1))
    return torch.cat(rows, dim=0)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("glccl")
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random AOSM matrices near the identity: identity hides layout bugs
        for p in m.scores.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def case(backbone, x: Inputs) -> Case:
    m = build(backbone)

    states = cached_states(m, backbone, all_words=True)

    def matrix(inp: Inputs):
        return official_glccl_matrix(m, inp.sentence, inp.words, inp.frames, inp.video_mask)

    return Case(
        name="glccl", n=x.n, official_block=BATCH_SIZE_VAL, method=m, inputs=x,
        official_matrix=lambda inp, _prepared: matrix(inp),
        official_block_fn=lambda inp, b: official_glccl_block(m, inp.sentence[:b], inp.words[:b], inp.frames[:b],
                                                              inp.video_mask[:b]),
        tvr_states=states,
        notes="official re-runs seqTransf per block of 64 and pools per word in a Python loop")
