"""bench pretrain: the corpus (deterministic, apart from the benchmark), the trainer and its files, the shipped
``backbone.pretrained=embedded`` weights and their sha256 check, and the command's bad input."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tvr_bench.bench import backbone as B
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.pretrain import PretrainSettings, manifest_path, run_pretrain, sha256_file
from tvr_bench.datasets import _pretrain_corpus as C
from tvr_bench.datasets import _synthetic_world as W
from tvr_bench.datasets import synthetic as S


def _corpus(tiny_backbone, **kw):
    from tvr_bench.bench.data.frame_cache import Preprocessor

    return C.build_corpus(C.CorpusParams(**{"n_items": 40, **kw}), Preprocessor(tiny_backbone.preprocess))


def test_corpus_is_deterministic_and_seeded(tiny_backbone):
    a, b, other = _corpus(tiny_backbone), _corpus(tiny_backbone), _corpus(tiny_backbone, seed=1)
    assert a.captions == b.captions and np.array_equal(a.images, b.images) and a.fingerprint() == b.fingerprint()
    assert other.captions != a.captions and other.fingerprint() != a.fingerprint()
    # the images are what the harness feeds the backbone: its crop, at its image size
    size = tiny_backbone.spec.image_size
    assert a.images.dtype == np.uint8 and a.images.shape[1:] == (size, size, 3)
    assert len(a.images) == a.starts[-1] and len(a.starts) == len(a) + 1


def test_captions_are_the_benchmarks_phrasing_and_fit_its_context(tiny_backbone):
    items = C.corpus_items(C.CorpusParams(n_items=400))
    lengths = {len(events) for events, _ in items}
    assert lengths == {1, 2}
    words = {w for _, text in items for w in text.replace(",", " ").split()}
    for word in ("then", "later", "next", "moving", "going", "pulsing", "on", *S.SHAPES):
        assert word in words
    for events, text in items:
        assert len(tiny_backbone.token_ids(text)) <= 32
        # the benchmark's own phrasing of exactly the shown events, in order
        assert text in {W._caption_text(events, t, w, c) for t in range(len(W._EVENT_TEMPLATES))
                        for w in range(len(W._MOTION_WORDS)) for c in range(len(W._CONNECTORS))}


def test_corpus_streams_and_frames_are_apart_from_the_benchmark():
    assert C.CORPUS_STREAM not in S._SPLIT_CODES.values()
    # no corpus frame is a frame of a (small) benchmark drawn at the same size, before any codec
    p = S.synthetic_params(seed=0, n_train=12, n_val=4, n_test=8)
    per_event = p["seconds_per_event"] * p["fps"]
    bench_frames = set()
    for split in S.SPLITS:
        _, _, events = S._build_split(split, p[f"n_{split}"], p)
        for i, evs in enumerate(events):
            rng = S._rng(p["seed"], S._SPLIT_CODES[split], i, S._RENDER)
            for e in evs:
                bench_frames.update(f.tobytes() for f in W.render_event_frames(e, per_event, p["frame_size"], rng))
    cp = C.CorpusParams(n_items=300)
    corpus_frames = [f.tobytes() for i, (evs, _) in enumerate(C.corpus_items(cp))
                     for f in C.render_item_frames(cp, i, evs)]
    assert len(bench_frames) > 700 and len(corpus_frames) > 300
    assert not bench_frames.intersection(corpus_frames)


def test_corpus_frames_are_off_the_benchmarks_time_grid():
    """The same moving event with the same jitter, drawn at the corpus's times, gives none of the benchmark's frames."""
    event = ("circle", "red", "left", "black")
    bench = W.render_event_frames(event, 8, 64, np.random.default_rng(5))
    fine = W.render_event_frames(event, 16, 64, np.random.default_rng(5))  # same size and offset draws
    assert not {f.tobytes() for f in bench} & {f.tobytes() for f in fine}


TINY = PretrainSettings(steps=30, batch_size=24, n_items=48, lr=2e-3, warmup=0.0, threads=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "w.safetensors"
    return out, run_pretrain(TINY, out, command=["bench", "pretrain"], log=lambda m: None)


def test_pretrain_is_byte_deterministic(tiny_run, tmp_path):
    again = run_pretrain(TINY, tmp_path / "w.safetensors", command=["bench", "pretrain"], log=lambda m: None)
    assert (tmp_path / "w.safetensors").read_bytes() == tiny_run[0].read_bytes()
    assert again["sha256"] == tiny_run[1]["sha256"]


def test_pretrain_writes_loadable_weights_with_their_manifest(tiny_run):
    out, manifest = tiny_run
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk == manifest and manifest["sha256"] == sha256_file(out)
    assert manifest["settings"]["steps"] == 30 and manifest["corpus"]["n_items"] == 48
    assert {"torch", "open_clip"} <= set(manifest["versions"])
    from safetensors.torch import load_file

    weights = load_file(out)
    assert weights["token_embedding.weight"].dtype == torch.float16
    bb = B.build_backbone("tvr-tiny", str(out), log=lambda m: None)
    assert torch.equal(bb.clip.token_embedding.weight, weights["token_embedding.weight"].float())
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_pretrain_loss_goes_down(tiny_run):
    loss = tiny_run[1]["loss"]
    curve = loss["every_10"]
    assert len(curve) == 3 and curve[0] > curve[1] > curve[2] and loss["final"] < loss["first"] - 0.7


def test_embedded_tag_loads_the_shipped_file():
    path = B.shipped_weights("embedded", "tvr-tiny")
    manifest = json.loads(manifest_path(B.WEIGHTS_DIR / "tvr-tiny-embedded.safetensors").read_text())
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == manifest["sha256"]
    B.check_pretrained_file("embedded")
    bb = B.build_backbone("tvr-tiny", "embedded", log=lambda m: None)
    assert bb.spec.pretrained == "embedded"
    from safetensors.torch import load_file

    assert torch.equal(bb.clip.positional_embedding, load_file(path)["positional_embedding"].float())
    with pytest.raises(ConfigError, match="holds tvr-tiny weights"):
        B.build_backbone("tvr-small", "embedded", log=lambda m: None)


def test_a_tampered_shipped_file_is_one_config_error(tmp_path, monkeypatch):
    for name in ("tvr-tiny-embedded.safetensors", "tvr-tiny-embedded.json"):
        shutil.copy(B.WEIGHTS_DIR / name, tmp_path / name)
    monkeypatch.setattr(B, "WEIGHTS_DIR", tmp_path)
    weights = tmp_path / "tvr-tiny-embedded.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    for call in (lambda: B.check_pretrained_file("embedded"), lambda: B.build_backbone("tvr-tiny", "embedded")):
        with pytest.raises(ConfigError) as exc:
            call()
        assert "sha256" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "1"], "--batch-size must be >= 2"),
    (["--strip-rate", "1.5"], "--strip-rate must be in [0, 1]"),
    (["--out", "OUT/w.pt"], "must end in .safetensors"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    from tvr_bench.cli import main

    args = [a.replace("OUT", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "w.safetensors")]
    res = CliRunner().invoke(main, ["pretrain", "--quiet", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
