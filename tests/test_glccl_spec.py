"""GLCCL against a direct, loop-based transcription of docs/methods.md §2.4-2.6 on random tensors.

The transcription below deliberately uses Python loops over texts, videos, words, frames and features and
scalar/vector arithmetic only, so it shares no code path (einsum, batching, broadcasting) with the method.
"""

from __future__ import annotations

import math

import pytest
import torch

D = 64  # tvr-tiny embed dim
NT, NV, L, F = 3, 4, 5, 6


def softmax(xs, temp):
    m = max(xs)
    e = [math.exp((x - m) / temp) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def mix(p, R):
    """(p·R)[x] = sum_x' p[x'] R[x', x]"""
    n = len(p)
    return [sum(p[xp] * float(R[xp, x]) for xp in range(n)) for x in range(n)]


def aosm(values, R, temp):
    w = mix(softmax(values, temp), R)
    return sum(v * wi for v, wi in zip(values, w))


def norm(v):
    return v / v.norm()


def glim(q, Zj, T):
    a = softmax([float(q @ Zj[f]) for f in range(Zj.shape[0])], T)
    return sum(a[f] * Zj[f] for f in range(Zj.shape[0]))


def reference_glccl(t, W, Z, mats, kappa, T=5.0, tau=0.01):
    """Loop transcription of methods.md §2.4-2.5 (text-guided, unmasked). Returns the four score matrices."""
    Ag, Al = mats["global_mat_weight"], mats["local_mat_weight"]
    Rvw, Rsf = mats["word_logit_weight"], mats["frame_logit_weight"]
    R1, R2, R3, R4 = mats["word_mat_weight"], mats["frame_mat_weight"], mats["frame_mat_weight2"], mats["word_mat_weight2"]
    nt, nv, nl = t.shape[0], Z.shape[0], W.shape[1]
    S = {k: torch.zeros(nt, nv, dtype=torch.float64) for k in ("vs", "vw", "sf", "fw")}
    for i in range(nt):
        t_hat = norm(t[i])
        w_hat = [norm(W[i, l]) for l in range(nl)]
        for j in range(nv):
            v_hat = norm(glim(t[i], Z[j], T))  # global branch: [EOT]-guided video feature
            f_hat = [norm(glim(W[i, m], Z[j], T)) for m in range(nl)]  # local branch: one per token
            S["vs"][i, j] = kappa * float((t_hat @ Ag) @ v_hat)
            a = [float(w_hat[l] @ v_hat) for l in range(nl)]
            S["vw"][i, j] = kappa * aosm(a, Rvw, tau)
            c = [float(t_hat @ f_hat[m]) for m in range(nl)]
            S["sf"][i, j] = kappa * aosm(c, Rsf, tau)
            M = [[float((w_hat[l] @ Al) @ f_hat[m]) for m in range(nl)] for l in range(nl)]
            r = [aosm([M[l][m] for l in range(nl)], R1, tau) for m in range(nl)]  # pool over words
            k = [aosm([M[l][m] for m in range(nl)], R2, tau) for l in range(nl)]  # pool over features
            s2f = aosm(r, R3, tau)
            v2w = aosm(k, R4, tau)
            S["fw"][i, j] = kappa * (s2f + v2w) / 2
    return S


def reference_csc(parts):
    B = parts[0].shape[0]
    var = torch.zeros(B, B, dtype=torch.float64)
    for i in range(B):
        for j in range(B):
            xs = [float(p[i, j].detach()) for p in parts]
            mu = sum(xs) / 4
            var[i, j] = sum((x - mu) ** 2 for x in xs) / 3  # unbiased
    pos = sum(float(var[i, i]) for i in range(B)) / B
    neg = sum(float(var[i, j]) for i in range(B) for j in range(B) if i != j) / (B * B)
    return pos / neg


def reference_infonce(S):
    B = len(S)
    t2v = -sum(math.log(math.exp(S[i][i]) / sum(math.exp(S[i][j]) for j in range(B))) for i in range(B)) / B
    v2t = -sum(math.log(math.exp(S[j][j]) / sum(math.exp(S[i][j]) for i in range(B))) for j in range(B)) / B
    return 0.5 * (t2v + v2t)


def _perturb_matrices(method, scale=0.3):
    """Identity init hides mixing-direction bugs: use random matrices near the identity."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.scores.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return {n: p.detach().double() for n, p in method.scores.named_parameters()}


def _random_inputs(seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    t = scale * torch.randn(NT, D, generator=g)
    W = scale * torch.randn(NT, L, D, generator=g)
    Z = scale * torch.randn(NV, F, D, generator=g)
    return t, W, Z


def _method_scores(method, t, W, Z, text_mask=None, video_mask=None):
    method.backbone.encode_text_tokens = lambda tokens: (t, W)  # the text tower is not under test here
    text = method.encode_text(torch.zeros(NT, L, dtype=torch.long),
                              text_mask if text_mask is not None else torch.ones(NT, L, dtype=torch.long))
    video = {"frames_tilde": Z, "video_mask": video_mask if video_mask is not None else torch.ones(NV, F, dtype=torch.long)}
    return method.score_with_parts(text, video)


@pytest.fixture
def glccl(tiny_backbone, make_method):
    import copy

    bb = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        bb.clip.logit_scale.fill_(math.log(20.0))
    return make_method("glccl", bb, max_frames=F, max_words=L).double()


@pytest.mark.parametrize("seed", [0, 1])
def test_four_scores_and_similarity_match_loop_transcription(glccl, seed):
    mats = _perturb_matrices(glccl)
    t, W, Z = (x.double() for x in _random_inputs(seed))
    logits, parts = _method_scores(glccl, t, W, Z)
    ref = reference_glccl(t, W, Z, mats, kappa=glccl.backbone.logit_scale().item())
    for k in ("vs", "vw", "sf", "fw"):
        torch.testing.assert_close(parts[k], ref[k], rtol=1e-9, atol=1e-9, msg=f"score {k}")
    expected = (ref["vs"] + ref["vw"] + ref["sf"] + ref["fw"]) / 4
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)


def test_csc_and_total_loss_match_loop_transcription(glccl):
    from tvr_bench.bench.train import symmetric_infonce

    _perturb_matrices(glccl)
    g = torch.Generator().manual_seed(5)
    t = 0.3 * torch.randn(NV, D, generator=g, dtype=torch.float64)
    W = 0.3 * torch.randn(NV, L, D, generator=g, dtype=torch.float64)
    Z = 0.3 * torch.randn(NV, F, D, generator=g, dtype=torch.float64)
    glccl.backbone.encode_text_tokens = lambda tokens: (t, W)
    text = glccl.encode_text(torch.zeros(NV, L, dtype=torch.long), torch.ones(NV, L, dtype=torch.long))
    logits, parts = glccl.score_with_parts(text, {"frames_tilde": Z, "video_mask": torch.ones(NV, F)})
    extras = glccl.extra_losses(logits, parts)
    csc = reference_csc([parts[k] for k in ("vs", "vw", "sf", "fw")])
    assert extras["csc"].item() == pytest.approx(0.5 * csc, rel=1e-10)
    assert symmetric_infonce(logits).item() == pytest.approx(reference_infonce(logits.detach().tolist()), rel=1e-10)


def test_padding_is_not_masked_by_default_and_masked_variant_differs(glccl, make_method):
    t, W, Z = (x.double() for x in _random_inputs(2))
    tmask = torch.ones(NT, L, dtype=torch.long)
    tmask[:, 3:] = 0
    vmask = torch.ones(NV, F, dtype=torch.long)
    vmask[:, 4:] = 0
    official, _ = _method_scores(glccl, t, W, Z, tmask, vmask)
    unmasked, _ = _method_scores(glccl, t, W, Z)
    torch.testing.assert_close(official, unmasked)  # official: masks are ignored entirely
    glccl.options["mask_padding"] = True
    masked, _ = _method_scores(glccl, t, W, Z, tmask, vmask)
    assert not torch.allclose(masked, official)
    # masked variant == unmasked computation on the truncated inputs when R matrices are the identity
    # (padding slots then contribute nothing anywhere)
    glccl.options["mask_padding"] = False
    small = make_method("glccl", glccl.backbone, max_frames=4, max_words=3).double()
    small.backbone.encode_text_tokens = lambda tokens: (t, W[:, :3])
    text = small.encode_text(torch.zeros(NT, 3, dtype=torch.long), torch.ones(NT, 3, dtype=torch.long))
    ref, _ = small.score_with_parts(text, {"frames_tilde": Z[:, :4], "video_mask": torch.ones(NV, 4)})
    torch.testing.assert_close(masked, ref, rtol=1e-9, atol=1e-9)


def test_glim_has_no_parameters_and_text_guidance_switch(glccl, tiny_backbone, make_method):
    from tvr_bench.methods.glccl import glim_pool

    t, W, Z = _random_inputs(4)
    out = glim_pool(t, Z, 5.0)
    assert out.shape == (NT, NV, D)
    # weights are a softmax over frames: each pooled vector lies in the convex hull of the frames
    ref = torch.stack([torch.stack([glim(t[i], Z[j], 5.0) for j in range(NV)]) for i in range(NT)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    xclip_path = make_method("glccl", tiny_backbone, max_frames=F, max_words=L, text_guided=False)
    assert xclip_path.scores.frame_logit_weight.shape == (F, F)  # X-CLIP's F×F where GLCCL has L×L
    assert glccl.scores.frame_logit_weight.shape == (L, L)


def _gram_vs_direct_inputs(glccl, dtype, seed, nt=5, nv=7):
    """Random inputs at a larger scale than the transcription tests (peakier GLIM softmaxes) with padding."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(nt, D, generator=g, dtype=torch.float64).to(dtype)
    W = torch.randn(nt, L, D, generator=g, dtype=torch.float64).to(dtype)
    Z = torch.randn(nv, F, D, generator=g, dtype=torch.float64).to(dtype)
    tmask = torch.ones(nt, L, dtype=torch.long)
    vmask = torch.ones(nv, F, dtype=torch.long)
    for i in range(nt):
        tmask[i, 2 + i % (L - 2):] = 0
    for j in range(nv):
        vmask[j, 1 + j % (F - 1):] = 0
    glccl.backbone.encode_text_tokens = lambda tokens: (t, W)
    text = glccl.encode_text(torch.zeros(nt, L, dtype=torch.long), tmask)
    return text, {"frames_tilde": Z, "video_mask": vmask}


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gram_path_equals_direct_features_fp64(glccl, seed, mask_padding):
    """The default (Gram) scoring equals the official per-pair-feature formulation to 1e-9 relative."""
    _perturb_matrices(glccl)
    glccl.options["mask_padding"] = mask_padding
    text, video = _gram_vs_direct_inputs(glccl, torch.float64, seed)
    logits, parts = glccl.score_with_parts(text, video)
    ref_logits, ref_parts = glccl.score_direct(text, video)
    for k in ("vs", "vw", "sf", "fw"):
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=1e-9, atol=0.0, msg=f"score {k}")
    torch.testing.assert_close(logits, ref_logits, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_gram_path_equals_direct_features_fp32(glccl, mask_padding):
    """fp32: the Gram path stays within 1e-4 of the score range of the fp64 direct computation."""
    _perturb_matrices(glccl)
    glccl.options["mask_padding"] = mask_padding
    text64, video64 = _gram_vs_direct_inputs(glccl, torch.float64, 3)
    ref, _ = glccl.score_direct(text64, video64)
    g32 = glccl.float()
    text32, video32 = _gram_vs_direct_inputs(g32, torch.float32, 3)
    got, _ = g32.score_with_parts(text32, video32)
    ref, got = ref.detach(), got.detach()
    span = float(ref.max() - ref.min())
    assert span > 0
    assert float((got.double() - ref).abs().max()) <= 1e-4 * span
