"""Parameter-free text-conditioned pooling (methods.md §7) against a loop transcription on random tensors.

The reference uses Python loops over texts, videos, frames and feature dimensions with float arithmetic only;
it shares no code path with the method. It is written from the GLSCL global branch (zchoi/GLSCL
``tvr/models/modeling.py`` ``similarity``): weights softmax_f(<t, z_f>/T), the video mask multiplied after the
softmax (no renormalisation), cosine of the raw text feature with the weighted sum.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

D = 64  # tvr-tiny embed dim
NT, NV, F, L = 3, 4, 6, 4
MODES = ("after_softmax", "none", "before_softmax")


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def reference_textpool(t, Z, mask, kappa, T=3.0, normalize=False, mask_mode="after_softmax"):
    """t [NT][D], Z [NV][F][D], mask [NV][F] as lists -> kappa * cos(t_i, sum_f a_f z_jf)."""
    nt, nv, nf, d = len(t), len(Z), len(Z[0]), len(t[0])
    S = [[0.0] * nv for _ in range(nt)]
    for i in range(nt):
        q = unit(t[i]) if normalize else t[i]
        for j in range(nv):
            frames = [unit(Z[j][f]) if normalize else Z[j][f] for f in range(nf)]
            keep = [f for f in range(nf) if mask_mode != "before_softmax" or mask[j][f]]
            logits = {f: sum(q[c] * frames[f][c] for c in range(d)) / T for f in keep}
            m = max(logits.values())
            e = {f: math.exp(x - m) for f, x in logits.items()}
            s = sum(e.values())
            a = {f: e[f] / s for f in keep}
            if mask_mode == "after_softmax":  # GLSCL: weights times the mask, not renormalised
                a = {f: a[f] * mask[j][f] for f in keep}
            v = [sum(a[f] * frames[f][c] for f in keep) for c in range(d)]
            dot = sum(x * y for x, y in zip(t[i], v))
            S[i][j] = kappa * dot / (math.sqrt(sum(x * x for x in t[i])) * math.sqrt(sum(y * y for y in v)))
    return torch.tensor(S, dtype=torch.float64)


def inputs(seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    t = scale * torch.randn(NT, D, generator=g, dtype=torch.float64)
    Z = scale * torch.randn(NV, F, D, generator=g, dtype=torch.float64)
    mask = torch.ones(NV, F, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return t, Z, mask


def method_scores(method, t, Z, mask):
    method.backbone.encode_text_tokens = lambda tokens: (t, None)  # the text tower is not under test here
    text = method.encode_text(torch.zeros(t.shape[0], L, dtype=torch.long), torch.ones(t.shape[0], L))
    return method.score_with_parts(text, method.video_from_frames(Z, mask))


@pytest.fixture
def backbone(tiny_backbone):
    bb = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        bb.clip.logit_scale.fill_(math.log(20.0))
    return bb


@pytest.fixture(scope="module")
def vit_b32():
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)
    return build_backbone("ViT-B-32")


# ---- 1. scores against the loop transcription; Gram-matrix rewrite -------------------------------------

@pytest.mark.parametrize("normalize,T", [(False, 3.0), (True, 0.01), (False, 5.0)])
@pytest.mark.parametrize("mask_mode", MODES)
@pytest.mark.parametrize("gram", [False, True])
def test_scores_match_loop_transcription_on_raw_frames(backbone, make_method, normalize, T, mask_mode, gram):
    m = make_method("textpool", backbone, max_frames=F, max_words=L, temporal_layers=0, normalize=normalize,
                    temperature=T, mask_mode=mask_mode, gram_trick=gram).double()
    t, Z, mask = inputs(1)
    with torch.no_grad():
        logits, parts = method_scores(m, t, Z, mask)
    kappa = m.backbone.logit_scale().item()
    ref = reference_textpool(t.tolist(), Z.tolist(), mask.tolist(), kappa, T, normalize, mask_mode)
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)
    assert parts == {} and m.extra_losses(logits, parts) == {}


@pytest.mark.parametrize("gram", [False, True])
def test_default_glscl_branch_pools_seqtransf_features(backbone, make_method, gram):
    """Defaults: seqTransf Z~ (shared module, tested in test_two_tower_spec), raw features, T = 3, mask after."""
    m = make_method("textpool", backbone, max_frames=F, max_words=L, gram_trick=gram).double()
    assert m.options["temperature"] == 3.0 and m.options["mask_mode"] == "after_softmax"
    assert m.options["normalize"] is False and m.options["gram_trick"] is gram
    t, Z, mask = inputs(2)
    with torch.no_grad():
        logits, _ = method_scores(m, t, Z, mask)
        zt = m.temporal(Z, mask)
    ref = reference_textpool(t.tolist(), zt.tolist(), mask.tolist(), m.backbone.logit_scale().item())
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mask_mode", MODES)
def test_gram_trick_equals_direct_path(backbone, make_method, normalize, mask_mode):
    t, Z, mask = inputs(3, scale=1.0)
    out = {}
    for gram in (False, True):
        m = make_method("textpool", backbone, max_frames=F, max_words=L, normalize=normalize,
                        mask_mode=mask_mode, gram_trick=gram).double()
        with torch.no_grad():
            out[gram], _ = method_scores(m, t, Z, mask)
    torch.testing.assert_close(out[True], out[False], rtol=1e-10, atol=1e-10)


# ---- 2. parameters ---------------------------------------------------------------------------------------

def test_param_count_at_vit_b32(vit_b32, make_method):
    from tvr_bench.bench.cost import param_counts
    from tvr_bench.methods.textpool import TextConditionedPooling

    m = make_method("textpool", vit_b32, max_frames=12, max_words=32)
    assert param_counts(m)["head"] == 12_648_960 == TextConditionedPooling.info.extra_params
    assert sum(p.numel() for p in m.new_parameters()) == 12_648_960  # the pooling itself has none
    raw = make_method("textpool", vit_b32, max_frames=12, max_words=32, temporal_layers=0)
    assert param_counts(raw)["head"] == 0 and raw.new_parameters() == []


# ---- 3. FLOPs --------------------------------------------------------------------------------------------

def textpool_pair_flops(F: int, D: int, gram: bool = False) -> int:
    """Matmul FLOPs (2 x MAC) per (text, video) pair of ``score``.

    Direct (as written): logits F*D + weighted sum F*D + cosine D            = 2FD + D MACs.
    Gram trick:          logits F*D + a.dots F + G a F^2 + a.(G a) F         = FD + F^2 + 2F MACs.
    """
    if gram:
        return 2 * (F * D + F * F + 2 * F)
    return 2 * (2 * F * D + D)


@pytest.mark.parametrize("Fr,gram", [(6, False), (9, True)])
def test_scoring_flops_match_formula_and_scale_linearly(tiny_backbone, make_method, Fr, gram):
    from tvr_bench.bench.cost import count_flops, dummy_tokens, flop_profile
    from tvr_bench.bench.api.state import slice_state

    m = make_method("textpool", tiny_backbone, max_frames=Fr, max_words=L, gram_trick=gram)
    prof = flop_profile(m, max_words=L, max_frames=Fr, gallery_size=10, block=(4, 8))
    assert prof["score_per_pair"] == textpool_pair_flops(Fr, D, gram)
    tok, tm = dummy_tokens(8, L, tiny_backbone.tokenizer.eot_token_id)
    with torch.no_grad():
        text = m.encode_text(tok, tm)
        video = m.video_from_frames(torch.randn(8, Fr, D), torch.ones(8, Fr, dtype=torch.long))
    for bt, bv in [(1, 1), (2, 5), (8, 8)]:
        t_blk, v_blk = slice_state(text, slice(0, bt)), slice_state(video, slice(0, bv))
        assert count_flops(lambda: m.score(t_blk, v_blk)) == bt * bv * prof["score_per_pair"]
    if gram:  # G = Z Z^T is built offline, once per video
        direct = make_method("textpool", tiny_backbone, max_frames=Fr, max_words=L, gram_trick=False)
        z1, m1 = torch.randn(1, Fr, D), torch.ones(1, Fr, dtype=torch.long)
        extra = count_flops(lambda: m.video_from_frames(z1, m1)) - count_flops(lambda: direct.video_from_frames(z1, m1))
        assert extra == 2 * Fr * Fr * D


def test_pair_flops_at_msrvtt_shapes(vit_b32, make_method):
    """At D=512, F=12: 12,800 MACs per pair as written (12.8 G per 1k x 1k, published.md §6.4) and 6,312 with
    the Gram trick (published: ~6.3 G)."""
    from tvr_bench.bench.cost import count_flops, dummy_tokens

    tok, tm = dummy_tokens(2, 32, vit_b32.tokenizer.eot_token_id)
    for gram, macs in ((False, 12_800), (True, 6_312)):
        m = make_method("textpool", vit_b32, max_frames=12, max_words=32, gram_trick=gram, temporal_layers=0)
        with torch.no_grad():
            text = m.encode_text(tok, tm)
            video = m.video_from_frames(torch.randn(3, 12, 512), torch.ones(3, 12, dtype=torch.long))
        assert count_flops(lambda: m.score(text, video)) / 6 == textpool_pair_flops(12, 512, gram) == 2 * macs


# ---- 4. masking and training path ------------------------------------------------------------------------

def test_masking_behaviour(backbone, make_method):
    """after_softmax (official GLSCL) drops padded frames' weights without renormalising; the cosine is
    scale-invariant, so it scores like -inf masking; "none" lets padded slots in."""
    t, Z, mask = inputs(4)
    Z2 = Z.clone()
    Z2[1, 4:] = 30 * torch.randn_like(Z2[1, 4:])
    Z2[3, 2:] = 30 * torch.randn_like(Z2[3, 2:])
    s = {}
    for mode in MODES:
        m = make_method("textpool", backbone, max_frames=F, max_words=L, temporal_layers=0, mask_mode=mode).double()
        with torch.no_grad():
            s[mode], _ = method_scores(m, t, Z, mask)
            other, _ = method_scores(m, t, Z2, mask)
        if mode == "none":
            assert not torch.allclose(s[mode], other)
        else:
            torch.testing.assert_close(s[mode], other, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s["after_softmax"], s["before_softmax"], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(s["none"], s["after_softmax"])
    # the masked weights themselves are not renormalised
    m = make_method("textpool", backbone, max_frames=F, max_words=L, temporal_layers=0).double()
    a = m._weights(torch.einsum("td,vfd->tvf", t, Z), mask)
    assert (a.sum(-1)[:, 3] < 1 - 1e-6).all() and torch.allclose(a.sum(-1)[:, 0], torch.ones(NT, dtype=torch.float64))
    # and a masked video scores like its unpadded frames alone
    with torch.no_grad():
        alone, _ = method_scores(m, t, Z[3:4, :2], torch.ones(1, 2, dtype=torch.long))
    torch.testing.assert_close(s["after_softmax"][:, 3:4], alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gram", [False, True])
def test_training_path_gives_finite_gradients(backbone, make_method, gram):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("textpool", backbone, max_frames=F, max_words=L, gram_trick=gram).train()
    g = torch.Generator().manual_seed(6)
    t, Z = torch.randn(NV, D, generator=g), torch.randn(NV, F, D, generator=g)
    mask = torch.ones(NV, F, dtype=torch.long)
    mask[0, 3:] = 0
    logits, parts = method_scores(m, t, Z, mask)
    loss = symmetric_infonce(logits) + sum(m.extra_losses(logits, parts).values(), torch.tensor(0.0))
    loss.backward()
    grads = {n: p.grad for n, p in m.temporal.named_parameters()}
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads.values())
    assert all(gr.abs().sum() > 0 for n, gr in grads.items() if "blocks" in n)


def test_official_recipe_is_glscl_scripts():
    from tvr_bench.bench.config import HARNESS_DEFAULTS, deep_merge
    from tvr_bench.methods.textpool import TextConditionedPooling as TP

    base = deep_merge(HARNESS_DEFAULTS, {})
    base["method"] = TP.default_options()
    for ds, (frames, words, batch) in {"msrvtt": (12, 32, 128), "didemo": (64, 64, 32)}.items():
        cfg = deep_merge(base, TP.info.official[ds], strict=True)
        data, train = cfg["data"], cfg["train"]
        assert (data["max_frames"], data["max_words"], train["batch_size"]) == (frames, words, batch)
        assert cfg["train"]["epochs"] == 5 and cfg["method"]["temperature"] == 3.0


@pytest.mark.parametrize("gram", [False, True])
def test_after_softmax_underflow_guard(backbone, make_method, gram):
    """A padded slot whose logit beats every valid one by > ~87 underflows all valid fp32 weights: the literal
    GLSCL expression is then 0/0; the guard returns the exact-arithmetic value (float64 loop reference)."""
    t, Z, mask = inputs(5)
    t, Z = t.float(), Z.float()
    Z[3, 4] = 100.0 * t[0] / t[0].norm()  # padded slot of video 3 (mask[3, 2:] = 0): logit gap ~240 for text 0
    m = make_method("textpool", backbone, max_frames=F, max_words=L, temporal_layers=0, gram_trick=gram,
                    temperature=1.0)
    literal = torch.softmax(torch.einsum("d,fd->f", t[0], Z[3]), dim=-1) * mask[3]
    assert literal.sum() == 0  # the official weights vanish: NaN in the official code
    with torch.no_grad():
        got, _ = method_scores(m, t, Z, mask)
    kappa = m.backbone.logit_scale().item()
    ref = reference_textpool(t.double().tolist(), Z.double().tolist(), mask.tolist(), kappa, T=1.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
