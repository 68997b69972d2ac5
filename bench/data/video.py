"""Video decoding and encoding: the one path every dataset (real or synthetic) goes through.

Frame extraction follows the CLIP4Clip recipe: one frame per second of video (the middle frame of
each second), then, if more than ``max_frames`` remain, ``max_frames`` of them picked uniformly
(``slice_framepos 2``: positions ``linspace(0, T-1, max_frames)`` cast to int).

Decoding is sequential (no seeking): frames are decoded in order, only the wanted ones are kept,
and decoding stops after the last wanted frame. Seeking in short clips saves little and makes the
chosen frames depend on keyframe placement; sequential decoding is exact and reproducible.

Every failure to open or decode a file is a :class:`~tvr_bench.bench.errors.VideoError` whose
message names the file; the underlying PyAV exception is chained. A file that decodes to clearly fewer
frames than its container claims (cut short) is an error too; a shortfall of a frame or two (containers
over-state counts) is absorbed by resampling from the frames that really decode.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tvr_bench.bench.atomic import atomic_write
from tvr_bench.bench.errors import VideoError

__all__ = [
    "VideoInfo",
    "probe_video",
    "sample_frame_indices",
    "uniform_slice",
    "load_frames",
    "frames_to_tensor",
    "write_video",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: Path
    n_frames: int
    fps: float
    duration_s: float
    width: int
    height: int


# --------------------------------------------------------------------------------------------
# Frame-index arithmetic (pure functions)
# --------------------------------------------------------------------------------------------


def sample_frame_indices(n_frames: int, fps: float, sample_fps: float = 1.0) -> list[int]:
    """Indices of the frames kept by ``sample_fps`` extraction (CLIP4Clip style).

    The video lasts ``n_frames / fps`` seconds; it is cut into ``ceil(duration * sample_fps)`` steps
    of ``1 / sample_fps`` seconds and the middle frame of each step is kept:
    ``int(t * fps + fps / (2 * sample_fps))`` with ``t`` the step's start time, clipped to
    ``n_frames - 1``. A non-empty video always yields at least one index; an empty one yields none.
    Indices are non-decreasing; with ``fps < sample_fps`` a frame may appear more than once.
    """
    n_frames = int(n_frames)
    if n_frames <= 0:
        return []
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not (math.isfinite(sample_fps) and sample_fps > 0):
        raise ValueError(f"sample_fps must be a positive finite number, got {sample_fps!r}")
    duration = n_frames / fps
    # Guard against float noise such as 10.000000000000002 steps for an exact 10 s clip.
    n_steps = max(1, math.ceil(round(duration * sample_fps, 9)))
    half = fps / (2.0 * sample_fps)
    last = n_frames - 1
    return [min(int(step / sample_fps * fps + half), last) for step in range(n_steps)]


def uniform_slice(indices: Sequence[int], max_frames: int) -> list[int]:
    """Keep at most ``max_frames`` of ``indices``, picked uniformly (CLIP4Clip ``slice_framepos 2``).

    With ``T = len(indices) > max_frames`` the kept positions are
    ``np.linspace(0, T - 1, max_frames).astype(int)``; otherwise all indices are kept.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
    indices = list(indices)
    if len(indices) <= max_frames:
        return indices
    positions = np.linspace(0, len(indices) - 1, num=max_frames).astype(int)
    return [indices[p] for p in positions]


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _av():
    import av  # imported lazily: pure index arithmetic must not need PyAV

    return av


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoError(f"video path is not a regular file: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {path}")
    return container


@contextmanager
def _decoding(path: Path) -> Iterator:
    """The opened container of ``path``, closed after use; a decoder failure inside is a VideoError naming it."""
    av = _av()
    container = _open(path)
    try:
        yield container
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from exc
    finally:
        container.close()


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        value = float(stream.duration * stream.time_base)
        if value > 0:
            return value
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _count_packets(container, stream) -> int:
    """Frame count by demuxing (no decoding): for containers that do not store it."""
    container.seek(0)
    count = 0
    for packet in container.demux(stream):
        if packet.size:  # the demuxer ends with an empty flush packet
            count += 1
    return count


def _iter_frames(container, stream, path: Path) -> Iterator:
    """Decode ``stream`` in order. Any decoding error is a :class:`VideoError` naming the file: a corrupt
    video stops the run rather than silently contributing fewer (or zero) frames."""
    av = _av()
    n_out = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                n_out += 1
                yield frame
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"corrupt video {path}: decoding failed after {n_out} frame(s): {exc}") from exc


#: A container may over-state its frame count slightly (edit lists, variable frame rate); a larger shortfall
#: means the file was cut short and is reported as corrupt.
SHORTFALL_TOLERANCE = (2, 0.05)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header and decode its first frame (to reject garbage and truncated files).

    Raises :class:`VideoError` naming the path if the file is missing, empty, not decodable, has no
    video stream, or has no frames.
    """
    path = Path(path)
    _check_file(path)
    with _decoding(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        if fps is None:
            raise VideoError(f"video {path} has no usable frame rate")
        duration = _stream_duration(container, stream)
        first = next(_iter_frames(container, stream, path), None)
        if first is None:
            raise VideoError(f"video {path} has no decodable frames")
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:
            n_frames = _count_packets(container, stream)
        if n_frames <= 0:
            raise VideoError(f"video {path} has no frames")
        if duration is None:
            duration = n_frames / fps
        return VideoInfo(
            path=path,
            n_frames=n_frames,
            fps=fps,
            duration_s=duration,
            width=int(first.width),
            height=int(first.height),
        )


def _decode_indices(path: Path, indices: list[int]) -> tuple[dict[int, np.ndarray], int, bool]:
    """Decode ``path`` sequentially and keep the frames at ``indices``.

    Returns (frames by index, number of frames decoded, whether the stream ended before the last
    wanted index).
    """
    wanted = set(indices)
    last = max(indices)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with _decoding(path) as container:
        stream = container.streams.video[0]
        for frame in _iter_frames(container, stream, path):
            if decoded in wanted:
                kept[decoded] = frame.to_ndarray(format="rgb24")
            decoded += 1
            if decoded > last:
                return kept, decoded, False
        return kept, decoded, True


def load_frames(path: str | os.PathLike, max_frames: int, sample_fps: float = 1.0) -> np.ndarray:
    """Decode the sampled frames of a video as uint8 RGB, shape ``[T, H, W, 3]`` with ``T <= max_frames``.

    Frames are chosen by :func:`sample_frame_indices` (from the container's frame count and rate)
    then :func:`uniform_slice`. If the stream holds fewer frames than the container claims, the
    indices are recomputed from the number actually decoded and those frames are used (this includes
    a stream whose tail fails to decode); a video that decodes to no frame at all is a
    :class:`VideoError`.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames!r}")
    path = Path(path)
    info = probe_video(path)
    indices = uniform_slice(sample_frame_indices(info.n_frames, info.fps, sample_fps), max_frames)
    kept, decoded, short = _decode_indices(path, indices)
    if short:
        if decoded == 0:
            raise VideoError(f"video {path} decoded to zero frames")
        slack = max(SHORTFALL_TOLERANCE[0], int(SHORTFALL_TOLERANCE[1] * info.n_frames))
        if decoded < info.n_frames - slack:
            raise VideoError(f"truncated video {path}: the container claims {info.n_frames} frames, "
                             f"only {decoded} decode")
        # The container over-stated its length: resample from what is really there.
        indices = uniform_slice(sample_frame_indices(decoded, info.fps, sample_fps), max_frames)
        if not set(indices) <= kept.keys():
            kept, decoded2, _ = _decode_indices(path, indices)
            if decoded2 == 0 or not set(indices) <= kept.keys():
                raise VideoError(f"video {path} decoded inconsistently ({decoded} then {decoded2} frames)")
    try:
        return np.stack([kept[i] for i in indices])
    except ValueError as exc:  # frame size changed mid-stream
        raise VideoError(f"video {path} has frames of different sizes: {exc}") from exc


def frames_to_tensor(frames: np.ndarray, preprocess: Callable, max_frames: int):
    """Preprocess frames into a padded clip tensor and its mask.

    ``preprocess`` maps a ``PIL.Image`` to a float tensor ``[3, S, S]`` (e.g. open_clip's eval
    transform). Returns ``(video, mask)``: ``video`` is float32 ``[max_frames, 3, S, S]`` and ``mask``
    int64 ``[max_frames]``; the first ``T`` slots hold the frames (mask 1), the rest are zeros with
    mask 0.
    """
    import torch
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {frames.shape}")
    n = frames.shape[0]
    if n == 0:
        raise ValueError("frames_to_tensor needs at least one frame")
    if n > max_frames:
        raise ValueError(f"got {n} frames, more than max_frames={max_frames}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    processed = [torch.as_tensor(preprocess(Image.fromarray(f))) for f in frames]
    first = processed[0]
    video = torch.zeros((max_frames, *first.shape), dtype=torch.float32)
    for i, t in enumerate(processed):
        if t.shape != first.shape:
            raise ValueError(f"preprocess returned shapes {tuple(first.shape)} and {tuple(t.shape)}")
        video[i] = t
    mask = torch.zeros(max_frames, dtype=torch.long)
    mask[:n] = 1
    return video, mask


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _pick_codec() -> str:
    av = _av()
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - codec missing from the bundled FFmpeg
            continue
        return name
    raise VideoError("PyAV's FFmpeg has neither a libx264 nor an mpeg4 encoder")


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    *,
    crf: int = 18,
    faststart: bool = False,
) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` as an MP4 (H.264 via libx264, else MPEG-4 part 2), yuv420p.

    The file is written to a temporary name in the same folder and moved into place with
    ``os.replace``, so a reader never sees a half-written file. ``H`` and ``W`` must be even
    (yuv420p). ``crf`` sets libx264's quality (lower = better); ``faststart`` puts the index at the
    front of the file. The encoder runs single-threaded: libx264's default frame threads make the output
    depend on thread timing (two generations of the embedded benchmark differed in 22 of 900 files, 4 of them
    in decoded pixels); with one thread the same frames give the same bytes, since x264's SIMD paths are
    bit-exact with its C code on every CPU.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    n, height, width, _ = frames.shape
    if n == 0:
        raise ValueError("write_video needs at least one frame")
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {height}x{width}")
    fps = int(fps)
    if fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")

    av = _av()
    codec = _pick_codec()
    options = {"movflags": "+faststart"} if faststart else {}

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4", options=options) as container:
            stream = container.add_stream(codec, rate=Fraction(fps, 1))
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # deterministic output (see the docstring)
            if codec == "libx264":
                stream.options = {"crf": str(int(crf)), "preset": "veryfast", "threads": "1"}
            else:
                stream.bit_rate = max(200_000, width * height * fps * 2)
            for i, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)

    try:
        atomic_write(path, encode, suffix=".mp4", point="video_write")  # the suffix tells the muxer the format
    except av.FFmpegError as exc:
        raise VideoError(f"cannot write video {path}: {exc}") from exc
    return path
