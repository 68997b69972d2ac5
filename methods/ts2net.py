"""TS2-Net: Token Shift and Selection Transformer (official code: yuqi657/ts2_net, stored as LiuRicky/ts2_net).

As the released code computes it (``modules/modeling.py``, ``modules/until_module.py``,
``modules/differential_topk.py``; docs/methods.md):

1. Token shift, parameter-free, in the last ``shift_layers`` (official 2: blocks 10-11 of 12) CLIP ViT blocks,
   on the attention input ln_1(x) only (the residual stream is not shifted): with T tokens per frame and
   fold = T // 7, positions 1, 1+fold, ... take the previous frame's token, positions 4, 4+fold, ... the next
   frame's; CLS is never shifted; whole tokens. Exact transcription in ``methods/_vision_hooks.py``.
2. Every token of every frame after ln_post and the projection (CLS + patches, D wide).
3. Token selection (``VisualTokenSelection``): ``PredictorLG`` scores every token, LN -> Linear D->D/2 (no
   bias) -> GELU, each token's half concatenated with the CLS token's half, Linear D->D/2 (no bias) -> GELU ->
   Linear D/2->1 (no bias) -> tanh; CLS is always kept and the top K = 3 patches are chosen from the patch
   scores with the perturbed-maximum top-k (500 Gaussian samples, sigma 0.05; indices sorted by position, the
   indicator of slot k = the fraction of samples whose k-th selected index is p; backward = the perturbed
   optimiser's estimator E[indicator * noise] / sigma). Selected token k = sum_p indicator[k, p] * patch_p.
   **The official code runs this same noisy selector at evaluation** (``PerturbedTopK`` ignores train/eval),
   so the default ``eval_topk="perturbed"`` keeps that; ``"hard"`` (deterministic top-k) is a named option.
4. The F*(K+1) tokens, frame-major (CLS_0, s_0,1..s_0,K, CLS_1, ...), go through the 4-layer seqTransf with
   positions 0..F(K+1)-1 (one position per token, from CLIP's text table) and the residual; then only the CLS
   positions are kept: z~_f. Quirk kept: the token mask is the frame mask *tiled* (``mask.repeat(1, K+1)``),
   not repeated per frame, so token p gets frame (p mod F)'s flag and z~_f gets frame ((K+1) f mod F)'s flag,
   in seqTransf and in the score. It differs from the true mask only for videos with padded frames.
   ``fix_token_mask=True`` (not official) repeats each frame's flag over its own K+1 tokens.
5. Score (``get_frame_selectedcls_similarity``, the only term with weight: ``frame_match_weight = 1.0``):
   s_f = cos(t, z~_f); w = s * m, w_hat = w / ||w||_2 over frames, padded frames (per the mask above) set to
   -1e18; s(t, v) = kappa * sum_f softmax_f(4 w_hat_f) s_f. Its first step (a softmax over the singleton text
   axis of the normalised score) is the identity, as the text is the one [EOT] vector, and is omitted.
   Loss: symmetric InfoNCE only (the harness's).

Parameters (ViT-B/32): seqTransf 12,648,960 + PredictorLG 263,424 (LN 1,024 + 2 x 131,072 + 256). The official
model also *registers* two modules it never calls: a ``TextTokenSelection`` (263,680: its predictor has a bias
on the first Linear and a sigmoid) and a ``VideoPromptEncoder`` (conv 3->768 with 32x32 kernels 2,359,296 +
4x768 positions + LN 1,536 = 2,363,904). They change nothing that is computed, so by default they are not
built (head = 12,912,384, methods.md's count); ``register_unused=True`` builds them (random init, never used)
for parameter/state-dict parity with the official model (head = 15,539,968).

Init as the official ``init_weights``: PredictorLG Linear weights N(0, 0.02), LayerNorm ones/zeros; seqTransf
from CLIP text blocks 0-3 and the text positional table. The frame position table has the text context's rows
(77 for CLIP), so F*(K+1) must fit in it: F <= 19 at K = 3 (the official code has the same limit; its
scripts cover MSR-VTT and VATEX only, 12 frames).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import POSITIVE_INT, RetrievalMethod, need_positions, State, l2norm
from tvr_bench.methods._temporal import SeqTransf
from tvr_bench.methods._vision_hooks import encode_frame_tokens


class _PerturbedTopK(torch.autograd.Function):
    """Perturbed-maximum top-k indicators [n, k, d] from scores [n, d] and Gaussian noise [n, S, d]."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        n, s, d = noise.shape
        perturbed = scores.unsqueeze(1) + sigma * noise
        idx = perturbed.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values  # [n, S, k], by position
        slot_idx = idx.transpose(1, 2).contiguous()  # [n, k, S]
        # mean over samples of one_hot(idx), without materialising the [n, S, k, d] one-hot tensor
        counts = torch.zeros(n, k, d, dtype=scores.dtype, device=scores.device)
        counts.scatter_add_(2, slot_idx, torch.ones(slot_idx.shape, dtype=scores.dtype, device=scores.device))
        ctx.save_for_backward(slot_idx, noise.gather(2, idx).transpose(1, 2).to(scores.dtype))
        ctx.sigma, ctx.d = sigma, d
        return counts / s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        slot_idx, picked_noise = ctx.saved_tensors
        n, k, s = slot_idx.shape
        # E[one_hot(idx) * noise] / sigma, per slot: the noise of each sample lands on the index it selected
        expected = torch.zeros(n, k, ctx.d, dtype=picked_noise.dtype, device=grad.device)
        expected.scatter_add_(2, slot_idx, picked_noise)
        expected = expected / s / ctx.sigma
        return (grad.to(expected.dtype) * expected).sum(dim=1), None, None, None


def perturbed_topk(scores: torch.Tensor, k: int, num_samples: int, sigma: float,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable top-k (Berthet et al.; TS2-Net's ``PerturbedTopK``). scores [n, d] -> [n, k, d].

    Computed in at least fp32 (the official code builds fp32 one-hots); ``noise`` [n, S, d] defaults to fresh
    standard normal samples from the global generator.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if noise is None:
        noise = torch.randn(scores.shape[0], num_samples, scores.shape[1], dtype=scores.dtype, device=scores.device)
    return _PerturbedTopK.apply(scores, k, noise, sigma)


def hard_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """One-hot indicators [n, k, d] of the k highest scores, slots ordered by position (not official at eval)."""
    idx = scores.topk(k, dim=-1).indices.sort(dim=-1).values
    return nn.functional.one_hot(idx, scores.shape[-1]).to(torch.promote_types(scores.dtype, torch.float32))


class PredictorLG(nn.Module):
    """Token scorer: per-token half (LN, Linear D->D/2, GELU) joined with the CLS token's half, MLP to tanh."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, half, bias=False), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(2 * half, half, bias=False), nn.GELU(),
                                      nn.Linear(half, 1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, T, D] (token 0 = CLS) -> scores [n, T]."""
        h = self.in_conv(x)
        h = torch.cat([h, h[:, :1].expand_as(h)], dim=-1)
        return self.out_conv(h).squeeze(-1)


class TokenSelector(nn.Module):
    """CLS + the K patches picked by the perturbed top-k over PredictorLG scores (``VisualTokenSelection``)."""

    def __init__(self, dim: int, topk: int, num_samples: int, sigma: float):
        super().__init__()
        self.topk, self.num_samples, self.sigma = topk, num_samples, sigma
        self.score_predictor = PredictorLG(dim)

    def forward(self, tokens: torch.Tensor, perturbed: bool = True) -> torch.Tensor:
        """tokens [n, T, D] -> [n, K+1, D]: CLS, then the K selected patches (mixtures when perturbed)."""
        scores = self.score_predictor(tokens)[:, 1:]  # CLS is always kept; only patches compete
        if perturbed:
            ind = perturbed_topk(scores, self.topk, self.num_samples, self.sigma)
        else:
            ind = hard_topk(scores, self.topk)
        selected = torch.einsum("nkp,npd->nkd", ind.to(tokens.dtype), tokens[:, 1:])
        return torch.cat([tokens[:, :1], selected], dim=1)


class _UnusedOfficialModules(nn.Module):
    """Parameter-shape replicas of what the official model registers and never calls (never run here either)."""

    def __init__(self, dim: int, vision_width: int, patch_size: int, prompt_len: int = 4):
        super().__init__()
        half = dim // 2
        # TextTokenSelection.score_predictor (TextPredictorLG)
        self.text_token_selector = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, half), nn.GELU(),
            nn.Linear(2 * half, half, bias=False), nn.GELU(), nn.Linear(half, 1, bias=False), nn.Sigmoid())
        # VideoPromptEncoder
        self.prompt_conv = nn.Conv2d(3, vision_width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.prompt_positional_embedding = nn.Parameter(vision_width ** -0.5 * torch.randn(prompt_len, vision_width))
        self.prompt_layer_norm = nn.LayerNorm(vision_width)


def _init_official(module: nn.Module) -> None:
    """The official ``init_weights``: Linear weights N(0, 0.02), biases 0 (nn.LayerNorm keeps ones/zeros)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_method
class TS2Net(RetrievalMethod):
    info = MethodInfo(
        name="ts2net",
        video_input="pixels",  # token shift inside the image tower, patch tokens for the selection
        paper="Liu, Xiong, Xu, Cao, Jin: TS2-Net: Token Shift and Selection Transformer for Text-Video Retrieval, "
        "ECCV 2022 (arXiv 2207.07852)",
        official_repo="https://github.com/yuqi657/ts2_net",
        extra_params=12_648_960 + 263_424,
        query_dependent=True,
        description="Token shift in the last ViT blocks + perturbed top-k token selection (CLS + 3 patches per "
        "frame) through seqTransf; text-conditioned softmax re-weighting of per-frame cosines.",
        # scripts/run_msrvtt.sh and scripts/run_vatex.sh (docs/methods.md): global batch 128 over 8 GPUs, 4 seqTransf
        # layers (VATEX by the argparse default); the repository has no DiDeMo script.
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32},
                       "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3}},
            "vatex": {"data": {"max_frames": 12, "max_words": 32},
                      "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3}},
        },
    )
    OPTIONS = {
        "temporal_layers": 4,
        "shift_layers": 2,  # the last 2 vision blocks (10-11 of ViT-B/32)
        "shift_div": 7,  # n_div: shift stride = tokens per frame // 7
        "topk": 3,  # patches per frame besides CLS
        "topk_samples": 500,
        "topk_sigma": 0.05,
        "eval_topk": "perturbed",  # official: the noisy selector at evaluation too; "hard" = deterministic
        "frame_softmax_scale": 4.0,
        "fix_token_mask": False,  # True: per-frame token mask (not official)
        "register_unused": False,  # True: also build the unused text selector and video prompt encoder
    }
    OPTION_TYPES = {"temporal_layers": POSITIVE_INT, "shift_div": POSITIVE_INT, "topk_samples": POSITIVE_INT,
                    "eval_topk": Literal["perturbed", "hard"]}

    @classmethod
    def check_options(cls, options, arch, *, max_frames):
        super().check_options(options, arch, max_frames=max_frames)
        if options["shift_layers"] > arch.vision_layers:
            raise ConfigError(f"method.shift_layers={options['shift_layers']}: the vision tower of {arch.name} has "
                              f"{arch.vision_layers} blocks; accepted: 0..{arch.vision_layers}")
        need_positions(arch, max_frames * (options["topk"] + 1), "ts2net's seqTransf (max_frames x (topk+1))",
                       "lower data.max_frames or method.topk")

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        opts = self.options
        self.temporal = SeqTransf(backbone, int(opts["temporal_layers"]))
        dim = backbone.embed_dim
        self.visual_token_selector = TokenSelector(dim, int(opts["topk"]), int(opts["topk_samples"]),
                                                   float(opts["topk_sigma"]))
        _init_official(self.visual_token_selector)
        if opts["register_unused"]:
            visual = backbone.clip.visual
            self.unused = _UnusedOfficialModules(dim, visual.conv1.out_channels, visual.conv1.kernel_size[0])
            _init_official(self.unused)

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        return {"t_hat": l2norm(sentence)}

    def video_feature_kind(self) -> str:
        return f"frame-tokens(shift_layers={int(self.options['shift_layers'])}, shift_div={int(self.options['shift_div'])})"

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Every token of every frame [B, F, T, D], with the token shift inside the last vision blocks."""
        return encode_frame_tokens(self.backbone, frames, shift_layers=int(self.options["shift_layers"]),
                                   shift_div=int(self.options["shift_div"]))

    def video_from_features(self, features: torch.Tensor, mask: torch.Tensor) -> State:
        return self.video_from_tokens(features, mask)

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        raise NotImplementedError("ts2net needs every token of every frame (video_features / video_from_tokens), "
                                  "not only the CLS features")

    def video_from_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> State:
        """tokens [B, F, T, D] (after ln_post + projection, token 0 = CLS) -> offline video state."""
        b, f, t, d = tokens.shape
        k1 = int(self.options["topk"]) + 1
        perturbed = self.training or self.options["eval_topk"] == "perturbed"
        selected = self.visual_token_selector(tokens.reshape(b * f, t, d), perturbed=perturbed)
        return self.video_from_selected(selected.reshape(b, f * k1, d), mask)  # frame-major: CLS_f, its K patches

    def video_from_selected(self, selected: torch.Tensor, mask: torch.Tensor) -> State:
        """selected [B, F(K+1), D] (frame-major CLS_f + its K selected patches), mask [B, F] -> offline state.

        The step after the (random) token selection, on its own so that a benchmark can feed both sides the same
        selected tokens."""
        k1 = int(self.options["topk"]) + 1
        if self.options["fix_token_mask"]:
            token_mask = mask.repeat_interleave(k1, dim=1)
        else:
            token_mask = mask.repeat(1, k1)  # official: tiled, token p <- frame p mod F
        z = self.temporal(selected, token_mask)[:, ::k1]  # keep the CLS positions
        return {"frames_hat": l2norm(z), "frame_mask": token_mask[:, ::k1]}

    def score_with_parts(self, text: State, video: State):
        s = torch.einsum("td,vfd->tvf", text["t_hat"], video["frames_hat"])  # cosines [N_t, N_v, F]
        s = s.to(torch.promote_types(s.dtype, torch.float32))  # -1e18 below needs fp32 under autocast
        valid = video["frame_mask"].bool().unsqueeze(0)
        w = s * valid
        w = w / w.norm(dim=-1, keepdim=True)
        w = w.masked_fill(~valid, -1e18)
        a = torch.softmax(float(self.options["frame_softmax_scale"]) * w, dim=-1)
        logits = self.backbone.logit_scale() * (a * s).sum(dim=-1)
        return logits, {}

    #: the official eval block (``batch_size_val`` of scripts/run_msrvtt.sh)
    OFFICIAL_EVAL_BLOCK = 8

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """``get_final_similarity`` per (text block, video block) of b = 8: the seqTransf re-run on the block's
        F (K + 1) selected tokens per video, then both frame scores (the weighted one and the one weighted 0)
        F D each per pair."""
        b, d, n_f = self.OFFICIAL_EVAL_BLOCK, self.backbone.embed_dim, self.max_frames
        tokens = n_f * (int(self.options["topk"]) + 1)
        return 2 * (2 * n_f * d + b * self.temporal.macs(tokens) / (b * b))

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        return 6 * 4 * self.max_frames  # cosines, weights, softmax (kept in fp32): a few F-vectors per pair

    def head_modules(self):
        return [m for name, m in self.named_children() if name != "backbone"]
