"""The figure the papers draw: T2V R@1 against query-time FLOPs per query (log x), one panel per dataset.

Points come from :func:`tvr_bench.bench.report.report.plot_points`: R@1 measured by this toolkit (filled circles,
with their 95 % interval as an error bar when the records keep per-query ranks) or
published (hollow squares, labelled with the provenance tag), x = FLOPs per query counted with
FlopCounterMode (text encoding + gallery x per-pair scoring). matplotlib with the Agg backend (no display).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from tvr_bench.bench.atomic import atomic_write_bytes


def plot_r1_vs_flops(points: list[dict], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write the PNG atomically to ``path``. ``points``: dicts with dataset, method, flops, r1, source
    ("measured" or "published"), label (shown next to the point) and gallery (int or None)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(p["dataset"] for p in points)) or ["(no data)"]
    ncols = min(2, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, ds in zip(axes.flat, datasets):
        pts = [p for p in points if p["dataset"] == ds]
        for source, marker, face in (("measured", "o", None), ("published", "s", "none")):
            sel = [p for p in pts if p["source"] == source]
            if not sel:
                continue
            ax.scatter([p["flops"] for p in sel], [p["r1"] for p in sel], marker=marker, s=46,
                       facecolors=face if face else "C0", edgecolors="C0" if source == "measured" else "C3",
                       label="R@1 measured here" if source == "measured" else "R@1 published [tag]", zorder=3)
            bars = [p for p in sel if p.get("r1_ci")]
            if bars:  # the measured points' 95 % interval (bootstrap over queries, and seeds)
                ax.errorbar([p["flops"] for p in bars], [p["r1"] for p in bars],
                            yerr=[[p["r1"] - p["r1_ci"][0] for p in bars], [p["r1_ci"][1] - p["r1"] for p in bars]],
                            fmt="none", ecolor="C0", elinewidth=1, capsize=3, alpha=0.7, zorder=2)
            for p in sel:
                ax.annotate(p["label"], (p["flops"], p["r1"]), textcoords="offset points", xytext=(5, 4),
                            fontsize=7.5)
        ax.set_xscale("log")
        gal = {p.get("gallery") for p in pts if p.get("gallery")}
        gal_txt = f", gallery N={'/'.join(f'{g:,}' for g in sorted(gal))}" if gal else ""
        ax.set_title(f"{ds}{gal_txt}", fontsize=10)
        ax.set_xlabel("query-time FLOPs per query (text + N x pair scoring; FlopCounterMode, 2·MAC)", fontsize=8)
        ax.set_ylabel("T2V R@1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        if pts:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no point has both an R@1 and a FLOPs count", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, width=int(95 * ncols))), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())
