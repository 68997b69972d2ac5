"""The report's figures (tvr_bench.bench.report.figures): what they plot from the records, that measured and
extrapolated points stay apart, that no two texts of a rendered figure overlap, and that SVG and PDF parse."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tvr_bench.bench.records import load_records
from tvr_bench.bench.report import figures as F
from tvr_bench.bench.report.report import plot_points

ROOT = Path(__file__).resolve().parents[1]
EFFICIENCY = ROOT / "reports" / "efficiency" / "cpu"
EMBEDDED = ROOT / "reports" / "embedded"


@pytest.fixture(scope="module")
def committed():
    """The committed records (embedded run, CPU efficiency study) and the accuracy-cost points."""
    recs = load_records(EMBEDDED) + load_records(EFFICIENCY)
    return recs, plot_points(recs, published=True)


@pytest.fixture(scope="module")
def drawn(committed):
    recs, pts = committed
    figs = F.draw_all(recs, pts)
    yield figs
    for _, _, fig in figs:
        F.close(fig)


def test_pareto_keeps_only_undominated_points_by_cost():
    pts = [(10, 5), (1, 2), (3, 2), (2, 4), (20, 5), (5, 3)]
    assert F.pareto(pts) == [(1, 2), (2, 4), (10, 5)]  # (3, 2), (5, 3) dominated by (2, 4); (20, 5) by (10, 5)


def test_latency_curves_keep_measured_and_extrapolated_apart():
    rec = json.loads((EFFICIENCY / "tighttransf__msrvtt__seed0.json").read_text())
    curve = F.latency_curves([rec])["msrvtt"]["tighttransf"]
    rows = rec["efficiency"]["latency"]["by_gallery"]
    assert [p["n"] for p in curve] == [1000, 10_000, 100_000, 1_000_000]
    assert [p["measured"] for p in curve] == [r["status"] == "measured" for r in rows] == [True, False, False, False]
    assert curve[0]["value"] == rows[0]["median_ms"] and curve[3]["value"] == rows[3]["extrapolated_ms"]


def test_memory_curve_is_computed_from_the_records_byte_counts_and_the_measured_peak_kept():
    rec = json.loads((EFFICIENCY / "drl__msrvtt__seed0.json").read_text())
    c = F.memory_curves([rec])["msrvtt"]["drl"]
    lat = rec["efficiency"]["latency"]
    n = 100_000  # over the chunk: one full chunk's intermediates
    want = (n * lat["video_state_bytes_per_video"] + 4 * n + rec["efficiency"]["matrix"]["text_state_bytes_per_query"]
            + lat["chunk_tensor_peak_bytes"])
    assert next(p["value"] for p in c["curve"] if p["n"] == n) == pytest.approx(want)
    assert c["measured"] == (1000, rec["cost"]["memory"]["peak_bytes"])


def test_accuracy_points_have_both_costs_and_intervals(committed):
    _, pts = committed
    synthetic = [p for p in pts if p["dataset"] == "synthetic"]
    assert len(synthetic) == 9 and all(p["latency_ms"] and p["r1_ci"] for p in synthetic)
    msrvtt = {p["method"]: p for p in pts if p["dataset"] == "msrvtt"}
    assert msrvtt and all(p["source"] == "published" and p["latency_ms"] for p in msrvtt.values())
    drl = json.loads((EFFICIENCY / "drl__msrvtt__seed0.json").read_text())
    assert msrvtt["drl"]["latency_ms"] == drl["cost"]["latency_ms"]["median"]  # the paper-shape record's


def _text_boxes(fig):
    """(text, display box) of every text matplotlib draws: titles, axis labels, legend entries, and the tick
    labels inside each axis' view (an axis keeps Text objects for ticks outside it, which are not drawn)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn, tick_texts = [], set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * (abs(lo) + abs(hi))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_texts.update({id(tick.label1), id(tick.label2)})
                if ax.get_visible() and lo - tol <= tick.get_loc() <= hi + tol:
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in tick_texts and t.get_visible()
              and (t.axes is None or t.axes.get_visible())]
    boxes = []
    for t in drawn:
        bb = t.get_window_extent(renderer)
        if t.get_text().strip() and bb.width > 0 and bb.height > 0:
            boxes.append((t.get_text(), bb))
    return boxes


def _overlaps(fig) -> list[tuple[str, str]]:
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(_text_boxes(fig), 2) if ba.overlaps(bb)]


def test_the_overlap_check_finds_an_overlap():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "a long label here")
    ax.text(0.52, 0.5, "another one")
    try:
        assert ("a long label here", "another one") in _overlaps(fig)
    finally:
        plt.close(fig)


def test_no_two_texts_overlap_in_any_figure(drawn):
    assert [name for name, _, _ in drawn] == ["accuracy_vs_cost", "latency_vs_gallery", "memory_vs_gallery"]
    for name, _, fig in drawn:
        texts = [t for t, _ in _text_boxes(fig)]
        assert "drl" in texts and "tighttransf" in texts  # methods named in the legend
        assert not _overlaps(fig), name


def test_svg_and_pdf_parse_and_are_reproducible(drawn):
    for name, _, fig in drawn:
        svg = F.to_bytes(fig, "svg", salt=name)
        assert ET.fromstring(svg).tag.endswith("svg")
        assert svg == F.to_bytes(fig, "svg", salt=name)  # no date, seeded ids: a rerun commits no noise
        pdf = F.to_bytes(fig, "pdf", salt=name)
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
