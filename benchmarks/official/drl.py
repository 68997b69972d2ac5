"""DRL, official formulation (foolwood/DRL: ``main.py`` ``eval_epoch`` / ``_run_on_single_gpu``,
``tvr/models/modeling.py`` ``get_video_feat``, ``agg_video_feat``, ``wti_interaction``).

Reproduced: ``eval_epoch`` encodes the videos in ``batch_size_val`` = 128 batches, each through the seqTransf
aggregation (``get_video_feat``: once per video), and keeps the unnormalised word features and both masks;
``_run_on_single_gpu`` splits all of them into ``mini_batch`` = 32 blocks and calls ``get_similarity_logits`` ->
``wti_interaction`` for every (text block, video block). Each call re-runs both weight MLPs (``text_weight_fc``
on the block's words, ``video_weight_fc`` on its frames) with the -inf mask fill and softmax, normalises both
sides again, builds the [a, b, L, F] token similarities with one einsum, multiplies the text mask and then the
video mask in with two more einsums (each a full copy), takes the max over frames and over words and weights
them (``wti``, arch 2). The official eval returns the scores without the logit scale; tvr-bench's are kappa
times them. Written from reading that code, not copied.
"""

from __future__ import annotations

import torch

from official.common import L, F, Case, Inputs, unit, blocked_matrix, cached_states

BATCH_SIZE_VAL = 128  # the video-encoding batch of eval_epoch
MINI_BATCH = 32  # _run_on_single_gpu's scoring block


def _weights(mlp, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mlp(feats).squeeze(2)
    w.masked_fill_((1 - mask).to(torch.bool), float("-inf"))
    return torch.softmax(w, dim=-1)


def official_block(method, words, text_mask, video_feat, video_mask) -> torch.Tensor:
    """One ``wti_interaction`` call in eval: words [a, L, D] (raw), seqTransf outputs [b, F, D] (raw)."""
    text_weight = _weights(method.text_weight_fc, words, text_mask)
    video_weight = _weights(method.video_weight_fc, video_feat, video_mask)
    t, v = unit(words), unit(video_feat)
    logits = torch.einsum("atd,bvd->abtv", t, v)
    logits = torch.einsum("abtv,at->abtv", logits, text_mask.to(logits.dtype))
    logits = torch.einsum("abtv,bv->abtv", logits, video_mask.to(logits.dtype))
    t2v = torch.einsum("abt,at->ab", logits.max(dim=-1).values, text_weight)
    v2t = torch.einsum("abv,bv->ab", logits.max(dim=-2).values, video_weight)
    return (t2v + v2t) / 2.0


def official_video_feats(method, frames: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([method.temporal(frames[s: s + BATCH_SIZE_VAL], video_mask[s: s + BATCH_SIZE_VAL])
                      for s in range(0, frames.shape[0], BATCH_SIZE_VAL)])


def official_matrix(method, x: Inputs, video_feat: torch.Tensor, bs: int = MINI_BATCH) -> torch.Tensor:
    return blocked_matrix(
        lambda t, v: official_block(method, x.words[t], x.text_mask[t], video_feat[v], x.video_mask[v]), x.n, bs)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("drl")
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # N(0, 0.02) weight MLPs give near-uniform weights; spread them
        for mlp in (m.text_weight_fc, m.video_weight_fc):
            for p in mlp.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def case(backbone, x: Inputs) -> Case:
    m = build(backbone)

    states = cached_states(m, backbone)

    def block_fn(inp: Inputs, b: int):
        # the per-block work only: the seqTransf features are computed once per video, before the blocks
        return official_block(m, inp.words[:b], inp.text_mask[:b], block_video[:b], inp.video_mask[:b])

    with torch.no_grad():
        block_video = official_video_feats(m, x.frames[:MINI_BATCH], x.video_mask[:MINI_BATCH])
    return Case(
        name="drl", n=x.n, official_block=MINI_BATCH, method=m, inputs=x, flop_block=x.n,
        official_prepare=lambda inp: official_video_feats(m, inp.frames, inp.video_mask),
        official_matrix=lambda inp, feats: official_matrix(m, inp, feats), official_block_fn=block_fn,
        tvr_states=states, official_scale=float(m.backbone.logit_scale().detach()),
        # counted on a whole block: the length grouping's saving depends on the captions of the block
        notes="official re-runs both weight MLPs per block of 32; seqTransf once per video on both sides")
