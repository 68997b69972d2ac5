"""Efficiency study at paper scale: what each method costs at query time, without training and without videos.

For every (method, dataset) the method is built on a ViT-B/32 backbone (random init: costs depend on shapes,
not on weights) at the dataset's paper shapes (:data:`PAPER_SHAPES`), and measured:

- **parameters**: total, trainable, head (``bench.cost.param_counts``) next to the analytic
  ``MethodInfo.extra_params`` (which methods.md gives at L=32, F=12);
- **FLOPs** (``FlopCounterMode``, FLOPs = 2·MAC, matmul-like ops only): text encoding per query, scoring per
  (text, video) pair (counted on a block and divided, checked on a second block shape), per query against the
  protocol gallery, and offline video-side work per video (image tower + the method's video head). The image
  tower is counted once on one frame and multiplied by F (frames are encoded independently), so the
  ViT-B/32 image tower runs once per dataset instead of once per method; the result equals
  ``bench.cost.flop_profile`` (a test checks it);
- **evaluation of the protocol's score matrix** (e.g. VATEX 15,000 x 1,500): time and peak memory of the
  chunked similarity matrix, blocks sized so that per-block intermediates stay under ``block_mb``; the text
  side is streamed chunk by chunk (a tiled chunk state), so memory is bounded by the chunk, not by the number
  of queries. Peak memory is the CUDA allocator peak on GPU, the process peak RSS on CPU (labelled), plus a
  deterministic tensor-bytes peak of one block (:class:`LiveTensorBytes`);
- **query latency** (``torch.utils.benchmark.Timer``) of one query (text encoding + scoring) against galleries
  of N = 1k ... 1M videos: the video states of a few real encoded videos are tiled into a resident pool
  (at most ``pool_mb``; far larger than any cache, so memory traffic is realistic) and the gallery is scored
  in chunks that cycle over the pool. Per-pair work does not depend on values, so tiling is honest for time;
- **time budget**: a measurement predicted to exceed ``max_seconds`` is not run; the size is recorded as
  skipped with the reason and a linear extrapolation labelled as such. The score matrix is computed block by
  block until the budget is spent; its full time is then extrapolated (labelled) from the blocks done;
- **scoring throughput**: counted scoring FLOPs / measured time, next to a dense GEMM's FLOP/s on the same
  device in the same run (:func:`dense_matmul_flops_per_s`, :func:`scoring_throughput`);
- on a GPU only, one training step's peak memory and time at the paper batch size (:func:`train_step_cost`).

Records are ``kind: "efficiency"`` run records (metrics null), one per (method, dataset).
"""

from __future__ import annotations

import copy
import difflib
import math
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.benchmark import Timer

import tvr_bench.bench.cost.measure as C
from tvr_bench.bench.errors import ConfigError

State = dict[str, torch.Tensor]

# --------------------------------------------------------------------------------------------------
# paper shapes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperShape:
    """Frames, words and the test protocol's query x gallery counts of one dataset (protocols.md)."""

    name: str
    max_frames: int
    max_words: int
    n_queries: int  # T2V queries of the test protocol
    n_videos: int  # test gallery
    protocol: str
    source: str
    train_batch: int  # the usual paper batch size (global) for the training-step measurement


#: One table of the paper settings (ViT-B/32 budgets; protocols.md §1.5, §2.3-2.4, §3.3-3.4, §8).
PAPER_SHAPES: dict[str, PaperShape] = {
    "msrvtt": PaperShape("msrvtt", 12, 32, 1_000, 1_000,
                         "MSR-VTT 1k-A: 1,000 captions x 1,000 videos (one caption per video)",
                         "protocols.md §1.5, §8", 128),
    "vatex": PaperShape("vatex", 12, 32, 15_000, 1_500,
                        "VATEX HGR test: 1,500 videos x 10 English captions = 15,000 T2V queries",
                        "protocols.md §3.3-3.4, §8", 128),
    "didemo": PaperShape("didemo", 64, 64, 1_004, 1_004,
                         "DiDeMo paragraph-to-video: 1,004 paragraphs x 1,004 test videos",
                         "protocols.md §2.3-2.4, §8", 64),
}

#: Gallery sizes of the latency curve (the protocol's own gallery is added per dataset).
LATENCY_GALLERIES: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)

#: The evaluation-memory check of the report: the full protocol score matrix must stay under this.
EVAL_MEMORY_LIMIT_BYTES = 4_000_000_000  # 4 GB (decimal)

MiB = float(1 << 20)


def parse_datasets(spec: str) -> list[str]:
    """Comma list or ``all`` -> validated paper-shape names (did-you-mean on a typo)."""
    if spec.strip() == "all":
        return list(PAPER_SHAPES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("empty dataset list")
    for n in names:
        if n not in PAPER_SHAPES:
            close = difflib.get_close_matches(n, list(PAPER_SHAPES), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown dataset {n!r} for bench efficiency.{hint} "
                              f"Available: {', '.join(PAPER_SHAPES)}")
    return names


@dataclass
class Settings:
    """Knobs of one efficiency run (recorded whole under ``config.efficiency``)."""

    backbone: str = "ViT-B-32"
    device: str = "cpu"
    max_seconds: float = 8.0  # time budget of one measurement (a latency size, the score matrix)
    block_mb: float = 256.0  # budget of per-block scoring intermediates
    pool_mb: float = 1024.0  # resident gallery pool for the latency curve
    galleries: tuple[int, ...] = LATENCY_GALLERIES
    latency_min_run_time: float = 0.3
    n_real: int = 2  # real encoded videos / queries whose states are tiled
    flops_block: tuple[int, int] = (4, 8)
    flops_check_block: tuple[int, int] = (2, 3)
    max_pairs_per_block: int = 1 << 20
    max_latency_chunk: int = 1 << 16
    train_step: bool = True  # GPU only
    seed: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["galleries"] = list(self.galleries)
        d["flops_block"] = list(self.flops_block)
        d["flops_check_block"] = list(self.flops_check_block)
        return d


# --------------------------------------------------------------------------------------------------
# state helpers
# --------------------------------------------------------------------------------------------------


def state_batch(state: State) -> int:
    return int(next(iter(state.values())).shape[0])


def state_bytes(state: State) -> int:
    return sum(int(v.numel() * v.element_size()) for v in state.values())


def slice_state(state: State, sl: slice) -> State:
    return {k: v[sl] for k, v in state.items()}


def tile_state(state: State, n: int) -> State:
    """The states of ``n`` items, repeating the given ones (batch dim first); contiguous copies."""
    b = state_batch(state)
    reps = -(-n // b)
    return {k: v.repeat(reps, *([1] * (v.dim() - 1)))[:n].clone() for k, v in state.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# deterministic tensor-memory peak
# --------------------------------------------------------------------------------------------------


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the ``with`` block and alive at the same time.

    Every aten op's outputs are inspected: a storage not seen before and not one of the op's inputs is a new
    allocation; it is released when the last tensor viewing it dies. Storages that existed before the block
    (weights, cached states, a preallocated output matrix) are not counted, so the number is the scoring
    intermediates' peak, deterministic and independent of allocator caching (unlike RSS). Slow: for probes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        ent = self._live.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] == 0:
            del self._live[key]
            self.current -= ent[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key == 0:
                continue
            if key in self._live:
                self._live[key][1] += 1
            else:
                if inputs is None:
                    inputs = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs))
                              if isinstance(a, torch.Tensor) and a.device.type != "meta"}
                if key in inputs:
                    continue  # a view of, or an in-place result on, a storage that existed before
                self._live[key] = [int(st.nbytes()), 1]
                self.current += int(st.nbytes())
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, key)
        return out


def block_intermediate_bytes(method, text: State, video: State) -> int:
    """Tensor-bytes peak of one ``score`` call on the given block."""
    with torch.no_grad(), LiveTensorBytes() as tracker:
        method.score(text, video)
    return tracker.peak


# --------------------------------------------------------------------------------------------------
# real encoded inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class SharedInputs:
    """What every method of one (backbone, dataset) shares: real frame features, the image tower's count."""

    shape: PaperShape
    frames: torch.Tensor  # [n_real, F, 3, S, S] random pixels (for methods that run their own video pass)
    frame_features: torch.Tensor  # [n_real, F, D]
    frame_mask: torch.Tensor  # [n_real, F], all valid (worst case: padded slots cost the same)
    image_flops_per_frame: int
    seconds: float


@torch.no_grad()
def shared_inputs(backbone, shape: PaperShape, *, n_real: int, device: torch.device, seed: int = 0) -> SharedInputs:
    t0 = time.perf_counter()
    size = backbone.spec.image_size
    one = C.dummy_frames(1, 1, size, seed=seed)[0].to(device)
    was = backbone.training
    backbone.eval()  # counted in the mode evaluation runs in
    image_flops = count_flops(lambda: backbone.encode_frames(one))
    frames, mask = C.dummy_frames(n_real, shape.max_frames, size, seed=seed + 1)
    feats = [backbone.encode_frames(frames[i: i + 1].to(device)) for i in range(n_real)]
    backbone.train(was)
    return SharedInputs(shape, frames, torch.cat(feats).float(), mask.to(device), image_flops,
                        time.perf_counter() - t0)


def real_text_states(method, n: int, max_words: int, device, seed: int = 0) -> State:
    tok, m = C.dummy_tokens(n, max_words, method.backbone.tokenizer.eot_token_id, seed=seed)
    with torch.no_grad():
        return method.encode_text(tok.to(device), m.to(device))


def real_video_states(method, inputs: SharedInputs) -> State:
    """Video states of the real encoded videos: the method's video head on the shared frame features, or its
    own ``encode_video`` pass on the pixels when it overrides it (e.g. a method that needs patch tokens)."""
    device = inputs.frame_features.device
    with torch.no_grad():
        if _overrides_encode_video(method):
            from tvr_bench.bench.evaluate import concat_states

            return concat_states(method.encode_video(inputs.frames[i: i + 1].to(device), inputs.frame_mask[i: i + 1])
                                 for i in range(inputs.frames.shape[0]))
        return method.video_from_frames(inputs.frame_features, inputs.frame_mask)


def _overrides_encode_video(method) -> bool:
    from tvr_bench.bench.api.method import RetrievalMethod

    return type(method).encode_video is not RetrievalMethod.encode_video


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------

# The CPU attention ops that FlopCounterMode (torch 2.13) has no formula for are counted by bench.cost.
ATTENTION_FLOP_FORMULAS = C.ATTENTION_FLOP_FORMULAS
FLOP_CONVENTION = C.FLOP_CONVENTION
count_flops = C.count_flops


@torch.no_grad()
def flop_counts(method, inputs: SharedInputs, *, block=(4, 8), check_block=(2, 3), device="cpu",
                video_real: State | None = None) -> dict:
    """Counted FLOPs per query / pair / video at the inputs' shapes; same numbers as ``cost.flop_profile``."""
    shape = inputs.shape
    device = torch.device(device)
    eot = method.backbone.tokenizer.eot_token_id
    tok1, m1 = C.dummy_tokens(1, shape.max_words, eot)
    text_q = count_flops(lambda: method.encode_text(tok1.to(device), m1.to(device)))
    if _overrides_encode_video(method):  # the method does its own video pass: count it whole
        fr, vm = C.dummy_frames(1, shape.max_frames, method.backbone.spec.image_size)
        video_v = count_flops(lambda: method.encode_video(fr.to(device), vm.to(device)))
        head_v = None
    else:
        head_v = count_flops(lambda: method.video_from_frames(inputs.frame_features[:1], inputs.frame_mask[:1]))
        video_v = shape.max_frames * inputs.image_flops_per_frame + head_v

    video_real = video_real if video_real is not None else real_video_states(method, inputs)

    def per_pair(bt: int, bv: int) -> float:
        text = tile_state(real_text_states(method, min(bt, 2), shape.max_words, device, seed=1), bt)
        video = tile_state(video_real, bv)
        return count_flops(lambda: method.score(text, video)) / (bt * bv)

    pair = per_pair(*block)
    pair_check = per_pair(*check_block)
    return {
        "text_per_query": text_q,
        "score_per_pair": pair,
        "per_query": text_q + shape.n_videos * pair,
        "video_per_video": video_v,
        "gallery_size": shape.n_videos,
        "convention": FLOP_CONVENTION,
        "image_tower_per_frame": inputs.image_flops_per_frame,
        "video_head_per_video": head_v,
        "protocol_matrix": shape.n_queries * shape.n_videos * pair,
        "per_1k_matrix_macs": pair * 1_000_000 / 2,
        "block": list(block),
        "check_block": list(check_block),
        "linear_in_pairs": math.isclose(pair, pair_check, rel_tol=1e-9, abs_tol=1e-9),
        "score_per_pair_check_block": pair_check,
    }


# --------------------------------------------------------------------------------------------------
# block sizing
# --------------------------------------------------------------------------------------------------


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
            _sync(device)
            t0 = time.perf_counter()
            with autocast():
                method.score(text, video)
            _sync(device)
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


# --------------------------------------------------------------------------------------------------
# the protocol's score matrix, chunked, under a time budget
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_matrix(method, text_real: State, video_real: State, *, n_t: int, n_v: int, chunk: tuple[int, int],
                    device, max_seconds: float | None = None, autocast: Callable = None,
                    track_tensors: bool = False, meter: C.MemoryMeter | None = None, min_time: float = 0.0) -> dict:
    """Fill the [n_t, n_v] similarity matrix in (texts x videos) blocks, as the harness's evaluation does.

    The gallery's video states are tiled to ``n_v`` once (offline work, cached); the query side is one tiled
    text chunk reused for every block row (text encoding is per query and counted apart), so memory holds
    the gallery, one text chunk, the output matrix (on the CPU, as in ``bench.evaluate``) and one block's
    intermediates. Stops starting new blocks once ``max_seconds`` is spent. A complete pass shorter than
    ``min_time`` is repeated (the fastest pass is reported: a single short pass is too noisy on a shared
    machine). ``track_tensors`` runs every block under :class:`LiveTensorBytes` (slow; tests) and reports the
    peak of scoring intermediates.
    """
    import contextlib

    device = torch.device(device)
    autocast = autocast or contextlib.nullcontext
    t_chunk, v_chunk = chunk
    sim = torch.empty(n_t, n_v, dtype=torch.float32)
    gallery = tile_state(video_real, n_v)
    text_tile = tile_state(text_real, min(t_chunk, n_t))
    blocks = [(ts, vs) for ts in range(0, n_t, t_chunk) for vs in range(0, n_v, v_chunk)]
    tracker = LiveTensorBytes() if track_tensors else None
    meter_cm = meter.measure() if meter is not None else contextlib.nullcontext()
    passes: list[float] = []
    with meter_cm:
        # warm-up block (not timed): first-touch allocation, kernel selection
        with autocast():
            method.score(slice_state(text_tile, slice(0, min(t_chunk, n_t))), slice_state(gallery, slice(0, min(v_chunk, n_v))))
        _sync(device)
        start = time.perf_counter()
        while True:
            done = pairs_done = 0
            t0 = time.perf_counter()
            with (tracker if tracker is not None else contextlib.nullcontext()):
                for ts, vs in blocks:
                    nt, nv = min(t_chunk, n_t - ts), min(v_chunk, n_v - vs)
                    with autocast():
                        block = method.score(slice_state(text_tile, slice(0, nt)), slice_state(gallery, slice(vs, vs + nv)))
                    sim[ts: ts + nt, vs: vs + nv] = block.float().cpu()
                    del block  # not alive while the next block is scored
                    done += 1
                    pairs_done += nt * nv
                    if max_seconds is not None and done < len(blocks):
                        _sync(device)
                        if time.perf_counter() - t0 >= max_seconds:
                            break
                _sync(device)
            passes.append(time.perf_counter() - t0)
            if done < len(blocks) or time.perf_counter() - start >= min_time or len(passes) >= 50:
                break
        seconds = min(passes)
    total_pairs = n_t * n_v
    complete = pairs_done == total_pairs
    out = {
        "n_queries": n_t, "n_videos": n_v, "chunk": [t_chunk, v_chunk],
        "blocks_done": done, "blocks_total": len(blocks), "pairs_done": pairs_done, "complete": complete,
        "seconds_measured": seconds,
        "passes": len(passes),
        "seconds": seconds if complete else seconds * total_pairs / max(pairs_done, 1),
        "seconds_is_extrapolated": not complete,
        "gallery_state_bytes": state_bytes(gallery),
        "text_chunk_state_bytes": state_bytes(text_tile),
        "sim_matrix_bytes": sim.numel() * sim.element_size(),
    }
    if not complete:
        out["note"] = (f"time budget {max_seconds:g} s spent after {done}/{len(blocks)} blocks; full-matrix time "
                       "extrapolated linearly in pairs (every block has the same work per pair)")
    if tracker is not None:
        out["tensor_peak_bytes"] = tracker.peak
    return out


# --------------------------------------------------------------------------------------------------
# latency against galleries of N videos
# --------------------------------------------------------------------------------------------------


def _timed_query(fn: Callable[[], Any], *, device, min_run_time: float, single: bool) -> dict:
    timer = Timer(stmt="f()", globals={"f": fn}, num_threads=torch.get_num_threads())
    if single:  # one warm run after the caller's warm-up: the query alone outlasts min_run_time
        m = timer.timeit(number=1)
    else:
        m = timer.blocked_autorange(min_run_time=min_run_time)
    # min next to median: on a shared machine the fastest run is the least disturbed one
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "min_ms": min(m.times) * 1e3,
            "n_runs": len(m.times) * m.number_per_run}


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
                  per_pair_bytes: float, settings: Settings, autocast: Callable = None,
                  log: Callable[[str], None] = lambda m: None) -> dict:
    """Median latency of one query (text encoding + scoring, chunked) for each gallery size N.

    The gallery is a resident pool of tiled real video states (at most ``pool_mb``, a multiple of the chunk),
    cycled when N exceeds it. A size whose predicted measurement time exceeds ``max_seconds`` is skipped and
    extrapolated linearly in N from the largest measured size (labelled).
    """
    import contextlib

    device = torch.device(device)
    autocast = autocast or contextlib.nullcontext
    sizes = sorted(set(int(n) for n in galleries))
    eot = method.backbone.tokenizer.eot_token_id
    tok, tm = C.dummy_tokens(1, max_words, eot, seed=2)
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
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    # the linear model t(N) = text + N x per-video, from two robust probes (min of runs: the machine is shared)
    def text_only():
        with autocast():
            return method.encode_text(tok, tm)

    wall(text_only)
    t_text = _timed_query(text_only, device=device, min_run_time=min(0.2, settings.latency_min_run_time),
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
        stats = _timed_query(fn, device=device, min_run_time=settings.latency_min_run_time,
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


# --------------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------------


def dense_matmul_flops_per_s(device="cpu", *, n: int | None = None, dtype: torch.dtype | None = None,
                             min_run_time: float = 0.5) -> dict:
    """FLOP/s of one dense square GEMM on ``device`` (the machine's reference throughput, same threads)."""
    device = torch.device(device)
    n = n or (2048 if device.type == "cpu" else 8192)
    dtype = dtype or torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    a @ b
    m = Timer(stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time)
    return {"flops_per_s": 2 * n ** 3 / m.median, "n": n, "dtype": str(dtype).replace("torch.", ""),
            "median_s": m.median, "threads": torch.get_num_threads(), "device": str(device)}


def throughput_of(matrix: dict, per_pair_flops: float, dense: dict | None) -> dict:
    """Achieved FLOP/s of the scoring (counted FLOPs of the blocks done / their measured time)."""
    flops = per_pair_flops * matrix["pairs_done"]
    rate = flops / matrix["seconds_measured"] if matrix["seconds_measured"] > 0 else 0.0
    out = {"flops_per_s": rate, "counted_flops": flops, "seconds": matrix["seconds_measured"],
           "pairs": matrix["pairs_done"], "chunk": matrix["chunk"],
           "shape": f"{matrix['n_queries']} x {matrix['n_videos']}"}
    if dense:
        out["fraction_of_dense"] = rate / dense["flops_per_s"]
    return out


def scoring_throughput(method, inputs: SharedInputs, *, device="cpu", max_seconds: float = 8.0,
                       block_mb: float = 256.0, dense: dict | None = None, n_real: int = 2) -> dict:
    """Counted-FLOPs / time of scoring the protocol's matrix at ``inputs.shape`` (the MSR-VTT 1k x 1k shapes in
    the benchmark), computed as :func:`evaluate_matrix` does (same blocks) within ``max_seconds``."""
    shape = inputs.shape
    device = torch.device(device)
    text = real_text_states(method, n_real, shape.max_words, device)
    video = real_video_states(method, inputs)
    ppb = bytes_per_pair(method, text, video)
    pair = flop_counts(method, inputs, device=device, video_real=video)["score_per_pair"]
    chunk, tuning = choose_block(method, text, video, n_t=shape.n_queries, n_v=shape.n_videos,
                                 pairs=pairs_per_block(ppb, block_mb, 1 << 20),
                                 probe_pairs=probe_pairs_for(pair, dense), device=device)
    mat = evaluate_matrix(method, text, video, n_t=shape.n_queries, n_v=shape.n_videos, chunk=chunk,
                          device=device, max_seconds=max_seconds, min_time=0.3)
    out = throughput_of(mat, pair, dense)
    out["block_tuning"] = tuning
    return out


# --------------------------------------------------------------------------------------------------
# one training step (GPU)
# --------------------------------------------------------------------------------------------------


def train_step_cost(method, shape: PaperShape, batch: int, device) -> dict:
    """Peak memory and time of one harness training step (forward, InfoNCE + extra losses, backward, optimiser
    step) at ``batch`` (texts = videos), random frames and tokens; the second step is timed."""
    from tvr_bench.bench.config import HARNESS_DEFAULTS
    from tvr_bench.bench.optim import build_optimizer, build_scheduler
    from tvr_bench.bench.train import Trainer

    device = torch.device(device)
    cfg = copy.deepcopy(HARNESS_DEFAULTS)
    cfg["train"]["batch_size"] = batch
    method = method.to(device).train()
    trainer = Trainer(method, cfg, device=device, ckpt_dir=None, config_hash="efficiency", log=lambda m: None)
    optimizer = build_optimizer(method, cfg["train"])
    scheduler = build_scheduler(optimizer, 10, float(cfg["train"]["warmup_proportion"]))
    tok, tm = C.dummy_tokens(batch, shape.max_words, method.backbone.tokenizer.eot_token_id, seed=3)
    frames, vm = C.dummy_frames(batch, shape.max_frames, method.backbone.spec.image_size, seed=3)
    out: dict[str, Any] = {"batch": batch, "precision": "amp (fp16 autocast)" if trainer.amp else "fp32",
                           "what": "one optimisation step of the harness (Trainer._step), second step timed"}
    try:
        trainer._step(tok, tm, frames, vm, optimizer, scheduler)  # warm-up (optimizer state allocated)
        meter = C.MemoryMeter(device)
        with meter.measure():
            _sync(device)
            t0 = time.perf_counter()
            trainer._step(tok, tm, frames, vm, optimizer, scheduler)
            _sync(device)
            out["seconds"] = time.perf_counter() - t0
        out["memory"] = meter.as_dict()
        out["memory"]["phase"] = "one training step"
        out["status"] = "measured"
    except torch.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        out.update(status="out of memory", reason=str(exc).splitlines()[0])
    finally:
        method.eval()
        del optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------------------------------
# one (method, dataset)
# --------------------------------------------------------------------------------------------------


def paper_batch(method_cls, shape: PaperShape) -> int:
    recipe = (method_cls.info.official or {}).get(shape.name, {})
    return int(recipe.get("train", {}).get("batch_size", shape.train_batch))


def measure(method_name: str, shape: PaperShape, backbone, inputs: SharedInputs, settings: Settings, *,
            dense: dict | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """Every efficiency measurement of one method at one dataset's paper shapes -> the record's payload."""
    from tvr_bench.bench.registry import METHODS
    from tvr_bench.bench.train import autocast_factory

    device = torch.device(settings.device)
    cls = METHODS.get(method_name)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    torch.manual_seed(settings.seed)
    method = cls(backbone, cls.default_options(), max_frames=shape.max_frames, max_words=shape.max_words)
    method = method.to(device).eval()
    autocast, _ = autocast_factory(device, "auto")

    params = C.param_counts(method)
    params["extra_params_analytic"] = cls.info.extra_params
    params["extra_params_note"] = "methods.md's analytic count of the added modules at ViT-B/32, L=32, F=12"

    t0 = time.perf_counter()
    video_real = real_video_states(method, inputs)
    flops = flop_counts(method, inputs, block=settings.flops_block, check_block=settings.flops_check_block,
                        device=device, video_real=video_real)
    timings["flops_s"] = time.perf_counter() - t0
    log(f"  FLOPs: {flops['text_per_query'] / 1e9:.3g} G text/query, {flops['score_per_pair']:.4g} per pair, "
        f"{flops['per_query'] / 1e9:.3g} G per query (N={shape.n_videos:,})")

    text_real = real_text_states(method, settings.n_real, shape.max_words, device)
    ppb = bytes_per_pair(method, text_real, video_real)
    pairs = pairs_per_block(ppb, settings.block_mb, settings.max_pairs_per_block)
    t0 = time.perf_counter()
    chunk, tuning = choose_block(method, text_real, video_real, n_t=shape.n_queries, n_v=shape.n_videos,
                                 pairs=pairs, probe_pairs=probe_pairs_for(flops["score_per_pair"], dense),
                                 device=device, autocast=autocast)
    timings["block_tuning_s"] = time.perf_counter() - t0

    # the protocol's score matrix: the block's intermediates checked against the budget, then the timed pass
    t0 = time.perf_counter()
    chunk, block_peak = fit_block(method, text_real, video_real, chunk, settings.block_mb * MiB)
    meter = C.MemoryMeter(device)
    matrix = evaluate_matrix(method, text_real, video_real, n_t=shape.n_queries, n_v=shape.n_videos, chunk=chunk,
                             device=device, max_seconds=settings.max_seconds, autocast=autocast, meter=meter,
                             min_time=settings.latency_min_run_time)
    matrix["block_tensor_peak_bytes"] = block_peak
    matrix["block_tuning"] = tuning
    matrix["block_rule"] = (f"at most {pairs:,} pairs per block (--block-mb {settings.block_mb:g} over "
                            f"{ppb:,.0f} B of intermediates per pair); shape chosen by a speed probe")
    matrix["bytes_per_pair_probe"] = ppb
    matrix["block_mb"] = settings.block_mb
    text_per_query = state_bytes(text_real) // state_batch(text_real)
    matrix["text_state_bytes_per_query"] = text_per_query
    matrix["all_text_states_bytes"] = text_per_query * shape.n_queries
    matrix["all_text_states_note"] = ("held at once if every query's text state is encoded before scoring, as "
                                      "bench.evaluate.evaluate_split does; streamed here")
    memory = meter.as_dict()
    memory["phase"] = (f"full protocol score matrix {shape.n_queries:,} x {shape.n_videos:,}: gallery states, one "
                       "text chunk, the [N_t, N_v] fp32 matrix on the CPU, one block's intermediates")
    memory["tensor_peak_bytes_one_block"] = block_peak
    memory["check"] = {"limit_bytes": EVAL_MEMORY_LIMIT_BYTES, "peak_bytes": memory["peak_bytes"],
                       "ok": memory["peak_bytes"] < EVAL_MEMORY_LIMIT_BYTES,
                       "what": "evaluation peak (whole-process RSS on CPU) under 4 GB"}
    timings["matrix_s"] = time.perf_counter() - t0
    log(f"  matrix {shape.n_queries:,} x {shape.n_videos:,} (chunk {chunk[0]} x {chunk[1]}): "
        f"{matrix['seconds']:.3g} s{' (extrapolated)' if matrix['seconds_is_extrapolated'] else ''}, "
        f"peak {memory['peak_bytes'] / MiB:,.0f} MiB ({memory['kind']})")
    throughput = throughput_of(matrix, flops["score_per_pair"], dense)

    # latency curve (the protocol's own gallery included)
    t0 = time.perf_counter()
    sizes = sorted(set(settings.galleries) | {shape.n_videos})
    latency = latency_curve(method, video_real, max_words=shape.max_words, galleries=sizes, device=device,
                            per_pair_bytes=ppb, settings=settings, autocast=autocast, log=log)
    for row in latency["by_gallery"]:
        row["flops"] = flops["text_per_query"] + row["gallery_size"] * flops["score_per_pair"]
    timings["latency_s"] = time.perf_counter() - t0
    proto_row = next(r for r in latency["by_gallery"] if r["gallery_size"] == shape.n_videos)
    latency_ms: dict[str, Any] = {"gallery_size": shape.n_videos, "chunk": latency["chunk"],
                                  "threads": latency["threads"], "what": latency["what"]}
    if proto_row["status"] == "measured":
        latency_ms.update(median=proto_row["median_ms"], iqr=proto_row["iqr_ms"], n_runs=proto_row["n_runs"])
    else:
        latency_ms.update(status="skipped", extrapolated_ms=proto_row["extrapolated_ms"], reason=proto_row["reason"])

    train = None
    if device.type == "cuda" and settings.train_step:
        t0 = time.perf_counter()
        train = train_step_cost(method, shape, paper_batch(cls, shape), device)
        timings["train_step_s"] = time.perf_counter() - t0

    timings["total_s"] = time.perf_counter() - t_all
    del method
    return {
        "params": params,
        "flops": flops,
        "memory": memory,
        "latency_ms": latency_ms,
        "efficiency": {
            "shape": asdict(shape),
            "query_dependent": bool(cls.info.query_dependent),
            "matrix": matrix,
            "latency": latency,
            "scoring_throughput": throughput,
            "dense_matmul_flops_per_s": dense["flops_per_s"] if dense else None,
            "dense_matmul": dense,
            "train_step": train,
            "inputs": {"real_videos": settings.n_real, "real_queries": settings.n_real,
                       "shared_encode_s": inputs.seconds,
                       "note": "states of a few real encoded (random-pixel) videos / queries, tiled; masks all valid"},
        },
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def build_record(method_name: str, shape: PaperShape, payload: dict, settings: Settings, *, device_desc: str,
                 provenance: dict, env: dict | None = None) -> dict:
    from tvr_bench.bench.records import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "efficiency",
        "method": method_name,
        "dataset": shape.name,
        "seed": settings.seed,
        "metrics": None,
        "cost": {
            "params": payload["params"],
            "flops": payload["flops"],
            "memory": payload["memory"],
            "latency_ms": payload["latency_ms"],
            "device": device_desc,
        },
        "efficiency": payload["efficiency"],
        # no fingerprint: these are paper shapes, not a test split, and must merge with accuracy records
        "protocol": {"name": shape.name, "description": shape.protocol, "source": shape.source,
                     "n_queries": shape.n_queries, "n_videos": shape.n_videos, "max_frames": shape.max_frames,
                     "max_words": shape.max_words, "paper_shapes": True},
        "timings": payload["timings"],
        "config": {"efficiency": {**settings.as_dict(), "threads": torch.get_num_threads(), "env": env or {}},
                   "backbone": {"name": settings.backbone, "pretrained": None},
                   "data": {"max_frames": shape.max_frames, "max_words": shape.max_words}},
        "provenance": provenance,
    }


# --------------------------------------------------------------------------------------------------
# the whole study
# --------------------------------------------------------------------------------------------------


def run_study(method_names: list[str], dataset_names: list[str], settings: Settings, out_dir, *,
              log: Callable[[str], None] = print, command: list[str] | None = None,
              shapes: dict[str, PaperShape] | None = None, env: dict | None = None
              ) -> tuple[list, list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Measure every (method, dataset); write one record each, atomically.

    Returns (paths, failures, not_applicable): a method that refuses the paper shapes (a ``ConfigError`` when
    built, e.g. more frames than its position table holds) is not applicable there, with its reason; any
    other error is a failure. Neither writes a record.
    """
    from pathlib import Path

    from tvr_bench.bench import provenance as P
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.records import write_record

    shapes = shapes or PAPER_SHAPES
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    backbone = build_backbone(settings.backbone).to(device).eval()
    dense = dense_matmul_flops_per_s(device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
    log(f"dense {dense['dtype']} GEMM {dense['n']}x{dense['n']}: {dense['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"({dense['threads']} threads)")
    paths, failures, not_applicable = [], [], []
    for ds in dataset_names:
        shape = shapes[ds]
        inputs = shared_inputs(backbone, shape, n_real=settings.n_real, device=device, seed=settings.seed)
        log(f"== {ds}: F={shape.max_frames}, L={shape.max_words}, {shape.n_queries:,} x {shape.n_videos:,} "
            f"(image tower {inputs.image_flops_per_frame / 1e9:.3g} GFLOPs/frame; inputs {inputs.seconds:.1f} s)")
        for name in method_names:
            started = P.now_iso()
            log(f"- {name} / {ds}")
            try:
                payload = measure(name, shape, backbone, inputs, settings, dense=dense, log=log)
            except ConfigError as exc:
                not_applicable.append((name, ds, str(exc)))
                log(f"  not applicable at these shapes: {exc}")
                continue
            except Exception as exc:  # one broken method must not stop the study; it writes no record
                failures.append((name, ds, f"{type(exc).__name__}: {exc}"))
                log(f"  FAILED: {type(exc).__name__}: {exc}")
                continue
            prov = P.collect(device, command)
            prov.update(started_at=started, finished_at=P.now_iso())
            rec = build_record(name, shape, payload, settings, device_desc=prov["device"], provenance=prov,
                               env=env)
            paths.append(write_record(rec, Path(out_dir)))
            log(f"  -> {paths[-1]} ({payload['timings']['total_s']:.1f} s)")
    return paths, failures, not_applicable


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def _si(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {p}{unit}".rstrip()
    return f"{v:.3g} {unit}".rstrip()


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def latency_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["status"] == "measured":
        return _ms(row["median_ms"])
    return f"≈{_ms(row['extrapolated_ms'])}*"


def efficiency_table(records: list[dict], not_applicable: dict[str, str] | None = None) -> str:
    """Markdown tables (one per dataset) of efficiency records, with their footnotes.

    ``not_applicable`` maps "method/dataset" to the reason a method could not be built at those shapes; it is
    listed under the dataset's table (no silent gap).
    """
    not_applicable = not_applicable or {}
    by_ds: dict[str, list[dict]] = {}
    for r in records:
        if r.get("kind") == "efficiency":
            by_ds.setdefault(r["dataset"], []).append(r)
    parts = []
    order = list(PAPER_SHAPES)
    for ds, recs in sorted(by_ds.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        recs = sorted(recs, key=lambda r: r["method"])
        eff0 = recs[0]["efficiency"]
        sh = eff0["shape"]
        sizes = sorted({row["gallery_size"] for r in recs for row in r["efficiency"]["latency"]["by_gallery"]})
        lat_sizes = [n for n in sizes if n in LATENCY_GALLERIES] or sizes
        head = ["method", "head params", "analytic extra", "FLOPs text/query", "FLOPs/pair",
                f"FLOPs/query (N={sh['n_videos']:,})", "FLOPs video/video (offline)",
                "eval peak MiB", f"eval {sh['n_queries']:,}x{sh['n_videos']:,} s", "≤ 4 GB"]
        head += [f"lat. ms N={_si(n)}" for n in lat_sizes]
        head += ["scoring GFLOP/s", "% of dense GEMM"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        kinds = set()
        for r in recs:
            c, e = r["cost"], r["efficiency"]
            kinds.add(c["memory"]["kind"])
            rows = {row["gallery_size"]: row for row in e["latency"]["by_gallery"]}
            m = e["matrix"]
            tp = e["scoring_throughput"] or {}
            extra = c["params"].get("extra_params_analytic")
            cells = [
                r["method"] + (" (qd)" if e.get("query_dependent") else ""),
                _si(c["params"]["head"]),
                "–" if extra is None else _si(extra),
                _si(c["flops"]["text_per_query"]),
                _si(c["flops"]["score_per_pair"]),
                _si(c["flops"]["per_query"]),
                _si(c["flops"]["video_per_video"]),
                f"{c['memory']['peak_bytes'] / MiB:,.0f}",
                f"{m['seconds']:.3g}" + ("*" if m["seconds_is_extrapolated"] else ""),
                "yes" if c["memory"]["check"]["ok"] else "**no**",
            ]
            cells += [latency_cell(rows.get(n)) for n in lat_sizes]
            cells += [f"{tp.get('flops_per_s', 0) / 1e9:.1f}",
                      "–" if tp.get("fraction_of_dense") is None else f"{100 * tp['fraction_of_dense']:.0f} %"]
            lines.append("| " + " | ".join(cells) + " |")
        dense = eff0.get("dense_matmul") or {}
        title = (f"**{ds}** — {sh['protocol']}; F={sh['max_frames']}, L={sh['max_words']}; backbone "
                 f"{recs[0]['config']['backbone']['name']} (random init); device {recs[0]['cost']['device']}.")
        notes = [
            "FLOPs: FlopCounterMode, FLOPs = 2·MAC, matmul-like ops only; per query = text + N x per pair; "
            "video/video is offline (image tower + video head). (qd) = query-dependent scoring.",
            "Memory: " + ", ".join(sorted(kinds)) + " (cpu_peak_rss = whole-process peak RSS, model and "
            "libraries included) while computing the full protocol score matrix in bounded blocks; "
            "≤ 4 GB checks that peak against 4·10⁹ bytes.",
            "Latency: one query (text encoding + chunked scoring), torch.utils.benchmark.Timer median. "
            "`≈x*` = not measured: predicted time over the per-measurement budget; extrapolated linearly in N "
            "(labelled in the record with the reason). Eval time `*` = extrapolated from the blocks done within "
            "the budget.",
        ]
        if dense:
            notes.append(f"Dense reference: {dense['dtype']} GEMM {dense['n']}x{dense['n']} at "
                         f"{dense['flops_per_s'] / 1e9:.1f} GFLOP/s ({dense['threads']} threads, same run).")
        na = sorted((k.split("/")[0], v) for k, v in not_applicable.items() if k.split("/")[-1] == ds)
        if na:
            notes.append("Not applicable at these shapes (no record): "
                         + "; ".join(f"**{m}**: {why}" for m, why in na) + ".")
        parts.append(title + "\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(notes))
    return "\n\n".join(parts) + ("\n" if parts else "")
