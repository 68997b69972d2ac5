"""Evaluation: encode the gallery once (video side cached), encode the queries, score in bounded blocks, rank.

The similarity matrix is assembled block by block: each (text block, video block) goes through the method's
``score``, so per-pair intermediates never exceed one block whatever the gallery size. The block side comes
from ``eval.memory_budget`` and the method's ``score_pair_bytes`` (the largest square block whose
intermediates fit); ``eval.chunk_size``, when set, overrides it.
"""

from __future__ import annotations

import dataclasses
import math
import torch
from torch.utils.data import DataLoader

from tvr_bench.bench import metrics as M
from tvr_bench.bench import progress
from tvr_bench.bench.api.state import State, concat_states, slice_state, state_to
from tvr_bench.bench.data.feature_cache import encode_cached_texts, encode_cached_videos
from tvr_bench.bench.data.pipeline import FrameStore, TokenizedCaptions, VideoDataset
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.units import parse_bytes  # noqa: F401  (re-exported: eval.memory_budget's parser)

#: default scoring budgets: CPU a fixed 2 GiB (a laptop-safe share of RAM); CUDA a quarter of the free memory
CPU_DEFAULT_BUDGET = 2 << 30


def default_budget(device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    return CPU_DEFAULT_BUDGET


def block_side(method, *, memory_budget=None, chunk_size: int | None = None, device="cpu",
               itemsize: int = 4, limit: int | None = None) -> int:
    """Side of the square scoring block: ``chunk_size`` if given, else the largest that fits the budget."""
    if chunk_size is not None:
        return int(chunk_size)
    budget = default_budget(device) if memory_budget is None else parse_bytes(memory_budget)
    side = max(1, math.isqrt(budget // max(1, int(method.score_pair_bytes(itemsize)))))
    return side if limit is None else max(1, min(side, limit))


def rows_block(method, n_rows: int, *, memory_budget=None, chunk_size: int | None = None, device="cpu",
               itemsize: int = 4) -> int:
    """Videos per block when ``n_rows`` texts are scored at once (query latency: one text)."""
    if chunk_size is not None:
        return int(chunk_size)
    budget = default_budget(device) if memory_budget is None else parse_bytes(memory_budget)
    return max(1, budget // (max(1, n_rows) * max(1, int(method.score_pair_bytes(itemsize)))))


@torch.no_grad()
def encode_videos(method, store: FrameStore, split, batch_size: int, device, autocast) -> State:
    loader = DataLoader(VideoDataset(split, store), batch_size=batch_size, shuffle=False)
    out = []
    with progress.bar(len(split.videos), f"encode {split.name} videos", "video") as shown:
        for frames, mask in loader:
            with autocast():
                out.append(state_to(method.encode_video(frames.to(device), mask.to(device)), device))
            shown.update(frames.shape[0])
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
                        device, autocast, features=None) -> torch.Tensor:
    """The [N_t, N_v] matrix with the text side streamed: one group of queries' states is held at a time.

    (All 15,000 VATEX captions' GLCCL word states alone are ~3 GB.) Groups of lcm(batch, chunk) captions keep
    every text-encoding batch and every scoring block as a one-shot pass forms them: the result is bit-identical.
    """
    n_t = captions.tokens.shape[0]
    n_v = next(iter(video.values())).shape[0]
    group = math.lcm(batch_size, chunk_size)
    sim = torch.empty(n_t, n_v, dtype=torch.float32)
    with progress.bar(n_t, f"score {n_t} queries x {n_v} videos", "query") as shown:
        for start in range(0, n_t, group):
            stop = min(n_t, start + group)
            if features is not None:  # frozen backbone: the text tower's outputs come from the feature cache
                text = encode_cached_texts(method, features, start, stop, batch_size, device, autocast)
            else:
                part = dataclasses.replace(captions, tokens=captions.tokens[start:stop], mask=captions.mask[start:stop])
                text = encode_texts(method, part, batch_size, device, autocast)
            sim[start:stop] = similarity_matrix(method, text, video, chunk_size, autocast)
            shown.update(stop - start)
    return sim


def evaluate_split(method, split, store: FrameStore, captions: TokenizedCaptions, *, batch_size: int,
                   chunk_size: int | None, tie_policy: str, device, autocast, memory_budget=None,
                   features=None) -> dict:
    """``features`` (bench/data/feature_cache.SplitFeatures): the frozen backbone's cached outputs for this split,
    used in place of running the towers (the same numbers, computed once)."""
    was_training = method.training
    method.eval()
    try:
        if features is not None:
            video = encode_cached_videos(method, features, batch_size, device, autocast)
        else:
            video = encode_videos(method, store, split, batch_size, device, autocast)
        n_v = next(iter(video.values())).shape[0]
        chunk_size = block_side(method, memory_budget=memory_budget, chunk_size=chunk_size, device=device,
                                limit=max(n_v, captions.tokens.shape[0]))
        sim = streamed_similarity(method, captions, video, batch_size=batch_size, chunk_size=chunk_size,
                                  device=device, autocast=autocast, features=features)
    finally:
        method.train(was_training)
    result = M.retrieval_metrics(sim, split.text_to_video(), chunk_size=max(chunk_size, 256), tie_policy=tie_policy)
    return result
