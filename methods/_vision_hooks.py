"""Hooks into open_clip's vision tower without forking it: TS2-Net's token shift and per-token outputs.

Both live only inside a context manager, so the shared backbone is untouched for every other caller:

- ``token_shift_hooks(visual, n_frames, n_layers, n_div)`` registers forward pre-hooks on the ``attn`` module
  (``nn.MultiheadAttention``) of the last ``n_layers`` blocks of ``visual.transformer.resblocks`` and removes
  them on exit. The hook shifts the attention *input*, i.e. ln_1(x), which feeds q, k and v; the residual
  stream is not shifted: x <- x + attn(shift(ln_1(x))), then the unchanged MLP. This is where the official
  ``PatchShiftModule`` sits (it replaces ``block.attn``, yuqi657/ts2_net ``modules/until_module.py``), so a
  pre-hook on the whole block (which would also shift the residual) would not be faithful.
- ``encode_frame_tokens(backbone, frames, ...)`` runs the tower with ``visual.output_tokens`` set for the call
  and returns every token after ln_post *and* the projection. In open_clip 3.3.0 (``pool_type='tok'``, no
  attentional pooler, ``final_ln_after_pool=False``, the CLIP ViTs) ``forward`` returns
  ``(ln_post(x)[:, 0] @ proj, ln_post(x)[:, 1:])``: the patch tokens come back post-ln_post but *unprojected*,
  so they are projected here. Token 0 is exactly what ``Backbone.encode_frames`` returns.

The shift (official ``PatchShiftModule.forward``, "left and right shift"), for a video of F frames with T
tokens per frame (T = 50 for ViT-B/32: CLS + 7x7 patches), fold = T // n_div (n_div = 7: fold 7):
- positions 1, 1+fold, 1+2*fold, ... < T (1, 8, 15, 22, 29, 36, 43): frame f >= 1 takes frame f-1's token at
  that position; frame 0 keeps its own;
- positions 4, 4+fold, ... < T (4, 11, 18, 25, 32, 39, 46): frame f <= F-2 takes frame f+1's token; the last
  frame keeps its own. Written after the first assignment, so it wins where the two sets overlap (they do in
  small towers, e.g. T = 17 -> fold 2);
- CLS (position 0) and all other positions are left alone; whole tokens move (every channel). Frames of
  different videos never mix; padded frame slots take part like any other frame (as in the official code).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

#: the right-shift positions start 3 after the left-shift ones (official ``start=1+3``)
RIGHT_SHIFT_OFFSET = 3


def shift_positions(n_tokens: int, n_div: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions taken from the previous frame, positions taken from the next frame)."""
    fold = n_tokens // n_div
    if fold < 1:
        raise ValueError(f"token shift needs at least n_div={n_div} tokens per frame, got {n_tokens}")
    return torch.arange(1, n_tokens, fold), torch.arange(1 + RIGHT_SHIFT_OFFSET, n_tokens, fold)


def token_shift(x: torch.Tensor, n_frames: int, n_div: int) -> torch.Tensor:
    """Shift whole tokens between neighbouring frames. x [B*F, T, W] batch-first, frames of a video contiguous."""
    n, t, w = x.shape
    if n % n_frames:
        raise ValueError(f"{n} frames in the batch are not a multiple of {n_frames} frames per video")
    left, right = (i.to(x.device) for i in shift_positions(t, n_div))
    v = x.reshape(n // n_frames, n_frames, t, w)
    out = v.clone()
    out[:, 1:, left] = v[:, :-1, left]  # f takes f-1
    out[:, :-1, right] = v[:, 1:, right]  # f takes f+1 (second, as in the official code)
    return out.reshape(n, t, w)


def _vision_blocks(visual: nn.Module) -> nn.ModuleList:
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(visual).__name__} is not an open_clip VisionTransformer (no transformer.resblocks)")
    return blocks


@contextlib.contextmanager
def token_shift_hooks(visual: nn.Module, n_frames: int, n_layers: int, n_div: int) -> Iterator[None]:
    """Token shift before attention in the last ``n_layers`` vision blocks, for the duration of the context."""
    blocks = _vision_blocks(visual)
    if not 0 <= n_layers <= len(blocks):
        raise ValueError(f"shift_layers={n_layers}, but the vision tower has {len(blocks)} blocks")
    handles = []

    def make_hook(batch_first: bool):
        def hook(module: nn.Module, args: tuple) -> tuple:
            q = args[0]
            xb = q if batch_first else q.transpose(0, 1)
            shifted = token_shift(xb, n_frames, n_div)
            shifted = shifted if batch_first else shifted.transpose(0, 1)
            # q, k and v are the same tensor (self-attention): the official module feeds (x, x, x)
            return tuple(shifted if a is q else a for a in args)

        return hook

    try:
        for block in list(blocks)[len(blocks) - n_layers:]:
            attn = block.attn
            handles.append(attn.register_forward_pre_hook(make_hook(getattr(attn, "batch_first", True))))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _output_tokens(visual: nn.Module) -> Iterator[None]:
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
            or getattr(visual, "final_ln_after_pool", False) or getattr(visual, "proj", None) is None:
        raise ValueError("per-token outputs need a CLS-pooled open_clip ViT with ln_post on all tokens and a "
                         "projection (pool_type='tok', no attentional pooler, final_ln_after_pool=False)")
    old = visual.output_tokens
    visual.output_tokens = True
    try:
        yield
    finally:
        visual.output_tokens = old


def encode_frame_tokens(backbone, frames: torch.Tensor, *, shift_layers: int = 0, shift_div: int = 7) -> torch.Tensor:
    """frames [B, F, 3, S, S] -> every token after ln_post and projection, [B, F, T, D] (fp32).

    Token 0 is the CLS feature ``Backbone.encode_frames`` returns; with ``shift_layers`` > 0 the last blocks
    run with the token shift (F = frames.shape[1]).
    """
    b, f = frames.shape[:2]
    visual = backbone.clip.visual
    with token_shift_hooks(visual, f, shift_layers, shift_div), _output_tokens(visual):
        pooled, patches = visual(frames.reshape(b * f, *frames.shape[2:]))
    tokens = torch.cat([pooled.unsqueeze(1), patches @ visual.proj], dim=1)
    return tokens.float().reshape(b, f, tokens.shape[1], -1)
