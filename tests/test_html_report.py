"""`bench report` (bench/report/report_data.py, render.py, templates/): the template data, the written page and
figures, bad input, and the page in a real headless Chromium (tables, drawn SVGs, no console error, sorting)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.bench.records import load_records, write_record
from tvr_bench.bench.report.published import published_for
from tvr_bench.bench.report.render import render_html, render_markdown
from tvr_bench.bench.report.report_data import report_data

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "reports" / "embedded"
EFFICIENCY = ROOT / "reports" / "efficiency" / "cpu"
METHODS = ("drl", "xclip", "meanp", "tighttransf")  # two learnt heads, the cheapest, the slowest


def _subset(tmp: Path) -> tuple[Path, Path]:
    """A few committed records (real ones, small enough for seconds): the embedded run and msrvtt's study."""
    runs, eff = tmp / "embedded", tmp / "efficiency"
    for m in METHODS:
        write_record(json.loads((EMBEDDED / f"{m}__synthetic__seed0.json").read_text()), runs)
        write_record(json.loads((EFFICIENCY / f"{m}__msrvtt__seed0.json").read_text()), eff)
    return runs, eff


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return _subset(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def data(folders):
    recs = [r for p in folders for r in load_records(p)]
    return report_data(recs, published=True, command="bench report test")


@pytest.fixture(scope="module")
def page(folders, tmp_path_factory):
    from tvr_bench.cli import main

    out = tmp_path_factory.mktemp("html") / "report"
    res = CliRunner().invoke(main, ["report", *map(str, folders), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _rows(data, ds):
    return next(d for d in data["datasets"] if d["name"] == ds)["rows"]


def test_rows_sorted_best_first_with_intervals_and_best_marks(data):
    assert [d["name"] for d in data["datasets"]] == ["synthetic", "msrvtt"]  # the embedded run first
    rows = _rows(data, "synthetic")
    r1 = [r["cells"][0] for r in rows]  # T2V R@1
    assert [r["method"] for r in rows] == ["xclip", "drl", "meanp", "tighttransf"]
    assert [c["sort"] for c in r1] == sorted((c["sort"] for c in r1), reverse=True)
    assert all(re.fullmatch(r"\d+\.\d, \d+\.\d", c["interval"]) for c in r1)
    assert r1[0]["value"] == "64.0" and r1[0]["best"] and not r1[1]["best"]  # xclip 64 % vs drl 45.5 %: separable


def test_published_rows_carry_their_tag_and_source(data):
    rows = _rows(data, "msrvtt")
    pub = [r for r in rows if r["published"]]
    assert {r["tag"] for r in pub} <= {"V", "S", "P"}
    assert {r["method"] for r in pub} == {"drl", "xclip", "meanp"}  # tighttransf has [R] only: never shown
    for r in pub:
        assert r["published"]["source"] in {p.source for p in published_for(r["method"], "msrvtt")}
        assert r["records"] == [] and all(not c["best"] for c in r["cells"])
    measured = [r for r in rows if not r["published"]]
    assert all(c["value"] == "–" for r in measured for c in r["cells"][:7])  # no accuracy at paper shapes


def test_measured_rows_carry_their_records_provenance(data):
    top = _rows(data, "synthetic")[0]
    rec = json.loads((EMBEDDED / f"{top['method']}__synthetic__seed0.json").read_text())
    (prov,) = top["records"]
    assert prov["git_sha"] == rec["provenance"]["git_sha"]
    assert prov["command"] == " ".join(rec["provenance"]["command"])
    assert json.loads(prov["config"]) == rec["config"]


def test_markdown_and_html_render_the_same_data(data):
    md, html = render_markdown(dict(data, figure_link=lambda f: "x.svg")), render_html(data)
    for ds in data["datasets"]:
        for row in ds["rows"]:
            cells = [("**" + c["text"] + "**") if c["best"] else c["text"] for c in row["cells"]]
            assert " | ".join(cells) in md
            assert f'data-method="{row["method"]}"' in html
    assert "bench report test" in md and "bench report test" in html


def test_page_and_figures_are_written_and_parse(page):
    names = sorted(p.name for p in page.iterdir())
    figs = ["accuracy_vs_cost", "latency_vs_gallery", "memory_vs_gallery"]
    assert names == sorted(["index.html", "report.md"] + [f"{f}.{x}" for f in figs for x in ("svg", "pdf")])
    for f in figs:
        assert ET.parse(page / f"{f}.svg").getroot().tag.endswith("svg")
        assert (page / f"{f}.pdf").read_bytes().startswith(b"%PDF-")
    html = (page / "index.html").read_text()
    assert html.count("<svg") == 3 and "<table" in html
    # self-contained: nothing fetched (no external script, style, image or font)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "@import" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # three inline SVGs, no shared id


def test_bad_runs_path_and_empty_folder_are_one_line_and_write_nothing(tmp_path, folders):
    from tvr_bench.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["report", str(folders[0]), str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such record file or folder"]
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "empty"), "--out", str(out)])
    assert res.exit_code == 2 and "no run records" in res.output and str(tmp_path / "empty") in res.output
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------
# the page in a real browser
# ------------------------------------------------------------------------------------------------------------


def _browser():
    """Headless Chromium through Debian's chromedriver (nothing downloaded); skip, with the reason, without."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        pytest.skip("the browser test needs chromium, chromedriver and selenium (apt-get install chromium "
                    "chromium-driver; pip install -e '.[test]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def _column(table, col: int) -> list[str]:
    return [tr.find_elements("css selector", "td")[col].get_attribute("data-sort") or ""
            for tr in table.find_elements("css selector", "tbody tr")]


def test_page_renders_and_sorts_in_headless_chromium(page):
    browser = _browser()
    try:
        browser.get((page / "index.html").as_uri())
        tables = browser.find_elements("css selector", "table.results")
        assert [t.get_attribute("data-dataset") for t in tables] == ["synthetic", "msrvtt"]
        assert all(t.find_elements("css selector", "tbody tr") for t in tables)
        svgs = browser.find_elements("css selector", "figure svg")
        assert len(svgs) == 3 and all(s.size["width"] > 100 and s.size["height"] > 100 for s in svgs)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        synthetic = tables[0]
        headers = synthetic.find_elements("css selector", "thead th")
        names = [h.text for h in headers]
        latency = names.index("Latency (ms)")
        before = _column(synthetic, 0)
        headers[latency].click()  # a cost: lowest first
        lat = [float(v) for v in _column(synthetic, latency)]
        assert lat == sorted(lat) and _column(synthetic, 0) != before
        headers[latency].click()  # again: reversed
        assert [float(v) for v in _column(synthetic, latency)] == sorted(lat, reverse=True)
        r1 = names.index("T2V R@1")
        headers[r1].click()  # accuracy: highest first, the original order back
        assert _column(synthetic, 0) == before
        assert [float(v) for v in _column(synthetic, r1)] == sorted(map(float, _column(synthetic, r1)), reverse=True)

        first = synthetic.find_element("css selector", "tbody tr td.method details")
        first.find_element("css selector", "summary").click()  # provenance one click away
        assert first.get_attribute("open") is not None and "git sha" in first.text
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # the sorting script ran without error too
    finally:
        browser.quit()
