"""The vision-tower hooks (methods/_vision_hooks.py): token shift against a loop transcription of the official
``PatchShiftModule`` (yuqi657/ts2_net ``modules/until_module.py``), placement at the attention input, per-token
outputs after ln_post + projection, and no trace left on the shared backbone."""

from __future__ import annotations

import copy

import pytest
import torch

from tvr_bench.methods._vision_hooks import encode_frame_tokens, shift_positions, token_shift, token_shift_hooks


def loop_shift(x: torch.Tensor, n_frames: int, n_div: int) -> torch.Tensor:
    """Per token: source frame f-1 at positions 1 + i*fold (f >= 1), f+1 at 4 + i*fold (f <= F-2; wins)."""
    n, t, _ = x.shape
    fold = t // n_div
    left, right = set(range(1, t, fold)), set(range(4, t, fold))
    out = torch.empty_like(x)
    for b in range(n // n_frames):
        for f in range(n_frames):
            for p in range(t):
                src = f
                if p in left and f >= 1:
                    src = f - 1
                if p in right and f <= n_frames - 2:
                    src = f + 1
                out[b * n_frames + f, p] = x[b * n_frames + src, p]
    return out


def test_shift_positions_at_vit_b32():
    left, right = shift_positions(50, 7)  # CLS + 7x7 patches, fold 7
    assert left.tolist() == [1, 8, 15, 22, 29, 36, 43]
    assert right.tolist() == [4, 11, 18, 25, 32, 39, 46]
    with pytest.raises(ValueError):
        shift_positions(6, 7)


@pytest.mark.parametrize("t,f", [(50, 12), (17, 4), (17, 1), (10, 3)])
def test_token_shift_matches_loop(t, f):
    g = torch.Generator().manual_seed(t + f)
    x = torch.randn(2 * f, t, 8, generator=g)
    got = token_shift(x, f, 7)
    torch.testing.assert_close(got, loop_shift(x, f, 7), rtol=0, atol=0)
    # whole tokens move and CLS never does
    assert torch.equal(got[:, 0], x[:, 0])
    if f > 1 and t == 50:
        assert torch.equal(got[1, 1], x[0, 1]) and torch.equal(got[0, 4], x[1, 4]) and torch.equal(got[0, 1], x[0, 1])
        assert torch.equal(got[f - 1, 4], x[f - 1, 4]) and torch.equal(got[3, 2], x[3, 2])


def _frames(b=2, f=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, 3, size, size, generator=g)


def _manual_tokens(visual, frames, shift_layers, shift_residual=False):
    """The ViT written out block by block; the last blocks do x + attn(shift(ln_1(x))) (or shift x itself)."""
    b, f = frames.shape[:2]
    x = visual.conv1(frames.reshape(b * f, *frames.shape[2:]))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)
    blocks = list(visual.transformer.resblocks)
    for i, blk in enumerate(blocks):
        if i < len(blocks) - shift_layers:
            x = blk(x)
            continue
        if shift_residual:
            x = blk(loop_shift(x, f, 7))
            continue
        h = loop_shift(blk.ln_1(x), f, 7)
        x = x + blk.ls_1(blk.attn(h, h, h, need_weights=False)[0])
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    x = visual.ln_post(x)
    return (x @ visual.proj).reshape(b, f, x.shape[1], -1)


def test_no_shift_reproduces_encode_frames_and_projected_tokens(tiny_backbone):
    frames = _frames()
    with torch.no_grad():
        tokens = encode_frame_tokens(tiny_backbone, frames, shift_layers=0)
        assert tokens.shape == (2, 4, 17, tiny_backbone.embed_dim)  # CLS + 4x4 patches, projected to D
        assert torch.equal(tokens[:, :, 0], tiny_backbone.encode_frames(frames))  # exactly the CLS feature
        torch.testing.assert_close(tokens, _manual_tokens(tiny_backbone.clip.visual, frames, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift_layers", [1, 2])
def test_shift_is_applied_to_the_attention_input_of_the_last_blocks(tiny_backbone, shift_layers):
    frames = _frames(seed=1)
    visual = tiny_backbone.clip.visual
    with torch.no_grad():
        got = encode_frame_tokens(tiny_backbone, frames, shift_layers=shift_layers)
        ref = _manual_tokens(visual, frames, shift_layers)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        # the placement matters: shifting the residual stream (a pre-hook on the whole block) differs
        assert not torch.allclose(got, _manual_tokens(visual, frames, shift_layers, shift_residual=True), atol=1e-4)
        assert not torch.allclose(got, encode_frame_tokens(tiny_backbone, frames), atol=1e-4)


def test_videos_do_not_mix_and_hooks_leave_no_trace(tiny_backbone):
    visual = tiny_backbone.clip.visual
    frames = _frames(seed=2)
    with torch.no_grad():
        before = tiny_backbone.encode_frames(frames)
        a = encode_frame_tokens(tiny_backbone, frames, shift_layers=2)
        other = frames.clone()
        other[1] = torch.randn_like(other[1])
        b = encode_frame_tokens(tiny_backbone, other, shift_layers=2)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # video 0 unaffected by video 1's frames
        assert all(len(blk.attn._forward_pre_hooks) == 0 for blk in visual.transformer.resblocks)
        assert visual.output_tokens is False
        assert torch.equal(tiny_backbone.encode_frames(frames), before)
        # hooks are removed when the wrapped forward fails, too
        with pytest.raises(RuntimeError):
            with token_shift_hooks(visual, 4, 2, 7):
                raise RuntimeError("boom")
        assert all(len(blk.attn._forward_pre_hooks) == 0 for blk in visual.transformer.resblocks)


def test_bad_arguments(tiny_backbone):
    with pytest.raises(ValueError, match="shift_layers"):
        encode_frame_tokens(tiny_backbone, _frames(), shift_layers=3)  # the tiny tower has 2 blocks
    with pytest.raises(ValueError, match="multiple"):
        token_shift(torch.zeros(5, 17, 4), 4, 7)
    bb = copy.deepcopy(tiny_backbone)
    bb.clip.visual.pool_type = "avg"
    with pytest.raises(ValueError, match="pool_type"):
        encode_frame_tokens(bb, _frames())
