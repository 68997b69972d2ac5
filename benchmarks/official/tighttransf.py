"""CLIP4Clip tightTransf, official formulation (ArrowLuo/CLIP4Clip: ``main_task_retrieval.py``
``_run_on_single_gpu``, ``modules/modeling.py`` ``_cross_similarity`` / ``_get_cross_output``,
``modules/module_cross.py`` ``CrossModel``, ``CrossEmbeddings``, ``CrossPooler``).

Reproduced: the [EOT] features and the raw CLIP frame features are cached, then ``get_similarity_logits`` ->
``_cross_similarity`` runs for every (text block, video block) of ``batch_size_val`` = 16 (the README's
commands). Each call builds every pair of the block explicitly (``repeat`` of the text rows over the videos
and of the video block over the texts: [a*b, 1, D] and [a*b, F, D] copies), forces the text mask to ones,
concatenates [text; frames] with the mask, adds the position embeddings 0..F, runs the 4 residual attention
blocks through ``nn.MultiheadAttention`` with a [a*b*heads, S, S] additive mask (-1e6 on padded keys,
``repeat_interleave`` over heads), applies the pooler's LayerNorm to **every** token before taking the first,
then dense -> QuickGELU -> ``similarity_dense``. One layout difference: the blocks here are the backbone's
batch-first copies, so the official LND permutes are not done (they are copies the official pays on top).
Written from reading that code, not copied.
"""

from __future__ import annotations

import torch

from official.common import L, F, Case, Inputs, blocked_matrix, cached_states

BATCH_SIZE_VAL = 16


def official_block(method, sentence: torch.Tensor, frames: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """One ``_cross_similarity`` call: sentence [a, D], frames [b, F, D] (raw) -> [a, b] scores."""
    cross = method.cross
    a, b = sentence.shape[0], frames.shape[0]
    text_l = sentence.unsqueeze(1).unsqueeze(1).repeat(1, b, 1, 1).view(a * b, 1, -1)
    text_mask_l = torch.ones(a, 1, dtype=video_mask.dtype).unsqueeze(1).repeat(1, b, 1).view(a * b, 1)
    vis_r = frames.unsqueeze(0).repeat(a, 1, 1, 1).view(a * b, frames.shape[1], -1)
    mask_r = video_mask.unsqueeze(0).repeat(a, 1, 1).view(a * b, -1)
    x = torch.cat((text_l, vis_r), dim=1)
    mask = torch.cat((text_mask_l, mask_r), dim=1)
    s = x.shape[1]
    x = cross.dropout(x + cross.position_embeddings.weight[:s].unsqueeze(0))
    extended = ((1.0 - mask.unsqueeze(1).to(x.dtype)) * -1000000.0).expand(-1, s, -1)
    attn_mask = extended.repeat_interleave(cross.n_head, dim=0)
    for block in cross.blocks:
        x = block(x, attn_mask=attn_mask)
    pooled = cross.pool_dense(cross.ln_pool(x)[:, 0])  # CrossPooler: LayerNorm on all tokens, then the first
    pooled = pooled * torch.sigmoid(1.702 * pooled)  # QuickGELU
    return cross.similarity_dense(pooled).squeeze(-1).view(a, b)


def official_matrix(method, x: Inputs, bs: int = BATCH_SIZE_VAL) -> torch.Tensor:
    return blocked_matrix(
        lambda t, v: official_block(method, x.sentence[t], x.frames[v], x.video_mask[v]), x.n, bs)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("tighttransf")
    return cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()


def case(backbone, x: Inputs) -> Case:
    m = build(backbone)

    states = cached_states(m, backbone)

    return Case(
        name="tighttransf", n=x.n, official_block=BATCH_SIZE_VAL, method=m, inputs=x, flop_block=16,
        official_matrix=lambda inp, _prepared: official_matrix(m, inp),
        official_block_fn=lambda inp, b: official_block(m, inp.sentence[:b], inp.frames[:b], inp.video_mask[:b]),
        tvr_states=states,
        notes="a 4-layer cross encoder per pair on both sides (official: blocks of 16 x 16 pairs)")
