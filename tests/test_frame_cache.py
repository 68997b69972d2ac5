"""The frame cache: cached clips are bit-identical to decoded ones; keys, atomic writes, resume, bad videos."""

from __future__ import annotations

import sys

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tvr_bench.bench.data.pipeline import DecodedClips, FrameStore
from tvr_bench.bench.errors import DataError, OutputError
from tvr_bench.bench.data.frame_cache import FrameCache, Preprocessor, eval_preprocess, prepare_frames
from tvr_bench.bench.data.video import frames_to_tensor, load_frames
from tvr_bench.bench.api.dataset import CaptionItem, Split, VideoItem

def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[tuple[str, Path]]:
    rf = _rf()
    folder = tmp_path_factory.mktemp("videos")
    out = []
    for i in range(6):
        # different lengths: 2..7 s, so some clips are padded and some are sliced (max_frames 4)
        out.append((f"v{i}", rf.tiny_video(folder / f"v{i}.mp4", i, seconds=2 + i, size=48)))
    return out


@pytest.fixture(scope="module")
def split(videos) -> Split:
    return Split("fixture", "test", [VideoItem(v, p) for v, p in videos],
                 [CaptionItem(f"c{v}", v, "a caption") for v, _ in videos])


@pytest.fixture(scope="module")
def prep(tiny_backbone) -> Preprocessor:
    return Preprocessor(tiny_backbone.preprocess)


def test_split_preprocess_is_bit_identical_to_the_whole_preprocess(tiny_backbone, prep, videos):
    assert prep.splittable
    for _, path in videos:
        frames = load_frames(path, 4)
        whole = frames_to_tensor(frames, tiny_backbone.preprocess, 4)
        split = prep.to_clip(prep.crop(frames), 4)
        assert torch.equal(whole[0], split[0]) and torch.equal(whole[1], split[1])


def test_prepare_uses_the_backbone_preprocess_without_building_the_model(tiny_backbone, prep):
    assert Preprocessor(eval_preprocess("tvr-tiny")).describe() == prep.describe()
    described = Preprocessor(eval_preprocess("ViT-B-32", "openai")).describe()
    assert "224" in described and "bicubic" in described


def test_cached_clips_equal_decoded_clips(tmp_path, tiny_backbone, prep, split, videos):
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    assert not cache.exists()
    res = prepare_frames(cache, videos, workers=1, progress=False)
    assert (res.written, res.skipped, res.failed) == (len(videos), 0, [])
    assert res.frames == sum(min(4, 2 + i) for i in range(len(videos)))
    decoded = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False)
    cached = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False, cache=cache)
    for vid, _ in videos:
        a, b = decoded.get(vid), cached.get(vid)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert cached.n_cached == len(videos) and cached.n_decoded == 0 and decoded.n_decoded == len(videos)
    # the in-memory cache keeps uint8 crops and still gives the same tensors
    mem = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True, cache=cache)
    for vid, _ in videos:
        assert torch.equal(mem.get(vid)[0], mem.get(vid)[0]) and torch.equal(mem.get(vid)[0], decoded.get(vid)[0])


def test_runs_of_one_invocation_share_decoded_clips(tiny_backbone, split, videos):
    shared = DecodedClips().for_dataset("fixture")
    first = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True, shared=shared)
    second = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True, shared=shared)
    alone = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False)
    for vid, _ in videos:
        a, b, c = first.get(vid), second.get(vid), alone.get(vid)
        assert torch.equal(a[0], c[0]) and torch.equal(b[0], c[0]) and torch.equal(b[1], c[1])
    assert first.n_decoded == len(videos) and second.n_decoded == 0 and shared.hits == len(videos)
    # what the pixels depend on is part of the key: another max_frames decodes again
    other = FrameStore(split, tiny_backbone.preprocess, 3, 1.0, memory_cache=True, shared=shared)
    other.get(videos[0][0])
    assert other.n_decoded == 1 and len(shared) == len(videos) + 1
    # another dataset drops them; memory_cache=false never shares
    assert len(shared.for_dataset("another")) == 0
    off = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False, shared=shared)
    off.get(videos[0][0])
    assert len(shared) == 0 and off.n_decoded == 1


def test_parallel_prepare_matches_serial(tmp_path, prep, videos):
    serial = FrameCache(tmp_path / "a", "fixture", prep, 4, 1.0)
    parallel = FrameCache(tmp_path / "b", "fixture", prep, 4, 1.0)
    prepare_frames(serial, videos, workers=1, progress=False)
    res = prepare_frames(parallel, videos, workers=2, progress=False)
    assert res.written == len(videos) and not res.failed
    for vid, path in videos:
        assert np.array_equal(serial.load(vid, path), parallel.load(vid, path))


def test_key_depends_on_every_decoding_parameter(tmp_path, prep):
    base = FrameCache(tmp_path, "d", prep, 4, 1.0)
    assert FrameCache(tmp_path, "d", prep, 4, 1.0).dir == base.dir
    assert FrameCache(tmp_path, "d", prep, 8, 1.0).dir != base.dir  # F
    assert FrameCache(tmp_path, "d", prep, 4, 2.0).dir != base.dir  # fps
    assert FrameCache(tmp_path, "other", prep, 4, 1.0).dir != base.dir
    bigger = Preprocessor(eval_preprocess("tvr-small"))  # another image size
    assert FrameCache(tmp_path, "d", bigger, 4, 1.0).dir != base.dir


def test_prepare_resumes_and_cleans_up_after_an_interruption(tmp_path, prep, videos):
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    first = prepare_frames(cache, videos[:2], progress=False)
    assert first.written == 2
    # a writer killed mid-entry leaves only a temporary file (never a partial entry); pid 2**22+1 is not running
    stale = cache.dir / f".entry.npy.{2**22 + 1}.0123abcd.tmp"  # bench.atomic temp-name format
    stale.write_bytes(b"\x93NUMPY partial")
    again = prepare_frames(cache, videos, progress=False)
    assert (again.written, again.skipped) == (len(videos) - 2, 2)
    assert not stale.exists()
    assert sorted(p.name for p in cache.dir.glob("*.npy")) == sorted(
        cache.entry_path(v, p).name for v, p in videos)


def test_corrupt_videos_are_reported_and_skipped(tmp_path, prep, videos):
    bad_empty = tmp_path / "empty.mp4"
    bad_empty.write_bytes(b"")
    bad_garbage = tmp_path / "garbage.mp4"
    bad_garbage.write_bytes(os.urandom(4096))
    items = [videos[0], ("empty", bad_empty), ("garbage", bad_garbage), videos[1]]
    cache = FrameCache(tmp_path / "c", "fixture", prep, 4, 1.0)
    res = prepare_frames(cache, items, workers=2, progress=False)
    assert res.written == 2
    assert sorted(f[0] for f in res.failed) == ["empty", "garbage"]
    assert any("empty.mp4" in f[2] for f in res.failed) and any("garbage.mp4" in f[2] for f in res.failed)
    assert not cache.has("empty", bad_empty) and not list(cache.dir.glob(".*.tmp"))


def test_failed_write_leaves_nothing(tmp_path, prep, videos, monkeypatch):
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    vid, path = videos[0]

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OutputError, match="disk full"):  # one line naming the entry, not a traceback
        cache.store(vid, path, cache.decode(path))
    assert not list(cache.dir.glob("*.npy")) and not list(cache.dir.glob(".*.tmp"))


def test_damaged_or_stale_entries_fall_back_to_decoding(tmp_path, tiny_backbone, prep, split, videos):
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    prepare_frames(cache, videos, progress=False)
    vid, path = videos[2]
    entry = cache.entry_path(vid, path)
    entry.write_bytes(entry.read_bytes()[:100])  # truncated (e.g. power loss before the data hit the disk)
    assert not cache.has(vid, path) and cache.load(vid, path) is None
    store = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False, cache=cache)
    reference = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False)
    assert torch.equal(store.get(vid)[0], reference.get(vid)[0]) and store.n_decoded == 1
    # a replaced source file (another size) is not served from the old entry
    replaced = _rf().tiny_video(tmp_path / "replaced" / path.name, 99, seconds=9, size=48)
    assert replaced.stat().st_size != path.stat().st_size
    assert cache.has(videos[3][0], videos[3][1]) and not cache.has(videos[3][0], replaced)


def test_unsplittable_preprocess_is_refused_by_the_cache_but_still_decodes(tmp_path, split, videos):
    def preprocess(img):
        return torch.as_tensor(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255

    prep = Preprocessor(preprocess)
    assert not prep.splittable
    with pytest.raises(DataError, match="cannot be cached"):
        FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    store = FrameStore(split, preprocess, 4, 1.0, memory_cache=True)
    video, mask = store.get(videos[0][0])
    assert video.shape == (4, 3, 48, 48) and int(mask.sum()) == 2


def test_a_crashing_decoder_process_does_not_kill_the_job(tmp_path, prep, videos, monkeypatch):
    """A segfault-like exit of one worker: the others are still cached and the culprit is named."""
    real = FrameCache.decode

    def crashing(self, source):
        if Path(source).name == "v2.mp4":
            os._exit(1)  # what a segfault in the decoder looks like from the parent
        return real(self, source)

    monkeypatch.setattr(FrameCache, "decode", crashing)  # inherited by the forked workers
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    res = prepare_frames(cache, videos, workers=2, progress=False)
    assert [f[0] for f in res.failed] == ["v2"] and "crashed" in res.failed[0][2]
    assert res.written == len(videos) - 1


def test_clip_memory_keeps_the_most_recent_clips_within_its_budget():
    from tvr_bench.bench.data.pipeline import ClipMemory

    mem = ClipMemory(budget=300)
    clips = {k: np.full((100,), k, dtype=np.uint8) for k in range(5)}
    for k in (0, 1, 2):
        mem.put((k,), clips[k])
    assert mem.bytes == 300 and len(mem) == 3
    assert mem.get((0,)) is clips[0]  # 0 is now the most recent: 1 goes first
    mem.put((3,), clips[3])
    assert mem.get((1,)) is None and mem.get((0,)) is clips[0] and mem.evictions == 1 and mem.bytes == 300
    mem.put((4,), np.zeros(301, dtype=np.uint8))  # larger than the whole budget: not held, nothing evicted
    assert mem.get((4,)) is None and len(mem) == 3 and mem.bytes == 300
    mem.put((3,), clips[3])  # putting a held key again does not count it twice
    assert mem.bytes == 300 and len(mem) == 3
    mem.resize(100)
    assert len(mem) == 1 and mem.get((3,)) is clips[3] and mem.bytes == 100
    # (frames, mask) tensors of a preprocess that cannot be split are counted by their storage
    mem.resize(1000)
    mem.put(("t",), (torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long)))
    assert mem.bytes == 100 + 4 * 3 * 2 * 2 * 4 + 4 * 8 and mem.get(("t",)) is not None


def test_a_small_clip_budget_bounds_memory_and_changes_no_clip(tiny_backbone, split, videos):
    unbounded = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True)
    one_clip = unbounded.get(videos[0][0])[0]
    clip_bytes = unbounded.memory.bytes
    budget = 2 * clip_bytes + clip_bytes // 2  # room for two crops of this size
    bounded = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True, memory_budget=budget)
    for _ in range(2):
        for vid, _ in videos:
            a, b = bounded.get(vid), unbounded.get(vid)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            assert bounded.memory.bytes <= budget
    assert torch.equal(bounded.get(videos[0][0])[0], one_clip)
    assert bounded.memory.evictions > 0 and len(bounded.memory) <= 2
    assert len(unbounded.memory) == len(videos) and unbounded.memory.evictions == 0


def test_frame_cache_entries_are_memory_mapped_and_not_held(tmp_path, tiny_backbone, prep, split, videos):
    cache = FrameCache(tmp_path, "fixture", prep, 4, 1.0)
    prepare_frames(cache, videos, workers=1, progress=False)
    vid, path = videos[0]
    assert isinstance(cache.load(vid, path), np.memmap)
    store = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=True, cache=cache)
    reference = FrameStore(split, tiny_backbone.preprocess, 4, 1.0, memory_cache=False)
    for vid, _ in videos:
        got, want = store.get(vid), reference.get(vid)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # the OS page cache holds the entries; the process holds nothing beyond the clip being built
    assert store.n_cached == len(videos) and len(store.memory) == 0 and store.memory.bytes == 0
