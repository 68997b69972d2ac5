"""Efficiency study at paper scale: what each method costs at query time, without training and without videos.

For every (method, dataset) the method is built on a ViT-B/32 backbone (random init: costs depend on shapes,
not on weights) at the dataset's paper shapes (``DatasetInfo.paper_shape``), and measured:

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

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from tvr_bench.bench.api.state import State, concat_states, state_batch, state_bytes
from tvr_bench.bench.api.metadata import PaperShape
from tvr_bench.bench.cost.blocks import (MiB, bytes_per_pair, choose_block, fit_block, pairs_per_block,
                                         probe_pairs_for)
from tvr_bench.bench.cost.flops import (_overrides_encode_video, count_flops, dummy_frames, dummy_tokens,
                                        flop_profile)
from tvr_bench.bench.cost.latency import latency_curve
from tvr_bench.bench.cost.memory import MemoryMeter
from tvr_bench.bench.cost.params import param_counts
from tvr_bench.bench.cost.workloads import (dense_matmul_flops_per_s, evaluate_matrix, throughput_of,
                                            train_step_cost)
from tvr_bench.bench.errors import ConfigError, did_you_mean


# --------------------------------------------------------------------------------------------------
# paper shapes
# --------------------------------------------------------------------------------------------------


def paper_shapes() -> dict[str, PaperShape]:
    """The paper-scale shapes every dataset plugin declares (``DatasetInfo.paper_shape``), by dataset name."""
    from tvr_bench.bench.registry import DATASETS

    out = {}
    for name in DATASETS.names():
        shape = DATASETS.get(name).info.paper_shape
        if shape is not None:
            out[name] = shape
    return out


#: Gallery sizes of the latency curve (the protocol's own gallery is added per dataset).
LATENCY_GALLERIES: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)

#: The evaluation-memory check of the report: the full protocol score matrix must stay under this.
EVAL_MEMORY_LIMIT_BYTES = 4_000_000_000  # 4 GB (decimal)


def parse_datasets(spec: str) -> list[str]:
    """Comma list or ``all`` -> validated paper-shape names (did-you-mean on a typo)."""
    shapes = paper_shapes()
    if spec.strip() == "all":
        return list(shapes)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("empty dataset list")
    for n in names:
        if n not in shapes:
            hint = did_you_mean(n, shapes)
            raise ConfigError(f"unknown dataset {n!r} for bench efficiency.{hint} "
                              f"Available: {', '.join(shapes)}")
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
# deterministic tensor-memory peak
# --------------------------------------------------------------------------------------------------


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
    one = dummy_frames(1, 1, size, seed=seed)[0].to(device)
    was = backbone.training
    backbone.eval()  # counted in the mode evaluation runs in
    image_flops = count_flops(lambda: backbone.encode_frames(one))
    frames, mask = dummy_frames(n_real, shape.max_frames, size, seed=seed + 1)
    feats = [backbone.encode_frames(frames[i: i + 1].to(device)) for i in range(n_real)]
    backbone.train(was)
    return SharedInputs(shape, frames, torch.cat(feats).float(), mask.to(device), image_flops,
                        time.perf_counter() - t0)


def real_text_states(method, n: int, max_words: int, device, seed: int = 0) -> State:
    tok, m = dummy_tokens(n, max_words, method.backbone.tokenizer.eot_token_id, seed=seed)
    with torch.no_grad():
        return method.encode_text(tok.to(device), m.to(device))


def real_video_states(method, inputs: SharedInputs) -> State:
    """Video states of the real encoded videos: the method's video head on the shared frame features, or its
    own ``encode_video`` pass on the pixels when it overrides it (e.g. a method that needs patch tokens)."""
    device = inputs.frame_features.device
    with torch.no_grad():
        if _overrides_encode_video(method):
            return concat_states(method.encode_video(inputs.frames[i: i + 1].to(device), inputs.frame_mask[i: i + 1])
                                 for i in range(inputs.frames.shape[0]))
        return method.video_from_frames(inputs.frame_features, inputs.frame_mask)


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def flop_counts(method, inputs: SharedInputs, *, block=(4, 8), check_block=(2, 3), device="cpu",
                video_real: State | None = None) -> dict:
    """:func:`tvr_bench.bench.cost.flops.flop_profile` at the inputs' shapes, sharing the image tower's count and
    the real encoded videos, plus the protocol-level totals of the study."""
    shape = inputs.shape
    video_real = video_real if video_real is not None else real_video_states(method, inputs)
    out = flop_profile(method, max_words=shape.max_words, max_frames=shape.max_frames, gallery_size=shape.n_videos,
                       block=block, check_block=check_block, device=device, video_states=video_real,
                       image_flops_per_frame=inputs.image_flops_per_frame, frame_features=inputs.frame_features,
                       frame_mask=inputs.frame_mask)
    out["protocol_matrix"] = shape.n_queries * shape.n_videos * out["score_per_pair"]
    out["per_1k_matrix_macs"] = out["score_per_pair"] * 1_000_000 / 2
    return out


# --------------------------------------------------------------------------------------------------
# block sizing
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# the protocol's score matrix, chunked, under a time budget
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# latency against galleries of N videos
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# one training step (GPU)
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# one (method, dataset)
# --------------------------------------------------------------------------------------------------


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

    params = param_counts(method)
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
    meter = MemoryMeter(device)
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

    shapes = shapes or paper_shapes()
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


