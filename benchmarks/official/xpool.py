"""X-Pool, official formulation (layer6ai-labs/xpool: ``trainer/trainer.py`` ``_valid_epoch_step``,
``modules/transformer.py``, ``modules/metrics.py``).

Reproduced: after every caption and video of the test set is encoded (the frames as raw CLIP features; the
loader repeats the last sampled frame instead of padding, so the cached frames here have their padded slots
filled with the last valid frame, as tvr-bench's default ``padding="repeat_last"`` does), the trainer calls
``pool_frames(text_embeds, vid_embeds)`` **once on the whole test set** (no blocks): the shared LayerNorm on
texts and frames, q / k / v projections laid out [heads, head_dim, texts] and [videos, heads, frames, head_dim],
attention logits [videos, heads, frames, texts] with the softmax over frames, the pooled values
[videos, heads, head_dim, texts] permuted to [videos, texts, D], then out_proj, LayerNorm 2, the residual
linear_proj (dropout off in eval) and LayerNorm 3 on that [videos, texts, D] tensor. ``sim_matrix_inference``
then normalises both sides and takes one batched product per text. With one caption per video its
per-video-id regrouping is the identity, so the port skips it. The official scores are cosines (no logit
scale); tvr-bench's are kappa times them. Written from reading that code, not copied.
"""

from __future__ import annotations

import math

import torch

from official.common import L, F, Case, Inputs, unit, cached_states


def official_matrix(method, sentence: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """[N_t, D] texts, [N_v, F, D] frames -> [N_t, N_v] cosines, all pairs in one call."""
    p = method.pool
    n_t, d = sentence.shape
    n_v, n_f, _ = frames.shape
    h = p.num_heads
    dh = d // h
    t, v = p.layer_norm1(sentence), p.layer_norm1(frames)
    q = p.q_proj(t).reshape(n_t, h, dh).permute(1, 2, 0)  # [H, dh, N_t]
    k = p.k_proj(v).reshape(n_v, n_f, h, dh).permute(0, 2, 1, 3)  # [N_v, H, F, dh]
    val = p.v_proj(v).reshape(n_v, n_f, h, dh).permute(0, 2, 3, 1)  # [N_v, H, dh, F]
    weights = torch.softmax((k @ q) / math.sqrt(dh), dim=2)  # [N_v, H, F, N_t]
    pooled = (val @ weights).permute(0, 3, 1, 2).reshape(n_v, n_t, d)  # [N_v, N_t, D]
    o = p.layer_norm2(p.out_proj(pooled))
    o = p.layer_norm3(o + p.dropout(p.linear_proj(o)))
    t_hat, o_hat = unit(sentence), unit(o)
    return torch.bmm(t_hat.unsqueeze(1), o_hat.permute(1, 2, 0)).squeeze(1)  # [N_t, N_v]


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("xpool")
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # identity projections and unit LayerNorms would hide layout bugs
        for p in m.pool.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


def case(backbone, x: Inputs) -> Case:
    from tvr_bench.methods.xpool import fill_padding_with_last_valid

    m = build(backbone)
    filled = fill_padding_with_last_valid(x.frames, x.video_mask)  # what the official loader would have fed

    states = cached_states(m, backbone)

    return Case(
        name="xpool", n=x.n, official_block=x.n, official_flop_block=64, method=m, inputs=x,
        official_matrix=lambda inp, _prepared: official_matrix(m, inp.sentence, filled[: inp.n]),
        official_block_fn=lambda inp, b: official_matrix(m, inp.sentence[:b], filled[:b]),
        tvr_states=states, official_scale=float(m.backbone.logit_scale().detach()),
        notes="official pools the whole test set in one call ([N_v, N_t, D] tensors)")
