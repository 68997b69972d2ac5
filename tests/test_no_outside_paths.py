"""No tracked text file of the package cites a path outside the repository (issue 10 item 7).

A clone of the repository must be able to follow every reference, so code, docs, committed reports and tests
may cite the project's own docs/ folder or an official repository URL, never ``../``, ``shared/docs`` or an
absolute ``/work/`` path. The one exemption: a test's module-level constant that locates the real annotation
files of the shared data folder (``REAL = Path("/work/shared/data...")``); those tests skip when it is absent.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./|shared/docs|/work/")
# the data-locating constants of tests/test_{didemo,msrvtt,vatex,data_cli}.py, nothing else
DATA_LOCATOR = re.compile(r'^(REAL|PARTIAL) = Path\("/work/shared/data(/[A-Za-z0-9_]+)?"\)$')
# a hostile input of the path-traversal test of record file names (tests/test_records.py), not a reference
TRAVERSAL_INPUT = 'R.record_filename("../etc"'
SCOPE = ("bench/", "methods/", "datasets/", "docs/", "tests/", "cli.py", "README.md")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [f for f in out.splitlines() if f.startswith(SCOPE) or re.fullmatch(r"reports/.+\.md", f)]
    return [f for f in files if f != "tests/test_no_outside_paths.py"]


def test_no_reference_outside_the_repository():
    hits = []
    for rel in _tracked():
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary (png) or deleted in the work tree
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and not (rel.startswith("tests/") and (DATA_LOCATOR.match(line) or TRAVERSAL_INPUT in line)):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_the_grep_catches_an_outside_reference():
    assert OUTSIDE.search("see ../shared/docs/methods.md §2")
    assert not DATA_LOCATOR.match('REAL = Path("/work/shared/docs")')


# The project's docs/ have no numbered sections, so a "§N" in code or docs is a citation of some other
# document's numbering that a reader of the repository cannot follow.
SECTION_CITE = re.compile(r"§\s*\d")


def test_no_citation_of_numbered_sections():
    hits = []
    for rel in _tracked():
        if rel.startswith("tests/"):
            continue
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        hits += [f"{rel}:{n}: {line.strip()[:100]}" for n, line in enumerate(text.splitlines(), 1)
                 if SECTION_CITE.search(line)]
    assert not hits, "citations of section numbers the repository does not have:\n" + "\n".join(hits)
    assert SECTION_CITE.search("see methods.md §2.7")
