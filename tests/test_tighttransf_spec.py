"""CLIP4Clip tightTransf against a loop transcription of the official cross encoder (methods.md §6;
ArrowLuo/CLIP4Clip ``modules/module_cross.py`` ``CrossModel`` and ``modeling.py`` ``_cross_similarity``).

The reference runs one (text, video) pair at a time, one token and one head at a time, with vector arithmetic
(mat-vec products, scalar softmax): nothing is shared with the method's batched path.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

D = 64  # tvr-tiny embed dim
NT, NV, F = 3, 4, 5


# ---- loop transcription ------------------------------------------------------------------------------

def layernorm(x, ln, eps=1e-12):
    """TF-style LayerNorm of module_cross (epsilon 1e-12 inside the square root)."""
    mu = float(x.sum()) / x.shape[0]
    var = float(((x - mu) ** 2).sum()) / x.shape[0]
    return (x - mu) / math.sqrt(var + eps) * ln.weight.detach() + ln.bias.detach()


def activation(x, module):
    """The blocks' own MLP activation, elementwise on one token's hidden vector."""
    if isinstance(module, nn.GELU):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    return x / (1 + torch.exp(-1.702 * x))  # QuickGELU


def block_forward(tokens, valid, blk, n_head):
    d = tokens[0].shape[0]
    hd = d // n_head
    Wqkv, bqkv = blk.attn.in_proj_weight.detach(), blk.attn.in_proj_bias.detach()
    h = [layernorm(x, blk.ln_1) for x in tokens]
    q = [Wqkv[:d] @ x + bqkv[:d] for x in h]
    k = [Wqkv[d:2 * d] @ x + bqkv[d:2 * d] for x in h]
    v = [Wqkv[2 * d:] @ x + bqkv[2 * d:] for x in h]
    out = []
    for s in range(len(tokens)):
        heads = []
        for head in range(n_head):
            sl = slice(head * hd, (head + 1) * hd)
            logits = [float(q[s][sl] @ k[j][sl]) / math.sqrt(hd) + (0.0 if valid[j] else -1e6)
                      for j in range(len(tokens))]
            m = max(logits)
            e = [math.exp(x - m) for x in logits]
            a = [x / sum(e) for x in e]
            heads.append(sum(a[j] * v[j][sl] for j in range(len(tokens))))
        attn = blk.attn.out_proj.weight.detach() @ torch.cat(heads) + blk.attn.out_proj.bias.detach()
        out.append(tokens[s] + attn)
    result = []
    for x in out:
        hidden = activation(blk.mlp.c_fc.weight.detach() @ layernorm(x, blk.ln_2) + blk.mlp.c_fc.bias.detach(),
                            blk.mlp.gelu)
        result.append(x + blk.mlp.c_proj.weight.detach() @ hidden + blk.mlp.c_proj.bias.detach())
    return result


def reference_pair(t, Zj, vmask_j, cross):
    """Score of one pair: [t; z_1..z_F] + positions -> blocks -> LN -> first token -> dense -> QuickGELU -> 1."""
    pos = cross.position_embeddings.weight.detach()
    tokens = [t + pos[0]] + [Zj[f] + pos[f + 1] for f in range(Zj.shape[0])]
    valid = [True] + [bool(m) for m in vmask_j]
    for blk in cross.blocks:
        tokens = block_forward(tokens, valid, blk, cross.n_head)
    h0 = layernorm(tokens[0], cross.ln_pool)
    pooled = cross.pool_dense.weight.detach() @ h0 + cross.pool_dense.bias.detach()
    pooled = pooled / (1 + torch.exp(-1.702 * pooled))  # QuickGELU
    return float(cross.similarity_dense.weight.detach()[0] @ pooled + cross.similarity_dense.bias.detach()[0])


def reference_scores(t, Z, vmask, cross):
    return torch.tensor([[reference_pair(t[i], Z[j], vmask[j], cross) for j in range(Z.shape[0])]
                         for i in range(t.shape[0])], dtype=torch.float64)


def reference_infonce(S):
    B = len(S)
    t2v = -sum(math.log(math.exp(S[i][i]) / sum(math.exp(S[i][j]) for j in range(B))) for i in range(B)) / B
    v2t = -sum(math.log(math.exp(S[j][j]) / sum(math.exp(S[i][j]) for i in range(B))) for j in range(B)) / B
    return 0.5 * (t2v + v2t)


# ---- helpers ------------------------------------------------------------------------------------------

def _randomise(cross, scale=0.3):
    """Non-trivial values everywhere a wrong index would hide (LayerNorm gains, positions, pooler, head)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for mod in [cross.ln_pool, *[ln for b in cross.blocks for ln in (b.ln_1, b.ln_2)]]:
            mod.weight.copy_(1 + scale * torch.randn(mod.weight.shape, generator=g, dtype=mod.weight.dtype))
            mod.bias.copy_(scale * torch.randn(mod.bias.shape, generator=g, dtype=mod.bias.dtype))
        for p in [cross.position_embeddings.weight, *cross.pool_dense.parameters(),
                  *cross.similarity_dense.parameters()]:
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(seed, nt=NT, nv=NV):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(nt, D, generator=g, dtype=torch.float64)
    Z = torch.randn(nv, F, D, generator=g, dtype=torch.float64)
    vmask = torch.ones(nv, F, dtype=torch.long)
    vmask[1, 3:] = 0
    vmask[-1, 1:] = 0
    return t, Z, vmask


def _states(m, t, Z, vmask):
    m.backbone.encode_text_tokens = lambda tokens: (t, None)  # the text tower is not under test
    text = m.encode_text(torch.zeros(t.shape[0], 4, dtype=torch.long), torch.ones(t.shape[0], 4))
    return text, m.video_from_frames(Z, vmask)


@pytest.fixture
def tight(tiny_backbone, make_method):
    m = make_method("tighttransf", copy.deepcopy(tiny_backbone), max_frames=F, max_words=4, pair_chunk=5).double()
    _randomise(m.cross)
    return m


# ---- 1. scores against the loop transcription -----------------------------------------------------------

def test_scores_match_loop_transcription_and_ignore_kappa(tight):
    t, Z, vmask = _inputs(0)
    text, video = _states(tight, t, Z, vmask)
    with torch.no_grad():
        got = tight.score(text, video)  # 12 pairs in sub-chunks of 5
        ref = reference_scores(t, Z, vmask.tolist(), tight.cross)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
        # the sub-chunk size changes nothing; the official tight score has no logit scale
        tight.options["pair_chunk"] = 4096
        torch.testing.assert_close(tight.score(text, video), got, rtol=1e-12, atol=1e-12)
        tight.backbone.clip.logit_scale.fill_(math.log(77.0))
        torch.testing.assert_close(tight.score(text, video), got, rtol=1e-12, atol=1e-12)


def test_cross_encoder_structure_matches_official(tiny_backbone):
    """No token-type embeddings and no embedding LayerNorm (commented out upstream); TF-style eps 1e-12."""
    from tvr_bench.methods._crossencoder import CrossEncoder

    bb = tiny_backbone
    cross = CrossEncoder(bb)
    names = {n for n, _ in cross.named_parameters()}
    assert not any("token_type" in n for n in names)
    assert all(b.ln_1.eps == b.ln_2.eps == 1e-12 for b in cross.blocks) and cross.ln_pool.eps == 1e-12
    assert bb.text_blocks()[0].ln_1.eps == 1e-5  # the backbone's own blocks are untouched (deep copies)
    torch.testing.assert_close(cross.position_embeddings.weight, bb.clip.positional_embedding)
    torch.testing.assert_close(cross.blocks[3].attn.in_proj_weight, bb.text_blocks()[3].attn.in_proj_weight)
    assert cross.dropout.p == 0.1


# ---- 4. masking and the training path --------------------------------------------------------------------

def test_padded_frames_are_masked_keys(tight):
    t, Z, vmask = _inputs(1)
    text, video = _states(tight, t, Z, vmask)
    with torch.no_grad():
        base = tight.score(text, video)
        Z2 = Z.clone()
        Z2[vmask == 0] = 30 * torch.randn_like(Z2[vmask == 0])
        torch.testing.assert_close(tight.score(*_states(tight, t, Z2, vmask)), base, rtol=1e-12, atol=1e-12)
        # a padded video scores as its valid prefix alone
        short = tight.video_from_frames(Z[1:2, :3], torch.ones(1, 3, dtype=torch.long))
        torch.testing.assert_close(tight.score(text, short)[:, 0], base[:, 1], rtol=1e-12, atol=1e-12)


def test_training_loss_groups_and_gradients(tiny_backbone, make_method):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("tighttransf", copy.deepcopy(tiny_backbone), max_frames=F, max_words=4,
                    embedding_dropout=0.0, train_loss_groups=2).double()
    _randomise(m.cross)
    t, Z, vmask = _inputs(2, nt=4, nv=4)
    text, video = _states(m, t, Z, vmask)
    with torch.no_grad():
        full = m.score(text, video)  # eval: every pair
    m.train()
    logits, parts = m.score_with_parts(text, video)
    assert parts == {} and m.extra_losses(logits, parts) == {}
    off = torch.tensor([[i // 2 != j // 2 for j in range(4)] for i in range(4)])
    assert torch.isinf(logits[off]).all() and (logits[off] < 0).all()
    torch.testing.assert_close(logits[~off], full[~off], rtol=1e-12, atol=1e-12)
    # = the mean of the per-GPU (per-group) symmetric losses of the official multi-GPU run
    S = full.tolist()
    groups = [reference_infonce([row[0:2] for row in S[0:2]]), reference_infonce([row[2:4] for row in S[2:4]])]
    loss = symmetric_infonce(logits)
    assert loss.item() == pytest.approx(sum(groups) / 2, rel=1e-10)
    loss.backward()
    for name, p in m.named_parameters():
        if not name.startswith("backbone."):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.backbone.clip.logit_scale.grad is None  # no logit scale in the tight path


def test_full_pipeline_with_dropout_trains(tiny_backbone, make_method):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("tighttransf", copy.deepcopy(tiny_backbone), max_frames=F, max_words=4).train()
    size = tiny_backbone.spec.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, F, 3, size, size, generator=g)
    vmask = torch.ones(3, F, dtype=torch.long)
    vmask[2, 2:] = 0
    tokens = torch.tensor([[49406, 320, 49407, 0], [49406, 321, 322, 49407], [49406, 49407, 0, 0]])
    logits, _ = m.score_with_parts(m.encode_text(tokens, (tokens > 0).long()), m.encode_video(frames, vmask))
    symmetric_infonce(logits).backward()
    assert torch.isfinite(logits).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.cross.parameters())


# ---- 2. parameters, 3. FLOPs ----------------------------------------------------------------------------

def tight_pair_flops(F: int, D: int, layers: int = 4, mlp: int | None = None) -> int:
    """Per pair, S = 1 + F tokens: per layer QKV 3SD^2 + out-proj SD^2 + MLP 2SD*M + scores and weighted sum
    2S^2D (M = MLP width, 4D); pooler D^2; similarity head D. FLOPs = 2 x MACs."""
    S, M = 1 + F, 4 * D if mlp is None else mlp
    per_layer = 4 * S * D * D + 2 * S * D * M + 2 * S * S * D
    return 2 * (layers * per_layer + D * D + D)


def tight_reuse_pair_flops(F: int, D: int, layers: int = 4, mlp: int | None = None) -> int:
    """The default reusing path: the first block without its QKV (per token, cached per query / video), the
    last block for the first token only (its K and V still for all S tokens)."""
    S, M = 1 + F, 4 * D if mlp is None else mlp
    per_layer = 4 * S * D * D + 2 * S * D * M + 2 * S * S * D
    first = S * D * D + 2 * S * D * M + 2 * S * S * D
    last_kv = 0 if layers == 1 else 2 * S * D * D + D * D  # cached too when the first block is the last
    last = last_kv + 2 * S * D + D * D + 2 * D * M
    body = last if layers == 1 else first + (layers - 2) * per_layer + last
    return 2 * (body + D * D + D)


def test_flops_match_formula_and_scale_linearly(tiny_backbone, make_method):
    from tvr_bench.bench.cost import flop_profile

    F_ = 3
    m = make_method("tighttransf", tiny_backbone, max_frames=F_, max_words=4, pair_chunk=5,
                    pair_scoring="as_written")
    p = flop_profile(m, max_words=4, max_frames=F_, gallery_size=10, block=(4, 8))  # 32 pairs, 7 sub-chunks
    assert p["score_per_pair"] == tight_pair_flops(F_, D)
    for block in [(1, 1), (3, 5)]:
        assert flop_profile(m, max_words=4, max_frames=F_, gallery_size=10, block=block)["score_per_pair"] == \
            p["score_per_pair"]
    # nothing but the position embedding (0 FLOPs) is added on either side
    meanp = flop_profile(make_method("meanp", tiny_backbone, max_frames=F_, max_words=4), max_words=4,
                         max_frames=F_, gallery_size=10)
    assert p["text_per_query"] == meanp["text_per_query"] and p["video_per_video"] == meanp["video_per_video"]


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_reusing_path_is_exact_and_its_flops_match_the_formula(tiny_backbone, make_method, layers):
    """The default pair_scoring="reuse" equals the as-written encoder (fp64, padded videos) and costs what
    ``tight_reuse_pair_flops`` says, per pair at any block; its per-query / per-video QKV is counted there."""
    from tvr_bench.bench.cost import flop_profile

    t, Z, vmask = _inputs(2)
    out, profile = {}, {}
    for scoring in ("reuse", "as_written"):
        kw = dict(max_frames=F, max_words=4, pair_chunk=5, cross_layers=layers, pair_scoring=scoring)
        m = make_method("tighttransf", copy.deepcopy(tiny_backbone), **kw).double()
        _randomise(m.cross)
        with torch.no_grad():
            out[scoring] = m.score(*_states(m, t, Z, vmask))
        profile[scoring] = flop_profile(make_method("tighttransf", tiny_backbone, **kw), max_words=4, max_frames=F,
                                        gallery_size=10, block=(3, 4))
    torch.testing.assert_close(out["reuse"], out["as_written"], rtol=1e-10, atol=1e-10)
    assert profile["reuse"]["score_per_pair"] == tight_reuse_pair_flops(F, D, layers)
    qkv = 2 * 3 * D * D  # the first block's projections of one token
    assert profile["reuse"]["text_per_query"] == profile["as_written"]["text_per_query"] + qkv
    assert profile["reuse"]["video_per_video"] == profile["as_written"]["video_per_video"] + F * qkv


def test_param_count_and_pair_flops_at_vit_b32(make_method):
    """12,913,153 = positions 77x512 + 4 CLIP blocks + pooler LN and Linear(512,512) + Linear(512,1)."""
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.cost import count_flops, param_counts
    from tvr_bench.methods.tighttransf import TightTransf

    bb = build_backbone("ViT-B-32")
    m = make_method("tighttransf", bb, max_frames=12, max_words=32)
    c = m.cross
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(c.position_embeddings) == 77 * 512 == 39_424
    assert count(c.blocks) == 4 * 3_152_384
    assert count(c.ln_pool) == 1_024 and count(c.pool_dense) == 262_656 and count(c.similarity_dense) == 513
    assert param_counts(m)["head"] == TightTransf.info.extra_params == 12_913_153
    # counted per pair at MSR-VTT shapes (cached states, 2 x 3 block) = the formula = 164.53 M MACs
    text = {"text_token": torch.randn(2, 512)}
    video = {"frame_tokens": torch.randn(3, 12, 512), "video_mask": torch.ones(3, 12, dtype=torch.long)}
    flops = count_flops(lambda: m.score(text, video)) / 6
    assert flops == tight_pair_flops(12, 512) == 2 * 164_532_736


def test_paper_scale_matrix_cost_matches_methods_md():
    """methods.md §6 / published.md §6.4: ~164 T-MACs for the 1k x 1k MSR-VTT matrix."""
    macs_1k = tight_pair_flops(12, 512) // 2 * 1000 * 1000
    assert abs(macs_1k / 164e12 - 1) < 0.01
