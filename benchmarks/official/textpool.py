"""textpool, official formulation: the GLSCL global branch (zchoi/GLSCL: ``main_retrieval.py``
``_run_on_single_gpu``, ``tvr/models/modeling.py`` ``get_video_feat`` / ``agg_video_feat`` / ``similarity``).

Reproduced: the videos are encoded with the seqTransf aggregation once (``get_video_feat``, batches of
``batch_size_val`` = 64 in train_msrvtt.sh), the [EOT] features kept raw; ``_run_on_single_gpu`` splits both
sides into ``mini_batch`` = 16 blocks and calls ``get_similarity_logits`` -> ``similarity`` per (text block,
video block): logits [a, b, F] of the raw [EOT] feature against the raw frames, softmax over frames at
``--temp 3``, the video mask multiplied in after the softmax (no renormalisation), the pooled [a, b, D] video,
the ``center`` = 1 views [a, 1, D] / [a, b, 1, D], both normalised, and their cosine. The official output is
the cosine (no logit scale); tvr-bench's is kappa times it.

Left out by default, named here: inside ``similarity`` the official code also concatenates the text and pooled
video per pair into [a, b, 1, 2D] and runs ``weight_fc`` (Linear 2D->4D, ReLU, Linear 4D->1) on it, then never
uses the result (the line that would is commented out). It is ~4.2 MFLOP per pair, two orders of magnitude
more than the pooling itself; passing ``weight_fc=unused_weight_mlp()`` includes it, but the timed peer is the
stricter one without it (the notes column gives the FLOPs with it). The eval loop also adds ``loss2_weight``
times the learnable-query score ``_score`` to every block; that local branch is GLSCL's, not the
parameter-free control textpool implements, so it is not part of this peer either. Written from reading that
code, not copied.
"""

from __future__ import annotations

import torch
from torch import nn

from official.common import L, F, D, Case, Inputs, cached_states

BATCH_SIZE_VAL = 64  # the video-encoding batch
MINI_BATCH = 16  # _run_on_single_gpu's scoring block
TEMP = 3.0


def unused_weight_mlp(dim: int = D) -> nn.Module:
    """GLSCL's ``weight_fc`` at center = 1 (its output is discarded in ``similarity``)."""
    with torch.random.fork_rng():  # its (random) weights do not matter; leave the global generator alone
        torch.manual_seed(11)
        return nn.Sequential(nn.Linear(2 * dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, 1)).eval()


def official_block(cls_feat, video_feat, video_mask, weight_fc: nn.Module | None = None) -> torch.Tensor:
    """One ``similarity`` call (center 1, eval): cls_feat [a, D] raw, video_feat [b, F, D] raw -> [a, b]."""
    weights = torch.softmax(torch.einsum("ad,bvd->abv", cls_feat, video_feat) / TEMP, dim=-1)
    weights = torch.einsum("abv,bv->abv", weights, video_mask.to(weights.dtype))
    pooled = torch.einsum("abv,bvd->abd", weights, video_feat)
    a, b = cls_feat.shape[0], pooled.shape[1]
    t_feat = cls_feat.contiguous().view(a, 1, -1)
    v_feat = pooled.contiguous().view(a, b, 1, -1)
    if weight_fc is not None:
        weight_fc(torch.cat([t_feat.unsqueeze(1).repeat(1, b, 1, 1), v_feat], dim=-1)).squeeze(3)
    t_feat = t_feat / t_feat.norm(dim=-1, keepdim=True)
    v_feat = v_feat / v_feat.norm(dim=-1, keepdim=True)
    return torch.einsum("acd,abcd->abc", t_feat, v_feat).squeeze(-1)


def official_video_feats(method, frames: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([method.temporal(frames[s: s + BATCH_SIZE_VAL], video_mask[s: s + BATCH_SIZE_VAL])
                      for s in range(0, frames.shape[0], BATCH_SIZE_VAL)])


def official_matrix(method, x: Inputs, video_feat: torch.Tensor, bs: int = MINI_BATCH,
                    weight_fc: nn.Module | None = None) -> torch.Tensor:
    rows = []
    for ts in range(0, x.n, bs):
        rows.append(torch.cat([official_block(x.sentence[ts: ts + bs], video_feat[vs: vs + bs],
                                              x.video_mask[vs: vs + bs], weight_fc)
                               for vs in range(0, x.n, bs)], dim=1))
    return torch.cat(rows, dim=0)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("textpool")
    return cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()


def case(backbone, x: Inputs) -> Case:
    from official.common import counted_flops

    m = build(backbone)

    states = cached_states(m, backbone)

    with torch.no_grad():
        block_video = official_video_feats(m, x.frames[:MINI_BATCH], x.video_mask[:MINI_BATCH])
    b, mlp = MINI_BATCH, unused_weight_mlp()
    with_mlp = counted_flops(lambda: official_block(x.sentence[:b], block_video, x.video_mask[:b], mlp)) / b ** 2
    return Case(
        name="textpool", n=x.n, official_block=MINI_BATCH, method=m, inputs=x,
        official_prepare=lambda inp: official_video_feats(m, inp.frames, inp.video_mask),
        official_matrix=lambda inp, feats: official_matrix(m, inp, feats),
        official_block_fn=lambda inp, b: official_block(inp.sentence[:b], block_video[:b], inp.video_mask[:b]),
        tvr_states=states, official_scale=float(m.backbone.logit_scale().detach()),
        notes=f"GLSCL similarity() in blocks of 16, without its unused weight_fc MLP (with it: "
              f"{with_mlp / 1e6:.2f} MFLOP/pair)")
