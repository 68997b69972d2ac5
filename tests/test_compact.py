"""`bench compare`'s terminal view: 120 columns, rows sorted best first, --columns / --sort, published rows kept
under their method; the full table with --columns all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.cli import main

REPORTS = Path(__file__).resolve().parents[1] / "reports"
EMBEDDED, EFFICIENCY = REPORTS / "embedded", REPORTS / "efficiency" / "cpu"


def compare(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["compare", *map(str, args)])
    return res.exit_code, res.output


def rows(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def value(cell: str) -> float:
    return float(re.match(r"[\d.]+", cell).group())


@pytest.mark.parametrize("paths", [(EMBEDDED,), (EMBEDDED, EFFICIENCY), (EFFICIENCY, "--published")])
def test_the_default_fits_120_columns(paths):
    code, text = compare(*paths)
    assert code == 0 and text.strip()
    assert max(len(line) for line in text.splitlines()) <= 120


def test_rows_are_sorted_by_t2v_r1_best_first_with_the_compact_columns():
    code, text = compare(EMBEDDED)
    assert code == 0
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "R@1", "R@5", "R@10", "MdR",
                                                                   "MFLOPs/query", "ms/query"]
    table = rows(text)
    assert len(table) == 9
    r1 = [value(r[1]) for r in table]
    assert r1 == sorted(r1, reverse=True) and r1[0] > r1[-1]
    assert re.fullmatch(r"[\d.]+ \[[\d.]+,[\d.]+\]\*?", table[0][1])  # value [95 % CI], * for the best group
    assert sum(r[1].endswith("*") for r in table) >= 1


def test_sort_and_columns_options():
    code, text = compare(EMBEDDED, "--sort", "T2V MdR", "--columns", "T2V MdR,V2T R@1,Head params (k)")
    assert code == 0
    table = rows(text)
    mdr = [value(r[1]) for r in table]
    assert mdr == sorted(mdr)  # ranks: lower is better, so ascending
    assert len(table[0]) == 4 and re.fullmatch(r"[\d.]+\*?", table[0][1])  # ranks shown without interval
    code, full = compare(EMBEDDED, "--columns", "all")
    assert code == 0 and "V2T R@10" in full and "Peak mem" in full and "**" in full


@pytest.mark.parametrize("option", ["--sort", "--columns"])
def test_an_unknown_column_is_one_line_with_exit_2(option):
    code, text = compare(EMBEDDED, option, "T2V R@2")
    assert code == 2 and "no such column" in text and "Did you mean: T2V R@" in text
    assert len(text.strip().splitlines()) == 1


def test_published_rows_stay_under_their_measured_method():
    code, text = compare(EFFICIENCY, "--published")
    assert code == 0
    table = rows(text)
    published = [i for i, r in enumerate(table) if " published [" in r[0]]
    assert published
    for k, i in enumerate(published):
        parent = next(table[j][0] for j in range(i - 1, -1, -1) if " published [" not in table[j][0])
        assert table[i][0].startswith(parent + " published [")
    # each one's source is in a numbered note under its table
    assert re.search(r"^\[1\] \S+, published \[[VSP]\]: ", text, re.M)
