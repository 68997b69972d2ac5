"""meanP and seqTransf against loop transcriptions of CLIP4Clip's loose similarity (methods.md §3, §5)."""

from __future__ import annotations


import torch


def _norm(v):
    return v / v.norm()


def reference_loose(t, Z, mask, kappa):
    """For each (text i, video j): normalise frames, mean over valid frames, normalise, cosine x kappa."""
    nt, nv = t.shape[0], Z.shape[0]
    S = torch.zeros(nt, nv, dtype=torch.float64)
    for j in range(nv):
        valid = [_norm(Z[j, f]) for f in range(Z.shape[1]) if mask[j, f]]
        v = _norm(sum(valid) / len(valid))
        for i in range(nt):
            S[i, j] = kappa * float(_norm(t[i]) @ v)
    return S


def reference_seqtransf(Z, mask, temporal):
    """Z~ = blocks(Z + P[:F]) + Z with an additive -1e6 on padded keys, one video at a time."""
    out = []
    for j in range(Z.shape[0]):
        x = Z[j] + temporal.frame_position_embeddings.weight[: Z.shape[1]]
        key_bias = torch.tensor([0.0 if m else -1e6 for m in mask[j]], dtype=Z.dtype)
        attn = key_bias.expand(Z.shape[1], -1).repeat(temporal.n_head, 1, 1)
        h = x[None]
        for block in temporal.blocks:
            h = block(h, attn_mask=attn)
        out.append(h[0] + Z[j])
    return torch.stack(out)


def _inputs(D, nt=3, nv=4, F=5):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(nt, D, generator=g, dtype=torch.float64)
    Z = torch.randn(nv, F, D, generator=g, dtype=torch.float64)
    mask = torch.ones(nv, F, dtype=torch.long)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    return t, Z, mask


def _scores(method, t, Z, mask):
    method.backbone.encode_text_tokens = lambda tokens: (t, None)
    text = method.encode_text(torch.zeros(t.shape[0], 4, dtype=torch.long), torch.ones(t.shape[0], 4))
    return method.score(text, method.video_from_frames(Z, mask))


def test_meanp_matches_loop(tiny_backbone, make_method):
    import copy

    m = make_method("meanp", copy.deepcopy(tiny_backbone), max_frames=5, max_words=4).double()
    t, Z, mask = _inputs(tiny_backbone.embed_dim)
    kappa = m.backbone.logit_scale().item()
    torch.testing.assert_close(_scores(m, t, Z, mask), reference_loose(t, Z, mask, kappa), rtol=1e-10, atol=1e-10)


def test_seqtransf_matches_loop_and_padded_frames_are_ignored(tiny_backbone, make_method):
    import copy

    m = make_method("seqtransf", copy.deepcopy(tiny_backbone), max_frames=5, max_words=4).double()
    t, Z, mask = _inputs(tiny_backbone.embed_dim)
    kappa = m.backbone.logit_scale().item()
    with torch.no_grad():
        zt = reference_seqtransf(Z, mask, m.temporal)
        got = _scores(m, t, Z, mask)
    torch.testing.assert_close(got, reference_loose(t, zt, mask, kappa), rtol=1e-8, atol=1e-8)
    # valid frames' outputs do not depend on what sits in padded slots (-1e6 key mask, then masked mean)
    Z2 = Z.clone()
    Z2[2, 1:] = 50 * torch.randn_like(Z2[2, 1:])
    with torch.no_grad():
        torch.testing.assert_close(_scores(m, t, Z2, mask)[:, 2], got[:, 2], rtol=1e-8, atol=1e-8)
    assert sum(p.numel() for p in m.temporal.parameters()) == sum(
        p.numel() for p in m.parameters()) - sum(p.numel() for p in m.backbone.parameters())


def test_seqtransf_blocks_use_clip4clip_layernorm_eps_and_leave_the_backbone_alone(tiny_backbone, make_method):
    """CLIP4Clip's seqTransf is module_cross's Transformer (TF-style LayerNorm, eps 1e-12), initialised from CLIP."""
    m = make_method("seqtransf", tiny_backbone, max_frames=4, max_words=8)
    assert all(b.ln_1.eps == b.ln_2.eps == 1e-12 for b in m.temporal.blocks)
    assert all(b.ln_1.eps == 1e-5 for b in tiny_backbone.text_blocks())  # the deep copy leaves CLIP's own blocks
