"""The terminal view of ``bench compare``: a few columns, rows sorted by the main metric, 120 characters wide.

The full table (every metric in both directions, parameters, memory) is ``--columns all`` and the CSV / LaTeX
outputs. Cells are the full table's, written tighter: ``42.0 [35.0,49.0]`` (value and 95 % interval), ``*`` for
the best group instead of bold, ranks (MdR) as the value alone. Published rows stay under their method.
"""

from __future__ import annotations

import re
import textwrap

from tvr_bench.bench.errors import ConfigError, did_you_mean
from tvr_bench.bench.report import compare as C

#: the default columns (cost headers carry their unit: matched by their ending)
COMPACT = ("T2V R@1", "T2V R@5", "T2V R@10", "T2V MdR", "FLOPs/query", "Latency (ms)")
DEFAULT_SORT = "T2V R@1"
WIDTH = 120  # a terminal: the compact table fits it, the prose around it is wrapped to it
_LOWER_BETTER = ("MdR", "MnR", "params", "FLOPs", "mem", "Latency")
_PUBLISHED = re.compile(r"^(\S+) \(published \[(\w)\] (.*)\)$")
_INTERVAL = re.compile(r"^(\S+) \[(\S+), (\S+)\]$")


def _resolve(name: str, headers: list[str], what: str) -> str:
    for h in headers:
        if h.lower() == name.lower() or (name.startswith("FLOPs/") and h.endswith(name)) or (
                name.startswith("Latency") and h.startswith("Latency")):
            return h
    raise ConfigError(f"{what} {name!r}: no such column.{did_you_mean(name, headers)} "
                      f"Columns: {', '.join(headers)}")


def _tight(text: str, keep_interval: bool) -> str:
    bold = text.startswith("**") and text.endswith("**")
    core = text[2:-2] if bold else text
    m = _INTERVAL.match(core)
    if m:
        core = f"{m[1]} [{m[2]},{m[3]}]" if keep_interval else m[1]
    return core + ("*" if bold else "")


def _is_cost(header: str) -> bool:
    return any(k in header for k in ("params", "FLOPs", "mem", "Latency", "ms/query"))


def lower_is_better(header: str) -> bool:
    """Ranks and costs: lower is better; R@K and RSum: higher."""
    return any(k in header for k in _LOWER_BETTER)


def row_order(table, means_rows: list[dict], sort_col: str) -> tuple[list[list[int]], list[int]]:
    """The rows of ``_display``'s table in blocks (a measured row and its published rows), and the row order:
    datasets as they come, blocks sorted best first by ``sort_col`` within each, rows without a value last.
    The terminal table and the HTML/Markdown report share it."""
    blocks: list[list[int]] = []
    for i, label in enumerate(table["Method"]):
        if " (published [" in label and blocks:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    lower = lower_is_better(sort_col)
    datasets = list(dict.fromkeys(table["Dataset"]))

    def key(block: list[int]):
        v = means_rows[block[0]].get(sort_col)
        missing = v is None
        return (datasets.index(table.at[block[0], "Dataset"]), missing, 0 if missing else (v if lower else -v))

    return blocks, [i for b in sorted(blocks, key=key) for i in b]


def compact_table(records, *, columns: str = "compact", sort: str = DEFAULT_SORT, aggregate_seeds: bool = True,
                  published: bool = False) -> str:
    """Markdown of the chosen ``columns`` ("compact", "all" or a comma list of headers), rows of each dataset
    sorted by ``sort`` (best first: descending for R@K and RSum, ascending for ranks and costs)."""
    recs = C._prepare(records)
    table, means_rows, meta = C._display(recs, aggregate_seeds, latex=False, published=published)
    for i, header in meta["best_cells"]:
        table.at[i, header] = f"**{table.at[i, header]}**"
    headers = [h for h in table.columns if h not in ("Dataset", "Method", "n_seeds", "Seed")]
    sort_col = _resolve(sort, headers, "--sort")
    full = columns.strip().lower() == "all"
    if full:
        chosen = headers
    else:
        wanted = COMPACT if columns.strip().lower() == "compact" else [c.strip() for c in columns.split(",") if c.strip()]
        chosen = list(dict.fromkeys(_resolve(c, headers, "--columns") for c in wanted))
    blocks, order = row_order(table, means_rows, sort_col)
    datasets = list(dict.fromkeys(table["Dataset"]))
    base_shown = ["Method", *chosen]
    if not aggregate_seeds:
        base_shown.insert(1, "Seed")
    one_direction = not full and all(not h.startswith("V2T") for h in chosen)
    sections = []
    for ds in datasets:  # one table per dataset: the best groups are per dataset, and it saves a column
        rows_ds = [i for i in order if table.at[i, "Dataset"] == ds]
        measured = [b[0] for b in blocks if table.at[b[0], "Dataset"] == ds]
        seeds = set(table.loc[measured, "n_seeds"]) if "n_seeds" in table.columns else {"1"}
        shown = list(base_shown)
        if len(seeds) > 1:  # one count for every measured row is said once, beside the dataset's name
            shown.insert(1, "n_seeds")
        title = ds + (f" ({next(iter(seeds))} seeds per method: means)" if len(seeds) == 1 and seeds != {"1"} else "")
        view = table.loc[rows_ds, shown].reset_index(drop=True)
        if not full:
            for h in chosen:
                view[h] = [_tight(str(v), keep_interval=not h.endswith(("MdR", "MnR"))) for v in view[h]]
                if _is_cost(h):  # a cost's spread over seeds is in the full table; the terminal keeps the mean
                    view[h] = [str(v).split(" ± ")[0] for v in view[h]]
            if one_direction:  # say it once, in the title line
                view.columns = [c[4:] if c.startswith("T2V ") else c for c in view.columns]
            view = view.rename(columns={"Latency (ms)": "ms/query"})
        notes = []
        if not full:  # a published row's source and variant go to a note under the table
            for i, label in enumerate(view["Method"]):
                m = _PUBLISHED.match(label)
                if m:
                    notes.append(f"[{len(notes) + 1}] {m[1]}, published [{m[2]}]: {m[3]}")
                    view.at[i, "Method"] = f"{m[1]} published [{m[2]}] [{len(notes)}]"
        colalign = tuple("left" if c in ("Method", "Memory kind") else "right" for c in view.columns)
        sections.append(f"{title}\n\n" + view.to_markdown(index=False, disable_numparse=True, colalign=colalign)
                        + "".join(f"\n{textwrap.fill(n, WIDTH, subsequent_indent='    ')}" for n in notes))
    md = "\n\n".join(sections)
    head = (f"{'Text-to-video (T2V), r' if one_direction else 'R'}ows sorted by {sort_col} (best first)"
            + ("" if full else "; * = the best group (a paired test cannot separate it from the best); "
               "--columns all for every column") + ".")
    footer = C._footer(meta, aggregate_seeds)
    if not full:
        footer = [f.replace("**Bold**:", "`*` (bold in the full table):").replace("bold values", "they")
                  for f in footer]
    wrap = (lambda t: t) if full else (lambda t: textwrap.fill(t, WIDTH, break_on_hyphens=False))
    return wrap(head) + "\n\n" + md + "\n\n" + "\n\n".join(wrap(f) for f in footer) + "\n"
