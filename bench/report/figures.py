"""The report's three figures, drawn from records only (matplotlib, Agg backend):

- ``accuracy_cost``: T2V R@1 against query-time cost, FLOPs per query and measured latency side by side (log x),
  95 % intervals as error bars, the Pareto frontier (least cost for the accuracy) of measured and of published
  points, published points hollow;
- ``latency_gallery``: one query's latency against gallery size (1k ... 1M videos) from the efficiency records,
  measured sizes filled, extrapolated ones hollow on a dashed line;
- ``memory_gallery``: memory against gallery size from the same records (see :func:`memory_curves` for what is
  measured and what is computed).

Points are never labelled in place: every method has one colour and marker across the figures, named in a
legend outside the axes, so no label can cover another (``tests/test_figures.py`` checks text boxes).
"""

from __future__ import annotations

import io
from typing import Callable

MiB = float(1 << 20)
_MARKERS = "osD^vP*XhpH<>d"
_ORDER = ["synthetic", "msrvtt", "vatex", "didemo"]  # the embedded benchmark, then the papers' order


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def method_styles(methods) -> dict[str, dict]:
    """One colour and marker per method, the same in every figure (sorted names: stable across runs)."""
    plt = _plt()
    colours = plt.get_cmap("tab10").colors
    return {m: {"color": colours[i % len(colours)], "marker": _MARKERS[i % len(_MARKERS)]}
            for i, m in enumerate(sorted(set(methods)))}


def sorted_datasets(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda d: (_ORDER.index(d) if d in _ORDER else len(_ORDER), d))


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _si(v: float) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{prefix}"
    return f"{v:g}"


def _readable_log_x(ax) -> None:
    """Major ticks dense enough to label a narrow range, sparse enough not to collide on a wide one; minor
    tick labels off (matplotlib's own crowd the axis when the range spans under a decade)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    span = math.log10(hi / lo)
    subs = ((1.0,) if span > 2.2 else (1.0, 2.0, 5.0) if span > 0.6 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
            if span > 0.25 else (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _method_legend(fig, styles, extra: list, *, ncol: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker=s["marker"], color=s["color"], markersize=7, label=m)
               for m, s in styles.items()] + extra
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def accuracy_cost(points: list[dict], styles: dict[str, dict]):
    """Rows: datasets with an accuracy point; columns: FLOPs per query, latency. ``points``: from
    ``report.plot_points`` (measured and published)."""
    from matplotlib.lines import Line2D

    plt = _plt()
    datasets = sorted_datasets(p["dataset"] for p in points)
    if not datasets:
        return None
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 2.9 * len(datasets) + 0.6), squeeze=False)
    for row, ds in zip(axes, datasets):
        pts = [p for p in points if p["dataset"] == ds]
        gal = sorted({p["gallery"] for p in pts if p.get("gallery")})
        n_txt = f", N = {'/'.join(f'{g:,}' for g in gal)} videos" if gal else ""
        for ax, key, xlabel in ((row[0], "flops", "FLOPs per query (text + N × pair; 2·MAC)"),
                                (row[1], "latency_ms", "latency of one query (ms, median)")):
            for source, dash in (("measured", "-"), ("published", "--")):
                sel = [p for p in pts if p["source"] == source and p.get(key)]
                for p in sel:
                    s = styles[p["method"]]
                    ci = p.get("r1_ci")
                    yerr = [[p["r1"] - ci[0]], [ci[1] - p["r1"]]] if ci else None
                    ax.errorbar([p[key]], [p["r1"]], yerr=yerr, marker=s["marker"], markersize=7, capsize=3,
                                color=s["color"], markerfacecolor=s["color"] if source == "measured" else "white",
                                elinewidth=1, linestyle="none", zorder=3)
                front = pareto([(p[key], p["r1"]) for p in sel])
                if len(front) > 1:
                    xs, ys = zip(*front)
                    ax.step(xs, ys, where="post", color="0.35", linestyle=dash, linewidth=1, zorder=2)
            ax.set_xscale("log")
            _readable_log_x(ax)
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(f"{ds}{n_txt}" if key == "flops" else ds, fontsize=9)
        row[0].set_ylabel("T2V R@1 (%)", fontsize=8)
    extra = [Line2D([], [], linestyle="none", marker="o", color="0.3", label="measured here (95 % CI)"),
             Line2D([], [], linestyle="none", marker="o", color="0.3", markerfacecolor="white",
                    label="published [tag]"),
             Line2D([], [], color="0.35", label="Pareto frontier, measured"),
             Line2D([], [], color="0.35", linestyle="--", label="Pareto frontier, published")]
    _method_legend(fig, styles, extra, ncol=5)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig


def latency_curves(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{dataset: {method: [{n, ms, measured}]}}`` from efficiency records' ``efficiency.latency.by_gallery``:
    a measured size has ``median_ms``; a skipped one (over the time budget) only ``extrapolated_ms``."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        if r.get("kind") != "efficiency":
            continue
        pts = []
        for row in r["efficiency"]["latency"]["by_gallery"]:
            if row["status"] == "measured":
                pts.append({"n": row["gallery_size"], "value": row["median_ms"], "measured": True})
            elif row.get("extrapolated_ms") is not None:
                pts.append({"n": row["gallery_size"], "value": row["extrapolated_ms"], "measured": False})
        out.setdefault(r["dataset"], {})[r["method"]] = sorted(pts, key=lambda p: p["n"])
    return out


def memory_curves(records: list[dict]) -> dict[str, dict[str, dict]]:
    """``{dataset: {method: {"curve": [{n, value}], "measured": (n, bytes)}}}``.

    The efficiency study measures memory once per method, at the protocol's gallery (the whole-process peak RSS
    while computing the full score matrix: ``cost.memory``). Its latency runs keep a pool of video states, not a
    real gallery of N, so memory at each N is **computed** from the byte counts the record holds: N × the
    per-video state bytes + N fp32 scores + one query's text state + one scoring chunk's intermediates (the
    chunk's deterministic tensor peak, scaled down when N is smaller than the chunk). It is the tensor memory of
    one query's search, without model weights and libraries.
    """
    out: dict[str, dict[str, dict]] = {}
    for r in records:
        if r.get("kind") != "efficiency":
            continue
        e = r["efficiency"]
        lat, mat = e["latency"], e["matrix"]
        per_video, chunk = lat["video_state_bytes_per_video"], max(1, lat["chunk"])
        text = mat.get("text_state_bytes_per_query", 0)
        curve = [{"n": n, "value": n * per_video + 4 * n + text + lat["chunk_tensor_peak_bytes"] * min(n, chunk) / chunk}
                 for n in sorted({row["gallery_size"] for row in lat["by_gallery"]})]
        out.setdefault(r["dataset"], {})[r["method"]] = {
            "curve": curve, "measured": (e["shape"]["n_videos"], r["cost"]["memory"]["peak_bytes"]),
            "kind": r["cost"]["memory"]["kind"]}
    return out


def _gallery_axes(n_panels: int):
    plt = _plt()
    ncols = min(3, n_panels)
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.1 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _finish_gallery_axes(ax, ds: str, shape: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{ds} ({shape})" if shape else ds, fontsize=9)
    ax.set_xlabel("gallery size N (videos)", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _shapes(records: list[dict]) -> dict[str, str]:
    return {r["dataset"]: f"F={r['efficiency']['shape']['max_frames']}, L={r['efficiency']['shape']['max_words']}"
            for r in records if r.get("kind") == "efficiency"}


def _gallery_figure(records: list[dict], curves: dict, styles: dict[str, dict], draw: Callable, ylabel: str,
                    legend: list, *, per_axis: Callable | None = None):
    """One panel per dataset of ``curves`` ({dataset: {method: data}}), ``draw(ax, data, style)`` per method and
    ``per_axis(ax)`` once per panel, the method legend with ``legend``'s extra entries below the panels."""
    shapes = _shapes(records)
    fig, axes = _gallery_axes(len(curves))
    for ax, ds in zip(axes, sorted_datasets(curves)):
        for m, data in sorted(curves[ds].items()):
            draw(ax, data, styles[m])
        if per_axis is not None:
            per_axis(ax)
        _finish_gallery_axes(ax, ds, shapes.get(ds, ""), ylabel)
    _method_legend(fig, styles, legend, ncol=6)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig


def _draw_latency(ax, pts: list[dict], s: dict) -> None:
    meas = [p for p in pts if p["measured"]]
    extra = [p for p in pts if not p["measured"]]
    if meas:
        ax.plot([p["n"] for p in meas], [p["value"] for p in meas], color=s["color"], marker=s["marker"],
                markersize=5, linewidth=1.2)
    if extra:  # the dashed part starts at the last measured size so the curve stays one line
        link = meas[-1:] + extra
        ax.plot([p["n"] for p in link], [p["value"] for p in link], color=s["color"], linestyle="--", linewidth=1)
        ax.plot([p["n"] for p in extra], [p["value"] for p in extra], color=s["color"], marker=s["marker"],
                markersize=5, markerfacecolor="white", linestyle="none")


def latency_gallery(records: list[dict], styles: dict[str, dict]):
    from matplotlib.lines import Line2D

    curves = latency_curves(records)
    if not curves:
        return None
    legend = [Line2D([], [], color="0.3", marker="o", markersize=5, label="measured (median)"),
              Line2D([], [], color="0.3", marker="o", markersize=5, markerfacecolor="white", linestyle="--",
                     label="extrapolated, linear in N (over the time budget)")]
    return _gallery_figure(records, curves, styles, _draw_latency, "latency of one query (ms)", legend)


def _draw_memory(ax, c: dict, s: dict) -> None:
    ax.plot([p["n"] for p in c["curve"]], [p["value"] / MiB for p in c["curve"]], color=s["color"],
            marker=s["marker"], markersize=5, markerfacecolor="white", linestyle="--", linewidth=1)
    n, peak = c["measured"]
    ax.plot([n], [peak / MiB], color=s["color"], marker=s["marker"], markersize=7, linestyle="none")


def memory_gallery(records: list[dict], styles: dict[str, dict]):
    from matplotlib.lines import Line2D

    curves = memory_curves(records)
    if not curves:
        return None
    legend = [Line2D([], [], color="0.3", marker="o", markersize=7, linestyle="none",
                     label="measured: peak RSS, full protocol matrix"),
              Line2D([], [], color="0.3", marker="o", markersize=5, markerfacecolor="white", linestyle="--",
                     label="computed: one query's tensors (gallery states + scores + chunk)"),
              Line2D([], [], color="0.5", linestyle=":", label="4 GB")]
    return _gallery_figure(records, curves, styles, _draw_memory, "memory (MiB)", legend,
                           per_axis=lambda ax: ax.axhline(4e9 / MiB, color="0.5", linewidth=0.8, linestyle=":"))


#: (name, title, drawer(records, points, styles)) of the report's figures, in page order
FIGURES: list[tuple[str, str, Callable]] = [
    ("accuracy_vs_cost", "T2V R@1 against query-time cost", lambda recs, pts, st: accuracy_cost(pts, st)),
    ("latency_vs_gallery", "Latency of one query against gallery size", lambda recs, pts, st: latency_gallery(recs, st)),
    ("memory_vs_gallery", "Memory against gallery size", lambda recs, pts, st: memory_gallery(recs, st)),
]


def draw_all(records: list[dict], points: list[dict]) -> list[tuple[str, str, object]]:
    """``[(name, title, figure)]`` of the figures that have data (a figure without any is left out)."""
    styles = method_styles([r["method"] for r in records] + [p["method"] for p in points])
    out = []
    for name, title, draw in FIGURES:
        fig = draw(records, points, styles)
        if fig is not None:
            out.append((name, title, fig))
    return out


def to_bytes(fig, fmt: str, *, salt: str = "") -> bytes:
    """The figure as ``fmt`` (svg, pdf, png) bytes, reproducible: no dates, ids seeded by ``salt`` (each figure its
    own, so several inline SVGs in one page never share an id)."""
    plt = _plt()
    buf = io.BytesIO()
    meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}[fmt]
    with plt.rc_context({"svg.hashsalt": salt or "tvr-bench", "svg.fonttype": "path"}):
        fig.savefig(buf, format=fmt, dpi=110, metadata=meta, bbox_inches="tight")
    return buf.getvalue()


def close(fig) -> None:
    _plt().close(fig)


def empty_figure(message: str):
    """A small figure that says why there is nothing to draw (the Markdown report always has its PNG)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9)
    return fig
