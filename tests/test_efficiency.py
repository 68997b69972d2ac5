"""`bench efficiency` (tvr_bench.bench.cost.efficiency): counted FLOPs against formulas, linearity for every registered
method, memory bounded by the chunk, latency skips that are never silent, efficiency records, CLI errors.

Everything runs on the tiny random backbone at reduced shapes; ViT-B/32 appears only in the benchmark.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import tvr_bench.bench.cost as C
import tvr_bench.bench.cost.blocks as Blk
import tvr_bench.bench.cost.efficiency as E
import tvr_bench.bench.cost.latency as Lat
import tvr_bench.bench.cost.memory as Mem
from tvr_bench.bench.api.metadata import PaperShape
from tvr_bench.bench.report.efficiency_table import efficiency_table
from tvr_bench.bench.errors import ConfigError, RecordError
from tvr_bench.bench.records import load_records, record_label, validate_record
from tvr_bench.bench.registry import METHODS

F, L = 6, 8  # reduced frames / words
SHAPE = PaperShape("msrvtt", F, L, 24, 20, "reduced test shape", "tests", 8)


def every_method():
    return METHODS.names()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: tiny tensors gain nothing from two, and on a shared, oversubscribed 2-core machine
    OpenMP's spin-waiting makes two-thread runs of this file ~7x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs(tiny_backbone):
    return E.shared_inputs(tiny_backbone.eval(), SHAPE, n_real=2, device=torch.device("cpu"))


def _method(make_method, backbone, name):
    return make_method(name, backbone, max_frames=F, max_words=L)


# ---- FLOPs ----------------------------------------------------------------------------------------


def text_tower_flops(layers: int, width: int, length: int, embed: int) -> int:
    """CLIP text tower, 2 x MAC: per block q/k/v/out projections (4 W^2) + MLP (8 W^2) per token, QK^T and AV
    (2 L^2 W); then the projection of every position to the embedding."""
    return layers * 2 * (12 * length * width**2 + 2 * length**2 * width) + 2 * length * width * embed


def image_tower_flops(layers: int, width: int, patch: int, image: int, embed: int) -> int:
    """ViT per frame, 2 x MAC: patch-embedding convolution, blocks over T = patches + 1 tokens, CLS projection."""
    n_patches = (image // patch) ** 2
    tokens = n_patches + 1
    conv = 2 * 3 * patch * patch * width * n_patches
    return conv + layers * 2 * (12 * tokens * width**2 + 2 * tokens**2 * width) + 2 * width * embed


def test_meanp_counts_pinned_to_formulas(tiny_backbone, make_method, inputs):
    """meanp at reduced shapes: text tower (attention included), 2D per pair, video = F x image tower + 0 (pooling
    has no matmul); per query = text + N x pair; the 1k x 1k MAC conversion."""
    cfg = tiny_backbone.clip
    D = tiny_backbone.embed_dim
    text_layers, text_width = len(cfg.transformer.resblocks), cfg.transformer.width
    v = tiny_backbone.spec
    vis = cfg.visual
    f = E.flop_counts(_method(make_method, tiny_backbone, "meanp"), inputs)
    assert f["text_per_query"] == text_tower_flops(text_layers, text_width, L, D)
    per_frame = image_tower_flops(len(vis.transformer.resblocks), v.vision_width, vis.patch_size[0], v.image_size, D)
    assert inputs.image_flops_per_frame == per_frame
    assert f["video_head_per_video"] == 0 and f["video_per_video"] == F * per_frame
    assert f["score_per_pair"] == 2 * D
    assert f["per_query"] == f["text_per_query"] + SHAPE.n_videos * 2 * D
    assert f["per_1k_matrix_macs"] == D * 1_000_000  # one D-dim dot product per pair, 10^6 pairs
    assert f["protocol_matrix"] == SHAPE.n_queries * SHAPE.n_videos * 2 * D


def test_attention_is_counted_in_train_and_eval_mode(tiny_backbone):
    """FlopCounterMode (torch 2.13) has no formula for the CPU attention ops; bench.cost.count_flops (which
    bench.efficiency reuses) adds them, so the image tower counts the same in eval mode (nn.MultiheadAttention's
    fused fast path) as in train mode, where the plain counter loses the fused attention block."""
    from torch.utils.flop_counter import FlopCounterMode

    def plain(fn):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops()

    frames = torch.randn(1, 2, 3, tiny_backbone.spec.image_size, tiny_backbone.spec.image_size)
    counts = {}
    for mode in (True, False):
        tiny_backbone.train(mode)
        counts[mode] = (C.count_flops(lambda: tiny_backbone.encode_frames(frames)),
                        plain(lambda: tiny_backbone.encode_frames(frames)))
    tiny_backbone.eval()
    assert E.count_flops is C.count_flops
    assert counts[True][0] == counts[False][0]
    assert counts[False][1] < counts[False][0]  # the plain counter loses the fused attention block


def test_glim_at_paper_width_is_published_formula():
    """GLIM at MSR-VTT shapes (L=32, F=12, D=512): 2 (L+1) F D = 405,504 MACs per pair (published.md §6.4)."""
    from tvr_bench.methods.glccl import glim_pool

    t, W, Z = torch.randn(1, 512), torch.randn(1, 32, 512), torch.randn(2, 12, 512)
    flops = E.count_flops(lambda: (glim_pool(t, Z, 5.0), glim_pool(W, Z, 5.0)))
    assert flops == 2 * 2 * 405_504


@pytest.mark.parametrize("name", every_method())
def test_counts_match_cost_flop_profile_and_scale_linearly(tiny_backbone, make_method, inputs, name):
    """Same per-pair numbers as bench.cost.flop_profile (which encodes whole videos), and the per-pair count does
    not depend on the block: counts are linear in the number of pairs, hence in the gallery size N."""
    m = _method(make_method, tiny_backbone, name)
    f = E.flop_counts(m, inputs, block=(3, 5), check_block=(1, 2))
    ref = C.flop_profile(m, max_words=L, max_frames=F, gallery_size=SHAPE.n_videos, block=(2, 3))
    if name == "glccl":
        # the Gram-matrix path has per-text and per-video terms inside a block (each video's F x F Gram matrix,
        # each text's token rows), so FLOPs per pair of a block fall with its size: the record says so
        # (linear_in_pairs false) and the count is within the amortisation of those terms
        assert f["score_per_pair"] == pytest.approx(ref["score_per_pair"], rel=0.1)
        assert not f["linear_in_pairs"]
    else:
        assert f["score_per_pair"] == ref["score_per_pair"] > 0
        assert f["linear_in_pairs"] and f["score_per_pair_check_block"] == f["score_per_pair"]
    # E adds the attention the plain counter misses; never less
    assert f["text_per_query"] >= ref["text_per_query"] > 0
    assert f["video_per_video"] >= ref["video_per_video"] > 0
    for n in (10, 1000):
        assert f["text_per_query"] + n * f["score_per_pair"] == pytest.approx(
            E.flop_counts(m, inputs, block=(1, 1), check_block=(2, 2))["text_per_query"] + n * f["score_per_pair"])


# ---- memory ---------------------------------------------------------------------------------------


def test_live_tensor_bytes_counts_only_new_storages():
    a, b = torch.randn(64, 32), torch.randn(32, 128)
    with Mem.LiveTensorBytes() as tr:
        x = a @ b  # 32 KiB
        y = x.softmax(-1)  # +32 KiB
        del x
        z = y[:, :64]  # a view: nothing new
        y.mul_(2.0)  # in place: nothing new
        w = torch.randn(10, 10)  # 400 B after x was freed
    assert tr.peak == 2 * 64 * 128 * 4
    assert tr.current == 64 * 128 * 4 + 400
    del z, w


@pytest.mark.parametrize("name", every_method())
def test_matrix_memory_is_bounded_by_the_chunk_not_by_n(tiny_backbone, make_method, inputs, name):
    """Scoring intermediates (tensor-bytes peak over every block) are the same for a 4x larger protocol; they grow
    with the chunk. The output matrix and the gallery are allocated before and are not intermediates."""
    m = _method(make_method, tiny_backbone, name)
    text = E.real_text_states(m, 2, L, "cpu")
    video = E.real_video_states(m, inputs)

    def peak(n_t, n_v, chunk):
        return E.evaluate_matrix(m, text, video, n_t=n_t, n_v=n_v, chunk=chunk, device="cpu",
                                 track_tensors=True)["tensor_peak_bytes"]

    small, large = peak(4, 6, (2, 3)), peak(16, 24, (2, 3))
    assert small == large > 0
    assert peak(16, 24, (4, 6)) > large
    # the block rule: a block is shrunk until its measured intermediates fit the budget
    budget = peak(16, 24, (4, 6))
    chunk, block_peak = Blk.fit_block(m, text, video, (8, 12), budget)
    assert block_peak <= budget and chunk[0] * chunk[1] < 8 * 12
    assert peak(16, 24, chunk) == block_peak


def test_evaluate_matrix_stops_at_the_budget_and_extrapolates(tiny_backbone, make_method, inputs):
    m = _method(make_method, tiny_backbone, "glccl")
    text, video = E.real_text_states(m, 2, L, "cpu"), E.real_video_states(m, inputs)
    out = E.evaluate_matrix(m, text, video, n_t=40, n_v=40, chunk=(2, 4), device="cpu", max_seconds=1e-9)
    assert out["blocks_done"] == 1 and not out["complete"] and out["seconds_is_extrapolated"]
    assert out["seconds"] == pytest.approx(out["seconds_measured"] * 40 * 40 / 8)
    assert "extrapolated" in out["note"]
    full = E.evaluate_matrix(m, text, video, n_t=6, n_v=8, chunk=(4, 4), device="cpu")
    assert full["complete"] and full["blocks_done"] == full["blocks_total"] == 4


# ---- latency: measured or skipped with a reason -----------------------------------------------------


def _settings(**kw):
    base = dict(backbone="tvr-tiny", galleries=(50, 400), max_seconds=5.0, latency_min_run_time=0.01,
                pool_mb=0.05, block_mb=1.0)
    base.update(kw)
    return E.Settings(**base)


def test_latency_curve_measures_or_skips_with_reason(tiny_backbone, make_method, inputs):
    m = _method(make_method, tiny_backbone, "xclip")
    video = E.real_video_states(m, inputs)
    ppb = Blk.bytes_per_pair(m, E.real_text_states(m, 2, L, "cpu"), video)
    measured = Lat.latency_curve(m, video, max_words=L, galleries=(50, 400), device="cpu", per_pair_bytes=ppb,
                               settings=_settings())
    assert [r["status"] for r in measured["by_gallery"]] == ["measured", "measured"]
    assert measured["pool_videos"] < 400  # the 400-video gallery cycles over a smaller resident pool
    assert all(r["median_ms"] > 0 for r in measured["by_gallery"])
    skipped = Lat.latency_curve(m, video, max_words=L, galleries=(50, 400), device="cpu", per_pair_bytes=ppb,
                              settings=_settings(max_seconds=1e-9))
    for row in skipped["by_gallery"]:
        assert row["status"] == "skipped" and "budget" in row["reason"] and row["extrapolated_ms"] > 0
        assert row["extrapolation"].startswith("EXTRAPOLATED")
    a, b = skipped["by_gallery"]
    assert b["extrapolated_ms"] > a["extrapolated_ms"]


def test_extrapolation_uses_the_measured_sizes():
    rows = [{"gallery_size": 10, "status": "measured", "median_ms": 2.0},
            {"gallery_size": 100, "status": "measured", "median_ms": 11.0},
            {"gallery_size": 1000, "status": "skipped"}]
    Lat._extrapolate(rows, text_ms=1.0, per_video_ms_probe=5.0, probe_n=10)
    assert rows[2]["extrapolated_ms"] == pytest.approx(101.0)  # line through (10, 2) and (100, 11)
    assert "N=10 and N=100" in rows[2]["extrapolation"]


# ---- the study, its records and the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("eff")
    paths, failures, na = E.run_study(["meanp", "glccl"], ["msrvtt"], _settings(galleries=(50, 100)), out,
                                      log=lambda m: None, shapes={"msrvtt": SHAPE})
    assert na == []
    return out, paths, failures


def test_study_writes_valid_efficiency_records(study):
    out, paths, failures = study
    assert failures == [] and len(paths) == 2
    recs = {r["method"]: r for r in load_records(out)}
    for name, r in recs.items():
        assert r["kind"] == "efficiency" and r["metrics"] is None and r["dataset"] == "msrvtt"
        assert record_label(r) == f"{name}/msrvtt/seed0 (efficiency)"
        assert "fingerprint" not in r["protocol"] and r["protocol"]["paper_shapes"]
        assert r["cost"]["memory"]["kind"] == "cpu_peak_rss" and r["cost"]["memory"]["check"]["ok"]
        assert r["cost"]["params"]["extra_params_analytic"] == METHODS.get(name).info.extra_params
        assert {row["gallery_size"] for row in r["efficiency"]["latency"]["by_gallery"]} == {20, 50, 100}
        assert r["cost"]["latency_ms"]["gallery_size"] == SHAPE.n_videos
        e = r["efficiency"]
        assert e["dense_matmul_flops_per_s"] > 0 and e["scoring_throughput"]["flops_per_s"] > 0
        assert e["scoring_throughput"]["fraction_of_dense"] == pytest.approx(
            e["scoring_throughput"]["flops_per_s"] / e["dense_matmul_flops_per_s"])
        assert e["train_step"] is None  # CPU: no training-step measurement
    table = efficiency_table(list(recs.values()))
    assert "| glccl (qd) |" in table and "| meanp |" in table and "lat. ms N=50" in table


def _one(study):
    out, paths, _ = study
    return json.loads(paths[0].read_text())


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.update(metrics={"t2v": {}, "v2t": {}}), 'metrics: must be null when kind is "efficiency"'),
    (lambda r: r.pop("efficiency"), "efficiency: missing"),
    (lambda r: r["efficiency"]["latency"].update(by_gallery=[]), "efficiency.latency.by_gallery: List should have at least 1 item"),
    (lambda r: r["efficiency"]["latency"]["by_gallery"][0].update(status="skipped", reason=""),
     "by_gallery[0]: a skipped size must say why"),
    (lambda r: r["efficiency"]["latency"]["by_gallery"][0].update(status="lost"), "by_gallery[0].status: Input should be 'measured' or 'skipped'"),
    (lambda r: r["efficiency"]["latency"]["by_gallery"][0].update(median_ms=-1), "by_gallery[0].median_ms"),
    (lambda r: r["efficiency"]["latency"]["by_gallery"][0].update(gallery_size=0), "by_gallery[0].gallery_size"),
])
def test_efficiency_record_validation(study, mutate, expected):
    rec = _one(study)
    validate_record(rec)
    mutate(rec)
    with pytest.raises(RecordError, match="efficiency|metrics") as ei:
        validate_record(rec)
    assert expected in str(ei.value)


def test_a_failing_method_writes_no_record(tmp_path, monkeypatch):
    real = E.measure

    def boom(name, *a, **kw):
        if name == "glccl":
            raise RuntimeError("exploded")
        return real(name, *a, **kw)

    monkeypatch.setattr(E, "measure", boom)
    paths, failures, na = E.run_study(["glccl", "meanp"], ["msrvtt"], _settings(galleries=(50,)), tmp_path,
                                      log=lambda m: None, shapes={"msrvtt": SHAPE})
    assert failures == [("glccl", "msrvtt", "RuntimeError: exploded")] and na == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meanp__msrvtt__seed0.json"]


def test_a_method_that_refuses_the_shapes_is_not_applicable_with_its_reason(tmp_path, monkeypatch):
    real = E.measure

    def refuse(name, *a, **kw):
        if name == "glccl":
            raise ConfigError("64 frames exceed the position table")
        return real(name, *a, **kw)

    monkeypatch.setattr(E, "measure", refuse)
    paths, failures, na = E.run_study(["glccl", "meanp"], ["msrvtt"], _settings(galleries=(50,)), tmp_path,
                                      log=lambda m: None, shapes={"msrvtt": SHAPE})
    assert failures == [] and na == [("glccl", "msrvtt", "64 frames exceed the position table")]
    table = efficiency_table(load_records(tmp_path), {"glccl/msrvtt": na[0][2]})
    assert "Not applicable at these shapes (no record): **glccl**: 64 frames exceed" in table


def test_parse_datasets():
    assert E.parse_datasets("all") == ["didemo", "msrvtt", "vatex"]  # registry order: every plugin with a paper shape
    assert E.parse_datasets("vatex, msrvtt") == ["vatex", "msrvtt"]
    with pytest.raises(ConfigError, match="Did you mean: didemo"):
        E.parse_datasets("didemoo")


@pytest.mark.parametrize("args, message", [
    (["--method", "glcl", "--dataset", "msrvtt"], "Did you mean: glccl"),
    (["--method", "meanp", "--dataset", "msrvt"], "Did you mean: msrvtt"),
    (["--method", "meanp", "--dataset", "msrvtt", "--galleries", "10,x"], "--galleries"),
    (["--method", "meanp", "--dataset", "msrvtt", "--max-seconds", "0"], "must be positive"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    from tvr_bench.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["efficiency", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.count("\n") <= 2
    assert not out.exists()
