"""X-CLIP, official formulation (xuguohai/X-CLIP: ``main_xclip.py`` eval loop, ``modules/modeling_xclip.py``).

Reproduced: ``eval_epoch`` caches the raw CLIP frame features per video batch and the [EOT] / hidden text
features per caption batch, then ``_run_on_single_gpu`` calls ``get_similarity_logits`` -> ``_loose_similarity``
for every (text block, video block) of ``batch_size_val`` = 40 (scripts/run_xclip_msrvtt_vit32.sh). Each such
call re-runs the seqTransf temporal encoder on the video block, L2-normalises frames / words / sentences again,
masked-means the normalised encoder outputs into the video vector, keeps the raw frames for the frame-level
features (``use_original_clip_for_frame_features``) and forms the four scores with its own layouts:
video-word as [text, word, video] with the softmax over words, sentence-frame as [video, text, frame]
(transposed at the end), and the frame-word matrix as one [text*word, video*frame] GEMM viewed
[text, word, video, frame] followed by the two-stage AOSM. Written from reading that code, not copied.
"""

from __future__ import annotations

import torch

from official.common import L, F, Case, Inputs, unit, blocked_matrix, cached_states

BATCH_SIZE_VAL = 40


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official ``_mean_pooling_for_similarity_visual``: sum of valid rows / their count (0 -> 1)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    count = m.sum(dim=1)
    count[count == 0.0] = 1.0
    return (x * m).sum(dim=1) / count


def _aosm_fine(sc, words: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """``_attenion_over_fine_grained_sim_matrix``: words [a, L, D], frames [b, F, D] -> [a, b]."""
    a, n_w, d = words.shape
    b, n_f, _ = frames.shape
    fine = ((words.reshape(-1, d) @ sc.local_mat_weight) @ frames.reshape(-1, d).t()).view(a, n_w, b, n_f)
    word_level = ((torch.softmax(fine / 1e-2, dim=1).permute(0, 2, 3, 1) @ sc.word_mat_weight)
                  .permute(0, 3, 1, 2) * fine).sum(dim=1)  # [a, b, F]
    frame_level = ((torch.softmax(fine / 1e-2, dim=-1) @ sc.frame_mat_weight) * fine).sum(dim=-1)  # [a, L, b]
    s2f = ((torch.softmax(word_level / 1e-2, dim=-1) @ sc.frame_mat_weight2) * word_level).sum(dim=-1)
    v2w = ((torch.softmax(frame_level / 1e-2, dim=1).permute(0, 2, 1) @ sc.word_mat_weight2)
           .permute(0, 2, 1) * frame_level).sum(dim=1)
    return (s2f + v2w) / 2


def official_block(method, sentence, words, frames_raw, video_mask) -> torch.Tensor:
    """One ``_loose_similarity`` call (seqTransf sim_header, eval): [a] captions x [b] videos."""
    sc = method.scores
    z = method.temporal(frames_raw, video_mask)  # re-run for every (text block, video block)
    video = unit(_masked_mean(unit(z), video_mask))  # [b, D]
    frame_feats = unit(frames_raw)  # raw CLIP frames
    sent, word_feats = unit(sentence), unit(words)
    kappa = method.backbone.logit_scale()
    vs = kappa * ((sent @ sc.global_mat_weight) @ video.t())
    wv = word_feats @ video.t()  # [a, L, b]
    vw = kappa * (wv * (torch.softmax(wv / 1e-2, dim=1).permute(0, 2, 1) @ sc.word_logit_weight)
                  .permute(0, 2, 1)).sum(dim=1)
    sf_raw = sent @ frame_feats.permute(0, 2, 1)  # [b, a, F]
    sf = kappa * (sf_raw * (torch.softmax(sf_raw / 1e-2, dim=-1) @ sc.frame_logit_weight)).sum(dim=-1).t()
    fw = kappa * _aosm_fine(sc, word_feats, frame_feats)
    return (vs + vw + sf + fw) / 4


def official_matrix(method, x: Inputs, bs: int = BATCH_SIZE_VAL) -> torch.Tensor:
    return blocked_matrix(
        lambda t, v: official_block(method, x.sentence[t], x.words[t], x.frames[v], x.video_mask[v]), x.n, bs)


def build(backbone):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get("xclip")
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # AOSM matrices away from the identity: the identity hides layout bugs
        for p in m.scores.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def case(backbone, x: Inputs) -> Case:
    m = build(backbone)

    states = cached_states(m, backbone)

    return Case(
        name="xclip", n=x.n, official_block=BATCH_SIZE_VAL, method=m, inputs=x,
        official_matrix=lambda inp, _prepared: official_matrix(m, inp),
        official_block_fn=lambda inp, b: official_block(m, inp.sentence[:b], inp.words[:b], inp.frames[:b],
                                                        inp.video_mask[:b]),
        tvr_states=states,
        notes="official re-runs seqTransf per (text, video) block of 40")
