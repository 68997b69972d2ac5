"""GLCCL: Global-Local Contrastive Consistency Learning (official code: JingXiaolun/GLCCL, an X-CLIP fork).

Faithful to the official computation (../shared/docs/methods.md §2):
- seqTransf temporal encoder on CLIP frames (Z~ = T4(Z + P) + Z);
- GLIM, no learnable parameters: g(q, Z~_j) = sum_f softmax_f(<q, z~_jf>/5) z~_jf on *raw* (unnormalised)
  features; global branch q = [EOT] feature t_i (one video vector per pair), local branch q = every token
  feature w_im (L vectors per pair, [SOT]/[EOT]/padding included); both L2-normalised afterwards;
- the four X-CLIP scores (shared code in ``_multigrained``) on the text-conditioned features, L×L matrices
  where X-CLIP has F×F; similarity = plain mean of the four kappa-scaled scores;
- loss = symmetric InfoNCE (harness) + csc_weight * CSC, CSC = mean positive variance / (sum of off-diagonal
  variance / B^2), unbiased variance over the four scores.

Official choices are the defaults (no masking of padded frames or words; raw dot products / 5).
Named options: ``mask_padding`` (masked variant, not official), ``text_guided`` (False = the X-CLIP path:
mean-pooled Z~ and the raw CLIP frames, F×F matrices), ``csc_weight`` (0 disables CSC).
"""

from __future__ import annotations

import torch

from tvr_bench.bench.registry import MethodInfo, register_method

from ._base import RetrievalMethod, State, l2norm, masked_mean
from ._multigrained import MultiGrainedWeights, multigrained_scores
from ._temporal import SeqTransf


def glim_pool(query: torch.Tensor, frames: torch.Tensor, temperature: float,
              frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Text-guided pooling g(q, Z~). query [N_t, D] or [N_t, L, D]; frames [N_v, F, D].

    Returns [N_t, N_v, D] or [N_t, N_v, L, D], un-normalised. ``frame_mask`` [N_v, F] only in the masked
    variant (-inf logits on padded frames).
    """
    if query.dim() == 2:
        logits = torch.einsum("td,vfd->tvf", query, frames) / temperature
        if frame_mask is not None:
            logits = logits.masked_fill(~frame_mask.bool()[None], float("-inf"))
        return torch.einsum("tvf,vfd->tvd", torch.softmax(logits, dim=-1), frames)
    logits = torch.einsum("tld,vfd->tvlf", query, frames) / temperature
    if frame_mask is not None:
        logits = logits.masked_fill(~frame_mask.bool()[None, :, None, :], float("-inf"))
    return torch.einsum("tvlf,vfd->tvld", torch.softmax(logits, dim=-1), frames)


def csc_loss(parts: list[torch.Tensor]) -> torch.Tensor:
    """Contrastive Score Consistency: ratio of positive to negative score variance across granularities."""
    stacked = torch.stack(parts, dim=0)  # [4, B, B]
    var = stacked.var(dim=0, unbiased=True)
    b = var.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=var.device)
    pos = var.diagonal().mean()
    neg = var.masked_fill(eye, 0.0).sum() / (b * b)
    return pos / neg


@register_method
class GLCCL(RetrievalMethod):
    info = MethodInfo(
        name="glccl",
        paper="Jing, Yang, Yang: Text-Video Retrieval With Global-Local Contrastive Consistency Learning, "
        "CAC 2025 (arXiv 2605.17959)",
        official_repo="https://github.com/JingXiaolun/GLCCL",
        query_dependent=True,
        description="seqTransf + parameter-free text-guided global/local pooling (GLIM) + X-CLIP multi-grained "
        "scores; InfoNCE + 0.5 x CSC.",
        # official per-dataset settings (README / scripts of JingXiaolun/GLCCL, methods.md §2.7); applied when
        # the dataset of that name is run. Global batch as trained (4 or 8 GPUs).
        defaults={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32}, "train": {"epochs": 5, "batch_size": 128}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64}, "train": {"epochs": 20, "batch_size": 64}},
            "vatex": {"data": {"max_frames": 12, "max_words": 32}, "train": {"epochs": 5, "batch_size": 128}},
        },
    )
    OPTIONS = {
        "text_guided": True,
        "glim_temperature": 5.0,
        "aosm_temperature": 0.01,
        "csc_weight": 0.5,
        "mask_padding": False,
        "temporal_layers": 4,
    }

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        self.temporal = SeqTransf(backbone, int(self.options["temporal_layers"]))
        n_feat = max_words if self.options["text_guided"] else max_frames
        self.scores = MultiGrainedWeights(backbone.embed_dim, max_words, n_feat,
                                          n_frames_unused=max_frames if self.options["text_guided"] else None)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> State:
        sentence, words = self.backbone.encode_text_tokens(tokens)
        t_hat, w_hat = l2norm(sentence), l2norm(words)
        return {
            "sentence": sentence,  # raw, guides GLIM's global branch
            "words": words,  # raw, guides GLIM's local branch
            "t_hat": t_hat,
            "w_hat": w_hat,
            # text-only products of the score matrices: computed once per query, not per pair
            "t_g": t_hat @ self.scores.global_mat_weight,
            "w_l": w_hat @ self.scores.local_mat_weight,
            "text_mask": mask,
        }

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        state = {"frames_tilde": self.temporal(frame_features, mask), "video_mask": mask}
        if not self.options["text_guided"]:
            # X-CLIP path: text-agnostic video vector and the raw CLIP frames (both offline)
            state["v_hat"] = l2norm(masked_mean(l2norm(state["frames_tilde"]), mask))
            state["f_hat"] = l2norm(frame_features)
        return state

    def score_with_parts(self, text: State, video: State):
        opts = self.options
        masked = bool(opts["mask_padding"])
        word_mask = text["text_mask"].bool() if masked else None
        if opts["text_guided"]:
            z = video["frames_tilde"]
            fmask = video["video_mask"] if masked else None
            v_hat = l2norm(glim_pool(text["sentence"], z, opts["glim_temperature"], fmask))
            f_hat = l2norm(glim_pool(text["words"], z, opts["glim_temperature"], fmask))
            feat_mask = word_mask[:, None, :] if masked else None  # fine axis = word-guided features
        else:
            v_hat, f_hat = video["v_hat"], video["f_hat"]
            feat_mask = video["video_mask"].bool()[None] if masked else None
        parts = multigrained_scores(
            t_g=text["t_g"], t_hat=text["t_hat"], w_hat=text["w_hat"], w_l=text["w_l"],
            v_hat=v_hat, f_hat=f_hat, weights=self.scores, kappa=self.backbone.logit_scale(),
            temp=opts["aosm_temperature"], word_mask=word_mask, feat_mask=feat_mask,
        )
        logits = (parts["vs"] + parts["vw"] + parts["sf"] + parts["fw"]) / 4
        return logits, parts

    def extra_losses(self, logits, parts):
        w = float(self.options["csc_weight"])
        if w == 0.0:
            return {}
        return {"csc": w * csc_loss([parts["vs"], parts["vw"], parts["sf"], parts["fw"]])}

    def head_modules(self):
        return [self.temporal, self.scores]
