"""Parameter-free text-conditioned pooling: the control baseline (docs/methods.md)

    a = softmax_f(<t, z~_f> / T),   v_t = sum_f a_f z~_f,   s = kappa * cos(t, v_t)

on seqTransf features Z~ = Transformer_4(Z + P) + Z (``methods/_temporal.py``; 12,648,960 parameters, the
only learned ones). Query-dependent: the pooled video depends on the text.

Defaults = the GLSCL global branch (zchoi/GLSCL ``tvr/models/modeling.py``, ``similarity``, run with
``--center 1 --temp 3``): t is the raw projected [EOT] feature, Z~ the raw seqTransf output (neither
normalised before the logits), T = 3, and the video mask is multiplied onto the weights *after* the softmax
without renormalising. (Because the score is a cosine, a positive rescaling of v_t changes nothing, so
"after_softmax" gives the same scores as proper masking "before_softmax"; it differs only when every frame
is padded.) One guard deviates from the literal code: for a pair whose valid frames keep less than 1e-6 of
the softmax mass (a padded slot's logit dominates), fp32 underflow makes the official expression 0/0 = NaN
(it killed a smoke run once seqTransf features had grown); such pairs use the masked softmax, which is the
value the official expression has in exact arithmetic. GLSCL's training-only local branch (learnable
queries, decoder, extra losses) is not part of this control.

Options (each variant of the pooling found in the field is a configuration):
- ``normalize``: L2-normalise t and every z~_f before the logits; the pooled vector is then a weighted sum of
  the normalised frames (X-Pool ``baseline_pooling.py`` ``attention``);
- ``temperature`` T;
- ``mask_mode``: "after_softmax" (GLSCL, default), "none" (padded frames take part), "before_softmax"
  (-inf logits on padded frames);
- ``temporal_layers``: 4 = seqTransf (default); 0 = pool the raw CLIP frames (no temporal encoder, 0 params);
- ``gram_trick`` (True, the default since it gives the same scores faster): the exact rewrite
  cos(t, sum_f a_f z_f) = (sum_f a_f <t, z_f>) / (||t|| sqrt(a^T G a)) with G = Z Z^T precomputed per video in
  ``video_from_frames``. It reuses the logits' dot products and never builds the [N_t, N_v, D] pooled tensor:
  F D + F^2 + 2F MACs per pair instead of 2 F D + D. ||v_t||^2 is a quadratic form, which would lose precision
  in half precision when frames nearly cancel, so that part runs in at least fp32 under autocast too.
  ``gram_trick=false`` is the as-written pooled-vector path.

Presets:
- GLSCL global branch: the defaults;
- X-Pool ``attention`` baseline: ``--set method.normalize=true --set method.temperature=0.01
  --set method.temporal_layers=0 --set method.mask_mode=none`` (X-Pool applies it on raw CLIP frames; its loader
  never pads);
- GLCCL GLIM sentence branch (pooling only): ``--set method.temperature=5 --set method.mask_mode=none``;
- DiCoSA first-stage pooling: ``--set method.temperature=3`` (README; code default 5).

Official recipe (``--preset official``): GLSCL's ``train_msrvtt.sh`` / ``train_didemo.sh`` (the shared harness
optimiser is CLIP4Clip's BertAdam + warm-up cosine, which GLSCL also uses).
"""

from __future__ import annotations

from typing import Literal

import torch

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import RetrievalMethod, State, l2norm
from tvr_bench.methods._temporal import SeqTransf

MASK_MODES = ("after_softmax", "none", "before_softmax")
#: below this total weight on valid frames the official after-softmax weights are underflow residue
UNDERFLOW_MASS = 1e-6


@register_method
class TextConditionedPooling(RetrievalMethod):
    info = MethodInfo(
        name="textpool",
        paper="Parameter-free text-conditioned pooling control (GLSCL global branch: Zhang et al., IEEE TIP 2025, "
        "arXiv 2405.12710)",
        official_repo="https://github.com/zchoi/GLSCL",
        extra_params=12_648_960,
        query_dependent=True,
        description="seqTransf + parameter-free softmax pooling of frames guided by the [EOT] feature "
        "(T = 3), cosine with the text.",
        # zchoi/GLSCL train_msrvtt.sh / train_didemo.sh (global batch over 4 GPUs); --preset official only.
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32},
                       "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3},
                       "method": {"temperature": 3.0}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64},
                       "train": {"epochs": 5, "batch_size": 32, "lr": 1e-4, "coef_lr": 1e-3},
                       "method": {"temperature": 3.0}},
        },
    )
    OPTIONS = {
        "temperature": 3.0,
        "normalize": False,
        "mask_mode": "after_softmax",
        "gram_trick": True,
        "temporal_layers": 4,
    }

    OPTION_TYPES = {"mask_mode": Literal[MASK_MODES]}  # temporal_layers 0 is allowed: pool the raw frames

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        layers = int(self.options["temporal_layers"])
        self.temporal = SeqTransf(backbone, layers) if layers > 0 else None

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        t = l2norm(sentence) if self.options["normalize"] else sentence
        state = {"t": t}  # guides the pooling
        if self.options["gram_trick"]:
            state["t_norm"] = t.norm(dim=-1)
        else:
            state["t_hat"] = l2norm(sentence)
        return state

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        z = self.temporal(frame_features, mask) if self.temporal is not None else frame_features
        if self.options["normalize"]:
            z = l2norm(z)
        state = {"frames": z, "video_mask": mask}
        if self.options["gram_trick"]:
            state["gram"] = z @ z.transpose(1, 2)  # [N_v, F, F], offline
        return state

    def _weights(self, dots: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """dots [N_t, N_v, F] = <t, z_f>; softmax over frames with the configured mask handling."""
        mode = self.options["mask_mode"]
        logits = dots / float(self.options["temperature"])
        vmask = video_mask.bool()[None]
        if mode == "before_softmax":
            logits = logits.masked_fill(~vmask, float("-inf"))
        a = torch.softmax(logits, dim=-1)
        if mode == "after_softmax":
            a = a * vmask.to(a.dtype)  # GLSCL: no renormalisation
            # Underflow guard: when a padded frame's logit beats every valid one by more than ~87 (fp32),
            # every valid weight underflows and the official expression gives 0/0 = NaN. There we use the
            # masked softmax, the same cosine in exact arithmetic (the cosine ignores the scale of a).
            underflow = a.sum(dim=-1, keepdim=True) < UNDERFLOW_MASS
            if bool(underflow.any()):  # rare: the second softmax only when some pair needs it (same values)
                masked = torch.softmax(logits.masked_fill(~vmask, float("-inf")), dim=-1)
                a = torch.where(underflow, masked, a)
        return a

    def score_with_parts(self, text: State, video: State):
        z = video["frames"]
        dots = torch.einsum("td,vfd->tvf", text["t"], z)  # F*D MACs per pair
        a = self._weights(dots, video["video_mask"])
        if self.options["gram_trick"]:
            num = torch.einsum("tvf,tvf->tv", a, dots)  # <t, sum_f a_f z_f>
            ct = torch.promote_types(a.dtype, torch.float32)
            with torch.autocast(device_type=a.device.type, enabled=False):  # the quadratic form in >= fp32
                a32 = a.to(ct)
                ga = torch.bmm(a32.transpose(0, 1), video["gram"].to(ct)).transpose(0, 1)  # F^2, batched per video
                sq_norm = torch.einsum("tvf,tvf->tv", a32, ga)  # ||sum_f a_f z_f||^2
            cos = num / (text["t_norm"][:, None] * sq_norm.sqrt()).to(num.dtype)
        else:
            pooled = torch.einsum("tvf,vfd->tvd", a, z)  # F*D
            cos = torch.einsum("td,tvd->tv", text["t_hat"], l2norm(pooled))  # D
        return self.backbone.logit_scale() * cos, {}

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """GLSCL's ``similarity`` (blocks of 16): logits F D, pooled video F D, cosine D per pair; its unused
        ``weight_fc`` MLP (2D -> 4D -> 1 per pair, result discarded) is left out, as the benchmark's peer does
        (benchmarks/official/textpool.py)."""
        d, n_f = self.backbone.embed_dim, self.max_frames
        return 2.0 * (2 * n_f * d + d)

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        pooled = 0 if self.options["gram_trick"] else 2 * self.backbone.embed_dim  # pooled D-vector and its norm
        return itemsize * (pooled + 8 * self.max_frames)

    def head_modules(self):
        return [self.temporal] if self.temporal is not None else []
