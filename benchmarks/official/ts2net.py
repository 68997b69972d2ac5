"""TS2-Net, official formulation (yuqi657/ts2_net, stored as LiuRicky/ts2_net: ``main_task_retrieval.py``
``_run_on_single_gpu``, ``modules/modeling.py`` ``get_visual_output``, ``get_final_similarity``,
``_loose_similarity``, ``get_frame_selectedcls_similarity``, ``get_frame_similarity``).

Reproduced: ``get_visual_output`` runs the token selector once per video and caches the selected tokens
[b, F(K+1), D] (here: the same cached selected tokens feed both sides, so the perturbed top-k's noise is not
part of the comparison); ``_run_on_single_gpu`` then calls ``get_final_similarity`` for every (text block,
video block) of ``batch_size_val`` = 8 (scripts/run_msrvtt.sh). Each call goes through ``_loose_similarity``,
which tiles the frame mask over the K+1 tokens (``unsqueeze(1).repeat(1, 1, K+1)``), **re-runs the seqTransf
encoder on the block's selected tokens**, keeps the CLS positions, and computes *both* frame scores with
their [video, frame, (1,) text] layouts: ``get_frame_selectedcls_similarity`` (weight ``frame_match_weight``
= 1) and ``get_frame_similarity`` (weight 0, still computed), each transposed and scaled by kappa at the end.
Written from reading that code, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from official.common import L, F, Case, Inputs, blocked_matrix, cached_states

BATCH_SIZE_VAL = 8
FRAME_MATCH_WEIGHT = 1.0


def _frame_softmax_score(sims: torch.Tensor, mask_un: torch.Tensor, kappa) -> torch.Tensor:
    """The frame-level part both official scores share: sims [b, F, a] -> kappa * [a, b]."""
    w = sims * mask_un
    w = w / w.norm(dim=1, keepdim=True)
    w = w.masked_fill_(~mask_un, -1e18)
    w = torch.softmax(4 * w, dim=1)
    return kappa * (w * sims).sum(dim=1).T


def official_block(method, sentence, selected, video_mask) -> torch.Tensor:
    """One ``get_final_similarity`` call: sentence [a, D] raw, selected tokens [b, F(K+1), D], mask [b, F]."""
    b, n_tok, _ = selected.shape
    k1 = n_tok // video_mask.shape[1]
    token_mask = video_mask.unsqueeze(1).repeat(1, 1, k1).view(b, -1)  # tiled, as the official
    z = method.temporal(selected, token_mask)  # re-run for every (text block, video block)
    idx = torch.arange(0, n_tok, k1, dtype=torch.long)
    z, frame_mask = z[:, idx, :], token_mask[:, idx]
    kappa = method.backbone.logit_scale()
    seq = sentence.unsqueeze(1)
    seq = seq / seq.norm(dim=-1, keepdim=True)  # [a, 1, D]
    vis = z / z.norm(dim=-1, keepdim=True)  # [b, F, D]
    mask_un = frame_mask.to(dtype=torch.bool).unsqueeze(-1)  # [b, F, 1]
    # get_frame_selectedcls_similarity: a per-frame softmax over the singleton text-token axis first
    s = torch.einsum("mjk,nlk->mjln", vis, seq)  # [b, F, 1, a]
    s = (torch.softmax(4 * nnf.normalize(s, dim=2), dim=2) * s).sum(dim=2)
    semantic = _frame_softmax_score(s, mask_un, kappa)
    # get_frame_similarity (weight 1 - frame_match_weight = 0, computed all the same)
    plain = _frame_softmax_score(torch.einsum("mjk,nlk->mjn", vis, seq), mask_un, kappa)
    return FRAME_MATCH_WEIGHT * semantic + (1 - FRAME_MATCH_WEIGHT) * plain


def official_matrix(method, x: Inputs, bs: int = BATCH_SIZE_VAL) -> torch.Tensor:
    return blocked_matrix(
        lambda t, v: official_block(method, x.sentence[t], x.frames[v], x.video_mask[v]), x.n, bs)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("ts2net")
    return cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()


def case(backbone, x: Inputs) -> Case:
    m = build(backbone)

    states = cached_states(m, backbone, video_stage="video_from_selected")

    return Case(
        name="ts2net", n=x.n, official_block=BATCH_SIZE_VAL, method=m, inputs=x,
        official_matrix=lambda inp, _prepared: official_matrix(m, inp),
        official_block_fn=lambda inp, b: official_block(m, inp.sentence[:b], inp.frames[:b], inp.video_mask[:b]),
        tvr_states=states,
        notes="official re-runs seqTransf on 4F tokens per (text, video) block of 8")
