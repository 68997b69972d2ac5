"""DRL: Disentangled Representation Learning (official code: foolwood/DRL, ``tvr/models/modeling.py``).

What the official ``wti_interaction`` computes (docs/methods.md, checked against the code):
- words W = projected hidden states at every position (``encode_text(return_hidden=True)[1]``); valid words
  are the dataloader's ``text_mask``: [SOT], the caption tokens and [EOT] (padding excluded);
- video tokens Z~ = seqTransf(Z) (``methods/_temporal.py``), valid frames = ``video_mask``;
- WTI weights (``wti_arch 2``): alpha = softmax over valid words of phi_t(w_l), beta = softmax over valid
  frames of phi_v(z~_f), phi = Linear(D,D)-ReLU-Linear(D,1) on the *unnormalised* features, padding filled
  with -inf before the softmax. They do not depend on the other modality: computed per query / per video;
- S_lf = cos(w_l, z~_f) **multiplied by both masks**: a padded word or frame enters the max as 0, not -inf
  (official quirk, kept: when every valid cosine of a word is negative and the video has padded frames, the
  max is 0). TI: t2v = sum_l max_f S_lf / L', v2t = sum_f max_l S_lf / F'; WTI: t2v = sum_l alpha_l max_f
  S_lf, v2t = sum_f beta_f max_l S_lf; s = (t2v + v2t) / 2, times kappa (the official multiplies only in
  training; ranking is unchanged);
- loss = (CrossEn(kappa S) + CrossEn(kappa S^T)) / 2 (the harness's symmetric InfoNCE) + cdcr_lambda * CDCR.
  Nothing else is added.
- CDCR ``cdcr 3``: on the positive pairs, every valid (normalised) word is paired with the frame of its own
  video that maximises S_lf (argmax over the zero-filled row, so a padded frame can be picked), every valid
  frame with its best word; each of the four sets is standardised per channel (mean, unbiased std over the
  set); c1 = sum_a alpha_a za_a zb_a^T / B, c2 = sum_a beta_a xa_a xb_a^T / B (weights carry gradient),
  c = (c1 + c2) / 2, CDCR = alpha1 sum_i (c_ii - 1)^2 + alpha2 sum_{i!=j} c_ij^2. ``cdcr 2`` (the official TI
  recipe) is the unweighted version (each c divided by its number of rows); ``cdcr 0`` disables it.

Defaults = the README's MSR-VTT command: ``wti_arch 2``, ``cdcr 3``, alpha1 0.11, alpha2 0.0, lambda 0.001
(``scripts/msrvtt.sh`` uses alpha1 0.14 for the same ViT-B/32 row). ``cdcr 3`` needs the WTI weights (the
official code has no ``text_weight`` under ``ti``): interaction "ti" requires cdcr 0 or 2.
Evaluation (not training) groups the captions of a block by length and cuts each group's word axis after its
longest caption, so the L x F GEMM skips most all-zero padded rows; exact (``_score_by_length``), tested
against the full block and the loop transcription.
Named option that deviates: ``max_over_valid_only`` (padding enters the max as -inf, methods.md's reading).
One guard, inactive wherever the official loss is finite: a CDCR channel with zero std is not divided by 0
(``standardise``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import POSITIVE_INT, RetrievalMethod, State, l2norm
from tvr_bench.methods._temporal import SeqTransf


def weight_mlp(dim: int) -> nn.Sequential:
    """phi of ``wti_arch 2``: Linear(D,D)-ReLU-Linear(D,1), DRL's init (N(0, 0.02) weights, zero biases)."""
    mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    for layer in (mlp[0], mlp[2]):
        nn.init.normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


def masked_softmax_weights(mlp: nn.Module, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = mlp(feats).squeeze(-1)
    return torch.softmax(logits.masked_fill(~mask.bool(), float("-inf")), dim=-1)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - mean) / std over the rows, unbiased std (torch default, as the official).

    A channel that is constant over the set (std exactly 0) is returned as x - mean (~0) where the official
    code divides by 0 and its loss turns NaN (and ``detect_anomaly`` stops training). It happens when every
    frame's best word is [SOT], whose feature is identical in every caption (causal text mask), e.g. early in
    training from scratch. Wherever the official loss is finite this changes nothing.
    """
    std = x.std(0)
    return (x - x.mean(0)) / torch.where(std == 0, torch.ones_like(std), std)


def cross_correlation_penalty(c: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    diag = torch.diagonal(c)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return alpha1 * on_diag + alpha2 * off_diag


@register_method
class DRL(RetrievalMethod):
    info = MethodInfo(
        name="drl",
        paper="Wang, Zhang, Zheng, Pan, Hua: Disentangled Representation Learning for Text-Video Retrieval, "
        "arXiv 2203.07111 (2022)",
        official_repo="https://github.com/foolwood/DRL",
        extra_params=12_648_960 + 526_338,
        query_dependent=True,
        description="seqTransf + weighted token-wise interaction (L x F cosine matrix, max each way, "
        "query-independent softmax weights); InfoNCE + 0.001 x channel decorrelation (CDCR).",
        # README / scripts/msrvtt.sh of foolwood/DRL (4 GPUs, global batch 128, features all-gathered); the
        # released code has a dataloader for MSR-VTT only.
        official={
            "msrvtt": {
                "data": {"max_frames": 12, "max_words": 32},
                "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3},
                # method: the OPTIONS defaults (wti, wti_arch 2, cdcr 3, alpha1 0.11, alpha2 0, lambda 0.001)
            },
        },
    )
    OPTIONS = {
        "interaction": "wti",  # "wti" (weighted token-wise) or "ti" (token-wise)
        "cdcr": 3,  # 0 (off), 2 (unweighted, official TI recipe) or 3 (weighted, official WTI recipe)
        "cdcr_alpha1": 0.11,
        "cdcr_alpha2": 0.0,
        "cdcr_lambda": 0.001,
        "temporal_layers": 4,
        "max_over_valid_only": False,  # not official: padding enters the max as -inf instead of 0
    }
    OPTION_TYPES = {"interaction": Literal["wti", "ti"], "cdcr": Literal[0, 2, 3], "temporal_layers": POSITIVE_INT}

    @classmethod
    def check_options(cls, options, arch, *, max_frames):
        super().check_options(options, arch, max_frames=max_frames)
        if options["cdcr"] == 3 and options["interaction"] != "wti":
            raise ConfigError("drl: method.cdcr=3 weights by the WTI weights; with method.interaction=ti set "
                              "method.cdcr=2 (the official TI recipe) or 0")

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        interaction = self.options["interaction"]
        self.temporal = SeqTransf(backbone, int(self.options["temporal_layers"]))
        if interaction == "wti":
            self.text_weight_fc = weight_mlp(backbone.embed_dim)
            self.video_weight_fc = weight_mlp(backbone.embed_dim)

    # ---- query side / video side: everything that does not need the other modality --------------------
    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        state = {"w_hat": l2norm(words), "text_mask": mask}
        if self.options["interaction"] == "wti":
            state["text_weight"] = masked_softmax_weights(self.text_weight_fc, words, mask)
        return state

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        z = self.temporal(frame_features, mask)
        state = {"z_hat": l2norm(z), "video_mask": mask}
        if self.options["interaction"] == "wti":
            state["video_weight"] = masked_softmax_weights(self.video_weight_fc, z, mask)
        return state

    # ---- per pair ----------------------------------------------------------------------------------------
    def _token_sims(self, text: State, video: State) -> torch.Tensor:
        """S [N_t, L, N_v, F] (the layout of one [N_t L, D] x [D, N_v F] GEMM, no permuted copy): cosines with
        padded rows/columns 0 (official) or -inf (strict option).

        Official zeros: the padded words and frames are zeroed *before* the product, which gives exactly the
        0 the official mask multiplication gives, without a masked copy of S (a fill, not a product, so a
        non-finite padded feature cannot leak into S)."""
        tm, vm = text["text_mask"].bool(), video["video_mask"].bool()
        w, z = text["w_hat"], video["z_hat"]
        if not self.options["max_over_valid_only"]:
            w, z = w.masked_fill(~tm[..., None], 0.0), z.masked_fill(~vm[..., None], 0.0)
        n_t, n_w, d = w.shape
        n_v, n_f, _ = z.shape
        sims = (w.reshape(n_t * n_w, d) @ z.reshape(n_v * n_f, d).t()).view(n_t, n_w, n_v, n_f)
        if self.options["max_over_valid_only"]:
            valid = tm[:, :, None, None] & vm[None, None, :, :]
            sims = sims.masked_fill(~valid, float("-inf"))
        return sims

    #: texts per length group of the evaluation path (``_score_by_length``)
    LENGTH_GROUP = 64
    _WORD_AXIS = ("w_hat", "text_mask", "text_weight")  # text states with a word axis (dim 1)

    def _score_by_length(self, text: State, video: State) -> torch.Tensor:
        """Evaluation scores with the texts grouped by length, each group's words cut after its longest
        caption: the same values, without the GEMM work on the all-zero padded rows (most of L = 32 for real
        captions). Exact: a cut-off padded word contributes a 0 row; it enters only the max over words of a
        caption with padding, restored by a clamp at 0 (official zero-filled mode; the strict mode ignores
        padding anyway), and the t2v terms of padded words are 0 (zero WTI weight, or 0 in the TI sum)."""
        tm = text["text_mask"].bool()
        n_t, n_w = tm.shape
        pos = torch.arange(1, n_w + 1, device=tm.device)
        span = (tm * pos).amax(dim=1)  # one past each caption's last valid position
        order = torch.argsort(span, stable=True)
        out = []
        for start in range(0, n_t, self.LENGTH_GROUP):
            idx = order[start: start + self.LENGTH_GROUP]
            cut = max(1, int(span[idx].max()))
            sub = {k: v[idx][:, :cut] if k in self._WORD_AXIS else v[idx] for k, v in text.items()}
            padded = tm[idx].sum(dim=1) < n_w  # captions the official max over words sees a 0 for
            out.append(self._score_block(sub, video, padded)[0])
        return torch.cat(out)[torch.argsort(order)]

    def score_with_parts(self, text: State, video: State):
        if not self.training:
            return self.backbone.logit_scale() * self._score_by_length(text, video), {}
        return self._score_block(text, video, None)

    def _score_block(self, text: State, video: State, padded: torch.Tensor | None):
        """Scores of one text block; ``padded`` [t] marks captions whose padded words were cut off (their max
        over words is clamped at the 0 those rows gave), None when nothing was cut. Returns (s / kappa or
        logits, parts): unscaled when ``padded`` is given (the caller scales once)."""
        sims = self._token_sims(text, video)  # [t, l, v, f]
        tm, vm = text["text_mask"].bool(), video["video_mask"].bool()
        # a padded word's row (a padded frame's column) contributes nothing: it is 0 (official) or -inf (strict)
        t2v_max = sims.max(dim=-1).values  # [t, l, v] best frame per word
        v2t_max = sims.max(dim=1).values  # [t, v, f] best word per frame
        if padded is not None and not self.options["max_over_valid_only"]:
            v2t_max = torch.where(padded[:, None, None], v2t_max.clamp_min(0.0), v2t_max)
        if self.options["max_over_valid_only"]:
            t2v_max = t2v_max.masked_fill(~tm[:, :, None], 0.0)
            v2t_max = v2t_max.masked_fill(~vm[None, :, :], 0.0)
        if self.options["interaction"] == "wti":
            t2v = torch.einsum("tlv,tl->tv", t2v_max, text["text_weight"])
            v2t = torch.einsum("tvf,vf->tv", v2t_max, video["video_weight"])
        else:
            t2v = t2v_max.sum(1) / tm.sum(-1).to(sims.dtype)[:, None]
            v2t = v2t_max.sum(-1) / vm.sum(-1).to(sims.dtype)[None, :]
        if padded is not None:
            return (t2v + v2t) / 2, {}
        logits = self.backbone.logit_scale() * (t2v + v2t) / 2
        parts: dict[str, torch.Tensor] = {}
        if self.training and int(self.options["cdcr"]) and sims.shape[0] == sims.shape[2]:
            # CDCR needs the positive pairs' matrices (for the argmax) and the features they index
            parts = {"pos_sims": torch.diagonal(sims, dim1=0, dim2=2).permute(2, 0, 1).detach(),
                     "w_hat": text["w_hat"], "z_hat": video["z_hat"],
                     "text_mask": text["text_mask"], "video_mask": video["video_mask"]}
            if self.options["interaction"] == "wti":
                parts["text_weight"], parts["video_weight"] = text["text_weight"], video["video_weight"]
        return logits, parts

    def extra_losses(self, logits, parts):
        variant = int(self.options["cdcr"])
        if variant == 0 or "pos_sims" not in parts:
            return {}
        return {"cdcr": float(self.options["cdcr_lambda"]) * self.cdcr_loss(parts, variant)}

    def cdcr_loss(self, parts: dict[str, torch.Tensor], variant: int) -> torch.Tensor:
        w, z = parts["w_hat"], parts["z_hat"]  # [B, L, D], [B, F, D], normalised
        tm, vm = parts["text_mask"] > 0.5, parts["video_mask"] > 0.5
        pos = parts["pos_sims"]  # [B, L, F]
        b = w.shape[0]
        rows = torch.arange(b, device=w.device)
        best_frame = pos.max(dim=-1).indices  # [B, L]
        best_word = pos.max(dim=-2).indices  # [B, F]
        t_feat, v_feat = w[tm], z[vm]
        max_v_feat = z[rows[:, None], best_frame][tm]  # each valid word's best frame
        max_t_feat = w[rows[:, None], best_word][vm]  # each valid frame's best word
        za, zb = standardise(t_feat), standardise(max_v_feat)
        xa, xb = standardise(v_feat), standardise(max_t_feat)
        if variant == 3:
            c1 = torch.einsum("ac,ad,a->cd", za, zb, parts["text_weight"][tm]) / b
            c2 = torch.einsum("ac,ad,a->cd", xa, xb, parts["video_weight"][vm]) / b
        else:
            c1 = za.t() @ zb / za.shape[0]
            c2 = xa.t() @ xb / xa.shape[0]
        return cross_correlation_penalty((c1 + c2) / 2, float(self.options["cdcr_alpha1"]),
                                         float(self.options["cdcr_alpha2"]))

    #: the official scoring block (``mini_batch`` of main.py's ``_run_on_single_gpu``)
    OFFICIAL_EVAL_BLOCK = 32

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """``wti_interaction`` per (text block, video block) of b = 32: both weight MLPs re-run on the
        block's words and frames, (L + F)(D^2 + D) per text / video and block (WTI only), then per pair the
        L x F cosines L F D and the weighted sums L + F (ti: no weights, sums 0)."""
        b, d, n_w, n_f = self.OFFICIAL_EVAL_BLOCK, self.backbone.embed_dim, self.max_words, self.max_frames
        if self.options["interaction"] != "wti":
            return 2.0 * n_w * n_f * d
        return 2 * (n_w * n_f * d + n_w + n_f + b * (n_w + n_f) * (d * d + d) / (b * b))

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        return 4 * itemsize * self.max_words * self.max_frames  # the L x F token similarities and their maxima

    def head_modules(self):
        mods: list[nn.Module] = [self.temporal]
        if self.options["interaction"] == "wti":
            mods += [self.text_weight_fc, self.video_weight_fc]
        return mods
