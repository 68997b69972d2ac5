"""TS2-Net against a direct, loop-based transcription of the released code (yuqi657/ts2_net: ``modules/modeling.py``,
``modules/differential_topk.py``; methods.md §10) on random tensors.

The references loop over videos, frames, tokens, noise samples, texts and frames with vector arithmetic, sharing
no batching code with the method (the seqTransf blocks themselves are CLIP blocks, run one video at a time).
The token shift has its own loop transcription in tests/test_vision_hooks.py.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tvr_bench.bench.cost import count_flops, flop_profile, param_counts

D = 64  # tvr-tiny embed dim
F, T, K = 6, 17, 3  # frames, tokens per frame (CLS + 4x4 patches), selected patches
NT, NV = 3, 4


# ---- loop transcriptions ---------------------------------------------------------------------------------

def gelu(v):
    return torch.tensor([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in v.tolist()], dtype=v.dtype)


def layer_norm(v, w, b, eps):
    mu = sum(float(x) for x in v) / len(v)
    var = sum((float(x) - mu) ** 2 for x in v) / len(v)
    return (v - mu) / math.sqrt(var + eps) * w + b


def ref_predictor(pred, X):
    """PredictorLG on one frame's tokens X [T, D] -> list of T scores."""
    ln, w1 = pred.in_conv[0], pred.in_conv[1].weight
    w2, w3 = pred.out_conv[0].weight, pred.out_conv[2].weight[0]
    h = [gelu(w1 @ layer_norm(X[p], ln.weight, ln.bias, ln.eps)) for p in range(X.shape[0])]
    return [math.tanh(float(w3 @ gelu(w2 @ torch.cat([h[p], h[0]])))) for p in range(X.shape[0])]


def ref_topk(scores, noise, k, sigma):
    """Perturbed top-k for one row: indicator[j][p] and E[j][p] = mean(one_hot * noise) / sigma."""
    n_s, d = noise.shape
    ind = [[0.0] * d for _ in range(k)]
    grad_e = [[0.0] * d for _ in range(k)]
    for s in range(n_s):
        pert = [scores[p] + sigma * float(noise[s, p]) for p in range(d)]
        chosen = sorted(sorted(range(d), key=lambda p: -pert[p])[:k])  # top k, then ordered by position
        for j, p in enumerate(chosen):
            ind[j][p] += 1.0 / n_s
            grad_e[j][p] += float(noise[s, p]) / n_s / sigma
    return ind, grad_e


def ref_hard_topk(scores, k):
    d = len(scores)
    chosen = sorted(sorted(range(d), key=lambda p: -scores[p])[:k])
    return [[1.0 if p == c else 0.0 for p in range(d)] for c in chosen]


def ref_video(method, tokens, mask, noise=None):
    """tokens [B, F, T, D], mask [B, F] -> (z_hat [B, F, D], frame mask [B, F]) as modeling.py computes them."""
    sel_mod, temporal = method.visual_token_selector, method.temporal
    b_n, f_n, t_n, _ = tokens.shape
    k1 = K + 1
    z_out, m_out = [], []
    for b in range(b_n):
        seq = []
        for f in range(f_n):
            X = tokens[b, f]
            sc = ref_predictor(sel_mod.score_predictor, X)[1:]
            if noise is None:
                ind = ref_hard_topk(sc, K)
            else:
                ind, _ = ref_topk(sc, noise[b * f_n + f], K, sel_mod.sigma)
            seq.append(X[0])
            for j in range(K):
                seq.append(sum(ind[j][p] * X[1 + p] for p in range(t_n - 1)))
        n = len(seq)
        # official: video_mask.unsqueeze(1).repeat(1, 1, K+1).view(B, -1): token p gets frame (p mod F)'s flag
        tmask = [int(mask[b, p % f_n]) for p in range(n)]
        x = torch.stack(seq) + temporal.frame_position_embeddings.weight[:n]
        key_bias = torch.tensor([0.0 if m else -1e6 for m in tmask], dtype=x.dtype)
        h = x[None]
        for block in temporal.blocks:
            h = block(h, attn_mask=key_bias.expand(n, -1).repeat(temporal.n_head, 1, 1))
        out = h[0] + torch.stack(seq)
        z_out.append(torch.stack([out[f * k1] / out[f * k1].norm() for f in range(f_n)]))
        m_out.append([tmask[f * k1] for f in range(f_n)])
    return torch.stack(z_out), torch.tensor(m_out)


def ref_score(t, Z, m, kappa, scale=4.0):
    """s_f = cos(t, z_f); w = s*m / ||s*m||; padded -> -1e18; kappa * sum_f softmax(scale*w)_f s_f."""
    S = torch.zeros(t.shape[0], Z.shape[0], dtype=torch.float64)
    m = m.tolist()
    for i in range(t.shape[0]):
        ti = t[i] / t[i].norm()
        for j in range(Z.shape[0]):
            s = [float(ti @ (Z[j, f] / Z[j, f].norm())) for f in range(Z.shape[1])]
            nrm = math.sqrt(sum((s[f] * m[j][f]) ** 2 for f in range(len(s))))
            w = [scale * s[f] / nrm if m[j][f] else -1e18 for f in range(len(s))]
            mx = max(w)
            e = [math.exp(x - mx) for x in w]
            S[i, j] = kappa * sum(e[f] / sum(e) * s[f] for f in range(len(s)))
    return S


# ---- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture
def ts2(tiny_backbone, make_method):
    bb = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        bb.clip.logit_scale.fill_(math.log(20.0))
    m = make_method("ts2net", bb, max_frames=F, max_words=5).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # non-trivial LayerNorm and larger weights so that selection depends on the tokens
        for p in m.visual_token_selector.parameters():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _tokens(seed=0, b=NV):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, F, T, D, generator=g, dtype=torch.float64)


def _mask():
    mask = torch.ones(NV, F, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return mask


# ---- tests -------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_predictor_matches_loop(ts2):
    X = _tokens(1)[0]  # [F, T, D]: frames as rows
    got = ts2.visual_token_selector.score_predictor(X)
    for f in range(F):
        torch.testing.assert_close(got[f], torch.tensor(ref_predictor(ts2.visual_token_selector.score_predictor, X[f]),
                                                        dtype=torch.float64), rtol=1e-10, atol=1e-10)


def test_perturbed_topk_forward_and_backward_match_loop():
    from tvr_bench.methods.ts2net import hard_topk, perturbed_topk

    g = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 16, generator=g, dtype=torch.float64).tanh().requires_grad_()
    noise = torch.randn(5, 200, 16, generator=g, dtype=torch.float64)
    out = perturbed_topk(scores, 3, 200, 0.05, noise=noise)
    upstream = torch.randn(5, 3, 16, generator=g, dtype=torch.float64)
    (out * upstream).sum().backward()
    for n in range(5):
        ind, e = ref_topk(scores[n].tolist(), noise[n], 3, 0.05)
        torch.testing.assert_close(out[n].detach(), torch.tensor(ind, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        grad = [sum(float(upstream[n, j, p]) * e[j][p] for j in range(3)) for p in range(16)]
        torch.testing.assert_close(scores.grad[n], torch.tensor(grad, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert torch.allclose(out.sum(-1), torch.ones(5, 3, dtype=torch.float64))  # each slot is a distribution
    hard = hard_topk(scores.detach(), 3)
    for n in range(5):
        assert hard[n].tolist() == ref_hard_topk(scores[n].tolist(), 3)


def test_video_side_matches_loop_with_the_official_tiled_mask(ts2):
    tokens, mask = _tokens(2), _mask()
    ts2.train()  # perturbed selection with 500 samples; the same noise is drawn for the reference
    torch.manual_seed(11)
    with torch.no_grad():
        got = ts2.video_from_tokens(tokens, mask)
    torch.manual_seed(11)
    noise = torch.randn(NV * F, 500, T - 1, dtype=torch.float64)
    with torch.no_grad():
        z, m = ref_video(ts2, tokens, mask, noise)
    torch.testing.assert_close(got["frames_hat"], z, rtol=1e-8, atol=1e-8)
    assert torch.equal(got["frame_mask"], m)
    # the tiled mask: frame f takes frame (4f mod 6)'s flag, so video 1 ([1,1,1,1,0,0]) scores frames 0,2,3,5
    assert got["frame_mask"][1].tolist() == [1, 0, 1, 1, 0, 1]
    assert got["frame_mask"][2].tolist() == [1, 0, 0, 1, 0, 0]


def test_hard_eval_option_and_official_noisy_eval(ts2):
    tokens, mask = _tokens(3, b=2), _mask()[:2]
    ts2.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        a = ts2.video_from_tokens(tokens, mask)["frames_hat"]
        torch.manual_seed(1)
        b = ts2.video_from_tokens(tokens, mask)["frames_hat"]
        assert not torch.allclose(a, b)  # official: the perturbed selector also runs at evaluation
        ts2.options["eval_topk"] = "hard"
        torch.manual_seed(0)
        c = ts2.video_from_tokens(tokens, mask)["frames_hat"]
        torch.manual_seed(1)
        torch.testing.assert_close(c, ts2.video_from_tokens(tokens, mask)["frames_hat"], rtol=0, atol=0)
        torch.testing.assert_close(c, ref_video(ts2, tokens, mask)[0], rtol=1e-8, atol=1e-8)
        ts2.train()  # training always uses the perturbed selector
        torch.manual_seed(1)
        assert not torch.allclose(ts2.video_from_tokens(tokens, mask)["frames_hat"], c)


@pytest.mark.parametrize("seed", [0, 1])
def test_score_matches_loop(ts2, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(NT, D, generator=g, dtype=torch.float64)
    Z = torch.randn(NV, F, D, generator=g, dtype=torch.float64)
    m = _mask()
    ts2.backbone.encode_text_tokens = lambda tokens: (t, None)
    text = ts2.encode_text(torch.zeros(NT, 5, dtype=torch.long), torch.ones(NT, 5))
    video = {"frames_hat": Z / Z.norm(dim=-1, keepdim=True), "frame_mask": m}
    logits, parts = ts2.score_with_parts(text, video)
    kappa = ts2.backbone.logit_scale().item()
    assert kappa == pytest.approx(20.0)
    torch.testing.assert_close(logits, ref_score(t, Z, m, kappa), rtol=1e-10, atol=1e-10)
    assert parts == {} and ts2.extra_losses(logits, parts) == {}
    # frames masked out do not count, whatever they hold
    Z2 = Z.clone()
    Z2[1, 4:] = torch.randn(2, D, generator=g, dtype=torch.float64)
    video2 = {"frames_hat": Z2 / Z2.norm(dim=-1, keepdim=True), "frame_mask": m}
    torch.testing.assert_close(ts2.score(text, video2), logits, rtol=1e-12, atol=1e-12)


def test_fixed_token_mask_option_ignores_padded_frames(ts2):
    tokens, mask = _tokens(4), _mask()
    ts2.eval()
    ts2.options.update(eval_topk="hard", fix_token_mask=True)
    with torch.no_grad():
        out = ts2.video_from_tokens(tokens, mask)
        assert torch.equal(out["frame_mask"], mask)
        other = tokens.clone()
        other[1, 4:] = 50 * torch.randn(2, T, D, dtype=torch.float64)
        out2 = ts2.video_from_tokens(other, mask)
        torch.testing.assert_close(out2["frames_hat"][1, :4], out["frames_hat"][1, :4], rtol=1e-8, atol=1e-8)
        ts2.options["fix_token_mask"] = False  # official: padded frames leak into valid ones through the tiled mask
        a, b = ts2.video_from_tokens(tokens, mask), ts2.video_from_tokens(other, mask)
        assert not torch.allclose(a["frames_hat"][1, :4], b["frames_hat"][1, :4], atol=1e-6)


def test_encode_video_runs_the_shifted_tower_and_leaves_the_backbone_clean(tiny_backbone, make_method):
    from tvr_bench.methods._vision_hooks import encode_frame_tokens

    m = make_method("ts2net", tiny_backbone, max_frames=F, max_words=5)
    frames = torch.randn(2, F, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, F, dtype=torch.long)
    with torch.no_grad():
        before = tiny_backbone.encode_frames(frames)
        torch.manual_seed(3)
        got = m.encode_video(frames, mask)
        torch.manual_seed(3)
        ref = m.video_from_tokens(encode_frame_tokens(tiny_backbone, frames, shift_layers=2, shift_div=7), mask)
        torch.testing.assert_close(got["frames_hat"], ref["frames_hat"], rtol=0, atol=0)
        assert torch.equal(tiny_backbone.encode_frames(frames), before)
    assert all(len(b.attn._forward_pre_hooks) == 0 for b in tiny_backbone.clip.visual.transformer.resblocks)
    with pytest.raises(NotImplementedError):
        m.video_from_frames(before, mask)


def test_training_path_gives_finite_gradients(tiny_backbone, make_method):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("ts2net", copy.deepcopy(tiny_backbone), max_frames=F, max_words=5).train()
    bb = m.backbone
    g = torch.Generator().manual_seed(6)
    frames = torch.randn(3, F, 3, 32, 32, generator=g)
    vmask = torch.ones(3, F, dtype=torch.long)
    vmask[2, 3:] = 0
    tokens = torch.randint(1, 400, (3, 5), generator=g)
    tokens[:, -1] = bb.tokenizer.eot_token_id
    logits, parts = m.score_with_parts(m.encode_text(tokens, torch.ones(3, 5)), m.encode_video(frames, vmask))
    loss = symmetric_infonce(logits) + sum(m.extra_losses(logits, parts).values(), torch.zeros(()))
    loss.backward()
    for name, p in m.named_parameters():
        if name.startswith("backbone."):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    pred = m.visual_token_selector.score_predictor
    assert pred.in_conv[1].weight.grad.abs().sum() > 0  # through the perturbed top-k estimator
    assert pred.out_conv[2].weight.grad.abs().sum() > 0
    shifted = bb.clip.visual.transformer.resblocks[-1].attn.in_proj_weight.grad
    assert shifted is not None and torch.isfinite(shifted).all() and shifted.abs().sum() > 0


def test_position_table_limit_is_a_config_error(tiny_backbone, make_method):
    from tvr_bench.bench.errors import ConfigError

    make_method("ts2net", tiny_backbone, max_frames=8, max_words=5)  # 8 x 4 = 32 tokens: the whole table
    with pytest.raises(ConfigError, match="position"):
        make_method("ts2net", tiny_backbone, max_frames=9, max_words=5)
    with pytest.raises(ConfigError, match="eval_topk"):
        make_method("ts2net", tiny_backbone, eval_topk="soft")


# ---- cost --------------------------------------------------------------------------------------------------

def ts2net_pair_flops(F: int, D: int) -> int:
    """Per (text, video) pair: F cosines of D-vectors (the softmax re-weighting is element-wise): 2*F*D FLOPs."""
    return 2 * F * D


def selector_flops(n_frames: int, T: int, D: int, K: int) -> int:
    """Per frame: PredictorLG T*(D*D/2 + D*D/2 + D/2) MACs + selection K*(T-1)*D MACs; FLOPs = 2 x MACs."""
    return 2 * n_frames * (T * (D * D + D // 2) + K * (T - 1) * D)


def test_scoring_flops_match_formula_and_scale_linearly(tiny_backbone, make_method):
    m = make_method("ts2net", tiny_backbone, max_frames=F, max_words=5, topk_samples=20)
    p = flop_profile(m, max_words=5, max_frames=F, gallery_size=10, block=(4, 8))
    assert p["score_per_pair"] == ts2net_pair_flops(F, D)
    for block in [(1, 1), (3, 5)]:
        assert flop_profile(m, max_words=5, max_frames=F, gallery_size=10, block=block)["score_per_pair"] == \
            p["score_per_pair"]
    meanp = make_method("meanp", tiny_backbone, max_frames=F, max_words=5)
    assert p["text_per_query"] == flop_profile(meanp, max_words=5, max_frames=F, gallery_size=10)["text_per_query"]
    m4 = make_method("ts2net", tiny_backbone, max_frames=4, max_words=5, topk_samples=20)
    assert flop_profile(m4, max_words=5, max_frames=4, gallery_size=10, block=(2, 3))["score_per_pair"] == \
        ts2net_pair_flops(4, D)


def test_selector_flops_match_formula(ts2):
    x = _tokens(5)[0]
    for perturbed in (True, False):
        assert count_flops(lambda: ts2.visual_token_selector(x, perturbed=perturbed)) == selector_flops(F, T, D, K)


def test_msrvtt_pair_cost_equals_published_analytic():
    """published.md §6.4 / GLSCL Table I: 6.1 G MACs for the 1k x 1k MSR-VTT matrix (F=12, D=512)."""
    macs_1k = ts2net_pair_flops(12, 512) // 2 * 1000 * 1000
    assert macs_1k == 6_144_000_000


@pytest.fixture(scope="module")
def vit_b32():
    from tvr_bench.bench.backbone import build_backbone

    return build_backbone("ViT-B-32")


def test_param_counts_at_vit_b32(vit_b32, make_method):
    from tvr_bench.methods.ts2net import TS2Net

    m = make_method("ts2net", vit_b32, max_frames=12, max_words=32)
    counts = param_counts(m)
    selector = sum(p.numel() for p in m.visual_token_selector.parameters())
    assert selector == 2 * 512 + 512 * 256 + 512 * 256 + 256 == 263_424
    assert sum(p.numel() for p in m.temporal.parameters()) == 12_648_960
    assert counts["head"] == 12_648_960 + 263_424 == TS2Net.info.extra_params
    assert counts["total"] == 151_277_313 + counts["head"]
    # what the official model registers but never calls: TextTokenSelection + VideoPromptEncoder (ViT width 768)
    full = make_method("ts2net", vit_b32, max_frames=12, max_words=32, register_unused=True)
    unused = sum(p.numel() for p in full.unused.parameters())
    assert sum(p.numel() for p in full.unused.text_token_selector.parameters()) == 263_680
    assert unused == 263_680 + (3 * 768 * 32 * 32 + 4 * 768 + 2 * 768) == 263_680 + 2_363_904
    assert param_counts(full)["head"] == TS2Net.info.extra_params + unused
    # official init: PredictorLG linear weights N(0, 0.02)
    w = m.visual_token_selector.score_predictor.in_conv[1].weight
    assert 0.015 < w.std().item() < 0.025
