"""DRL against a loop transcription of the official ``wti_interaction`` (foolwood/DRL, methods.md §11).

The references below loop over texts, videos, words, frames and channels with scalar/vector arithmetic only:
no einsum, no batching, nothing shared with the method's code path. The seqTransf encoder is covered by
test_two_tower_spec.py; here the video side starts from its output Z~ (the method's video_from_frames is
still exercised, with the temporal encoder replaced by the identity where noted).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tvr_bench.bench.errors import ConfigError

D = 64  # tvr-tiny embed dim
NT, NV, L, F = 3, 4, 5, 6


# ---- loop transcription ------------------------------------------------------------------------------

def mlp_scalar(x, lin1, lin2):
    """phi(x) = w2 . relu(W1 x + b1) + b2, one token at a time."""
    hidden = [max(0.0, float((lin1.weight[k] @ x + lin1.bias[k]).detach())) for k in range(lin1.weight.shape[0])]
    return sum(hidden[k] * float(lin2.weight[0, k].detach()) for k in range(len(hidden))) + float(lin2.bias[0].detach())


def softmax_over(values, valid):
    m = max(values[i] for i in valid)
    e = {i: math.exp(values[i] - m) for i in valid}
    s = sum(e.values())
    return {i: e[i] / s for i in valid}


def cos(a, b):
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


def pair_matrix(Wi, Zj, tmask_i, vmask_j, strict=False):
    """S[l][f] = cos(w_l, z_f) where both are valid, else 0 (official) or -inf (strict option)."""
    pad = float("-inf") if strict else 0.0
    return [[cos(Wi[l], Zj[f]) if (tmask_i[l] and vmask_j[f]) else pad for f in range(Zj.shape[0])]
            for l in range(Wi.shape[0])]


def reference_drl(W, Z, tmask, vmask, method, kappa, interaction="wti", strict=False):
    nt, nv = W.shape[0], Z.shape[0]
    L, F = W.shape[1], Z.shape[1]  # shapes from the inputs: benchmarks/ runs this at MSR-VTT sizes
    out = torch.zeros(nt, nv, dtype=torch.float64)
    for i in range(nt):
        vw = [l for l in range(L) if tmask[i][l]]
        if interaction == "wti":
            phi = [mlp_scalar(W[i, l], method.text_weight_fc[0], method.text_weight_fc[2]) for l in range(L)]
            alpha = softmax_over(phi, vw)
        for j in range(nv):
            vf = [f for f in range(F) if vmask[j][f]]
            S = pair_matrix(W[i], Z[j], tmask[i], vmask[j], strict)
            row_max = {l: max(S[l][f] for f in range(F)) for l in vw}  # max over *all* frames
            col_max = {f: max(S[l][f] for l in range(L)) for f in vf}  # max over *all* words
            if interaction == "wti":
                phi_v = [mlp_scalar(Z[j, f], method.video_weight_fc[0], method.video_weight_fc[2]) for f in range(F)]
                beta = softmax_over(phi_v, vf)
                t2v = sum(alpha[l] * row_max[l] for l in vw)
                v2t = sum(beta[f] * col_max[f] for f in vf)
            else:
                t2v = sum(row_max[l] for l in vw) / len(vw)
                v2t = sum(col_max[f] for f in vf) / len(vf)
            out[i, j] = kappa * (t2v + v2t) / 2
    return out


def reference_cdcr(W, Z, tmask, vmask, method, variant, alpha1, alpha2):
    """cdcr 3 (weighted) / 2 (unweighted) on the positive pairs i <-> i, as the official code."""
    B = W.shape[0]
    L, F, D = W.shape[1], Z.shape[1], W.shape[2]
    t_rows, max_v_rows, t_w = [], [], []
    v_rows, max_t_rows, v_w = [], [], []
    for b in range(B):
        S = pair_matrix(W[b], Z[b], tmask[b], vmask[b])
        vw = [l for l in range(L) if tmask[b][l]]
        vf = [f for f in range(F) if vmask[b][f]]
        phi = [mlp_scalar(W[b, l], method.text_weight_fc[0], method.text_weight_fc[2]) for l in range(L)]
        alpha = softmax_over(phi, vw)
        phi_v = [mlp_scalar(Z[b, f], method.video_weight_fc[0], method.video_weight_fc[2]) for f in range(F)]
        beta = softmax_over(phi_v, vf)
        for l in vw:  # best frame of the word over the zero-filled row (first index on ties)
            best = max(range(F), key=lambda f: (S[l][f], -f))
            t_rows.append(W[b, l] / W[b, l].norm())
            max_v_rows.append(Z[b, best] / Z[b, best].norm())
            t_w.append(alpha[l])
        for f in vf:
            best = max(range(L), key=lambda l: (S[l][f], -l))
            v_rows.append(Z[b, f] / Z[b, f].norm())
            max_t_rows.append(W[b, best] / W[b, best].norm())
            v_w.append(beta[f])

    def standardise(rows):
        n = len(rows)
        out = [[0.0] * D for _ in range(n)]
        for c in range(D):
            xs = [float(r[c]) for r in rows]
            mu = sum(xs) / n
            sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1))
            for a in range(n):
                out[a][c] = (xs[a] - mu) / sd
        return out

    za, zb, xa, xb = (standardise(r) for r in (t_rows, max_v_rows, v_rows, max_t_rows))

    def corr(a, b, weights, denom):
        return [[sum(weights[k] * a[k][c] * b[k][d] for k in range(len(a))) / denom for d in range(D)]
                for c in range(D)]

    if variant == 3:
        c1, c2 = corr(za, zb, t_w, B), corr(xa, xb, v_w, B)
    else:
        c1, c2 = corr(za, zb, [1.0] * len(za), len(za)), corr(xa, xb, [1.0] * len(xa), len(xa))
    c = [[(c1[i][j] + c2[i][j]) / 2 for j in range(D)] for i in range(D)]
    on = sum((c[i][i] - 1) ** 2 for i in range(D))
    off = sum(c[i][j] ** 2 for i in range(D) for j in range(D) if i != j)
    return alpha1 * on + alpha2 * off


def reference_infonce(S):
    B = len(S)
    t2v = -sum(math.log(math.exp(S[i][i]) / sum(math.exp(S[i][j]) for j in range(B))) for i in range(B)) / B
    v2t = -sum(math.log(math.exp(S[j][j]) / sum(math.exp(S[i][j]) for i in range(B))) for j in range(B)) / B
    return 0.5 * (t2v + v2t)


# ---- helpers ------------------------------------------------------------------------------------------

def _randomise_weight_mlps(method, scale=0.3):
    """DRL's N(0, 0.02) init makes the softmax weights almost uniform: use larger random weights."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for mlp in (method.text_weight_fc, method.video_weight_fc):
            for p in mlp.parameters():
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(seed, nt=NT, nv=NV):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(nt, L, D, generator=g, dtype=torch.float64)
    Z = torch.randn(nv, F, D, generator=g, dtype=torch.float64)
    tmask = torch.ones(nt, L, dtype=torch.long)
    vmask = torch.ones(nv, F, dtype=torch.long)
    tmask[0, 3:] = 0  # [SOT] w w [EOT] pad pad: padding at the end, as the dataloader writes it
    tmask[-1, 2:] = 0
    vmask[1, 2:] = 0
    vmask[-1, 4:] = 0
    return W, Z, tmask, vmask


class _Identity(torch.nn.Module):
    def forward(self, z, mask):
        return z


def _states(method, W, Z, tmask, vmask):
    method.backbone.encode_text_tokens = lambda tokens: (W[:, -1], W)  # the text tower is not under test
    method.temporal = _Identity()  # the video side starts from Z~ (seqTransf is tested elsewhere)
    text = method.encode_text(torch.zeros(W.shape[0], L, dtype=torch.long), tmask)
    video = method.video_from_frames(Z, vmask)
    return text, video


@pytest.fixture
def backbone(tiny_backbone):
    bb = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        bb.clip.logit_scale.fill_(math.log(20.0))
    return bb


def _drl(make_method, backbone, **options):
    m = make_method("drl", copy.deepcopy(backbone), max_frames=F, max_words=L, **options).double()
    if m.options["interaction"] == "wti":
        _randomise_weight_mlps(m)
    return m


# ---- 1. scores against the loop transcription -----------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("interaction,cdcr", [("wti", 3), ("ti", 2)])
def test_scores_match_loop_transcription(make_method, backbone, seed, interaction, cdcr):
    m = _drl(make_method, backbone, interaction=interaction, cdcr=cdcr)
    W, Z, tmask, vmask = _inputs(seed)
    text, video = _states(m, W, Z, tmask, vmask)
    logits, _ = m.score_with_parts(text, video)
    kappa = m.backbone.logit_scale().item()
    ref = reference_drl(W, Z, tmask.tolist(), vmask.tolist(), m, kappa=kappa, interaction=interaction)
    torch.testing.assert_close(logits, ref, rtol=1e-9, atol=1e-9)


def test_strict_max_option_matches_its_transcription_and_differs(make_method, backbone):
    m = _drl(make_method, backbone, max_over_valid_only=True)
    W, Z, tmask, vmask = _inputs(3)
    text, video = _states(m, W, Z, tmask, vmask)
    strict, _ = m.score_with_parts(text, video)
    kappa = m.backbone.logit_scale().item()
    ref = reference_drl(W, Z, tmask.tolist(), vmask.tolist(), m, kappa=kappa, strict=True)
    torch.testing.assert_close(strict, ref, rtol=1e-9, atol=1e-9)
    m.options["max_over_valid_only"] = False
    official, _ = m.score_with_parts(text, video)
    # the zero-filled max differs exactly where padding exists on the other axis
    assert not torch.allclose(official, strict)
    full = (tmask.all(1)[:, None] & vmask.all(1)[None, :])
    torch.testing.assert_close(official[full], strict[full])


def test_weights_are_query_independent_and_cached_per_side(make_method, backbone):
    m = _drl(make_method, backbone)
    W, Z, tmask, vmask = _inputs(4)
    text, video = _states(m, W, Z, tmask, vmask)
    assert text["text_weight"].shape == (NT, L) and video["video_weight"].shape == (NV, F)
    torch.testing.assert_close(text["text_weight"].sum(1), torch.ones(NT, dtype=torch.float64))
    assert (text["text_weight"][tmask == 0] == 0).all() and (video["video_weight"][vmask == 0] == 0).all()


# ---- CDCR and the training loss -------------------------------------------------------------------------

@pytest.mark.parametrize("variant,alpha2", [(3, 0.0), (3, 0.06), (2, 0.06)])
def test_cdcr_and_total_loss_match_loop_transcription(make_method, backbone, variant, alpha2):
    from tvr_bench.bench.train import symmetric_infonce

    interaction = "wti"
    m = _drl(make_method, backbone, interaction=interaction, cdcr=variant, cdcr_alpha2=alpha2).train()
    W, Z, tmask, vmask = _inputs(5, nt=NV, nv=NV)
    text, video = _states(m, W, Z, tmask, vmask)
    logits, parts = m.score_with_parts(text, video)
    extras = m.extra_losses(logits, {k: v.float() if v.dtype != torch.float64 else v for k, v in parts.items()})
    ref = reference_cdcr(W, Z, tmask.tolist(), vmask.tolist(), m, variant, 0.11, alpha2)
    assert extras["cdcr"].item() == pytest.approx(0.001 * ref, rel=1e-9)
    assert symmetric_infonce(logits).item() == pytest.approx(reference_infonce(logits.detach().tolist()), rel=1e-10)


def test_cdcr_picks_a_padded_frame_when_all_valid_cosines_are_negative(make_method, backbone):
    """The argmax runs on the zero-filled row (official): a padded frame wins over negative cosines."""
    m = _drl(make_method, backbone).train()
    W, Z, tmask, vmask = _inputs(6, nt=NV, nv=NV)
    vmask[0] = torch.tensor([1, 1, 0, 0, 0, 0])
    Z[0, 0] = -W[0, 1] + 0.01 * Z[0, 0]  # word 1 of text 0 points away from both valid frames
    Z[0, 1] = -W[0, 1] + 0.01 * Z[0, 1]
    text, video = _states(m, W, Z, tmask, vmask)
    _, parts = m.score_with_parts(text, video)
    assert parts["pos_sims"][0, 1].max().item() == 0.0
    assert int(parts["pos_sims"][0, 1].max(dim=-1).indices) >= 2  # a padded frame
    ref = reference_cdcr(W, Z, tmask.tolist(), vmask.tolist(), m, 3, 0.11, 0.0)
    assert m.extra_losses(None, parts)["cdcr"].item() == pytest.approx(0.001 * ref, rel=1e-9)


def test_standardise_guard_only_acts_on_constant_channels():
    """Where the official (x - mean) / std divides by 0 (its loss turns NaN) the channel is left at x - mean."""
    from tvr_bench.methods.drl import standardise

    x = torch.randn(7, 4, dtype=torch.float64)
    x[:, 2] = 0.3
    out = standardise(x)
    plain = (x - x.mean(0)) / x.std(0)
    torch.testing.assert_close(out[:, [0, 1, 3]], plain[:, [0, 1, 3]], rtol=0, atol=0)
    assert torch.isfinite(out).all() and out[:, 2].abs().max() < 1e-15


def test_no_cdcr_outside_training_and_configuration_errors(make_method, backbone):
    m = _drl(make_method, backbone)
    W, Z, tmask, vmask = _inputs(7, nt=NV, nv=NV)
    text, video = _states(m, W, Z, tmask, vmask)
    logits, parts = m.score_with_parts(text, video)  # eval mode
    assert parts == {} and m.extra_losses(logits, parts) == {}
    with pytest.raises(ConfigError, match="cdcr"):
        make_method("drl", backbone, max_frames=F, max_words=L, interaction="ti")  # cdcr 3 needs WTI weights
    with pytest.raises(ConfigError, match="interaction"):
        make_method("drl", backbone, max_frames=F, max_words=L, interaction="xti")


# ---- 4. masking and gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("interaction,strict", [("wti", False), ("ti", False), ("wti", True)])
def test_length_grouped_evaluation_equals_the_full_block(make_method, backbone, interaction, strict):
    """Evaluation groups captions by length and cuts each group's words after its longest caption; with
    mostly negative cosines a cut caption's max over words must still see the 0 of its padding (official)."""
    m = _drl(make_method, backbone, interaction=interaction, cdcr=0 if interaction == "ti" else 3,
             max_over_valid_only=strict)
    m.LENGTH_GROUP = 3  # several groups from 10 captions
    g = torch.Generator().manual_seed(5)
    nt, nv = 10, 4
    Z = torch.randn(nv, F, D, generator=g, dtype=torch.float64)
    W = -Z.mean(dim=(0, 1)) * 3 + 0.3 * torch.randn(nt, L, D, generator=g, dtype=torch.float64)  # cos < 0
    lengths = torch.tensor([1, 2, 3, L, 2, 4, 1, 3, L, 2])
    tmask = (torch.arange(L)[None] < lengths[:, None]).long()
    vmask = torch.ones(nv, F, dtype=torch.long)
    vmask[1, 3:] = 0
    text, video = _states(m, W, Z, tmask, vmask)
    with torch.no_grad():
        grouped = m.score(text, video)
        full, _ = m._score_block(text, video, None)
    torch.testing.assert_close(grouped, full, rtol=1e-12, atol=1e-12)
    ref = reference_drl(W, Z, tmask, vmask, m, m.backbone.logit_scale().item(), interaction, strict)
    torch.testing.assert_close(grouped, ref, rtol=1e-9, atol=1e-9)


def test_padded_words_and_frames_do_not_change_scores(make_method, backbone):
    m = _drl(make_method, backbone)
    W, Z, tmask, vmask = _inputs(8)
    base, _ = m.score_with_parts(*_states(m, W, Z, tmask, vmask))
    W2, Z2 = W.clone(), Z.clone()
    W2[tmask == 0] = 40 * torch.randn_like(W2[tmask == 0])
    Z2[vmask == 0] = 40 * torch.randn_like(Z2[vmask == 0])
    again, _ = m.score_with_parts(*_states(m, W2, Z2, tmask, vmask))
    torch.testing.assert_close(again, base, rtol=1e-12, atol=1e-12)


def test_full_pipeline_padding_invariance_and_finite_gradients(tiny_backbone, make_method):
    """Real text tower + seqTransf: padded frames' pixels do not matter; every new parameter gets a gradient."""
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method("drl", copy.deepcopy(tiny_backbone), max_frames=F, max_words=L)
    size = tiny_backbone.spec.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, F, 3, size, size, generator=g)
    vmask = torch.ones(3, F, dtype=torch.long)
    vmask[1, 3:] = 0
    tokens = torch.randint(1, 400, (3, L), generator=g)
    tokens[:, 0], tokens[:, 3], tokens[:, 4:] = 49406, 49407, 0
    tmask = (tokens > 0).long()
    with torch.no_grad():
        s1 = m.score(m.encode_text(tokens, tmask), m.encode_video(frames, vmask))
        frames2 = frames.clone()
        frames2[1, 3:] = torch.randn(F - 3, 3, size, size, generator=g)
        s2 = m.score(m.encode_text(tokens, tmask), m.encode_video(frames2, vmask))
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)
    m.train()
    logits, parts = m.score_with_parts(m.encode_text(tokens, tmask), m.encode_video(frames, vmask))
    extras = m.extra_losses(logits, {k: v.float() for k, v in parts.items()})
    assert set(extras) == {"cdcr"} and torch.isfinite(extras["cdcr"])
    (symmetric_infonce(logits) + sum(extras.values())).backward()
    for name, p in m.named_parameters():
        if not name.startswith("backbone."):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the CDCR gradient reaches the weight MLPs (weights multiply the cross-correlation)
    m.zero_grad()
    m.extra_losses(*m.score_with_parts(m.encode_text(tokens, tmask), m.encode_video(frames, vmask)))["cdcr"].backward()
    assert m.text_weight_fc[2].weight.grad.abs().sum() > 0


# ---- 2. parameters, 3. FLOPs ----------------------------------------------------------------------------

def drl_pair_flops(L: int, F: int, D: int, interaction: str = "wti") -> int:
    """Per (text, video) pair: the L x F x D cosine matrix; WTI adds the two weighted sums (L + F MACs)."""
    macs = L * F * D + ((L + F) if interaction == "wti" else 0)
    return 2 * macs


@pytest.mark.parametrize("interaction,cdcr,L_,F_", [("wti", 3, 5, 6), ("ti", 0, 8, 4), ("wti", 3, 8, 4)])
def test_flops_match_formula_and_scale_linearly(tiny_backbone, make_method, interaction, cdcr, L_, F_):
    from tvr_bench.bench.cost import flop_profile

    m = make_method("drl", tiny_backbone, max_frames=F_, max_words=L_, interaction=interaction, cdcr=cdcr)
    p = flop_profile(m, max_words=L_, max_frames=F_, gallery_size=10, block=(4, 8))
    assert p["score_per_pair"] == drl_pair_flops(L_, F_, D, interaction)
    for block in [(1, 1), (3, 5)]:
        assert flop_profile(m, max_words=L_, max_frames=F_, gallery_size=10, block=block)["score_per_pair"] == \
            p["score_per_pair"]
    # the word-weight MLP runs once per query (L x (D*D + D) MACs), not per pair
    meanp = make_method("meanp", tiny_backbone, max_frames=F_, max_words=L_)
    p_meanp = flop_profile(meanp, max_words=L_, max_frames=F_, gallery_size=10)
    extra = 2 * L_ * (D * D + D) if interaction == "wti" else 0
    assert p["text_per_query"] == p_meanp["text_per_query"] + extra


def test_paper_scale_pair_cost_matches_published_analytic():
    """published.md §6.4: DRL WTI ~197 G MACs for the 1k x 1k MSR-VTT matrix (L=32, F=12, D=512)."""
    macs_1k = drl_pair_flops(32, 12, 512) // 2 * 1000 * 1000
    assert macs_1k == 196_652_000_000
    assert abs(macs_1k / 197e9 - 1) < 0.01


def test_param_counts_at_vit_b32(make_method):
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.cost import param_counts
    from tvr_bench.methods.drl import DRL

    bb = build_backbone("ViT-B-32")
    m = make_method("drl", bb, max_frames=12, max_words=32)
    mlps = sum(p.numel() for mod in (m.text_weight_fc, m.video_weight_fc) for p in mod.parameters())
    assert mlps == 2 * (512 * 512 + 512 + 512 + 1) == 526_338
    assert sum(p.numel() for p in m.temporal.parameters()) == 12_648_960
    assert param_counts(m)["head"] == DRL.info.extra_params == 12_648_960 + 526_338
    ti = make_method("drl", bb, max_frames=12, max_words=32, interaction="ti", cdcr=2)
    assert param_counts(ti)["head"] == 12_648_960
