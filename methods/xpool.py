"""X-Pool: cross-modal language-video attention pooling (Gorti et al., CVPR 2022; code layer6ai-labs/xpool).

What the official ``modules/transformer.py`` + ``model/clip_transformer.py`` + ``modules/metrics.py`` compute
(docs/methods.md), on the *raw* CLIP features (no temporal encoder, no normalisation before
pooling): t [D] is the projected [EOT] text feature, Z [F, D] the per-frame image features.

1. one LayerNorm LN1 shared by text and frames: t' = LN1(t), Z' = LN1(Z);
2. q = W_q t', K = Z' W_k, V = Z' W_v (D x D with bias); ``num_heads`` heads of width D/H (official: 1);
3. a_h = softmax_F(K_h q_h / sqrt(D/H)); head outputs concatenated: o = concat_h(sum_f a_hf V_hf);
4. r = LN2(W_o o); v_t = LN3(r + Dropout(W_p r)) (dropout 0.3, active only in training);
5. score = kappa * cos(t, v_t) with the *raw* t (not LN1(t)), as ``sim_matrix_training/inference`` do.

All five linears are identity-initialised with zero bias (official ``_init_parameters``); LayerNorms are
torch defaults. Extra parameters 5(D^2 + D) + 3 * 2D = 1,316,352 at D = 512.

Stages: LN1(Z), K and V are text-independent and computed offline in ``video_from_frames``; LN1(t) and q per
query in ``encode_text``; ``score`` does only per-pair work (logits, softmax, aggregation, W_o, LN2, W_p,
LN3, cosine): 2FD + 2D^2 + D MACs per pair as written (``pair_scoring="as_written"``).

Default scoring (``pair_scoring="gram"``, exact, used whenever dropout is inactive, i.e. at evaluation): every
quantity after the softmax is linear in the attention weights up to the two LayerNorms' scalar statistics, so
the pooled vector never needs to exist per pair. With R_k = W_o V_k per video (k = head x frame), the centred
pre-LN2 vector is a combination of K + 1 per-video vectors and the centred LN3 input a combination of K + 2
(their images under M = (I + W_p) diag(LN2 weight), plus a constant); both LayerNorm variances, the product
with the text and the norm of the pooled video are then linear and quadratic forms over per-video Gram
matrices built offline (``gram_video_state``). Per pair: F D (logits) + (K + 2) D (one GEMM of the texts
against every video's bases) + (K+1)^2 + 2 (K+2)^2 MACs = 13,873 at ViT-B/32 instead of 537,088. The
quadratic forms run in at least fp32 (also under autocast), so half-precision rounding does not enter them.

Padding. The official loader never pads: it samples ``num_frames`` frames uniformly over the whole video
and, for a video with fewer frames, repeats the last sampled frame (``datasets/video_capture.py``); the
attention has no mask. Our harness samples at 1 fps and pads with zero frames plus a mask, so the default
``padding="repeat_last"`` fills padded slots with the last valid frame's feature (offline), which is exactly
what the official pipeline would have fed the pooling. ``padding="none"`` uses the padded slots' features as
they come; ``padding="mask"`` puts -inf on padded keys (not official).

Named options that deviate (off by default): ``fold_out_proj`` — exact rewrite W_o(sum_f a_f V_f) + b =
sum_f a_f (W_o V_f) + b (softmax weights sum to 1), moving W_o to the video side; it needs
[N_v, H, F, D] video state and cuts the per-pair cost to (1 + H) F D + D^2 + D MACs. ``padding`` as above.

Differences from the official code that belong to the harness, not to this module:
- the official trainer moves the pooling module to the CPU for inference (``trainer/trainer.py``,
  ``self.model.pool_frames.cpu()``); our harness scores on the one declared device, in chunks, so X-Pool's
  dominant query-time cost shows up in the measured device memory and latency;
- official frame sampling is uniform over all decoded frames, not 1 fps; official training augments
  (RandomResizedCrop + flip) and validates 10 times per epoch keeping a windowed-best checkpoint;
- official AdamW decays every parameter (biases and LayerNorms included); the harness skips names with
  "bias"/"LayerNorm"; the official cosine schedule is rescaled after warm-up (HF
  ``get_cosine_schedule_with_warmup``), the harness's ``warmup_cosine`` is not.

Official recipe (``--preset official``, msrvtt = MSR-VTT-9k): README train command + ``config/all_config.py``:
12 frames, batch 32, 5 epochs (``num_epochs`` default), CLIP lr 1e-6, new-parameter lr 3e-5 (so
coef_lr = 1e-6 / 3e-5), weight decay 0.2, warm-up 0.1, AdamW (betas 0.9/0.999, eps 1e-6, HF AdamW
defaults), gradient clip 1.0, dropout 0.3. Text: max_words 77 — confirmed: the README commands use
``--huggingface``, whose ``CLIPTokenizer(..., padding=True, truncation=True)`` truncates at the model's
77-token context (our ``data.max_words=77``: [SOT] + 75 tokens + [EOT]). X-Pool has no DiDeMo/VATEX recipe.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import DROPOUT, POSITIVE_INT, RetrievalMethod, State, l2norm

PADDING_MODES = ("repeat_last", "none", "mask")
PAIR_SCORING = ("gram", "as_written")


def fill_padding_with_last_valid(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """z [B, F, D]: every padded slot takes the feature of the last valid frame before it (the official
    loader repeats the last sampled frame). Slots before the first valid frame take the first valid one."""
    b, f, _ = z.shape
    valid = mask.bool()
    pos = torch.arange(f, device=z.device).expand(b, f)
    last = torch.where(valid, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    first = torch.where(valid, pos, torch.full_like(pos, f)).min(dim=1, keepdim=True).values
    idx = torch.where(last < 0, first.expand(b, f), last).clamp(max=f - 1)
    return torch.gather(z, 1, idx.unsqueeze(-1).expand_as(z))


def _identity_linear(dim: int) -> nn.Linear:
    lin = nn.Linear(dim, dim)
    with torch.no_grad():
        nn.init.eye_(lin.weight)
        lin.bias.zero_()
    return lin


class XPoolTransformer(nn.Module):
    """The pooling block's parameters (names follow the official module for readability)."""

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.3):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = _identity_linear(dim)
        self.k_proj = _identity_linear(dim)
        self.v_proj = _identity_linear(dim)
        self.out_proj = _identity_linear(dim)
        self.linear_proj = _identity_linear(dim)
        self.layer_norm1 = nn.LayerNorm(dim)  # shared by text and frames
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def gram_video_state(pool: XPoolTransformer, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-video bases and Gram matrices of the exact Gram scoring (see ``gram_cosines``), offline.

    With R_k = W_o^h V_{f,h} (k = (h, f), K = H F of them) the pre-LN2 vector is r = sum_k a_k R_k + b_o, so
    after centring r~ = sum_k a_k R~_k + b~_o and n = r~ / sigma_r. The post-LN3 input u = (I + W_p)(g2 * n + b2)
    + b_p = M n + c with M = (I + W_p) diag(g2), and its centred form is w = sum_j alpha_j B_j over the K + 2
    centred vectors B = [M R~_k ; M b~_o ; c] with alpha = (a / sigma_r, 1 / sigma_r, 1).
    """
    n_v, f, d = values.shape
    h = pool.num_heads
    w_o = pool.out_proj.weight.view(d, h, d // h)
    r = torch.einsum("vfhj,dhj->vhfd", values.view(n_v, f, h, d // h), w_o).reshape(n_v, h * f, d)
    e = torch.cat([_centre(r), _centre(pool.out_proj.bias).expand(n_v, 1, d)], dim=1)  # [N_v, K+1, D]
    ln2 = pool.layer_norm2
    a_mat = torch.eye(d, dtype=values.dtype, device=values.device) + pool.linear_proj.weight  # I + W_p
    m = a_mat * ln2.weight  # M = (I + W_p) diag(g2)
    c = a_mat @ ln2.bias + pool.linear_proj.bias
    b = _centre(torch.cat([e @ m.t(), c.expand(n_v, 1, d)], dim=1))  # [N_v, K+2, D]
    b_g = b * pool.layer_norm3.weight
    return {
        "gram_r": e @ e.transpose(1, 2),  # [N_v, K+1, K+1]: ||r~||^2 as a quadratic form in (a, 1)
        "gram_b": b @ b.transpose(1, 2),  # [N_v, K+2, K+2]: ||w||^2
        "gram_bg": b_g @ b_g.transpose(1, 2),  # ||g3 * w||^2
        "basis_g": b_g,  # [N_v, K+2, D]: <t, g3 * w> = sum_j alpha_j <t, g3 * B_j>
        "basis_g_beta": b_g @ pool.layer_norm3.bias,  # [N_v, K+2]: <b3, g3 * w>
    }


def _quadratic(coef: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """coef [t, v, k], gram [v, k, k] -> [t, v]: coef^T gram coef per pair (batched over videos)."""
    g_coef = torch.bmm(coef.transpose(0, 1), gram).transpose(0, 1)  # [t, v, k]
    return (g_coef * coef).sum(dim=-1)


def gram_cosines(pool: XPoolTransformer, t_hat: torch.Tensor, t_beta3: torch.Tensor, attn: torch.Tensor,
                 video: State) -> torch.Tensor:
    """The pooled-video cosines of every pair without a D-vector per pair (an exact rewrite of the pooling head).

    attn [t, v, H, F] softmax weights, t_beta3 [t] = <t^, b3> (per query); the LayerNorm statistics and the
    cosine are linear / quadratic forms in alpha over the per-video bases of ``gram_video_state``:
    (K + 2) D + O(K^2) MACs per pair instead of 2 D^2 + 2 F D. Computed in at least fp32 (quadratic forms lose
    too much in half precision). ``cos(t, v_t)`` with v_t = LN3(u) and u = M n + c as in ``gram_video_state``.
    """
    n_t, n_v = attn.shape[:2]
    with torch.autocast(device_type=attn.device.type, enabled=False):
        ct = torch.promote_types(attn.dtype, torch.float32)  # at least fp32; fp64 stays fp64
        a = attn.reshape(n_t, n_v, -1).to(ct)
        ones = torch.ones(n_t, n_v, 1, dtype=a.dtype, device=a.device)
        d = video["basis_g"].shape[-1]
        a1 = torch.cat([a, ones], dim=-1)  # (a, 1): coefficients of [R~_k ; b~_o]
        sigma_r = (_quadratic(a1, video["gram_r"].to(ct)) / d + pool.layer_norm2.eps).sqrt()
        alpha = torch.cat([a1 / sigma_r[..., None], ones], dim=-1)  # coefficients of B
        sigma_u = (_quadratic(alpha, video["gram_b"].to(ct)) / d + pool.layer_norm3.eps).sqrt()
        beta3 = pool.layer_norm3.bias.to(ct)
        tb = torch.einsum("td,vjd->tvj", t_hat.to(ct), video["basis_g"].to(ct))  # one GEMM over all bases
        dot = (tb * alpha).sum(-1) / sigma_u + t_beta3.to(ct)[:, None]  # <t^, v_t>
        sq_norm = (_quadratic(alpha, video["gram_bg"].to(ct)) / sigma_u ** 2
                   + 2 * (alpha * video["basis_g_beta"].to(ct)).sum(-1) / sigma_u + beta3.square().sum())
        return dot / sq_norm.clamp_min(0).sqrt()


@register_method
class XPool(RetrievalMethod):
    info = MethodInfo(
        name="xpool",
        paper="Gorti et al., X-Pool: Cross-Modal Language-Video Attention for Text-Video Retrieval, CVPR 2022 "
        "(arXiv 2203.15086)",
        official_repo="https://github.com/layer6ai-labs/xpool",
        extra_params=1_316_352,
        query_dependent=True,
        description="Text-conditioned cross-attention pooling of raw CLIP frames (query from the text, keys/values "
        "from the frames, identity-initialised projections, LayerNorms, residual MLP), cosine with the text.",
        # README train command (MSR-VTT-9k) + config/all_config.py defaults; --preset official only.
        official={
            "msrvtt": {
                "data": {"max_frames": 12, "max_words": 77},
                "train": {"epochs": 5, "batch_size": 32, "lr": 3e-5, "coef_lr": 1e-6 / 3e-5, "weight_decay": 0.2,
                          "warmup_proportion": 0.1, "optimizer": "adamw", "betas": [0.9, 0.999], "eps": 1e-6,
                          "grad_clip": 1.0},
                "method": {"dropout": 0.3, "num_heads": 1},
            },
        },
    )
    OPTIONS = {"num_heads": 1, "dropout": 0.3, "padding": "repeat_last", "fold_out_proj": False,
               "pair_scoring": "gram"}

    OPTION_TYPES = {"num_heads": POSITIVE_INT, "dropout": DROPOUT, "padding": Literal[PADDING_MODES],
                    "pair_scoring": Literal[PAIR_SCORING]}

    @classmethod
    def check_options(cls, options, arch, *, max_frames):
        super().check_options(options, arch, max_frames=max_frames)
        if arch.embed_dim % options["num_heads"]:
            raise ConfigError(f"method.num_heads={options['num_heads']} must divide the embed dim "
                              f"{arch.embed_dim} of {arch.name}")

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        self.pool = XPoolTransformer(backbone.embed_dim, int(self.options["num_heads"]), float(self.options["dropout"]))

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        state = {
            "t_hat": l2norm(sentence),  # the score uses the raw text feature, normalised
            "q": self.pool.q_proj(self.pool.layer_norm1(sentence)),  # once per query
        }
        if self._gram_applies():
            state["t_beta3"] = state["t_hat"] @ self.pool.layer_norm3.bias  # <t^, b3>, for the Gram scoring
        return state

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        z = frame_features
        if self.options["padding"] == "repeat_last":
            z = fill_padding_with_last_valid(z, mask)
        z = self.pool.layer_norm1(z)
        keys, values = self.pool.k_proj(z), self.pool.v_proj(z)
        state = {"keys": keys, "video_mask": mask}
        if self._gram_applies():
            state.update(gram_video_state(self.pool, values))
        if self.options["fold_out_proj"]:
            b, f, d = values.shape
            h = self.pool.num_heads
            w_o = self.pool.out_proj.weight.view(d, h, d // h)  # [out, head, head_dim]
            state["values_out"] = torch.einsum("vfhj,dhj->vhfd", values.view(b, f, h, d // h), w_o)
        else:
            state["values"] = values
        return state

    def score_with_parts(self, text: State, video: State):
        p = self.pool
        q, keys = text["q"], video["keys"]
        n_t, d = q.shape
        n_v, f, _ = keys.shape
        h = p.num_heads
        dh = d // h
        logits = torch.einsum("thj,vfhj->tvhf", q.view(n_t, h, dh), keys.view(n_v, f, h, dh)) / math.sqrt(dh)
        if self.options["padding"] == "mask":
            logits = logits.masked_fill(~video["video_mask"].bool()[None, :, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        if "gram_b" in video and self._gram_applies():
            t_beta3 = text["t_beta3"] if "t_beta3" in text else text["t_hat"] @ p.layer_norm3.bias
            return self.backbone.logit_scale() * gram_cosines(p, text["t_hat"], t_beta3, attn, video), {}
        if self.options["fold_out_proj"]:
            r = torch.einsum("tvhf,vhfd->tvd", attn, video["values_out"]) + p.out_proj.bias
        else:
            values = video["values"].view(n_v, f, h, dh)
            pooled = torch.einsum("tvhf,vfhj->tvhj", attn, values).reshape(n_t, n_v, d)
            r = p.out_proj(pooled)
        r = p.layer_norm2(r)
        v_t = p.layer_norm3(r + p.dropout(p.linear_proj(r)))
        sims = torch.einsum("td,tvd->tv", text["t_hat"], l2norm(v_t))
        return self.backbone.logit_scale() * sims, {}

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """``pool_frames`` on the whole test set at once (no blocks): per text q = W_q LN1(t) D^2, per video
        K, V 2 F D^2, per pair logits and weighted sum 2 F D (all heads together), W_o and W_p 2 D^2 and the
        cosine D; the per-text and per-video work amortised over the gallery_size x gallery_size matrix."""
        d, n_f, n = self.backbone.embed_dim, self.max_frames, gallery_size
        return 2 * (2 * n_f * d + 2 * d * d + d + (d * d + 2 * n_f * d * d) / n)

    def _gram_applies(self) -> bool:
        """The Gram scoring is exact only without dropout on W_p r (eval, or dropout 0)."""
        return self.options["pair_scoring"] == "gram" and not (self.training and self.pool.dropout.p > 0)

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        k = self.pool.num_heads * self.max_frames
        if self.options["pair_scoring"] == "gram":
            # [t,v,H,F] logits and weights, the (HF+2)-long coefficient and text-basis products, a few scalars
            return itemsize * (4 * k + 6 * (k + 2) + 16)
        # [t,v,H,F] logits and attention, then the pooled D-vector through out-proj, residual and norm
        return itemsize * (4 * k + 8 * self.backbone.embed_dim)

    def head_modules(self):
        return [self.pool]
