"""Latency, measured the same way everywhere: ``torch.utils.benchmark.Timer`` (:func:`time_call`, the one
timer). ``query_latency`` times one query against a run's cached test gallery (``bench run`` records);
``latency_curve`` times one query against galleries of 1k ... 1M videos (the paper-scale study).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable

import torch
from torch.utils.benchmark import Timer

from tvr_bench.bench.api.state import State, slice_state, state_batch, state_bytes, tile_state
from tvr_bench.bench.cost.blocks import MiB, fit_block, pairs_per_block, sync
from tvr_bench.bench.cost.flops import dummy_tokens


def time_call(fn: Callable[[], Any], *, min_run_time: float, single: bool = False) -> dict:
    """Timer statistics of ``fn`` (already warmed up by the caller). ``single``: one run, for calls that alone
    outlast ``min_run_time``. The min is kept beside the median: on a shared machine it is the least disturbed run.
    """
    timer = Timer(stmt="f()", globals={"f": fn}, num_threads=torch.get_num_threads())
    m = timer.timeit(number=1) if single else timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "min_ms": min(m.times) * 1e3,
            "n_runs": len(m.times) * m.number_per_run}


@torch.no_grad()
def query_latency(method, video_state: dict, *, max_words: int, chunk_size: int, device, autocast,
                  min_run_time: float = 0.5) -> dict:
    """Median wall time of one query: encode the text, score it against the whole cached gallery (chunked)."""
    tok, tm = dummy_tokens(1, max_words, method.backbone.tokenizer.eot_token_id, seed=2)
    tok, tm = tok.to(device), tm.to(device)
    n_v = state_batch(video_state)
    was = method.training
    method.eval()

    def one_query():
        with autocast():
            text = method.encode_text(tok, tm)
            return [method.score(text, slice_state(video_state, slice(s, s + chunk_size)))
                    for s in range(0, n_v, chunk_size)]

    try:
        one_query()  # warm-up
        stats = time_call(one_query, min_run_time=min_run_time)
    finally:
        method.train(was)
    return {"median": stats["median_ms"], "iqr": stats["iqr_ms"], "n_runs": stats["n_runs"],
            "gallery_size": n_v, "chunk_size": chunk_size, "threads": torch.get_num_threads(),
            "what": "one query: text encoding + scoring against the cached gallery"}


def _extrapolate(rows: list[dict], text_ms: float, per_video_ms_probe: float, probe_n: int) -> None:
    """Fill ``extrapolated_ms`` of skipped rows: linear in N from the measured sizes, labelled.

    With two or more measured sizes: the line through the two largest (when its slope is positive); with one:
    text encoding + the scoring part of that measurement scaled by N; with none: the probe's per-video time.
    """
    measured = [(r["gallery_size"], r["median_ms"]) for r in rows if r["status"] == "measured"]
    a = b = None
    basis = ""
    if len(measured) >= 2:
        (n1, t1), (n2, t2) = measured[-2], measured[-1]
        slope = (t2 - t1) / (n2 - n1)
        if slope > 0:
            a, b = t2 - slope * n2, slope
            basis = f"line through the measured medians at N={n1:,} and N={n2:,}"
    if b is None and measured:
        n1, t1 = measured[-1]
        if t1 > text_ms:
            a, b = text_ms, (t1 - text_ms) / n1
            basis = f"text encoding + (measured median at N={n1:,} minus text encoding) x N/{n1:,}"
    if b is None:
        a, b = text_ms, per_video_ms_probe
        basis = f"text encoding + N x per-video scoring time of a {probe_n}-video probe (no usable measurement)"
    for r in rows:
        if r["status"] == "skipped":
            r["extrapolated_ms"] = a + b * r["gallery_size"]
            r["extrapolation"] = "EXTRAPOLATED, not measured: linear in N, " + basis


@torch.no_grad()
def latency_curve(method, video_real: State, *, max_words: int, galleries: Iterable[int], device,
                  per_pair_bytes: float, settings, autocast: Callable = None,
                  log: Callable[[str], None] = lambda m: None) -> dict:
    """Median latency of one query (text encoding + scoring, chunked) for each gallery size N.

    The gallery is a resident pool of tiled real video states (at most ``pool_mb``, a multiple of the chunk),
    cycled when N exceeds it. A size whose predicted measurement time exceeds ``max_seconds`` is skipped and
    extrapolated linearly in N from the largest measured size (labelled).
    """
    device = torch.device(device)
    autocast = autocast or contextlib.nullcontext
    sizes = sorted(set(int(n) for n in galleries))
    eot = method.backbone.tokenizer.eot_token_id
    tok, tm = dummy_tokens(1, max_words, eot, seed=2)
    tok, tm = tok.to(device), tm.to(device)
    per_video = max(1, state_bytes(video_real) // state_batch(video_real))
    chunk = min(pairs_per_block(per_pair_bytes, settings.block_mb, settings.max_pairs_per_block),
                settings.max_latency_chunk, sizes[-1])
    with autocast():
        (_, chunk), chunk_peak = fit_block(method, method.encode_text(tok, tm), video_real, (1, chunk),
                                           settings.block_mb * MiB)
    pool_cap = max(1, int(settings.pool_mb * MiB // per_video))
    if pool_cap < chunk:
        chunk = pool_cap
    pool_n = min(sizes[-1], (pool_cap // chunk) * chunk)
    pool = tile_state(video_real, pool_n)

    def make_query(n: int) -> Callable[[], torch.Tensor]:
        def one_query() -> torch.Tensor:
            scores = torch.empty(n, dtype=torch.float32)
            with autocast():
                text = method.encode_text(tok, tm)
                for s in range(0, n, chunk):
                    size = min(chunk, n - s)
                    off = s % pool_n
                    scores[s: s + size] = method.score(text, slice_state(pool, slice(off, off + size)))[0].float().cpu()
            return scores
        return one_query

    def wall(fn) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    # the linear model t(N) = text + N x per-video, from two robust probes (min of runs: the machine is shared)
    def text_only():
        with autocast():
            return method.encode_text(tok, tm)

    wall(text_only)
    t_text = time_call(text_only, min_run_time=min(0.2, settings.latency_min_run_time),
                          single=False)["min_ms"] / 1e3
    probe_n = min(chunk, pool_n)
    probe_text = text_only()

    def score_probe():
        with autocast():
            return method.score(probe_text, slice_state(pool, slice(0, probe_n)))

    per_video_probe = min(wall(score_probe) for _ in range(3)) / probe_n  # first run is a warm-up too
    rows = []
    budget = settings.max_seconds
    for n in sizes:
        predicted = t_text + per_video_probe * n
        row: dict[str, Any] = {"gallery_size": n, "resident_videos": min(n, pool_n), "chunk": min(chunk, n),
                               "flops": None}
        # cost of measuring: warm-up + Timer (block-size estimate + >= 1 block, or one run when slow)
        single = predicted > settings.latency_min_run_time
        cost = predicted * 2 if single else predicted + settings.latency_min_run_time * 2
        if cost > budget:
            row.update(status="skipped", predicted_ms=predicted * 1e3,
                       reason=f"predicted {predicted:.3g} s per query (text encoding + N x per-video scoring time "
                              f"of a {probe_n}-video probe); measuring would take about {cost:.3g} s, over the "
                              f"{budget:g} s budget (--max-seconds)")
            log(f"    N={n:>9,}: skipped (predicted {predicted:.3g} s per query)")
            rows.append(row)
            continue
        fn = make_query(n)
        warm = wall(fn)  # warm-up
        stats = time_call(fn, min_run_time=settings.latency_min_run_time,
                             single=warm > settings.latency_min_run_time)
        row.update(status="measured", **stats)
        log(f"    N={n:>9,}: {stats['median_ms']:.3f} ms (min {stats['min_ms']:.3f})")
        rows.append(row)
    _extrapolate(rows, t_text * 1e3, per_video_probe * 1e3, probe_n)
    return {
        "what": "one query: text encoding + chunked scoring against the gallery (scores kept in an [N] vector)",
        "text_encoding_ms": t_text * 1e3,
        "per_video_ms_probe": per_video_probe * 1e3,
        "chunk": chunk,
        "chunk_tensor_peak_bytes": chunk_peak,
        "pool_videos": pool_n,
        "pool_bytes": state_bytes(pool),
        "video_state_bytes_per_video": per_video,
        "pool_note": ("galleries larger than the pool cycle over it; the pool is far larger than CPU caches, so "
                      "memory traffic per video is as for a real gallery"),
        "threads": torch.get_num_threads(),
        "by_gallery": rows,
    }
