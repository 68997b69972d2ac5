"""FLOPs of a method, counted the same way for every method and every command (``bench run`` records and the
paper-scale ``bench efficiency`` study): ``torch.utils.flop_counter.FlopCounterMode``, FLOPs = 2·MAC, matmul-like
ops only (mm, bmm, addmm, baddbmm, convolution, attention; softmax, norms and element-wise ops count 0).

Query time = text encoding per query + gallery_size x scoring per (text, video) pair; video-side work per video
is offline and reported apart. Per-pair scoring is counted on a (texts x videos) block and divided by its size.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from tvr_bench.bench.api.state import State, tile_state

# torch 2.13's FlopCounterMode has no formula for the two attention ops CPU inference dispatches to, so it
# would count them as 0: ``_scaled_dot_product_flash_attention_for_cpu`` (QK^T and AV of every CLIP / seqTransf
# block) and ``_native_multi_head_attention`` (nn.MultiheadAttention's eval fast path: in-projection, attention
# and out-projection fused; the ViT image tower takes it, so a third of its FLOPs vanished). These are the
# standard matmul counts (2 x MAC), the ones torch registers for its CUDA attention kernels.


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None,
                      **kwargs) -> int:
    b, lq, e = query_shape  # the fast path is batch-first
    lk = key_shape[1]
    projections = 2 * b * (lq + 2 * lk) * e * e + 2 * b * lq * e * e  # q, k, v in-projection; out-projection
    attention = 2 * b * lq * lk * e * 2  # scores and the weighted sum (all heads together)
    return projections + attention


ATTENTION_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._native_multi_head_attention: _native_mha_flops,
}

FLOP_CONVENTION = ("torch.utils.flop_counter.FlopCounterMode, FLOPs = 2*MAC, matmul-like ops only "
                   "(softmax/norm/element-wise = 0), plus formulas for the CPU attention ops "
                   "aten._scaled_dot_product_flash_attention_for_cpu and aten._native_multi_head_attention "
                   "(uncounted by FlopCounterMode in torch 2.13); per_query = text_per_query + gallery_size * "
                   "score_per_pair; video_per_video is offline")


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS) as counter:
        with torch.no_grad():
            fn()
    return int(counter.get_total_flops())


def dummy_tokens(n: int, length: int, eot_id: int, vocab: int = 49408, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-length token rows ending in [EOT]: FLOPs depend only on shapes."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, min(vocab, eot_id) - 2, (n, length), generator=g)
    tokens[:, 0] = eot_id - 1  # [SOT]
    tokens[:, -1] = eot_id
    return tokens, torch.ones(n, length, dtype=torch.long)


def dummy_frames(n: int, frames: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, image_size, image_size, generator=g), torch.ones(n, frames, dtype=torch.long)


def _overrides_encode_video(method) -> bool:
    """True when the method runs its own video pass on pixels (e.g. it needs patch tokens), declared by
    ``MethodInfo.video_input``."""
    return getattr(method.info, "video_input", "frame_features") == "pixels"


@torch.no_grad()
def flop_profile(method, *, max_words: int, max_frames: int, gallery_size: int, block=(4, 8), device="cpu",
                 check_block: tuple[int, int] | None = None, video_states: State | None = None,
                 image_flops_per_frame: int | None = None, frame_features: torch.Tensor | None = None,
                 frame_mask: torch.Tensor | None = None) -> dict:
    """Counted FLOPs per query, per pair and per video: the one FLOP profiler of the project.

    By default everything is encoded from dummy inputs (what ``bench run`` records). The paper-scale study
    passes what it shares across methods: ``image_flops_per_frame`` (the image tower counted once on one frame;
    frames are encoded independently, so a video costs F times that plus the method's video head on
    ``frame_features``) and ``video_states`` (real encoded videos, tiled to the block). Per-pair work depends
    only on shapes, so both ways give the same numbers (tested). ``check_block`` counts a second block shape
    to show the count is linear in pairs.
    """
    device = torch.device(device)
    bb = method.backbone
    eot = bb.tokenizer.eot_token_id
    was = method.training
    method.eval()
    try:
        tok1, m1 = dummy_tokens(1, max_words, eot)
        text_q = count_flops(lambda: method.encode_text(tok1.to(device), m1.to(device)))
        head_v = None
        if image_flops_per_frame is None or _overrides_encode_video(method):
            fr1, vm1 = dummy_frames(1, max_frames, bb.spec.image_size)
            video_v = count_flops(lambda: method.encode_video(fr1.to(device), vm1.to(device)))
        else:
            head_v = count_flops(lambda: method.video_from_frames(frame_features[:1], frame_mask[:1]))
            video_v = max_frames * image_flops_per_frame + head_v

        def per_pair(bt: int, bv: int) -> float:
            if video_states is not None:
                tok, tm = dummy_tokens(min(bt, 2), max_words, eot, seed=1)
                text = tile_state(method.encode_text(tok.to(device), tm.to(device)), bt)
                video = tile_state(video_states, bv)
            else:
                tok, tm = dummy_tokens(bt, max_words, eot, seed=1)
                fr, vm = dummy_frames(bv, max_frames, bb.spec.image_size, seed=1)
                text = method.encode_text(tok.to(device), tm.to(device))
                video = method.encode_video(fr.to(device), vm.to(device))
            return count_flops(lambda: method.score(text, video)) / (bt * bv)

        pair = per_pair(*block)
        pair_check = per_pair(*check_block) if check_block else None
    finally:
        method.train(was)
    out = {
        "text_per_query": text_q,
        "score_per_pair": pair,
        "per_query": text_q + gallery_size * pair,
        "video_per_video": video_v,
        "gallery_size": gallery_size,
        "block": list(block),
        "convention": FLOP_CONVENTION,
    }
    official = method.official_pair_flops(gallery_size)
    if official is not None:  # the official code's formulation, analytic; score_per_pair is this code's count
        out["official_score_per_pair"] = float(official)
    if image_flops_per_frame is not None:
        out.update(image_tower_per_frame=image_flops_per_frame, video_head_per_video=head_v)
    if check_block:
        import math

        out.update(check_block=list(check_block), score_per_pair_check_block=pair_check,
                   linear_in_pairs=math.isclose(pair, pair_check, rel_tol=1e-9, abs_tol=1e-9))
    return out
