"""GLCCL's four similarity tensors from the frames' Gram matrix: exact, with no per-pair L x D tensor.

GLIM's word-guided feature of pair (i, j) and word l is f_ijl = sum_f P[i,j,l,f] z_jf, a softmax-weighted sum
of video j's F frames (likewise the sentence-guided v_ij with weights p[i,j,f]). Every quantity the X-CLIP
scores need is an inner product with such a vector, so it follows from two small ingredients:

- Q·Z^T for every text-side vector q (raw sentence, t_hat·A_g, raw words, w_hat·A_l) against every frame of
  the block: one [N_t (2L+2), D] x [D, N_v F] GEMM, which also yields GLIM's softmax logits;
- G_j = Z_j Z_j^T [F, F], so ||f_ijl||^2 = P_ijl G_j P_ijl^T (and ||v_ij||^2 = p_ij G_j p_ij^T).

Then <q, f_hat_ijl> = (sum_f P[i,j,l,f] <q, z_jf>) / ||f_ijl||: per pair the work is O(L F (L + F)) instead of
O(L F D + L^2 D), and the largest per-pair tensor is L x L (the frame-word matrix, which every formulation forms)
rather than L x D. Equal to the direct computation in exact arithmetic; the spec tests hold it to fp64 1e-9.
"""

from __future__ import annotations

import torch


def glim_gram_similarities(
    *,
    sentence: torch.Tensor,
    words: torch.Tensor,
    t_g: torch.Tensor,
    w_l: torch.Tensor,
    frames: torch.Tensor,
    temperature: float,
    frame_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """s_vs [t,v], a [t,v,L], c [t,v,L], m [t,v,L,L] as ``aosm_scores`` takes them.

    sentence [N_t, D] and words [N_t, L, D] are the raw (un-normalised) text features that guide GLIM;
    t_g = t_hat·A_g, w_l = w_hat·A_l; frames [N_v, F, D] are the raw Z~. ``frame_mask`` [N_v, F] only in the
    masked variant (-inf GLIM logits on padded frames, as ``glim_pool`` does).
    """
    n_t, n_l, d = words.shape
    n_v, n_f, _ = frames.shape
    # one GEMM for all text-side vectors against all frames of the block: [N_t, 2L+2, N_v, F]
    queries = torch.cat([sentence[:, None], t_g[:, None], words, w_l], dim=1)
    prod = (queries.reshape(-1, d) @ frames.reshape(-1, d).t()).view(n_t, 2 * n_l + 2, n_v, n_f)
    # lay the per-pair axes out (t, v, ., f) once, so the batched products below read contiguous blocks
    prod = prod.permute(0, 2, 1, 3).contiguous()
    sz, tgz = prod[:, :, 0], prod[:, :, 1]  # <s, z>, <t_g, z>: [t, v, F]
    wz, wlz = prod[:, :, 2: 2 + n_l], prod[:, :, 2 + n_l:]  # <w, z>, <w_l, z>: [t, v, L, F]
    gram = frames @ frames.transpose(1, 2)  # [N_v, F, F]

    g_logits, l_logits = sz / temperature, wz / temperature
    if frame_mask is not None:
        keep = frame_mask.bool()
        g_logits = g_logits.masked_fill(~keep[None], float("-inf"))
        l_logits = l_logits.masked_fill(~keep[None, :, None], float("-inf"))
    p = torch.softmax(g_logits, dim=-1)  # [t, v, F] sentence-guided weights
    pw = torch.softmax(l_logits, dim=-1)  # [t, v, L, F] word-guided weights

    # norms of the pooled vectors from the Gram matrix (batched over videos)
    v_norm = (torch.einsum("tvf,vfg->tvg", p, gram) * p).sum(-1).sqrt()  # [t, v]
    f_norm = (torch.einsum("tvlf,vfg->tvlg", pw, gram) * pw).sum(-1).sqrt()  # [t, v, L]
    s_norm = sentence.norm(dim=-1)  # t_hat = s / ||s||, w_hat = w / ||w||
    w_norm = words.norm(dim=-1)

    s_vs = (p * tgz).sum(-1) / v_norm
    a = (wz @ p.unsqueeze(-1)).squeeze(-1) / (v_norm[..., None] * w_norm[:, None, :])
    c = (pw @ sz.unsqueeze(-1)).squeeze(-1) / (f_norm * s_norm[:, None, None])
    m = (wlz @ pw.transpose(-1, -2)) / f_norm[:, :, None, :]  # [t, v, L(words), L(features)]
    return {"s_vs": s_vs, "a": a, "c": c, "m": m}
