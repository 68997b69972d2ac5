"""On-disk cache of decoded, resized and cropped frames: ``bench data prepare`` writes it, training and evaluation
read it (``bench/data/pipeline.py`` ``FrameStore``), and fall back to decoding for any video it lacks.

What is stored. For every video, the frames the harness would feed the backbone — PyAV decoding, 1-fps sampling,
uniform slice to F (``bench/data/video.py`` ``load_frames``), then the *geometric* part of the backbone's own eval
preprocess (open_clip: bicubic resize of the short side, centre crop, RGB) — as one uint8 array ``[T, S, S, 3]``
(``T <= F``: no padding is stored). The remaining part of the preprocess (to-tensor and CLIP mean/std
normalisation) is applied at load time, with the same float32 operations in the same order, so a clip read from
the cache is bit-identical to a clip decoded on the fly (``tests/test_frame_cache.py``). uint8 after the crop is
the compact form: 12 frames at 224 px are 1.8 MB per video, a quarter of the float tensor and far less than the
source frames.

Layout::

    <cache_dir>/frames/<dataset>/F<max_frames>-<key[:12]>/
        meta.json                   the decoding parameters the key was computed from (for people)
        <video id>.<source bytes>.npy

The folder key is a hash of everything that changes the stored pixels: the cache format, ``max_frames``,
``sample_fps``, the geometric transforms (their ``repr``: size, interpolation, crop) and the PyAV version (the
decoder). A different F, image size or decoder therefore never reads a stale entry. The entry name carries the
size of the source file, so a replaced video is not served from an old entry.

Writes are atomic (temporary file in the same folder, then ``os.replace``): an interrupted ``prepare`` leaves
finished entries and nothing half-written; rerunning it skips the finished ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tvr_bench.bench.atomic import atomic_write, atomic_write_text, remove_stale_temps
from tvr_bench.bench.errors import DataError

__all__ = [
    "CACHE_FORMAT",
    "Preprocessor",
    "FrameCache",
    "PrepareResult",
    "prepare_frames",
    "eval_preprocess",
    "frames_root",
]

#: Bump when what is stored changes (sampling, layout): old folders are then simply not read.
CACHE_FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


# --------------------------------------------------------------------------------------------------------------
# The backbone preprocess, split into a cacheable geometric part and a cheap normalisation
# --------------------------------------------------------------------------------------------------------------


class Preprocessor:
    """The backbone's eval preprocess, split at its to-tensor step.

    ``geometric`` maps a PIL image to a PIL image (resize, crop, RGB); ``normalize`` turns uint8 frames into the
    float clip. When the preprocess is not a ``Compose`` ending in ``ToTensor`` + ``Normalize`` it cannot be split
    (``splittable`` is False): frames are then always decoded and preprocessed whole, and nothing is cached.
    """

    def __init__(self, preprocess: Callable):
        self.preprocess = preprocess
        self.geometric: list[Callable] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        transforms = getattr(preprocess, "transforms", None)
        if not isinstance(transforms, (list, tuple)):
            return
        names = [type(t).__name__ for t in transforms]
        cut = next((i for i, n in enumerate(names) if n in ("ToTensor", "MaybeToTensor")), None)
        if cut is None or names[cut + 1:] != ["Normalize"]:
            return
        norm = transforms[cut + 1]
        mean = np.asarray(getattr(norm, "mean", None), dtype=np.float64)
        std = np.asarray(getattr(norm, "std", None), dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,):
            return
        self.geometric = list(transforms[:cut])
        self.mean, self.std = mean, std

    @property
    def splittable(self) -> bool:
        return self.geometric is not None

    def describe(self) -> str:
        """What the stored pixels depend on, as text (part of the cache key)."""
        if self.geometric is None:
            return repr(self.preprocess)
        return " | ".join(repr(t) for t in self.geometric)

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, S, S, 3]``: the geometric transforms, frame by frame."""
        from PIL import Image

        assert self.geometric is not None
        out = []
        for f in np.asarray(frames):
            img = Image.fromarray(f)
            for t in self.geometric:
                img = t(img)
            if not isinstance(img, Image.Image) or img.mode != "RGB":
                raise DataError(f"the backbone preprocess does not give RGB images before ToTensor ({self.describe()})")
            out.append(np.asarray(img, dtype=np.uint8))
        return np.stack(out)

    def to_clip(self, cropped: np.ndarray, max_frames: int):
        """uint8 ``[T, S, S, 3]`` -> (float32 ``[max_frames, 3, S, S]``, int64 mask ``[max_frames]``), zero padded.

        The same float32 operations as torchvision's ``ToTensor`` then ``Normalize`` (divide by 255, subtract the
        mean, divide by the std, per channel), applied to all frames at once: bit-identical results.
        """
        import torch

        assert self.mean is not None and self.std is not None
        n = cropped.shape[0]
        if not 1 <= n <= max_frames:
            raise ValueError(f"got {n} frames for max_frames={max_frames}")
        if not cropped.flags.writeable:  # a memory-mapped cache entry: torch wants a writable buffer
            cropped = np.array(cropped)
        src = torch.from_numpy(np.ascontiguousarray(cropped)).permute(0, 3, 1, 2)
        video = torch.empty((max_frames, *src.shape[1:]), dtype=torch.float32)
        video[n:] = 0
        x = video[:n]
        # in place, one output buffer: uint8 -> float, / 255 (ToTensor), - mean, / std (Normalize)
        x.copy_(src)
        x.div_(255)
        x.sub_(torch.as_tensor(self.mean, dtype=x.dtype)[None, :, None, None])
        x.div_(torch.as_tensor(self.std, dtype=x.dtype)[None, :, None, None])
        mask = torch.zeros(max_frames, dtype=torch.long)
        mask[:n] = 1
        return video, mask


def eval_preprocess(name: str, pretrained: str | None = None) -> Callable:
    """The eval preprocess open_clip builds for ``name`` / ``pretrained``, without building the model or loading
    weights (``bench data prepare`` needs only the resize/crop). Same configuration merge as open_clip's factory:
    defaults, then the model config's ``preprocess_cfg``, then the pretrained tag's, with the model's image size.
    """
    from tvr_bench.bench.backbone import import_open_clip
    from tvr_bench.bench.errors import ConfigError

    open_clip = import_open_clip()
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ConfigError(f"unknown open_clip model {name!r} (backbone.name)")
    cfg = merge_preprocess_dict(PreprocessCfg(), model_cfg.get("preprocess_cfg", {}))
    if pretrained not in (None, "", "none", "None") and not Path(str(pretrained)).is_file():
        from open_clip.pretrained import get_pretrained_cfg

        cfg = merge_preprocess_dict(cfg, get_pretrained_cfg(name, str(pretrained)) or {})
    size = model_cfg.get("vision_cfg", {}).get("image_size")
    if size is not None:
        cfg["size"] = size
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


# --------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------


def frames_root(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / "frames"


def _decoder_version() -> str:
    try:
        import av

        return str(av.__version__)
    except Exception:  # noqa: BLE001 - PyAV missing: decoding would fail anyway
        return "unknown"


def _safe_name(video_id: str) -> str:
    safe = _SAFE.sub("_", video_id)
    if safe != video_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"
    return safe


class FrameCache:
    """One cache folder: the entries of one dataset under one set of decoding parameters."""

    def __init__(self, cache_dir: str | os.PathLike, dataset: str, preprocessor: Preprocessor, max_frames: int,
                 sample_fps: float):
        if not preprocessor.splittable:
            raise DataError(f"the backbone preprocess cannot be cached (no ToTensor + Normalize tail): "
                            f"{preprocessor.describe()}")
        self.preprocessor = preprocessor
        self.dataset = dataset
        self.max_frames = int(max_frames)
        self.sample_fps = float(sample_fps)
        self.params = {
            "format": CACHE_FORMAT,
            "dataset": dataset,
            "max_frames": self.max_frames,
            "sample_fps": self.sample_fps,
            "transform": preprocessor.describe(),
            "decoder": f"PyAV {_decoder_version()}",
            "sampling": "1/sample_fps s steps, middle frame, uniform slice to max_frames (bench/data/video.py)",
        }
        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()
        self.key = key
        self.dir = frames_root(cache_dir) / _safe_name(dataset) / f"F{self.max_frames}-{key[:12]}"

    # -- entries --

    def entry_path(self, video_id: str, source: Path) -> Path:
        try:
            size = Path(source).stat().st_size
        except OSError:
            size = 0
        return self.dir / f"{_safe_name(video_id)}.{size}.npy"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def _read(self, path: Path, mmap: bool) -> np.ndarray | None:
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # absent or damaged: decode instead
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or not 1 <= arr.shape[0] <= self.max_frames:
            return None
        return arr

    def has(self, video_id: str, source: Path) -> bool:
        """A complete, readable entry exists (header and size checked, pixels not read)."""
        return self._read(self.entry_path(video_id, source), mmap=True) is not None

    def load(self, video_id: str, source: Path) -> np.ndarray | None:
        """The stored uint8 frames ``[T, S, S, 3]``, memory-mapped read-only (the pages are read when the clip is
        normalised and stay in the OS page cache, not in this process), or None when there is no usable entry."""
        return self._read(self.entry_path(video_id, source), mmap=True)

    def store(self, video_id: str, source: Path, cropped: np.ndarray) -> Path:
        """Write one entry atomically."""
        cropped = np.ascontiguousarray(cropped, dtype=np.uint8)
        self._write_meta()  # creates the folder
        path = self.entry_path(video_id, source)

        def write(tmp: Path) -> None:
            with open(tmp, "xb") as fh:
                np.save(fh, cropped, allow_pickle=False)

        return atomic_write(path, write, point="frame_cache_write")

    def _write_meta(self) -> None:
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps(self.params, indent=1))

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by killed writers (their process is gone)."""
        return len(remove_stale_temps(self.dir))

    # -- decoding --

    def decode(self, source: Path) -> np.ndarray:
        """Decode and crop one video the way the harness does (raises VideoError naming the file)."""
        from tvr_bench.bench.data.video import load_frames

        frames = load_frames(source, self.max_frames, self.sample_fps)
        return self.preprocessor.crop(frames)


# --------------------------------------------------------------------------------------------------------------
# prepare: decode every video once, in parallel, resumable
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PrepareResult:
    written: int = 0
    skipped: int = 0  # already cached
    frames: int = 0  # frames written
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video id, path, reason)
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


_WORKER_CACHE: FrameCache | None = None


def _set_worker_cache(cache: FrameCache) -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = cache


def _init_worker(cache: FrameCache) -> None:
    import torch

    torch.set_num_threads(1)  # one decoding process per core
    _set_worker_cache(cache)


def _prepare_one(item: tuple[str, str]) -> tuple[str, str, int, str | None]:
    """Decode, crop and store one video; failures are returned, never raised (the job goes on)."""
    video_id, source = item
    cache = _WORKER_CACHE
    assert cache is not None
    try:
        cropped = cache.decode(Path(source))
        cache.store(video_id, Path(source), cropped)
        return video_id, source, int(cropped.shape[0]), None
    except DataError as exc:
        return video_id, source, 0, str(exc)
    except Exception as exc:  # noqa: BLE001 - an odd file must not kill a 10k-video job; it is reported
        return video_id, source, 0, f"{type(exc).__name__}: {exc} ({source})"


def prepare_frames(cache: FrameCache, items: Sequence[tuple[str, Path]], *, workers: int = 1,
                   progress: bool = True, desc: str = "prepare") -> PrepareResult:
    """Decode every ``(video id, path)`` not yet cached into ``cache``.

    ``workers`` > 1 decodes in that many processes (fork where available). Finished entries are skipped, so an
    interrupted job resumes where it stopped. Videos that fail to decode are listed in the result, not raised.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    result = PrepareResult()
    cache.dir.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_temporaries()
    todo: list[tuple[str, str]] = []
    seen: set[str] = set()
    for video_id, path in items:
        if video_id in seen:
            continue
        seen.add(video_id)
        if cache.has(video_id, Path(path)):
            result.skipped += 1
        else:
            todo.append((video_id, str(path)))
    bar = tqdm(total=len(todo), desc=desc, unit="video", disable=not progress or not todo, dynamic_ncols=True)

    def collect(out: tuple[str, str, int, str | None]) -> None:
        video_id, source, n, error = out
        if error is None:
            result.written += 1
            result.frames += n
        else:
            result.failed.append((video_id, source, error))
        bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            _set_worker_cache(cache)
            for item in todo:
                collect(_prepare_one(item))
        else:
            _run_pool(cache, todo, workers, collect)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def _run_pool(cache: FrameCache, todo: list[tuple[str, str]], workers: int, collect: Callable) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # fork: the workers inherit the imported preprocess (and the torchvision import work-around) for free
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()

    def pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(cache,))

    done: set[str] = set()

    def take(out: tuple[str, str, int, str | None]) -> None:
        done.add(out[0])
        collect(out)

    executor = pool(workers)
    try:
        futures = [executor.submit(_prepare_one, item) for item in todo]
        for fut in as_completed(futures):
            take(fut.result())
    except BrokenProcessPool:
        # a decoder crashed its process (not a Python error): go on one video per process, which names the culprit.
        # A broken pool is not waited for (its workers are gone or being killed; waiting can hang on 3.11).
        executor.shutdown(wait=False, cancel_futures=True)
        for item in [it for it in todo if it[0] not in done]:
            single = pool(1)
            try:
                take(single.submit(_prepare_one, item).result())
                single.shutdown(wait=True)
            except BrokenProcessPool:
                single.shutdown(wait=False, cancel_futures=True)
                take((item[0], item[1], 0, f"the decoder process crashed on {item[1]}"))
        return
    except BaseException:
        # interrupted: finished entries stay; a running write completes or leaves only a temporary file
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
