"""X-CLIP: multi-grained contrast with attention over similarity matrices (official code: xuguohai/X-CLIP).

As ``modules/modeling_xclip.py`` computes it (docs/methods.md), all features L2-normalised:
- text: t = [EOT] feature, W = the projected hidden state at *every* token position (padding included);
- video: v = masked mean of the normalised seqTransf outputs Z~ (renormalised), computed offline, and the
  frame features are the *raw* CLIP frames Z (``use_original_clip_for_frame_features = True``), not Z~;
- four kappa-scaled scores (video-sentence, video-word, sentence-frame, frame-word with the bidirectional
  AOSM), softmax temperature 0.01, identity-initialised D×D, L×L and F×F matrices; similarity = their mean.
  The score code lives in ``_multigrained`` because GLCCL (a fork of this file) uses the same four scores.
- loss: the symmetric InfoNCE (CrossEn both ways, averaged) that the harness applies; nothing else.

Quirk kept: the AOSM softmaxes run over all L word slots and all F frame slots, padding included (the official
code passes no mask there). ``mask_padding=True`` is the named, non-official masked variant.
Extra parameters: seqTransf 12,648,960 + 2D² + 3L² + 3F² = 527,792 at D=512, L=32, F=12.
"""

from __future__ import annotations

import torch

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import POSITIVE_INT, RetrievalMethod, State, l2norm, masked_mean
from tvr_bench.methods._multigrained import MultiGrainedWeights, aosm_scores, multigrained_scores
from tvr_bench.methods._temporal import SeqTransf

_PAPER = ("Ma, Xu, Sun, Yan, Zhang, Ji: X-CLIP: End-to-End Multi-grained Contrastive Learning for Video-Text "
          "Retrieval, ACM MM 2022 (arXiv 2207.07285)")


@register_method
class XCLIP(RetrievalMethod):
    info = MethodInfo(
        name="xclip",
        paper=_PAPER,
        official_repo="https://github.com/xuguohai/X-CLIP",
        query_dependent=True,
        description="seqTransf + four multi-grained scores (video-sentence, video-word, sentence-frame, "
        "frame-word) with attention over similarity matrices (AOSM).",
        extra_params=12_648_960 + 527_792,
        # scripts/run_xclip_{msrvtt,didemo}_vit32.sh (docs/methods.md); global batch over 4 GPUs
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32},
                       "train": {"epochs": 5, "batch_size": 300, "lr": 1e-4, "coef_lr": 1e-3}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64},
                       "train": {"epochs": 20, "batch_size": 64, "lr": 1e-4, "coef_lr": 1e-3}},
        },
    )
    OPTIONS = {"aosm_temperature": 0.01, "mask_padding": False, "temporal_layers": 4}
    OPTION_TYPES = {"temporal_layers": POSITIVE_INT}

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        self.temporal = SeqTransf(backbone, int(self.options["temporal_layers"]))
        self.scores = self._score_weights(backbone.embed_dim, max_words, max_frames)

    def _score_weights(self, dim: int, max_words: int, max_frames: int) -> MultiGrainedWeights:
        return MultiGrainedWeights(dim, max_words, max_frames)

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        t_hat, w_hat = l2norm(sentence), l2norm(words)
        return {
            "t_hat": t_hat,
            "w_hat": w_hat,
            # text-only products with A_g and A_l: once per query, not per pair
            "t_g": t_hat @ self.scores.global_mat_weight,
            "w_l": w_hat @ self.scores.local_mat_weight,
            "text_mask": mask,
        }

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        z_tilde = self.temporal(frame_features, mask)
        return {
            "v_hat": l2norm(masked_mean(l2norm(z_tilde), mask)),  # text-agnostic video vector (offline)
            "f_hat": l2norm(frame_features),  # raw CLIP frames, as the official flag selects
            "video_mask": mask,
        }

    def _multigrained(self, text: State, v_hat: torch.Tensor, f_hat: torch.Tensor,
                      feat_mask: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._fuse(multigrained_scores(
            t_g=text["t_g"], t_hat=text["t_hat"], w_hat=text["w_hat"], w_l=text["w_l"],
            v_hat=v_hat, f_hat=f_hat, **self._aosm_kwargs(text, feat_mask)))

    def _aosm_kwargs(self, text: State, feat_mask: torch.Tensor | None) -> dict:
        masked = bool(self.options["mask_padding"])
        return {"weights": self.scores, "kappa": self.backbone.logit_scale(),
                "temp": self.options["aosm_temperature"],
                "word_mask": text["text_mask"].bool() if masked else None,
                "feat_mask": feat_mask if masked else None}

    def _aosm_from_similarities(self, text: State, sims: dict[str, torch.Tensor],
                                feat_mask: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scores from precomputed similarity tensors (see ``_multigrained.aosm_scores``)."""
        return self._fuse(aosm_scores(**sims, **self._aosm_kwargs(text, feat_mask)))

    @staticmethod
    def _fuse(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = (parts["vs"] + parts["vw"] + parts["sf"] + parts["fw"]) / 4
        return logits, parts

    def score_with_parts(self, text: State, video: State):
        return self._multigrained(text, video["v_hat"], video["f_hat"], video["video_mask"].bool()[None])

    #: the official eval block (``batch_size_val`` of scripts/run_xclip_msrvtt_vit32.sh)
    OFFICIAL_EVAL_BLOCK = 40

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """``_loose_similarity`` per (text block, video block) of b = 40: seqTransf re-run on the b videos and
        the text-side products A_g t, A_l W (per text, per block), then per pair the four scores: <v, t A_g>
        D, <w, v> L D, <t, f> F D, the L x F word-frame matrix L F D and the AOSM re-mixings
        2 L^2 + 2 F^2 + F L^2 + L F^2 (each softmax times its matrix)."""
        if type(self) is not XCLIP:
            return None
        b, d, n_w, n_f = self.OFFICIAL_EVAL_BLOCK, self.backbone.embed_dim, self.max_words, self.max_frames
        per_pair = d * (1 + n_w + n_f + n_w * n_f) + 2 * n_w ** 2 + 2 * n_f ** 2 + n_f * n_w ** 2 + n_w * n_f ** 2
        per_block = b * self.temporal.macs(n_f) + b * (1 + n_w) * d * d
        return 2 * (per_pair + per_block / (b * b))

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        # the [t,v,L,F] frame-word matrix and the AOSM pools' softmax/mix/product copies of it
        return itemsize * (8 * self.max_words * self.max_frames + 4 * (self.max_words + self.max_frames))

    def head_modules(self):
        return [self.temporal, self.scores]
