"""Block sizing of the chunked score matrix: how many (text, video) pairs one ``score`` call may take so its
intermediates fit a memory budget, and which block shape scores fastest."""

from __future__ import annotations

import time
from typing import Callable

import torch

from tvr_bench.bench.api.state import State, tile_state
from tvr_bench.bench.cost.memory import block_intermediate_bytes

MiB = float(1 << 20)


def sync(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bytes_per_pair(method, text: State, video: State, probe=(2, 16)) -> float:
    """Scoring intermediates per pair, from a probe block (fixed per-block costs make it an overestimate)."""
    bt, bv = probe
    t = tile_state(text, bt)
    v = tile_state(video, bv)
    return max(block_intermediate_bytes(method, t, v), 1) / (bt * bv)


def fit_block(method, text_real: State, video_real: State, chunk: tuple[int, int], budget_bytes: float
              ) -> tuple[tuple[int, int], int]:
    """Shrink ``chunk`` until one block's measured intermediates (:class:`LiveTensorBytes`) fit the budget.

    The probe's bytes per pair is an estimate (per-text and per-video terms weigh differently in other block
    shapes); this check makes the bound hold for the block actually used. Returns (chunk, its peak bytes).
    """
    t, v = chunk
    while True:
        peak = block_intermediate_bytes(method, tile_state(text_real, t), tile_state(video_real, v))
        if peak <= budget_bytes or (t == 1 and v == 1):
            return (t, v), peak
        if v >= t:
            v = max(1, v // 2)
        else:
            t = max(1, t // 2)


def probe_pairs_for(per_pair_flops: float, dense: dict | None, seconds: float = 0.3) -> int:
    """Pairs of a tuning probe: about ``seconds`` at a quarter of the dense GEMM rate."""
    rate = dense["flops_per_s"] if dense else 1e10
    return int(min(1 << 16, max(64, seconds * rate / 4 / max(per_pair_flops, 1.0))))


def pairs_per_block(per_pair_bytes: float, block_mb: float, cap: int) -> int:
    return int(max(1, min(cap, (block_mb * MiB) // per_pair_bytes)))


@torch.no_grad()
def choose_block(method, text_real: State, video_real: State, *, n_t: int, n_v: int, pairs: int,
                 probe_pairs: int, device, autocast: Callable = None, max_tuning_s: float = 4.0
                 ) -> tuple[tuple[int, int], list]:
    """The (texts, videos) block shape of at most ``pairs`` pairs that scores fastest, by a quick probe.

    The best shape depends on the method (a two-tower cosine wants a square GEMM; a query-dependent head
    whose einsums permute [t, v, ...] intermediates is fastest with one text per block), so each method is
    scored with the shape that suits it, as a tuned implementation would be. Candidates have ``probe_pairs``
    pairs each (text chunk 1, 2, 8, 32, ... up to the square; probes must be large: a small block hides the
    cost of permuting large intermediates); the winner's text chunk is kept and the video chunk grown to the
    full ``pairs`` budget. Tuning stops after ``max_tuning_s``.
    """
    import contextlib

    autocast = autocast or contextlib.nullcontext
    probe_pairs = max(1, min(pairs, probe_pairs))
    cands = []
    t = 1
    while t <= min(n_t, probe_pairs):
        v = min(n_v, probe_pairs // t)
        if v >= 1 and (not cands or cands[-1] != (t, v)):
            cands.append((t, v))
        if v < t:  # past the square
            break
        t *= 4 if t > 1 else 2
    log = []
    best, best_rate = cands[0], -1.0
    start = time.perf_counter()
    for i, (t, v) in enumerate(cands):
        text, video = tile_state(text_real, t), tile_state(video_real, v)
        for _ in range(2 if i == 0 else 1):  # the first candidate's first run is the method's warm-up
            sync(device)
            t0 = time.perf_counter()
            with autocast():
                method.score(text, video)
            sync(device)
            dt = time.perf_counter() - t0
        rate = t * v / max(dt, 1e-9)
        log.append({"texts": t, "videos": v, "pairs_per_s": rate})
        if rate > best_rate:
            best, best_rate = (t, v), rate
        if time.perf_counter() - start > max_tuning_s:
            break
    t = best[0]
    v = min(n_v, max(1, pairs // t))
    if v == n_v:  # the whole gallery fits: use the rest of the budget for more texts
        t = min(n_t, max(t, pairs // n_v))
    return (min(t, n_t), v), log
