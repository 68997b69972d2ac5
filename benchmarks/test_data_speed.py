"""Frame extraction speed (pytest-benchmark; not part of the unit tests): `make benchmark`.

On generated 10-s, 25-fps, 320x240 H.264 clips with ViT-B/32's eval preprocess (224 px):

- PyAV's raw decoding of the same files (every frame; with and without conversion to an RGB array), the reference
  for decoding throughput;
- ``prepare_frames`` (what ``bench data prepare`` runs): decode, sample 12 frames at 1 fps, resize and crop, store
  uint8 — throughput in source frames and in stored frames per second, with 1 and 2 worker processes (it decodes
  every frame up to the last one kept but converts only the kept ones to RGB);
- one epoch of clips through ``FrameStore`` decoded on the fly vs read from the cache: the cache must be at least
  5x faster (target in ``extra_info``); measured with one torch thread, as in a DataLoader worker.

Figures are in each benchmark's ``extra_info`` (``--benchmark-json``) and printed with ``-s``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tvr_bench.bench.data.pipeline import FrameStore
from tvr_bench.bench.data.frame_cache import FrameCache, Preprocessor, eval_preprocess, prepare_frames
from tvr_bench.bench.data.video import write_video
from tvr_bench.bench.api.dataset import CaptionItem, Split, VideoItem

N_VIDEOS, SECONDS, FPS, H, W, F = 12, 10, 25, 240, 320, 12


def _clip(seed: int) -> np.ndarray:
    """Smooth moving gradients plus a moving square and mild noise: compresses like real footage, not like noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(SECONDS * FPS)[:, None, None]
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, (x + y + t) % 256], axis=-1).astype(np.uint8)
    frames = np.broadcast_to(base, (len(t), H, W, 3)).copy()
    for i in range(len(t)):
        cx = (20 + 4 * i) % (W - 40)
        frames[i, 60:100, cx: cx + 40] = rng.integers(0, 256, 3)
    frames = np.clip(frames.astype(np.int16) + rng.integers(-6, 7, frames.shape, dtype=np.int16), 0, 255)
    return frames.astype(np.uint8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("speed_videos")
    return [(f"v{i}", write_video(folder / f"v{i}.mp4", _clip(i), FPS)) for i in range(N_VIDEOS)]


@pytest.fixture(scope="module")
def prep() -> Preprocessor:
    return Preprocessor(eval_preprocess("ViT-B-32"))


def _raw_decode(paths: list[Path], rgb: bool) -> int:
    import av

    n = 0
    for path in paths:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if rgb:
                    frame.to_ndarray(format="rgb24")
                n += 1
    return n


@pytest.mark.parametrize("rgb", [True, False], ids=["to_rgb", "decode_only"])
def test_raw_pyav_decode(benchmark, videos, rgb):
    """Every frame of every file: decoded (and converted to an RGB array, as the harness needs it)."""
    paths = [p for _, p in videos]
    n = benchmark.pedantic(lambda: _raw_decode(paths, rgb), rounds=2, iterations=1, warmup_rounds=1)
    fps = n / benchmark.stats.stats.min
    benchmark.extra_info.update(decoded_frames=n, decoded_frames_per_s=round(fps, 1), rgb=rgb)
    print(f"\nraw PyAV decode{' + RGB' if rgb else ''}: {n} frames, {fps:.0f} frames/s")


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_throughput(benchmark, tmp_path, videos, prep, workers):
    counter = iter(range(1000))

    def once():
        cache = FrameCache(tmp_path / f"c{next(counter)}", "speed", prep, F, 1.0)
        return prepare_frames(cache, videos, workers=workers, progress=False)

    res = benchmark.pedantic(once, rounds=2, iterations=1)
    best = benchmark.stats.stats.min
    src = N_VIDEOS * SECONDS * FPS
    benchmark.extra_info.update(workers=workers, videos=N_VIDEOS, stored_frames=res.frames,
                                stored_frames_per_s=round(res.frames / best, 1),
                                source_frames_per_s=round(src / best, 1), videos_per_s=round(N_VIDEOS / best, 2))
    assert res.written == N_VIDEOS and not res.failed
    print(f"\nprepare, {workers} worker(s): {N_VIDEOS / best:.2f} videos/s, {src / best:.0f} source frames/s, "
          f"{res.frames / best:.1f} stored frames/s")


def _epoch(store: FrameStore, ids: list[str]) -> None:
    for vid in ids:
        store.get(vid)


def test_epoch_from_cache_vs_decoding(benchmark, tmp_path, videos, prep):
    split = Split("speed", "train", [VideoItem(v, p) for v, p in videos], [CaptionItem(v, v, "x") for v, _ in videos])
    cache = FrameCache(tmp_path, "speed", prep, F, 1.0)
    prepare_frames(cache, videos, progress=False)
    ids = [v for v, _ in videos]
    decoding = FrameStore(split, prep.preprocess, F, 1.0, memory_cache=False)
    cached = FrameStore(split, prep.preprocess, F, 1.0, memory_cache=False, cache=cache)
    # one torch thread, as in a DataLoader worker (and robust to a busy machine: no OpenMP barrier stalls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            _epoch(decoding, ids)
            times.append(time.perf_counter() - t0)
        t_decode = min(times)
        benchmark.pedantic(lambda: _epoch(cached, ids), rounds=5, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)
    t_cache = benchmark.stats.stats.min
    speedup = t_decode / t_cache
    benchmark.extra_info.update(epoch_decode_s=round(t_decode, 4), epoch_cache_s=round(t_cache, 4),
                                speedup=round(speedup, 1), target_speedup=5,
                                clips_per_s_decode=round(len(ids) / t_decode, 1),
                                clips_per_s_cache=round(len(ids) / t_cache, 1))
    print(f"\nepoch of {len(ids)} clips (F={F}, 224 px): decode {t_decode:.3f} s, cache {t_cache:.4f} s, "
          f"speed-up {speedup:.1f}x")
    assert cached.n_decoded == 0
    assert speedup >= 5
