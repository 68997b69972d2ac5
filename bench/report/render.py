"""Render the report data (``report_data.py``) through the jinja2 templates in ``templates/``: the
self-contained HTML page of ``bench report`` and the Markdown of ``bench compare --report``.

The page needs no network: figures are inline SVG (text as paths, so no font is fetched), the sorting script
and the styles are in the page. Every output is rendered in memory first and only then written, file by file
through ``atomic.py``: a failure leaves the output folder as it was.
"""

from __future__ import annotations

import html
import os
import re
import sys
from pathlib import Path

from tvr_bench.bench.atomic import atomic_write_bytes, atomic_write_text
from tvr_bench.bench.report import figures as F

__all__ = ["render_html", "render_markdown", "write_html_report", "FIGURE_FORMATS"]

FIGURE_FORMATS = ("svg", "pdf")
_TEMPLATES = Path(__file__).with_name("templates")
_SVG_START = re.compile(r"<svg\b")


def _environment(autoescape: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["inline_md"] = _inline_md
    env.filters["md_items"] = _md_items
    return env


def _inline_md(text: str):
    """The footer lines of the comparison table use Markdown's ``**bold**`` and ``code``: the same in HTML."""
    from markupsafe import Markup

    out = html.escape(str(text), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return Markup(out)


def _md_items(text: str) -> list[str]:
    """The items of a Markdown bullet list (continuation lines joined): conventions.md.j2 in the page."""
    items: list[str] = []
    for line in str(text).splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.strip() and items:
            items[-1] += " " + line.strip()
    return items


def render_html(data: dict) -> str:
    return _environment(autoescape=True).get_template("report.html.j2").render(**data)


def render_markdown(data: dict) -> str:
    return _environment(autoescape=False).get_template("report.md.j2").render(**data)


def _inline_svg(svg: bytes, prefix: str) -> str:
    """matplotlib's SVG without its XML prolog and DOCTYPE, to sit inside the page, every id prefixed: the
    figures of one page share ids (``figure_1``, glyphs such as ``DejaVuSans-30``) that must stay unique."""
    text = svg.decode("utf-8")
    m = _SVG_START.search(text)
    text = text[m.start():] if m else text
    text = re.sub(r'\bid="([^"]+)"', lambda g: f'id="{prefix}-{g[1]}"', text)
    text = re.sub(r'(href="#)([^"]+)"', lambda g: f'{g[1]}{prefix}-{g[2]}"', text)
    return re.sub(r"url\(#([^)]+)\)", lambda g: f"url(#{prefix}-{g[1]})", text)


def figure_outputs(records: list[dict], points: list[dict], formats=FIGURE_FORMATS) -> list[dict]:
    """Draw the figures; ``[{name, title, files: {fmt: bytes}}]``."""
    out = []
    for name, title, fig in F.draw_all(records, points):
        try:
            files = {fmt: F.to_bytes(fig, fmt, salt=name) for fmt in formats}
        finally:
            F.close(fig)
        out.append({"name": name, "title": title, "files": files})
    return out


def write_html_report(data: dict, records: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``index.html``, ``report.md`` and each figure as SVG and PDF into ``out_dir``; return the paths.

    ``data`` is :func:`report_data.report_data`'s; its ``figures`` are filled here.
    """
    out = Path(out_dir)
    figs = figure_outputs(records, data["points"])
    data = dict(data, figures=[{"name": f["name"], "title": f["title"], "svg": _inline_svg(f["files"]["svg"], f["name"]),
                                "files": [f"{f['name']}.{fmt}" for fmt in FIGURE_FORMATS]} for f in figs])
    page = render_html(data)
    md = render_markdown(dict(data, figure_link=lambda f: f"{f['name']}.svg"))
    written = [atomic_write_bytes(out / f"{f['name']}.{fmt}", blob) for f in figs for fmt, blob in f["files"].items()]
    written.append(atomic_write_text(out / "report.md", md))
    written.append(atomic_write_text(out / "index.html", page))  # last: it never points at a missing figure
    return written


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
