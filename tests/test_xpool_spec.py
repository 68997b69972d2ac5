"""X-Pool against a loop transcription of docs/methods.md §8 / the official modules/transformer.py.

The reference below works on Python lists of floats with explicit loops over texts, videos, heads, frames and
feature dimensions (LayerNorm, linear layers, softmax written out by hand), sharing no code path with the
method. Every learned tensor is replaced by random non-identity values first so a transposed weight, a wrong
head split or a LayerNorm applied in the wrong place shows.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

D = 64  # tvr-tiny embed dim
NT, NV, F, L = 3, 4, 5, 4


# ---- loop transcription ---------------------------------------------------------------------------------

def layer_norm(x, w, b, eps=1e-5):
    n = len(x)
    mu = sum(x) / n
    var = sum((v - mu) ** 2 for v in x) / n  # biased, as nn.LayerNorm
    return [(x[i] - mu) / math.sqrt(var + eps) * w[i] + b[i] for i in range(n)]


def linear(x, W, b):
    """y[i] = sum_j W[i][j] x[j] + b[i] (nn.Linear convention, W is [out][in])."""
    return [sum(W[i][j] * x[j] for j in range(len(x))) + b[i] for i in range(len(W))]


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def reference_xpool(t, Z, mask, P, kappa, heads=1, padding="repeat_last"):
    """t [NT][D], Z [NV][F][D], mask [NV][F] (lists); P: parameter lists by official name. Eval mode."""
    nt, nv, nf, d = len(t), len(Z), len(Z[0]), len(t[0])
    dh = d // heads
    S = [[0.0] * nv for _ in range(nt)]
    for j in range(nv):
        frames = [list(Z[j][f]) for f in range(nf)]
        if padding == "repeat_last":  # official loader: short videos repeat their last sampled frame
            for f in range(nf):
                if not mask[j][f] and f > 0:
                    frames[f] = frames[f - 1]
        keep = [f for f in range(nf) if padding != "mask" or mask[j][f]]
        zn = [layer_norm(frames[f], P["ln1_w"], P["ln1_b"]) for f in range(nf)]
        K = [linear(zn[f], P["k_w"], P["k_b"]) for f in range(nf)]
        V = [linear(zn[f], P["v_w"], P["v_b"]) for f in range(nf)]
        for i in range(nt):
            q = linear(layer_norm(t[i], P["ln1_w"], P["ln1_b"]), P["q_w"], P["q_b"])
            o = [0.0] * d
            for h in range(heads):
                dims = range(h * dh, (h + 1) * dh)
                logits = [sum(q[c] * K[f][c] for c in dims) / math.sqrt(dh) for f in keep]
                a = softmax(logits)
                for c in dims:
                    o[c] = sum(a[k] * V[f][c] for k, f in enumerate(keep))
            r = layer_norm(linear(o, P["o_w"], P["o_b"]), P["ln2_w"], P["ln2_b"])
            lin = linear(r, P["p_w"], P["p_b"])
            out = layer_norm([r[c] + lin[c] for c in range(d)], P["ln3_w"], P["ln3_b"])  # dropout off in eval
            S[i][j] = kappa * cosine(t[i], out)  # raw text feature, not LN1(t)
    return torch.tensor(S, dtype=torch.float64)


# ---- helpers --------------------------------------------------------------------------------------------

NAMES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o", "linear_proj": "p",
         "layer_norm1": "ln1", "layer_norm2": "ln2", "layer_norm3": "ln3"}


def perturb(method, seed=3):
    """Random, non-identity values for every learned tensor of the pooling; returns them as lists."""
    g = torch.Generator().manual_seed(seed)
    P = {}
    with torch.no_grad():
        for mod_name, short in NAMES.items():
            mod = getattr(method.pool, mod_name)
            if short.startswith("ln"):
                mod.weight.copy_(1.0 + 0.3 * torch.randn(mod.weight.shape, generator=g))
            else:
                mod.weight.add_(0.3 * torch.randn(mod.weight.shape, generator=g))
            mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
            P[f"{short}_w"] = mod.weight.detach().double().tolist()
            P[f"{short}_b"] = mod.bias.detach().double().tolist()
    return P


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(NT, D, generator=g, dtype=torch.float64)
    Z = torch.randn(NV, F, D, generator=g, dtype=torch.float64)
    mask = torch.ones(NV, F, dtype=torch.long)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
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


# ---- 1. scores against the loop transcription ------------------------------------------------------------

@pytest.mark.parametrize("heads,padding,fold", [
    (1, "repeat_last", False), (2, "repeat_last", False), (4, "none", False), (1, "mask", False),
    (1, "repeat_last", True), (2, "mask", True),
])
def test_scores_match_loop_transcription(backbone, make_method, heads, padding, fold):
    m = make_method("xpool", backbone, max_frames=F, max_words=L, num_heads=heads, padding=padding,
                    fold_out_proj=fold).double()
    P = perturb(m)
    t, Z, mask = inputs()
    with torch.no_grad():
        logits, parts = method_scores(m, t, Z, mask)
    kappa = m.backbone.logit_scale().item()
    ref = reference_xpool(t.tolist(), Z.tolist(), mask.tolist(), P, kappa=kappa, heads=heads, padding=padding)
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)
    assert parts == {} and m.extra_losses(logits, parts) == {}  # X-Pool trains with the plain CLIP loss


def test_infonce_is_the_official_clip_loss(backbone, make_method):
    """Official modules/loss.py: mean of row and column cross-entropies of kappa * cos, halved."""
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("xpool", backbone, max_frames=F, max_words=L).double()
    perturb(m)
    g = torch.Generator().manual_seed(9)
    t, Z = torch.randn(NV, D, generator=g, dtype=torch.float64), torch.randn(NV, F, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits, _ = method_scores(m, t, Z, torch.ones(NV, F, dtype=torch.long))
    S = logits.tolist()
    t2v = -sum(math.log(math.exp(S[i][i]) / sum(math.exp(x) for x in S[i])) for i in range(NV)) / NV
    v2t = -sum(math.log(math.exp(S[j][j]) / sum(math.exp(S[i][j]) for i in range(NV))) for j in range(NV)) / NV
    assert symmetric_infonce(logits).item() == pytest.approx((t2v + v2t) / 2, rel=1e-10)


def test_identity_initialisation_and_dropout_only_in_training(backbone, make_method):
    m = make_method("xpool", backbone, max_frames=F, max_words=L).double()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "linear_proj"):
        lin = getattr(m.pool, name)
        torch.testing.assert_close(lin.weight, torch.eye(D, dtype=torch.float64))
        assert torch.count_nonzero(lin.bias) == 0
    assert m.pool.dropout.p == 0.3 and m.options["num_heads"] == 1
    perturb(m)
    t, Z, mask = inputs(1)
    with torch.no_grad():
        e1, _ = method_scores(m, t, Z, mask)
        e2, _ = method_scores(m, t, Z, mask)
        m.train()
        torch.manual_seed(1)
        d1, _ = method_scores(m, t, Z, mask)
        torch.manual_seed(2)
        d2, _ = method_scores(m, t, Z, mask)
        m.pool.dropout.p = 0.0
        d0, _ = method_scores(m, t, Z, mask)
    torch.testing.assert_close(e1, e2)  # deterministic in eval
    assert not torch.allclose(d1, d2)  # dropout active in training
    torch.testing.assert_close(d0, e1)  # and it is the only train/eval difference


def test_fold_out_proj_is_exact(backbone, make_method):
    t, Z, mask = inputs(2)
    out = {}
    for fold in (False, True):
        m = make_method("xpool", backbone, max_frames=F, max_words=L, num_heads=2, fold_out_proj=fold,
                        pair_scoring="as_written").double()
        perturb(m)
        with torch.no_grad():
            out[fold], _ = method_scores(m, t, Z, mask)
    torch.testing.assert_close(out[True], out[False], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads,padding", [(1, "repeat_last"), (2, "mask"), (4, "none")])
def test_gram_scoring_is_exact(backbone, make_method, heads, padding):
    """The default Gram scoring equals the as-written pooling head: to 1e-10 in fp64, and to fp32 rounding
    in fp32 (the quadratic forms are accumulated in fp32 there)."""
    t, Z, mask = inputs(3)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        out = {}
        for scoring in ("gram", "as_written"):
            m = make_method("xpool", backbone, max_frames=F, max_words=L, num_heads=heads, padding=padding,
                            pair_scoring=scoring).double()
            perturb(m)
            m = m.to(dtype)
            with torch.no_grad():
                out[scoring], _ = method_scores(m, t.to(dtype), Z.to(dtype), mask)
        span = float(out["as_written"].max() - out["as_written"].min())
        assert float((out["gram"] - out["as_written"]).abs().max()) <= tol * span


# ---- 2. parameters ---------------------------------------------------------------------------------------

def test_param_count_at_vit_b32(vit_b32, make_method):
    from tvr_bench.bench.cost import param_counts
    from tvr_bench.methods.xpool import XPool

    m = make_method("xpool", vit_b32, max_frames=12, max_words=32)
    analytic = 5 * (512 * 512 + 512) + 3 * 2 * 512  # five D x D linears with bias + three LayerNorms
    assert analytic == 1_316_352 == XPool.info.extra_params
    assert param_counts(m)["head"] == analytic == sum(p.numel() for p in m.new_parameters())
    assert param_counts(make_method("xpool", vit_b32, max_frames=12, max_words=32, num_heads=8))["head"] == analytic


# ---- 3. FLOPs --------------------------------------------------------------------------------------------

def xpool_pair_flops(F: int, D: int, heads: int = 1, fold: bool = False, gram: bool = False) -> int:
    """Matmul FLOPs (2 x MAC) per (text, video) pair of ``score``.

    As written: logits F*D + aggregation F*D + W_o D^2 + W_p D^2 + cosine D.
    fold_out_proj: logits F*D + aggregation of W_o V (one D-vector per head and frame) H*F*D + W_p D^2 + D.
    Gram scoring (the default, K = H*F): logits F*D + the text against the K + 2 per-video bases (K+2)*D +
    three quadratic forms (K+1)^2 + 2 (K+2)^2.
    """
    if gram:
        k = heads * F
        return 2 * (F * D + (k + 2) * D + (k + 1) ** 2 + 2 * (k + 2) ** 2)
    if fold:
        return 2 * (F * D + heads * F * D + D * D + D)
    return 2 * (2 * F * D + 2 * D * D + D)


@pytest.mark.parametrize("Fr,heads,fold,gram", [(5, 1, False, False), (7, 2, False, False), (6, 1, True, False),
                                               (4, 4, True, False), (5, 1, False, True), (7, 2, True, True)])
def test_scoring_flops_match_formula_and_scale_linearly(tiny_backbone, make_method, Fr, heads, fold, gram):
    from tvr_bench.bench.cost import flop_profile

    from tvr_bench.bench.cost import count_flops, dummy_tokens
    from tvr_bench.bench.api.state import slice_state

    m = make_method("xpool", tiny_backbone, max_frames=Fr, max_words=L, num_heads=heads, fold_out_proj=fold,
                    pair_scoring="gram" if gram else "as_written")
    ref = flop_profile(m, max_words=L, max_frames=Fr, gallery_size=10, block=(4, 8))["score_per_pair"]
    assert ref == xpool_pair_flops(Fr, D, heads, fold, gram)
    # linear in the number of pairs: the per-pair count does not depend on the block shape
    tok, tm = dummy_tokens(8, L, tiny_backbone.tokenizer.eot_token_id)
    with torch.no_grad():
        text = m.encode_text(tok, tm)
        video = m.video_from_frames(torch.randn(8, Fr, D), torch.ones(8, Fr, dtype=torch.long))
    for bt, bv in [(1, 1), (2, 5), (8, 8)]:
        t_blk, v_blk = slice_state(text, slice(0, bt)), slice_state(video, slice(0, bv))
        assert count_flops(lambda: m.score(t_blk, v_blk)) == bt * bv * ref


def test_text_and_video_side_work_is_not_counted_per_pair(tiny_backbone, make_method):
    """q = W_q LN1(t) once per query; LN1(Z), K, V (and W_o V when folded) once per video, offline."""
    from tvr_bench.bench.cost import flop_profile

    base = flop_profile(make_method("meanp", tiny_backbone, max_frames=F, max_words=L), max_words=L,
                        max_frames=F, gallery_size=10)
    for fold, video_mats in ((False, 2), (True, 3)):
        m = make_method("xpool", tiny_backbone, max_frames=F, max_words=L, fold_out_proj=fold,
                        pair_scoring="as_written")
        p = flop_profile(m, max_words=L, max_frames=F, gallery_size=10)
        assert p["text_per_query"] == base["text_per_query"] + 2 * D * D
        assert p["video_per_video"] == base["video_per_video"] + video_mats * 2 * F * D * D


def test_pair_flops_at_msrvtt_shapes(vit_b32, make_method):
    """Counted at ViT-B/32 width (D=512, F=12, L=32): 537,088 MACs per pair = 537 G MACs per 1k x 1k
    (published.md §6.4: ~543 G; GLSCL Table I: 275.0 G, which equals D^2 + 2FD + D, one D x D projection less)."""
    from tvr_bench.bench.cost import count_flops, dummy_tokens

    m = make_method("xpool", vit_b32, max_frames=12, max_words=32, pair_scoring="as_written")
    tok, tm = dummy_tokens(2, 32, vit_b32.tokenizer.eot_token_id)
    with torch.no_grad():
        text = m.encode_text(tok, tm)
        video = m.video_from_frames(torch.randn(3, 12, 512), torch.ones(3, 12, dtype=torch.long))
    per_pair = count_flops(lambda: m.score(text, video)) / 6
    assert per_pair == xpool_pair_flops(12, 512) == 2 * 537_088
    assert abs(per_pair / 2 * 1e6 - 543e9) / 543e9 < 0.02
    # the default Gram scoring: the same scores from 13,873 MACs per pair (39x fewer)
    g = make_method("xpool", vit_b32, max_frames=12, max_words=32)
    with torch.no_grad():
        text = g.encode_text(tok, tm)
        video = g.video_from_frames(torch.randn(3, 12, 512), torch.ones(3, 12, dtype=torch.long))
    assert count_flops(lambda: g.score(text, video)) / 6 == xpool_pair_flops(12, 512, gram=True) == 2 * 13_873


# ---- 4. masking and training path ------------------------------------------------------------------------

def test_padding_modes(backbone, make_method):
    t, Z, mask = inputs(4)
    Z2 = Z.clone()
    Z2[1, 3:] = 40 * torch.randn_like(Z2[1, 3:])  # garbage in padded slots
    Z2[2, 1:] = 40 * torch.randn_like(Z2[2, 1:])
    scores = {}
    for padding in ("repeat_last", "none", "mask"):
        m = make_method("xpool", backbone, max_frames=F, max_words=L, padding=padding).double()
        perturb(m)
        with torch.no_grad():
            a, _ = method_scores(m, t, Z, mask)
            b, _ = method_scores(m, t, Z2, mask)
        scores[padding] = a
        if padding == "none":
            assert not torch.allclose(a, b)  # padded slots take part as they come
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)  # padded content is irrelevant
    # repeat_last == the official loader: feed the repeated frames explicitly, nothing masked
    Zr = Z.clone()
    Zr[1, 3:] = Z[1, 2]
    Zr[2, 1:] = Z[2, 0]
    m = make_method("xpool", backbone, max_frames=F, max_words=L, padding="none").double()
    perturb(m)
    with torch.no_grad():
        explicit, _ = method_scores(m, t, Zr, torch.ones(NV, F, dtype=torch.long))
    torch.testing.assert_close(scores["repeat_last"], explicit, rtol=1e-10, atol=1e-10)
    # mask == the unpadded video on its own
    m = make_method("xpool", backbone, max_frames=F, max_words=L, padding="mask").double()
    perturb(m)
    with torch.no_grad():
        alone, _ = method_scores(m, t, Z[2:3, :1], torch.ones(1, 1, dtype=torch.long))
    torch.testing.assert_close(scores["mask"][:, 2:3], alone, rtol=1e-10, atol=1e-10)


def test_fill_padding_with_last_valid():
    from tvr_bench.methods.xpool import fill_padding_with_last_valid

    z = torch.arange(2 * 5, dtype=torch.float64).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]])
    out = fill_padding_with_last_valid(z, mask).squeeze(-1).tolist()
    assert out == [[0, 1, 1, 3, 3], [6, 6, 7, 7, 7]]


@pytest.mark.parametrize("fold", [False, True])
def test_training_path_gives_finite_gradients(backbone, make_method, fold):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("xpool", backbone, max_frames=F, max_words=L, fold_out_proj=fold).train()
    g = torch.Generator().manual_seed(6)
    t, Z = torch.randn(NV, D, generator=g), torch.randn(NV, F, D, generator=g)
    mask = torch.ones(NV, F, dtype=torch.long)
    mask[0, 3:] = 0
    logits, parts = method_scores(m, t, Z, mask)
    loss = symmetric_infonce(logits) + sum(m.extra_losses(logits, parts).values(), torch.tensor(0.0))
    loss.backward()
    for name, p in m.pool.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_official_recipe_is_the_readme_msrvtt_9k_command():
    from tvr_bench.bench.config import HARNESS_DEFAULTS, deep_merge
    from tvr_bench.methods.xpool import XPool

    assert set(XPool.info.official) == {"msrvtt"}  # X-Pool has no DiDeMo / VATEX recipe
    base = deep_merge(HARNESS_DEFAULTS, {})
    base["method"] = XPool.default_options()
    cfg = deep_merge(base, XPool.info.official["msrvtt"], strict=True)
    tr = cfg["train"]
    assert tr["lr"] == 3e-5 and tr["lr"] * tr["coef_lr"] == pytest.approx(1e-6, rel=1e-12)
    assert (tr["epochs"], tr["batch_size"], tr["weight_decay"], tr["warmup_proportion"]) == (5, 32, 0.2, 0.1)
    assert tr["optimizer"] == "adamw" and tr["betas"] == [0.9, 0.999]
    assert cfg["data"]["max_frames"] == 12 and cfg["data"]["max_words"] == 77
    assert cfg["method"]["dropout"] == 0.3 and cfg["method"]["num_heads"] == 1
