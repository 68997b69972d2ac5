"""Evaluation: encode the gallery once (video side cached), encode the queries, score in bounded chunks, rank.

The similarity matrix is assembled block by block: each (text chunk, video chunk) block goes through the
method's ``score`` so per-pair intermediates (GLCCL's [N_t, N_v, L, D] word-guided features, for instance)
never exceed ``chunk_size`` texts x ``chunk_size`` videos, whatever the gallery size.
"""

from __future__ import annotations

import dataclasses
import math
import torch
from torch.utils.data import DataLoader

from tvr_bench.bench import metrics as M
from tvr_bench.bench.api.state import State, concat_states, slice_state, state_to
from tvr_bench.bench.data.pipeline import FrameStore, TokenizedCaptions, VideoDataset

@torch.no_grad()
def encode_videos(method, store: FrameStore, split, batch_size: int, device, autocast) -> State:
    loader = DataLoader(VideoDataset(split, store), batch_size=batch_size, shuffle=False)
    out = []
    for frames, mask in loader:
        with autocast():
            out.append(state_to(method.encode_video(frames.to(device), mask.to(device)), device))
    return {k: v.float() if v.is_floating_point() else v for k, v in concat_states(out).items()}


@torch.no_grad()
def encode_texts(method, captions: TokenizedCaptions, batch_size: int, device, autocast) -> State:
    out = []
    for start in range(0, captions.tokens.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        with autocast():
            out.append(method.encode_text(captions.tokens[sl].to(device), captions.mask[sl].to(device)))
    return {k: v.float() if v.is_floating_point() else v for k, v in concat_states(out).items()}


@torch.no_grad()
def similarity_matrix(method, text: State, video: State, chunk_size: int, autocast) -> torch.Tensor:
    """[N_t, N_v] float32 on the CPU, computed in chunk_size x chunk_size blocks."""
    n_t = next(iter(text.values())).shape[0]
    n_v = next(iter(video.values())).shape[0]
    sim = torch.empty(n_t, n_v, dtype=torch.float32)
    for ts in range(0, n_t, chunk_size):
        t_blk = slice_state(text, slice(ts, ts + chunk_size))
        for vs in range(0, n_v, chunk_size):
            v_blk = slice_state(video, slice(vs, vs + chunk_size))
            with autocast():
                block = method.score(t_blk, v_blk)
            sim[ts: ts + chunk_size, vs: vs + chunk_size] = block.float().cpu()
    return sim


@torch.no_grad()
def streamed_similarity(method, captions: TokenizedCaptions, video: State, *, batch_size: int, chunk_size: int,
                        device, autocast) -> torch.Tensor:
    """The [N_t, N_v] matrix with the text side streamed: one group of queries' states is held at a time.

    (All 15,000 VATEX captions' GLCCL word states alone are ~3 GB.) Groups of lcm(batch, chunk) captions keep
    every text-encoding batch and every scoring block as a one-shot pass forms them: the result is bit-identical.
    """
    n_t = captions.tokens.shape[0]
    n_v = next(iter(video.values())).shape[0]
    group = math.lcm(batch_size, chunk_size)
    sim = torch.empty(n_t, n_v, dtype=torch.float32)
    for start in range(0, n_t, group):
        part = dataclasses.replace(captions, tokens=captions.tokens[start: start + group],
                                   mask=captions.mask[start: start + group])
        text = encode_texts(method, part, batch_size, device, autocast)
        sim[start: start + group] = similarity_matrix(method, text, video, chunk_size, autocast)
    return sim


def evaluate_split(method, split, store: FrameStore, captions: TokenizedCaptions, *, batch_size: int,
                   chunk_size: int, tie_policy: str, device, autocast) -> dict:
    was_training = method.training
    method.eval()
    try:
        video = encode_videos(method, store, split, batch_size, device, autocast)
        sim = streamed_similarity(method, captions, video, batch_size=batch_size, chunk_size=chunk_size,
                                  device=device, autocast=autocast)
    finally:
        method.train(was_training)
    result = M.retrieval_metrics(sim, split.text_to_video(), chunk_size=max(chunk_size, 256), tie_policy=tie_policy)
    return result
