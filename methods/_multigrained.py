"""X-CLIP's multi-grained contrast with attention over similarity matrices (AOSM), shared by X-CLIP and GLCCL.

GLCCL's official code is a fork of X-CLIP's: the four scores and their identity-initialised matrices are the
same; only the video side differs. X-CLIP feeds a text-agnostic video vector ``v [N_v, D]`` and the raw CLIP
frames ``f [N_v, M, D]`` (M = F); GLCCL feeds text-conditioned ones, ``v [N_t, N_v, D]`` and
``f [N_t, N_v, M, D]`` (M = L word-guided features). ``multigrained_scores`` accepts both forms.

Notation follows docs/methods.md: sigma_x(.) = softmax over x of (.)/T with T = 0.01, and
"(p·R)[x]" = sum_x' p[x'] R[x', x]. All four scores are multiplied by the logit scale kappa.
"""

from __future__ import annotations

import torch
from torch import nn


class MultiGrainedWeights(nn.Module):
    """The AOSM matrices, all identity-initialised. ``n_feat`` is the length of the fine video axis."""

    def __init__(self, dim: int, n_words: int, n_feat: int, *, n_frames_unused: int | None = None):
        super().__init__()
        eye = torch.eye
        self.global_mat_weight = nn.Parameter(eye(dim))  # A_g
        self.local_mat_weight = nn.Parameter(eye(dim))  # A_l
        self.word_logit_weight = nn.Parameter(eye(n_words))  # R_vw (video-word)
        self.frame_logit_weight = nn.Parameter(eye(n_feat))  # R_sf (sentence-frame)
        self.word_mat_weight = nn.Parameter(eye(n_words))  # R_1 (frame-word, pool over words)
        self.frame_mat_weight = nn.Parameter(eye(n_feat))  # R_2 (frame-word, pool over features)
        self.frame_mat_weight2 = nn.Parameter(eye(n_feat))  # R_3
        self.word_mat_weight2 = nn.Parameter(eye(n_words))  # R_4
        if n_frames_unused is not None:
            # GLCCL registers an F×F matrix used only by an aggregation ablation; kept for parameter parity.
            self.visual_logit_weight = nn.Parameter(eye(n_frames_unused))


def _softmax(x: torch.Tensor, dim: int, temp: float, mask: torch.Tensor | None) -> torch.Tensor:
    logits = x / temp
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=dim)


def _pool(values: torch.Tensor, dim: int, mat: torch.Tensor, temp: float, mask: torch.Tensor | None) -> torch.Tensor:
    """sum_x values[x] * (sigma_x(values) · R)[x] along ``dim`` (AOSM's softmax-reweighted pooling)."""
    p = _softmax(values, dim, temp, mask)
    p = p.movedim(dim, -1) @ mat  # (p·R)[x] = sum_x' p[x'] R[x', x]
    p = p.movedim(-1, dim)
    if mask is not None:  # masked variant: padding positions contribute nothing
        p = p * mask
    return (values * p).sum(dim=dim)


def multigrained_scores(
    *,
    t_g: torch.Tensor,
    t_hat: torch.Tensor,
    w_hat: torch.Tensor,
    w_l: torch.Tensor,
    v_hat: torch.Tensor,
    f_hat: torch.Tensor,
    weights: MultiGrainedWeights,
    kappa: torch.Tensor,
    temp: float = 0.01,
    word_mask: torch.Tensor | None = None,
    feat_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The four kappa-scaled scores, each [N_t, N_v].

    t_g = t_hat·A_g [N_t, D] and w_l = w_hat·A_l [N_t, L, D] are text-side products (computed once per query);
    t_hat [N_t, D], w_hat [N_t, L, D] normalised text features; v_hat [N_v, D] or [N_t, N_v, D];
    f_hat [N_v, M, D] or [N_t, N_v, M, D]. ``word_mask`` [N_t, L] and ``feat_mask`` (broadcastable to
    [N_t, N_v, M]) are used only by the masked variant; None = the official unmasked computation.
    """
    conditioned = v_hat.dim() == 3
    # 1. video-sentence
    s_vs = torch.einsum("td,tvd->tv", t_g, v_hat) if conditioned else t_g @ v_hat.t()
    # 2. video-word: a[t,v,l] = <w_l, v>
    a = torch.einsum("tld,tvd->tvl", w_hat, v_hat) if conditioned else torch.einsum("tld,vd->tvl", w_hat, v_hat)
    # 3. sentence-frame: c[t,v,m] = <t, f_m>
    c = torch.einsum("td,tvmd->tvm", t_hat, f_hat) if conditioned else torch.einsum("td,vmd->tvm", t_hat, f_hat)
    # 4. frame-word: M[t,v,l,m] = <w_l A_l, f_m>
    m = torch.einsum("tld,tvmd->tvlm", w_l, f_hat) if conditioned else torch.einsum("tld,vmd->tvlm", w_l, f_hat)
    return aosm_scores(s_vs=s_vs, a=a, c=c, m=m, weights=weights, kappa=kappa, temp=temp,
                       word_mask=word_mask, feat_mask=feat_mask)


def aosm_scores(
    *,
    s_vs: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    m: torch.Tensor,
    weights: MultiGrainedWeights,
    kappa: torch.Tensor,
    temp: float = 0.01,
    word_mask: torch.Tensor | None = None,
    feat_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The four kappa-scaled scores from the similarity tensors: s_vs [t,v], a = <w_l, v> [t,v,L],
    c = <t, f_m> [t,v,M], m = <w_l A_l, f_m> [t,v,L,M]. Callers that can form these without the
    per-pair features (GLCCL's Gram path) enter here; masks as in ``multigrained_scores``."""
    wm = None if word_mask is None else word_mask.bool()
    fm = None if feat_mask is None else feat_mask.bool()
    s_vw = _pool(a, -1, weights.word_logit_weight, temp, None if wm is None else wm[:, None, :])
    s_sf = _pool(c, -1, weights.frame_logit_weight, temp, fm)
    # two-stage bidirectional AOSM over M
    m_words = None if wm is None else wm[:, None, :, None]
    m_feats = None if fm is None else fm.unsqueeze(-2)
    r = _pool(m, -2, weights.word_mat_weight, temp, m_words)  # [t,v,m] one value per feature
    k = _pool(m, -1, weights.frame_mat_weight, temp, m_feats)  # [t,v,l] one value per word
    s2f = _pool(r, -1, weights.frame_mat_weight2, temp, fm)
    v2w = _pool(k, -1, weights.word_mat_weight2, temp, None if wm is None else wm[:, None, :])
    s_fw = (s2f + v2w) / 2
    return {"vs": kappa * s_vs, "vw": kappa * s_vw, "sf": kappa * s_sf, "fw": kappa * s_fw}
