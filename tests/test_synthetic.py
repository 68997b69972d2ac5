"""datasets/synthetic.py: determinism, caption coverage and length, hard negatives, the cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tvr_bench.bench.errors import ConfigError, DataError
from tvr_bench.bench.data.video import load_frames, probe_video
from tvr_bench.datasets import synthetic as S

TINY = dict(n_train=5, n_val=2, n_test=3, frame_size=32)


def _events(video: dict) -> list[tuple]:
    return [(e["shape"], e["colour"], e["motion"], e["background"]) for e in video["events"]]


def _all_videos(ann: dict):
    for split in S.SPLITS:
        yield from ann["splits"][split]["videos"]


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    return S.generate_synthetic(tmp_path_factory.mktemp("seed0a"), seed=0, **TINY)


@pytest.fixture(scope="module")
def seed0_again(tmp_path_factory):
    return S.generate_synthetic(tmp_path_factory.mktemp("seed0b"), seed=0, **TINY)


# ---------------------------------------------------------------------------------------------
# Layout and determinism
# ---------------------------------------------------------------------------------------------


def test_layout_and_format(seed0):
    ann = S.load_synthetic_annotations(seed0)
    root = seed0.parent
    assert seed0.name == "annotations.json"
    assert ann["name"] == "synthetic" and ann["format_version"] == 1
    assert ann["params"] == S.synthetic_params(seed=0, **TINY)
    assert ann["fingerprint"] == S.params_fingerprint(ann["params"])
    counts = {split: len(ann["splits"][split]["videos"]) for split in S.SPLITS}
    assert counts == {"train": 5, "val": 2, "test": 3}

    ids = [v["id"] for v in _all_videos(ann)]
    assert len(ids) == len(set(ids))  # splits hold disjoint ids
    for split in S.SPLITS:
        for v in ann["splits"][split]["videos"]:
            assert v["file"] == f"videos/{split}/{v['id']}.mp4"
            assert v["n_seconds"] == 4 * 2 and len(v["events"]) == 4
            evs = _events(v)
            assert len(set(evs)) == len(evs)  # events within a video are distinct
            for shape, colour, motion, background in evs:
                assert (colour, background) not in {("blue", "dark blue"), ("green", "dark green")}
            info = probe_video(root / v["file"])
            assert (info.n_frames, info.fps, info.width) == (32, 4.0, 32)
        n_caps = 4 if split == "train" else 1
        caps = ann["splits"][split]["captions"]
        assert len(caps) == n_caps * counts[split]
        assert len({c["id"] for c in caps}) == len(caps)
        for c in caps:
            assert len(c["event_indices"]) == 2 and c["event_indices"] == sorted(c["event_indices"])
            assert not c["ambiguous"]
        for v in ann["splits"][split]["videos"]:
            texts = [c["text"] for c in caps if c["video_id"] == v["id"]]
            assert len(set(texts)) == len(texts)


def test_same_seed_same_benchmark(seed0, seed0_again):
    a = seed0.read_text()
    b = seed0_again.read_text()
    assert a == b  # paths in the annotations are relative: byte-identical
    ann = json.loads(a)
    for video in _all_videos(ann):  # single-threaded encoding: the same bytes, hence the same pixels
        rel = video["file"]
        assert (seed0.parent / rel).read_bytes() == (seed0_again.parent / rel).read_bytes(), rel
    assert load_frames(seed0.parent / ann["splits"]["train"]["videos"][0]["file"], max_frames=12).shape == \
        (8, 32, 32, 3)


# sha256 over (file name, every decoded frame) of the TINY seed-0 set, through the harness's decode path.
# It changes only with the generator (GENERATOR_VERSION) or the pinned PyAV/FFmpeg/x264 build (pyproject).
DECODED_SHA256 = "c4e533cd9daed1c5f6f2f6e275a2869a60e765f8021bf25cff90074317ef521d"


def test_decoded_frames_are_pinned(seed0):
    """The embedded benchmark is the same data on every machine: a pinned hash of the decoded frames."""
    import hashlib

    ann = json.loads(seed0.read_text())
    h = hashlib.sha256()
    for video in _all_videos(ann):
        h.update(video["file"].encode())
        h.update(np.ascontiguousarray(load_frames(seed0.parent / video["file"], max_frames=1000)).tobytes())
    assert h.hexdigest() == DECODED_SHA256


def test_same_seed_same_rendered_frames():
    """Before encoding, generation is exactly deterministic: events and pixels from the seed alone."""
    p = S.synthetic_params(seed=0, **TINY)

    def render(split, i):
        _, _, events = S._build_split(split, p[f"n_{split}"], p)
        rng = S._rng(p["seed"], S._SPLIT_CODES[split], i, S._RENDER)
        return np.concatenate([S.render_event_frames(e, p["seconds_per_event"] * p["fps"], p["frame_size"], rng)
                               for e in events[i]])

    for split, i in (("train", 0), ("train", 4), ("test", 2)):
        np.testing.assert_array_equal(render(split, i), render(split, i))


def test_other_seed_differs(seed0, tmp_path):
    other = S.generate_synthetic(tmp_path, seed=1, **TINY)
    a, b = S.load_synthetic_annotations(seed0), S.load_synthetic_annotations(other)
    assert a["fingerprint"] != b["fingerprint"]
    assert [_events(v) for v in _all_videos(a)] != [_events(v) for v in _all_videos(b)]
    fa = load_frames(seed0.parent / "videos/train/train-00000.mp4", 12)
    fb = load_frames(other.parent / "videos/train/train-00000.mp4", 12)
    assert not np.array_equal(fa, fb)


def test_split_does_not_depend_on_other_split_sizes(seed0, tmp_path):
    other = S.generate_synthetic(tmp_path, seed=0, n_train=2, n_val=0, n_test=3, frame_size=32)
    a, b = S.load_synthetic_annotations(seed0), S.load_synthetic_annotations(other)
    assert a["splits"]["test"] == b["splits"]["test"]
    assert b["splits"]["val"] == {"videos": [], "captions": []}


def test_frames_show_the_events(seed0):
    """Sampled at 1 fps, each 2 s event gives 2 frames showing its background colour."""
    ann = S.load_synthetic_annotations(seed0)
    video = ann["splits"]["train"]["videos"][0]
    frames = load_frames(seed0.parent / video["file"], max_frames=12)
    assert frames.shape[0] == 8
    for k, event in enumerate(video["events"]):
        bg = np.asarray(S.BACKGROUNDS[event["background"]], dtype=float)
        for frame in frames[2 * k : 2 * k + 2]:
            corner = frame[:3, :3].reshape(-1, 3).mean(axis=0)  # shapes never reach the corners
            np.testing.assert_allclose(corner, bg, atol=12)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _centroid_and_area(frame, background):
    fg = np.any(frame != np.asarray(S.BACKGROUNDS[background], np.uint8), axis=-1)
    ys, xs = np.nonzero(fg)
    return xs.mean(), ys.mean(), fg.sum()


@pytest.mark.parametrize("motion", S.MOTIONS)
def test_render_motion(motion):
    event = ("circle", "red", motion, "black")
    frames = S.render_event_frames(event, 8, 64, np.random.default_rng(0))
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    x0, y0, a0 = _centroid_and_area(frames[2], "black")
    x1, y1, a1 = _centroid_and_area(frames[6], "black")
    dx, dy = x1 - x0, y1 - y0
    if motion == "still":
        assert abs(dx) < 1 and abs(dy) < 1 and a0 > 1.5 * a1
    else:
        expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[motion]
        assert np.sign(round(dx)) == expected[0] and np.sign(round(dy)) == expected[1]
        assert max(abs(dx), abs(dy)) > 10


@pytest.mark.parametrize("shape", S.SHAPES)
def test_render_shapes_are_distinct(shape):
    masks = {}
    for s in S.SHAPES:
        frame = S.render_event_frames((s, "white", "still", "black"), 4, 64, np.random.default_rng(0))[1]
        masks[s] = frame[..., 0] > 128
    for other in S.SHAPES:
        if other != shape:
            assert (masks[shape] != masks[other]).sum() > 20


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coverage, expected", [(1.0, 4), (0.5, 2), (0.25, 1), (0.1, 1)])
def test_caption_coverage(tmp_path, coverage, expected):
    ann_path = S.generate_synthetic(
        tmp_path, seed=3, n_train=3, n_val=0, n_test=2, frame_size=16, caption_coverage=coverage,
        captions_per_video_train=3,
    )
    ann = S.load_synthetic_annotations(ann_path)
    videos = {v["id"]: v for v in _all_videos(ann)}
    for split in S.SPLITS:
        for cap in ann["splits"][split]["captions"]:
            assert len(cap["event_indices"]) == expected
            video = videos[cap["video_id"]]
            described = [video["events"][j] for j in cap["event_indices"]]
            # Each described event is mentioned, in temporal order.
            pos = -1
            for e in described:
                at = cap["text"].find(f"{e['colour']} {e['shape']}", pos + 1)
                assert at > pos, (cap["text"], described)
                pos = at
    if expected == 4:
        assert all(c["event_indices"] == [0, 1, 2, 3] for s in S.SPLITS for c in ann["splits"][s]["captions"])


def _tokenizer():
    try:
        from tvr_bench.bench.backbone import import_open_clip
    except ImportError:
        import torch

        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            globals()["_TV_SHIM"] = lib
        except RuntimeError:  # already defined in this process
            pass
        import open_clip
    else:
        open_clip = import_open_clip()
    return open_clip.get_tokenizer("ViT-B-32")


def test_captions_fit_32_tokens(seed0):
    tok = _tokenizer()

    def n_tokens(text: str) -> int:  # including start and end tokens
        return int((tok([text])[0] != 0).sum())

    ann = S.load_synthetic_annotations(seed0)
    texts = [c["text"] for s in S.SPLITS for c in ann["splits"][s]["captions"]]
    assert max(n_tokens(t) for t in texts) <= 32

    # Worst case at coverage 0.5 with 4 events (2 events described), over every phrasing: CLIP's BPE
    # works word by word, so the longest word of each slot gives the longest caption.
    def longest(words):
        return max(words, key=lambda w: n_tokens(w))

    colour, shape = longest(list(S.COLOURS)), longest(list(S.SHAPES))
    background = longest(list(S.BACKGROUNDS))
    assert S.n_described(4, 0.5) == 2
    worst = 0
    for template in S._EVENT_TEMPLATES:
        for words in S._MOTION_WORDS:
            motion = longest(list(words.values()))
            phrase = template.format(colour=colour, shape=shape, motion=motion, background=background)
            for connector in S._CONNECTORS:
                worst = max(worst, n_tokens(connector.join([phrase, phrase])))
    assert worst <= 32


# ---------------------------------------------------------------------------------------------
# Hard negatives
# ---------------------------------------------------------------------------------------------


def test_hard_negatives_share_events(tmp_path):
    ann_path = S.generate_synthetic(
        tmp_path, seed=5, n_train=8, n_val=0, n_test=6, frame_size=16, hard_negative_rate=1.0
    )
    ann = S.load_synthetic_annotations(ann_path)
    n_copies = 0
    for split in ("train", "test"):
        videos = {v["id"]: v for v in ann["splits"][split]["videos"]}
        for v in videos.values():
            if v["copied_from"] is None:
                continue
            n_copies += 1
            src = videos[v["copied_from"]["video_id"]]  # same split
            pairs = v["copied_from"]["event_pairs"]
            assert 1 <= len(pairs) <= 2
            for here, there in pairs:
                assert v["events"][here] == src["events"][there]
            assert src["id"] in v["shares_events_with"] and v["id"] in src["shares_events_with"]
            assert len(set(_events(v)) & set(_events(src))) < 4  # never a full copy
        # shares_events_with is exactly "holds an identical event".
        for v in videos.values():
            sharing = sorted(o["id"] for o in videos.values()
                             if o["id"] != v["id"] and set(_events(o)) & set(_events(v)))
            assert v["shares_events_with"] == sharing
        # A caption never describes only events that another video holds as well.
        for c in ann["splits"][split]["captions"]:
            described = {tuple(videos[c["video_id"]]["events"][j].values()) for j in c["event_indices"]}
            for o in videos.values():
                if o["id"] != c["video_id"]:
                    assert not described <= {tuple(e.values()) for e in o["events"]}
    assert n_copies >= 10  # all but the first video of each split copy (rate 1.0)


def test_no_hard_negatives_at_rate_zero(tmp_path):
    ann = S.load_synthetic_annotations(
        S.generate_synthetic(tmp_path, n_train=6, n_val=0, n_test=0, frame_size=16, hard_negative_rate=0.0)
    )
    assert all(v["copied_from"] is None for v in _all_videos(ann))


# ---------------------------------------------------------------------------------------------
# Parameters, loading, cache
# ---------------------------------------------------------------------------------------------


def test_params_validation():
    assert S.synthetic_params(n_train=1, n_val=1, n_test=1, caption_coverage=1) == S.synthetic_params(
        n_train=1, n_val=1, n_test=1, caption_coverage=1.0
    )
    with pytest.raises(ConfigError, match="unknown"):
        S.synthetic_params(n_train=1, n_val=1, n_test=1, colour_count=3)
    with pytest.raises(ConfigError, match="n_test"):
        S.synthetic_params(n_train=1, n_val=1)
    with pytest.raises(ConfigError, match="caption_coverage"):
        S.synthetic_params(n_train=1, n_val=1, n_test=1, caption_coverage=0.0)
    with pytest.raises(ConfigError, match="frame_size"):
        S.synthetic_params(n_train=1, n_val=1, n_test=1, frame_size=33)


def test_load_rejects_bad_files(seed0, tmp_path):
    with pytest.raises(DataError, match="not found"):
        S.load_synthetic_annotations(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        S.load_synthetic_annotations(bad)
    data = json.loads(seed0.read_text())
    data["params"]["seed"] = 99  # no longer matches the fingerprint
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="fingerprint"):
        S.load_synthetic_annotations(bad)
    data = json.loads(seed0.read_text())
    data["splits"]["test"]["captions"][0]["video_id"] = "nobody"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="unknown video"):
        S.load_synthetic_annotations(bad)
    assert S.load_synthetic_annotations(seed0.parent)["name"] == "synthetic"  # a folder works too


def test_interrupted_generation_leaves_no_annotations(tmp_path, monkeypatch):
    root = tmp_path / "bench"
    S.generate_synthetic(root, n_train=2, n_val=0, n_test=1, frame_size=16)
    calls = []

    def failing_write(path, frames, fps):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(path, frames, fps)

    real_write = S.write_video
    monkeypatch.setattr(S, "write_video", failing_write)
    with pytest.raises(KeyboardInterrupt):
        S.generate_synthetic(root, seed=1, n_train=2, n_val=0, n_test=1, frame_size=16)
    assert not (root / "annotations.json").exists()  # the old one was removed first

    cache = tmp_path / "cache"
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        S.ensure_synthetic(cache, n_train=2, n_val=0, n_test=1, frame_size=16)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_ensure_synthetic_caches(tmp_path):
    params = dict(n_train=2, n_val=1, n_test=1, frame_size=16)
    first = S.ensure_synthetic(tmp_path, **params)
    fp = S.params_fingerprint(S.synthetic_params(**params))
    assert first == tmp_path / f"synthetic-{fp[:12]}" / "annotations.json"
    stamp = first.stat().st_mtime_ns
    again = S.ensure_synthetic(tmp_path, **params, seed=0)  # same params (seed 0 is the default)
    assert again == first and first.stat().st_mtime_ns == stamp

    other = S.ensure_synthetic(tmp_path, **{**params, "seed": 1})
    assert other.parent != first.parent and other.exists()

    # A folder without its annotation file (an interrupted run) is regenerated.
    first.unlink()
    (first.parent / "junk.txt").write_text("left over")
    regenerated = S.ensure_synthetic(tmp_path, **params)
    assert regenerated == first and first.exists() and not (first.parent / "junk.txt").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert leftovers == []
    assert os.path.isfile(first.parent / "videos" / "test" / "test-00000.mp4")
