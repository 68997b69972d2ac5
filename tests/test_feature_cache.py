"""The frozen-backbone regime: cached backbone outputs give every method the states the towers give, the cache is
keyed by what the numbers depend on (and reused otherwise), and a frozen run trains the heads only."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from tvr_bench.bench.data.feature_cache import (BackboneIdentity, FeaturePairDataset, encode_cached_texts,
                                                encode_cached_videos, split_features, weights_digest)
from tvr_bench.bench.data.pipeline import FrameStore, PairDataset, tokenize_captions
from tvr_bench.bench.registry import METHODS
from tvr_bench.bench.train import epoch_loader
from tvr_bench.datasets.synthetic import SyntheticBenchmark

MAX_FRAMES, MAX_WORDS = 6, 32


def _autocast():
    return torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    cfg = {"data": {"synthetic": {"seed": 3, "n_train": 6, "n_val": 2, "n_test": 2, "events_per_video": 2,
                                  "caption_coverage": 1.0, "captions_per_video_train": 2, "captions_per_video_eval": 1,
                                  "hard_negative_rate": 0.0, "frame_size": 64, "seconds_per_event": 2, "fps": 2}}}
    ds = SyntheticBenchmark(cfg, cache_dir=tmp_path_factory.mktemp("data"))
    return ds.load_split("train")


def _inputs(split, backbone):
    store = FrameStore(split, backbone.preprocess, MAX_FRAMES, 1.0, memory_cache=False)
    captions = tokenize_captions(split, backbone, MAX_WORDS, "error")
    return store, captions


def _ident(backbone):
    return BackboneIdentity("tvr-tiny", weights_digest(backbone.clip), "fp32", "cpu")


def _features(method, split, store, captions, cache, logs=None):
    return split_features(method, split, store, captions, cache_dir=cache, ident=_ident(method.backbone), batch_size=4,
                          device="cpu", autocast=_autocast, log=(logs.append if logs is not None else lambda m: None))


@pytest.mark.parametrize("name", METHODS.names())
def test_cached_states_equal_the_towers(name, small_split, tiny_backbone, make_method, tmp_path):
    """Every method's text and video states from the cache equal encode_text / encode_video on the same inputs."""
    m = make_method(name, tiny_backbone, max_frames=MAX_FRAMES, max_words=MAX_WORDS)
    store, captions = _inputs(small_split, tiny_backbone)
    feats = _features(m, small_split, store, captions, tmp_path)
    n_t, n_v = len(small_split.captions), len(small_split.videos)
    with torch.no_grad():
        torch.manual_seed(0)  # TS2-Net's official perturbed top-k draws noise at evaluation too
        cached_v = encode_cached_videos(m, feats, 4, "cpu", _autocast)
        torch.manual_seed(0)
        frames, vmask = zip(*(store.get(v.id) for v in small_split.videos))
        direct_v = m.encode_video(torch.stack(frames), torch.stack(vmask))
        cached_t = encode_cached_texts(m, feats, 0, n_t, 4, "cpu", _autocast)
        direct_t = m.encode_text(captions.tokens, captions.mask)
    for got, want, n in ((cached_v, direct_v, n_v), (cached_t, direct_t, n_t)):
        assert set(got) == set(want)
        for k in want:
            assert got[k].shape[0] == n
            torch.testing.assert_close(got[k].to(want[k].dtype), want[k], rtol=1e-4, atol=1e-5, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(m.score(cached_t, cached_v), m.score(direct_t, direct_v), rtol=1e-4, atol=1e-4)


def test_cache_is_reused_and_keyed_by_weights_and_files(small_split, tiny_backbone, make_method, tmp_path):
    m = make_method("meanp", tiny_backbone, max_frames=MAX_FRAMES, max_words=MAX_WORDS)
    store, captions = _inputs(small_split, tiny_backbone)
    logs: list[str] = []
    first = _features(m, small_split, store, captions, tmp_path, logs)
    second = _features(make_method("xclip", tiny_backbone, max_frames=MAX_FRAMES, max_words=MAX_WORDS),
                       small_split, store, captions, tmp_path, logs)
    assert [s.rsplit(": ", 1)[-1].split()[0] for s in logs] == ["computed"] * 2 + ["reused"] * 2
    assert (first.texts.folder, first.videos.folder) == (second.texts.folder, second.videos.folder)
    assert first.texts.data.cache_files and first.videos.data.cache_files  # Arrow files on disk, memory-mapped

    ts2 = _features(make_method("ts2net", tiny_backbone, max_frames=MAX_FRAMES, max_words=MAX_WORDS),
                    small_split, store, captions, tmp_path)
    assert ts2.texts.folder == first.texts.folder and ts2.videos.folder != first.videos.folder  # shifted tokens

    torch.manual_seed(1)
    from tvr_bench.bench.backbone import build_backbone
    other = make_method("meanp", build_backbone("tvr-tiny"), max_frames=MAX_FRAMES, max_words=MAX_WORDS)
    moved = _features(other, small_split, store, captions, tmp_path)
    assert moved.texts.folder != first.texts.folder and moved.videos.folder != first.videos.folder

    video = small_split.videos[0].path
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file changed: its features may have
    touched = _features(m, small_split, store, captions, tmp_path)
    assert touched.texts.folder == first.texts.folder and touched.videos.folder != first.videos.folder


def test_training_batches_from_the_cache_equal_those_from_pixels(small_split, tiny_backbone, make_method, tmp_path):
    m = make_method("glccl", tiny_backbone, max_frames=MAX_FRAMES, max_words=MAX_WORDS)
    store, captions = _inputs(small_split, tiny_backbone)
    cached = FeaturePairDataset(_features(m, small_split, store, captions, tmp_path))
    pixels = PairDataset(small_split, captions, store)
    batches = [next(iter(epoch_loader(ds, 4, torch.Generator().manual_seed(5), rank=0, world=1)))
               for ds in (cached, pixels)]
    with torch.no_grad():
        (t1, v1), (t2, v2) = (ds.encode_batch(m, b, "cpu") for ds, b in zip((cached, pixels), batches))
        torch.testing.assert_close(m.score(t1, v1), m.score(t2, v2), rtol=1e-4, atol=1e-4)


def test_frozen_run_trains_the_heads_only(cache_dir, tmp_path):
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.records import load_record
    from tvr_bench.bench.train import seed_everything
    from tvr_bench.cli import main

    out = tmp_path / "frozen"
    res = CliRunner().invoke(main, ["run", "--method", "meanp,xclip", "--dataset", "synthetic", "--preset", "smoke",
                                    "--set", "backbone.frozen=true", "--set", "train.epochs=1",
                                    "--set", "cost.enabled=false", "--out", str(out), "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meanp = load_record(out / "meanp__synthetic__seed0.json")
    assert meanp["training"]["backbone"] == "frozen" and meanp["training"]["history"] == []
    assert "nothing to train" in meanp["metrics"]["selection"]
    xclip = load_record(out / "xclip__synthetic__seed0.json")
    assert xclip["training"]["backbone"] == "frozen" and len(xclip["training"]["history"]) == 1
    assert set(xclip["training"]["feature_cache"]) == {"train", "val", "test"}

    state = torch.load(out / "checkpoints" / "xclip__synthetic__seed0" / "last.pt", weights_only=False)["model"]
    seed_everything(0)
    init = build_backbone("tvr-tiny", "embedded").clip.state_dict()  # the embedded default's shipped weights
    for k, v in init.items():
        assert torch.equal(state[f"backbone.clip.{k}"], v), k  # not one CLIP weight moved, logit scale included
    head = [k for k in state if not k.startswith("backbone.")]
    assert head  # and the head's state is saved with it
