"""The Markdown table of paper-scale efficiency records (``bench efficiency``, ``bench compare``): reads records
only, never the measurement engine."""

from __future__ import annotations

MiB = float(1 << 20)

def _si(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {p}{unit}".rstrip()
    return f"{v:.3g} {unit}".rstrip()


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def latency_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["status"] == "measured":
        return _ms(row["median_ms"])
    return f"≈{_ms(row['extrapolated_ms'])}*"


def efficiency_table(records: list[dict], not_applicable: dict[str, str] | None = None) -> str:
    """Markdown tables (one per dataset) of efficiency records, with their footnotes.

    ``not_applicable`` maps "method/dataset" to the reason a method could not be built at those shapes; it is
    listed under the dataset's table (no silent gap).
    """
    not_applicable = not_applicable or {}
    by_ds: dict[str, list[dict]] = {}
    for r in records:
        if r.get("kind") == "efficiency":
            by_ds.setdefault(r["dataset"], []).append(r)
    parts = []
    order = ["msrvtt", "vatex", "didemo"]  # the papers' order
    for ds, recs in sorted(by_ds.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        recs = sorted(recs, key=lambda r: r["method"])
        eff0 = recs[0]["efficiency"]
        sh = eff0["shape"]
        sizes = sorted({row["gallery_size"] for r in recs for row in r["efficiency"]["latency"]["by_gallery"]})
        galleries = set(recs[0].get("config", {}).get("efficiency", {}).get("galleries") or [])
        lat_sizes = [n for n in sizes if n in galleries] or sizes
        head = ["method", "head params", "analytic extra", "FLOPs text/query", "FLOPs/pair",
                f"FLOPs/query (N={sh['n_videos']:,})", "FLOPs video/video (offline)",
                "eval peak MiB", f"eval {sh['n_queries']:,}x{sh['n_videos']:,} s", "≤ 4 GB"]
        head += [f"lat. ms N={_si(n)}" for n in lat_sizes]
        head += ["scoring GFLOP/s", "% of dense GEMM"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        kinds = set()
        for r in recs:
            c, e = r["cost"], r["efficiency"]
            kinds.add(c["memory"]["kind"])
            rows = {row["gallery_size"]: row for row in e["latency"]["by_gallery"]}
            m = e["matrix"]
            tp = e["scoring_throughput"] or {}
            extra = c["params"].get("extra_params_analytic")
            cells = [
                r["method"] + (" (qd)" if e.get("query_dependent") else ""),
                _si(c["params"]["head"]),
                "–" if extra is None else _si(extra),
                _si(c["flops"]["text_per_query"]),
                _si(c["flops"]["score_per_pair"]),
                _si(c["flops"]["per_query"]),
                _si(c["flops"]["video_per_video"]),
                f"{c['memory']['peak_bytes'] / MiB:,.0f}",
                f"{m['seconds']:.3g}" + ("*" if m["seconds_is_extrapolated"] else ""),
                "yes" if c["memory"]["check"]["ok"] else "**no**",
            ]
            cells += [latency_cell(rows.get(n)) for n in lat_sizes]
            cells += [f"{tp.get('flops_per_s', 0) / 1e9:.1f}",
                      "–" if tp.get("fraction_of_dense") is None else f"{100 * tp['fraction_of_dense']:.0f} %"]
            lines.append("| " + " | ".join(cells) + " |")
        dense = eff0.get("dense_matmul") or {}
        title = (f"**{ds}** — {sh['protocol']}; F={sh['max_frames']}, L={sh['max_words']}; backbone "
                 f"{recs[0]['config']['backbone']['name']} (random init); device {recs[0]['cost']['device']}.")
        notes = [
            "FLOPs: FlopCounterMode, FLOPs = 2·MAC, matmul-like ops only; per query = text + N x per pair; "
            "video/video is offline (image tower + video head). (qd) = query-dependent scoring.",
            "Memory: " + ", ".join(sorted(kinds)) + " (cpu_peak_rss = whole-process peak RSS, model and "
            "libraries included) while computing the full protocol score matrix in bounded blocks; "
            "≤ 4 GB checks that peak against 4·10⁹ bytes.",
            "Latency: one query (text encoding + chunked scoring), torch.utils.benchmark.Timer median. "
            "`≈x*` = not measured: predicted time over the per-measurement budget; extrapolated linearly in N "
            "(labelled in the record with the reason). Eval time `*` = extrapolated from the blocks done within "
            "the budget.",
        ]
        if dense:
            notes.append(f"Dense reference: {dense['dtype']} GEMM {dense['n']}x{dense['n']} at "
                         f"{dense['flops_per_s'] / 1e9:.1f} GFLOP/s ({dense['threads']} threads, same run).")
        na = sorted((k.split("/")[0], v) for k, v in not_applicable.items() if k.split("/")[-1] == ds)
        if na:
            notes.append("Not applicable at these shapes (no record): "
                         + "; ".join(f"**{m}**: {why}" for m, why in na) + ".")
        parts.append(title + "\n\n" + "\n".join(lines) + "\n\n" + "\n\n".join(notes))
    return "\n\n".join(parts) + ("\n" if parts else "")
