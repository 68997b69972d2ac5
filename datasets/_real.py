"""Shared machinery of the real-dataset loaders (MSR-VTT, DiDeMo, VATEX).

A real dataset lives under one folder, ``data.root`` (``bench run --root PATH``). Annotation files are found
by their published names anywhere under the root up to ``MAX_DEPTH`` folders deep (the shallowest copy wins),
so both "everything in one folder" and the usual sub-folder layouts (``annotation/``, ``msrvtt_data/``,
``data/``, ...) work without configuration.

Videos are found the same way, by id:

1. a file named exactly like the id (DiDeMo ids are Flickr file names, extension included: ``x.mov``,
   sometimes ``x.`` or no extension);
2. ``<id>.<ext>`` for ``ext`` in ``VIDEO_EXTENSIONS`` order (``mp4`` first, then ``webm`` — CLIP4Clip's
   fallback —, ``mkv``, ``avi``, ``mov``, ...), extension case ignored;
3. ``<id without its extension>.<ext>`` (DiDeMo videos re-encoded to ``.mp4``, as CLIP4Clip's compressed copies
   are).

Among several matches the shallowest, then the first in sorted order, wins. Typical layouts: MSR-VTT
``videos/all/video0.mp4`` (CLIP4Clip) or ``TrainValVideo/`` + ``TestVideo/`` (official zips); DiDeMo
``videos/<flickr name>``; VATEX ``videos/<youtube id>_<start>_<end>.mp4``. Hidden folders are skipped.

Loaders parse annotations without any video (``annotate``), so ``bench data verify`` can count a split from its
files alone; ``load_split`` then resolves the videos and refuses to shrink a split silently (see
``bench/data/pipeline.py``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from tvr_bench.bench.digest import file_sha256
from tvr_bench.bench.errors import DataError
from tvr_bench.bench.api.dataset import CaptionItem, DatasetPlugin, Split, VideoItem

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "wmv", "flv", "3gp", "3g2", "mts",
                    "m2ts", "ogv")
MAX_DEPTH = 4  # folders below the root searched for annotation and video files
LIST_LIMIT = 20


# --------------------------------------------------------------------------------------------------------------
# Reading files (every failure is a DataError naming the file)
# --------------------------------------------------------------------------------------------------------------


sha256_file = file_sha256  # the name the dataset modules import

def decode_utf8(data: bytes, where: str) -> str:
    """Strict UTF-8 (a leading byte-order mark is accepted): non-UTF-8 text is an error naming the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text: byte {exc.start} ({data[exc.start:exc.start + 1]!r}) "
                        f"cannot be decoded") from exc


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"annotation file not found: {path}") from exc
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc


def read_text(path: Path) -> str:
    return decode_utf8(read_bytes(path), str(path))


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON in {where}: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def read_json(path: Path) -> Any:
    return parse_json(read_text(path), str(path))


def read_json_member(path: Path, member: str) -> Any:
    """A JSON file inside a zip archive, as the MSR-VTT annotations are published."""
    where = f"{path}!{member}"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            match = next((n for n in names if n == member or n.endswith("/" + member)), None)
            if match is None:
                raise DataError(f"{path} does not contain {member} (it has: {', '.join(names[:10])})")
            data = zf.read(match)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read zip archive {path}: {exc}") from exc
    return parse_json(decode_utf8(data, where), where)


def read_id_list(path: Path) -> list[str]:
    """One id per line (LF or CRLF, trailing newline optional, blank lines ignored); duplicates are an error."""
    ids = [line.strip() for line in read_text(path).splitlines()]
    ids = [i for i in ids if i]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise DataError(f"duplicate ids in {path}: {', '.join(dup[:10])}")
    if not ids:
        raise DataError(f"id list {path} is empty")
    return ids


def read_csv_rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """CSV rows as dicts; ``,`` or ``;`` separated, LF or CRLF; the header must hold the ``required`` columns."""
    text = read_text(path)
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"malformed CSV {path}: header {header} lacks column(s) {', '.join(missing)}")
    rows = []
    for n, row in enumerate(reader, start=2):
        clean = {(k or "").strip(): v for k, v in row.items()}
        if any(clean.get(c) in (None, "") for c in required):
            raise DataError(f"malformed CSV {path}: line {n} has an empty {'/'.join(required)} field")
        rows.append(clean)
    if not rows:
        raise DataError(f"CSV {path} has a header but no rows")
    return rows


def require_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected a non-empty caption string, got {value!r:.80}")
    return value


# --------------------------------------------------------------------------------------------------------------
# Finding files under the root
# --------------------------------------------------------------------------------------------------------------


class RootIndex:
    """Every file under ``root`` (up to MAX_DEPTH folders deep), by name; video files also by (stem, extension)."""

    def __init__(self, root: Path, max_depth: int = MAX_DEPTH):
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, dict[str, list[Path]]] = {}
        # folders named like a video ("video11.mp4/"): never taken as the video, but named when it is missing
        self.video_dirs: dict[str, Path] = {}
        root_depth = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(dirpath)
            depth = len(here.parts) - root_depth
            for d in dirnames:
                stem, dot, ext = d.rpartition(".")
                if dot and ext.lower() in VIDEO_EXTENSIONS:
                    self.video_dirs.setdefault(stem, here / d)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = here / name
                self.by_name.setdefault(name, []).append(path)
                stem, dot, ext = name.rpartition(".")
                if dot and ext.lower() in VIDEO_EXTENSIONS:
                    self.by_stem.setdefault(stem, {}).setdefault(ext.lower(), []).append(path)

    @staticmethod
    def _best(paths: list[Path]) -> Path:
        return min(paths, key=lambda p: (len(p.parts), str(p)))

    def find(self, *names: str) -> Path | None:
        """The shallowest file with the first of ``names`` that exists."""
        for name in names:
            if name in self.by_name:
                return self._best(self.by_name[name])
        return None

    def video(self, video_id: str) -> Path | None:
        if video_id in self.by_name:
            return self._best(self.by_name[video_id])
        for stem in dict.fromkeys([video_id, video_id.rpartition(".")[0] if "." in video_id else video_id]):
            exts = self.by_stem.get(stem)
            if exts:
                for ext in VIDEO_EXTENSIONS:
                    if ext in exts:
                        return self._best(exts[ext])
        return None


# --------------------------------------------------------------------------------------------------------------
# The plugin base
# --------------------------------------------------------------------------------------------------------------


@dataclass
class AnnotatedSplit:
    """A split as its annotation files define it, before any video is looked for.

    ``captions`` are the retrieval texts (DiDeMo: one paragraph per video); ``n_texts`` counts the raw annotation
    texts they come from (DiDeMo descriptions; otherwise equal to ``len(captions)``). ``expected`` holds the
    counts the published files give for this split (None where unknown); ``standard`` says whether the split is
    the standard retrieval protocol, and ``notes`` why not (or other caveats).
    """

    dataset: str
    name: str
    video_ids: list[str]
    captions: list[CaptionItem]
    n_texts: int
    text_unit: str  # "captions" or "descriptions"
    caption_mode: str  # "all captions", "1:1", "paragraph", "multi-caption"
    source: str
    expected: dict[str, int | None] = field(default_factory=dict)
    standard: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"videos": len(self.video_ids), "texts": self.n_texts, "pairs": len(self.captions)}

    def matches_expected(self) -> bool | None:
        checks = [(k, v) for k, v in self.expected.items() if v is not None]
        if not checks:
            return None
        return all(self.counts[k] == v for k, v in checks)

    def protocol(self) -> dict[str, Any]:
        out: dict[str, Any] = {"caption_mode": self.caption_mode, "source": self.source,
                               "counts": self.counts, "expected": dict(self.expected),
                               "standard": bool(self.standard and self.matches_expected() is not False)}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class RealDataset(DatasetPlugin):
    """Base of the real datasets: root handling, file discovery, video resolution, missing-video policy."""

    #: reference sha256 of published annotation files, by file name (mismatch = a variant copy, noted)
    reference_sha256: dict[str, str] = {}
    #: what ``data.root`` must hold and where each file is published, for the "needs its files" errors
    files_needed: str = ""

    def __init__(self, cfg: dict[str, Any], *, cache_dir: Path):
        super().__init__(cfg, cache_dir=cache_dir)
        self.options: dict[str, Any] = dict(cfg["data"].get(self.info.name, {}) or {})
        self.allow_missing = bool(cfg["data"].get("allow_missing", False))
        self._files: dict[str, Path] = {}  # annotation files read, by role
        self._annotated: dict[str, AnnotatedSplit] = {}

    # -- root and files --

    @cached_property
    def root(self) -> Path:
        raw = self.cfg["data"].get("root")
        name = self.info.name
        if raw in (None, ""):
            raise DataError(f"dataset {name!r} needs its files: pass --root PATH (or --set data.root=PATH), a folder "
                            f"holding {self.files_needed or 'its annotation files and videos'}")
        root = Path(str(raw)).expanduser()
        if not root.exists():
            raise DataError(f"{name}: root folder not found: {root}")
        if not root.is_dir():
            raise DataError(f"{name}: root is not a folder: {root}")
        return root.resolve()

    @cached_property
    def index(self) -> RootIndex:
        return RootIndex(self.root)

    def find(self, *names: str) -> Path | None:
        return self.index.find(*names)

    def use_file(self, role: str, path: Path) -> Path:
        self._files[role] = path
        return path

    def missing_files(self, what: str, names: Iterable[str]) -> DataError:
        names = list(names)
        where = f"; {self.info.name} needs {self.files_needed}" if self.files_needed else ""
        return DataError(f"{self.info.name}: {what} not found under {self.root} (looked for "
                         f"{', '.join(names)} up to {MAX_DEPTH} folders deep){where}")

    # -- the per-dataset part --

    def annotate(self, split: str) -> AnnotatedSplit:
        if split not in self._annotated:
            if split not in ("train", "val", "test"):
                raise DataError(f"{self.info.name}: unknown split {split!r} (train, val, test)")
            self._annotated[split] = self._annotate(split)
        return self._annotated[split]

    def _annotate(self, split: str) -> AnnotatedSplit:
        raise NotImplementedError

    # -- videos --

    def resolve(self, ann: AnnotatedSplit) -> tuple[list[VideoItem], list[str]]:
        found, missing = [], []
        for vid in ann.video_ids:
            path = self.index.video(vid)
            if path is None:
                missing.append(vid)
            else:
                found.append(VideoItem(vid, path))
        return found, missing

    def load_split(self, split: str) -> Split:
        from tvr_bench.bench.data.pipeline import format_list, reduce_split

        ann = self.annotate(split)
        paths = {vid: self.index.video(vid) for vid in ann.video_ids}
        missing = [vid for vid, path in paths.items() if path is None]
        if missing and not self.allow_missing:
            folders = [f"{self.index.video_dirs[v]} is a directory, not a video file"
                       for v in missing if v in self.index.video_dirs]
            raise DataError(
                f"{self.info.name}/{split}: {len(missing)} of {len(ann.video_ids)} videos not found under "
                f"{self.root}: {format_list(missing, LIST_LIMIT)}"
                f"{' (' + '; '.join(folders[:LIST_LIMIT]) + ')' if folders else ''}. Run `bench data verify --dataset "
                f"{self.info.name} --root {self.root}` for the full list; set data.allow_missing=true to run on "
                "the videos present (the run record then marks the protocol as reduced)")
        videos = [VideoItem(vid, path if path is not None else self.root / ".missing" / vid)
                  for vid, path in paths.items()]
        out = Split(self.info.name, split, videos, ann.captions, protocol=ann.protocol())
        if missing:
            out = reduce_split(out, {vid: "missing" for vid in missing},
                               expected={"videos": len(ann.video_ids), "captions": len(ann.captions)})
        return out

    # -- record --

    def describe(self) -> dict[str, Any]:
        files = {}
        for role, path in sorted(self._files.items()):
            entry: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            ref = self.reference_sha256.get(path.name)
            if ref is not None:
                entry["matches_reference"] = entry["sha256"] == ref
            files[role] = entry
        return {"dataset": self.info.name, "protocol": self.info.protocol, "root": str(self.root),
                "options": dict(self.options), "annotation_files": files}


