"""Time and memory of whole workloads at paper shapes: the protocol's score matrix filled block by block under a
time budget, scoring throughput against a dense GEMM of the same run, and one training step (GPU)."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch
from torch.utils.benchmark import Timer

from tvr_bench.bench.api.state import State, slice_state, state_bytes, tile_state
from tvr_bench.bench.api.metadata import PaperShape
from tvr_bench.bench.cost.blocks import (sync)
from tvr_bench.bench.cost.flops import (dummy_frames, dummy_tokens)
from tvr_bench.bench.cost.memory import LiveTensorBytes, MemoryMeter


# --------------------------------------------------------------------------------------------------
# paper shapes
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_matrix(method, text_real: State, video_real: State, *, n_t: int, n_v: int, chunk: tuple[int, int],
                    device, max_seconds: float | None = None, autocast: Callable = None,
                    track_tensors: bool = False, meter: MemoryMeter | None = None, min_time: float = 0.0) -> dict:
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
        sync(device)
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
                        sync(device)
                        if time.perf_counter() - t0 >= max_seconds:
                            break
                sync(device)
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
    tok, tm = dummy_tokens(batch, shape.max_words, method.backbone.tokenizer.eot_token_id, seed=3)
    frames, vm = dummy_frames(batch, shape.max_frames, method.backbone.spec.image_size, seed=3)
    out: dict[str, Any] = {"batch": batch, "precision": "amp (fp16 autocast)" if trainer.amp else "fp32",
                           "what": "one optimisation step of the harness (Trainer._step), second step timed"}
    try:
        trainer._step((tok, tm, frames, vm), optimizer, scheduler)  # warm-up (optimizer state allocated)
        meter = MemoryMeter(device)
        with meter.measure():
            sync(device)
            t0 = time.perf_counter()
            trainer._step((tok, tm, frames, vm), optimizer, scheduler)
            sync(device)
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


