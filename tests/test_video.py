"""bench/data/video.py: frame-index arithmetic, the encode/decode round trip, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvr_bench.bench.errors import VideoError
from tvr_bench.bench.data.video import (
    VideoInfo,
    frames_to_tensor,
    load_frames,
    probe_video,
    sample_frame_indices,
    uniform_slice,
    write_video,
)

# ---------------------------------------------------------------------------------------------
# Index arithmetic
# ---------------------------------------------------------------------------------------------


def test_sample_indices_10s_at_25fps():
    idx = sample_frame_indices(250, 25.0)
    assert idx == [12 + 25 * s for s in range(10)]
    assert idx[:3] == [12, 37, 62]


def test_sample_indices_partial_last_second_and_clipping():
    # 1.75 s at 4 fps: two steps, the second's middle frame (6) is the last frame.
    assert sample_frame_indices(7, 4.0) == [2, 6]
    # 1.25 s: the second step's middle (6) lies past the end and is clipped to frame 4.
    assert sample_frame_indices(5, 4.0) == [2, 4]
    # 90 frames at 29.97 fps last 3.003 s: four steps, the last clipped to the final frame.
    assert sample_frame_indices(90, 30000 / 1001) == [14, 44, 74, 89]


def test_sample_indices_tiny_and_empty():
    assert sample_frame_indices(1, 25.0) == [0]
    assert sample_frame_indices(3, 30.0) == [2]  # middle of the second (15) clipped to the last frame
    assert sample_frame_indices(0, 25.0) == []
    with pytest.raises(ValueError):
        sample_frame_indices(10, 0.0)


def test_sample_indices_other_rates():
    # 2 samples per second of a 2.5 s, 4 fps clip: steps of 0.5 s, middle frame of each.
    assert sample_frame_indices(10, 4.0, sample_fps=2.0) == [1, 3, 5, 7, 9]
    # Half a sample per second of a 10 s, 10 fps clip: one per 2 s.
    assert sample_frame_indices(100, 10.0, sample_fps=0.5) == [10, 30, 50, 70, 90]


def test_uniform_slice():
    indices = list(range(100, 130))  # T = 30
    got = uniform_slice(indices, 12)
    expected = [indices[p] for p in np.linspace(0, 29, 12).astype(int)]
    assert got == expected
    assert len(got) == 12 and got[0] == 100 and got[-1] == 129
    assert uniform_slice([3, 5, 7], 12) == [3, 5, 7]
    assert uniform_slice(list(range(12)), 12) == list(range(12))
    with pytest.raises(ValueError):
        uniform_slice([1, 2], 0)


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------


def _grey_ramp(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Frame i is a solid grey of level 10 + 15 * i: the decoded level tells which frame it was."""
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = 10 + 15 * i
    return frames


def test_round_trip_picks_the_right_frames(tmp_path):
    path = write_video(tmp_path / "ramp.mp4", _grey_ramp(12), fps=4)  # 3 s
    assert path == tmp_path / "ramp.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["ramp.mp4"]  # no temp file left behind

    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.n_frames, info.fps, info.width, info.height) == (12, 4.0, 48, 32)
    assert info.duration_s == pytest.approx(3.0, abs=0.01)

    frames = load_frames(path, max_frames=12)
    assert frames.dtype == np.uint8 and frames.shape == (3, 32, 48, 3)
    expected_levels = [10 + 15 * i for i in (2, 6, 10)]
    np.testing.assert_allclose(frames.reshape(3, -1).mean(axis=1), expected_levels, atol=4)

    two = load_frames(path, max_frames=2)  # uniform_slice of [2, 6, 10] -> [2, 10]
    np.testing.assert_allclose(two.reshape(2, -1).mean(axis=1), [40, 160], atol=4)


def test_round_trip_colour(tmp_path):
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    frames[..., 0] = 220
    frames[..., 1] = 40
    frames[..., 2] = 30
    path = write_video(tmp_path / "red.mp4", frames, fps=4)
    out = load_frames(path, max_frames=4)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), [220, 40, 30], atol=8)


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8), fps=4)
    with pytest.raises(ValueError):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32), fps=4)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------


def _expect_video_error(path, fn=probe_video):
    with pytest.raises(VideoError) as info:
        fn(path)
    assert path.name in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    path = tmp_path / "missing_clip.mp4"
    _expect_video_error(path)
    _expect_video_error(path, lambda p: load_frames(p, 12))


def test_empty_file(tmp_path):
    path = tmp_path / "empty_clip.mp4"
    path.write_bytes(b"")
    _expect_video_error(path)
    _expect_video_error(path, lambda p: load_frames(p, 12))


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage_clip.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    err = _expect_video_error(path)
    assert err.__cause__ is not None  # the PyAV error is chained
    _expect_video_error(path, lambda p: load_frames(p, 12))


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 50)
    _expect_video_error(path)


def test_truncated_mp4(tmp_path):
    full = write_video(tmp_path / "full.mp4", _grey_ramp(12), fps=4)
    data = full.read_bytes()
    path = tmp_path / "truncated_clip.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    _expect_video_error(path)
    _expect_video_error(path, lambda p: load_frames(p, 12))


def test_truncated_tail_is_an_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)  # noise: every frame is big
    full = write_video(tmp_path / "full.mp4", frames, fps=4, faststart=True)  # index first
    data = full.read_bytes()

    cut = tmp_path / "cut_clip.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert probe_video(cut).n_frames == 40  # the header still claims 40 frames
    _expect_video_error(cut, lambda p: load_frames(p, 12))  # never silently fewer frames

    stub = tmp_path / "stub_clip.mp4"
    stub.write_bytes(data[: int(len(data) * 0.02)])  # header only: no frame decodes
    _expect_video_error(stub, lambda p: load_frames(p, 12))


def test_directory_is_not_a_video(tmp_path):
    path = tmp_path / "folder_clip.mp4"
    path.mkdir()
    _expect_video_error(path)


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


def _preprocess(image):
    """A stand-in for open_clip's transform: PIL image -> float tensor [3, 8, 8]."""
    arr = np.asarray(image.resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_frames_to_tensor_pads_with_zeros_and_mask():
    frames = np.full((3, 16, 16, 3), 200, dtype=np.uint8)
    video, mask = frames_to_tensor(frames, _preprocess, max_frames=5)
    assert video.shape == (5, 3, 8, 8) and video.dtype == torch.float32
    assert mask.tolist() == [1, 1, 1, 0, 0] and mask.dtype == torch.long
    assert torch.allclose(video[:3], torch.full((3, 3, 8, 8), 200 / 255))
    assert torch.count_nonzero(video[3:]) == 0


def test_frames_to_tensor_full_and_too_many():
    frames = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    video, mask = frames_to_tensor(frames, _preprocess, max_frames=4)
    assert video.shape == (4, 3, 8, 8) and mask.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        frames_to_tensor(frames, _preprocess, max_frames=3)
    with pytest.raises(ValueError):
        frames_to_tensor(frames[:0], _preprocess, max_frames=3)
