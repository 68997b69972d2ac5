"""``bench data``: check a real dataset's files against its protocol, and fill the frame cache.

  bench data verify  --dataset msrvtt --root /data/msrvtt [--split test] [--annotations-only]
  bench data prepare --dataset didemo --root /data/didemo --workers 8

``verify`` parses the annotation files, prints videos, captions (DiDeMo: descriptions and the paragraphs made of
them) and (text, video) pairs per split next to the counts the published files give, then looks for every video
(and opens it, unless ``--no-probe``) and lists the missing and unreadable ones. Anything the protocol needs that
is missing or unreadable ends in one error line and exit code 2; counts that differ from the published ones, or a
non-standard split, are reported as notes (a run on them is allowed and its record says so).

``prepare`` decodes every video once (1 fps, uniform slice to F frames, the backbone's resize and crop) into the
frame cache that ``bench run`` reads (``bench/data/frame_cache.py``): parallel (``--workers``), with a progress bar,
resumable (finished entries are skipped), corrupt videos reported at the end (exit 2) without stopping the job.
Use the same ``--preset`` / ``--set`` (``data.max_frames``, ``backbone.name``, ...) as the runs that should read
the cache: the cache is keyed by these decoding parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from tvr_bench.bench.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class _NoMethod:
    """Stands in for a method when resolving the config: data commands need only data.* and backbone.*."""

    info = SimpleNamespace(name="none", official={})
    OPTION_TYPES: dict = {}

    @staticmethod
    def default_options() -> dict:
        return {}

    @staticmethod
    def check_options(options, arch, *, max_frames) -> None:
        """No method options to check (the backbone name is still checked, by the architecture look-up)."""


def root_override(root: Path, dataset_names: list[str] | None = None) -> str:
    """``--root PATH`` as a ``--set`` override (absolute path, quoted so YAML keeps it a string)."""
    if dataset_names is not None and len(dataset_names) > 1:
        raise ConfigError(f"--root names the files of one dataset, got {len(dataset_names)} datasets "
                          f"({', '.join(dataset_names)}); run them separately")
    return f"data.root={json.dumps(str(Path(root).expanduser().absolute()))}"


def _dataset(name: str, root: Path, preset: str, overrides: tuple[str, ...]):
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS
    from tvr_bench.bench.runner import default_cache_dir
    from tvr_bench.datasets._real import RealDataset

    cls = DATASETS.get(name)
    if not issubclass(cls, RealDataset):
        raise ConfigError(f"bench data works on the real datasets, not {name!r} (the embedded benchmark is "
                          "generated on first use)")
    cfg, _ = resolve_config(method_cls=_NoMethod, dataset_cls=cls, preset=preset,
                            overrides=[*overrides, root_override(root)])
    cache_dir = Path(cfg["data"]["cache_dir"]) if cfg["data"]["cache_dir"] else default_cache_dir()
    plugin = cls(cfg, cache_dir=cache_dir)
    plugin.root  # noqa: B018 - a missing root is reported before anything else
    return cfg, plugin, cache_dir


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


@click.group()
def data() -> None:
    """Check real datasets (verify) and fill the frame cache (prepare)."""


_common = [
    click.option("--dataset", required=True, help="msrvtt, didemo or vatex."),
    click.option("--root", required=True, type=click.Path(path_type=Path), help="Folder with the dataset's files."),
    click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS),
                 help="Only this split (repeatable). Default: train, val and test."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Config override as in `bench run`, e.g. data.msrvtt.train_split=7k."),
    click.option("--preset", default="default", show_default=True, help="Config preset as in `bench run`."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@data.command()
@_with_common
@click.option("--annotations-only", is_flag=True, help="Parse and count the annotation files; do not look for videos.")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Open every video found (header and first frame) to catch unreadable files.")
@click.option("--list-missing", is_flag=True, help="List every missing video (default: the first 20 per split).")
def verify(dataset, root, splits, overrides, preset, annotations_only, probe, list_missing):
    """Check a dataset's files against its protocol: counts per split, missing and unreadable videos."""
    from tqdm import tqdm

    from tvr_bench.bench.data.video import probe_video

    _, plugin, _ = _dataset(dataset, root, preset, overrides)
    splits = list(splits) or list(SPLITS)
    click.echo(f"{dataset} ({plugin.info.protocol}) under {plugin.root}")
    annotated, errors = {}, {}
    for split in splits:
        try:
            annotated[split] = plugin.annotate(split)
        except DataError as exc:
            errors[split] = str(exc)

    unit = next((a.text_unit for a in annotated.values()), "captions")
    pairs = "paragraphs" if unit == "descriptions" else "pairs"
    header = f"  {'split':6s} {'videos':>8s} {unit:>13s} {pairs:>10s}   {'expected (videos / ' + unit + ' / ' + pairs + ')':44s} status"
    click.echo(header)
    for split in splits:
        if split in errors:
            click.echo(f"  {split:6s} ERROR: {errors[split]}")
            continue
        a = annotated[split]
        c, e = a.counts, a.expected
        match = a.matches_expected()
        status = {True: "ok", False: "DIFFERS", None: "not checked"}[match]
        if not a.standard:
            status += ", non-standard split"
        exp = f"{_n(e.get('videos'))} / {_n(e.get('texts'))} / {_n(e.get('pairs'))}"
        click.echo(f"  {split:6s} {c['videos']:>8,} {c['texts']:>13,} {c['pairs']:>10,}   {exp:44s} {status}")
    for split, a in annotated.items():
        click.echo(f"  {split}: {a.source}; {a.caption_mode}")
        for note in a.notes:
            click.echo(f"    note: {note}")
    files = plugin.describe()["annotation_files"]
    for role, f in files.items():
        ref = {True: ", matches the published file", False: ", DIFFERS from the published file"}.get(
            f.get("matches_reference"), "")
        click.echo(f"  file {Path(f['path']).name}: {f['bytes']:,} B, sha256 {f['sha256'][:12]}...{ref}")

    problems = [f"{len(errors)} split(s) cannot be read"] if errors else []
    if not annotations_only and annotated:
        missing: dict[str, list[str]] = {}
        found: dict[str, Path] = {}
        for split, a in annotated.items():
            videos, miss = plugin.resolve(a)
            missing[split] = miss
            found.update((v.id, v.path) for v in videos)
            click.echo(f"  videos {split}: {len(videos):,} of {len(a.video_ids):,} found, {len(miss):,} missing")
            if miss:
                shown = miss if list_missing else miss[:20]
                more = "" if len(shown) == len(miss) else f", ... and {len(miss) - len(shown):,} more (--list-missing)"
                click.echo(f"    missing: {', '.join(shown)}{more}")
        unreadable: dict[str, str] = {}
        if probe and found:
            for vid, path in tqdm(sorted(found.items()), desc="probe", unit="video", leave=False,
                                  disable=len(found) < 50):
                try:
                    probe_video(path)
                except DataError as exc:
                    unreadable[vid] = str(exc)
            click.echo(f"  opened {len(found):,} videos: {len(unreadable):,} unreadable")
            for vid, msg in unreadable.items():
                click.echo(f"    unreadable {vid}: {msg}")
        n_missing = len({v for m in missing.values() for v in m})
        if n_missing:
            problems.append(f"{n_missing:,} missing video(s)")
        if unreadable:
            problems.append(f"{len(unreadable):,} unreadable video(s)")
    if problems:
        raise DataError(f"verify {dataset}: " + ", ".join(problems) + " (listed above)")
    click.echo("verify: ok" + (" (annotations only)" if annotations_only else ""))


@data.command()
@_with_common
@click.option("--workers", type=int, default=None,
              help="Decoding processes. Default: the number of CPU cores.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder (default: data.cache_dir, else $TVR_BENCH_CACHE or ~/.cache/tvr-bench).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def prepare(dataset, root, splits, overrides, preset, workers, cache_dir, progress):
    """Decode every video once into the frame cache that runs read (resumable; corrupt videos listed)."""
    from tvr_bench.bench.data.frame_cache import FrameCache, Preprocessor, eval_preprocess, prepare_frames

    cfg, plugin, default_dir = _dataset(dataset, root, preset, overrides)
    d, b = cfg["data"], cfg["backbone"]
    explicit = bool(splits)
    splits = list(splits) or list(SPLITS)
    items: list[tuple[str, Path]] = []
    failed: list[tuple[str, str, str]] = []
    for split in splits:
        try:
            a = plugin.annotate(split)
        except DataError as exc:
            if explicit or split == "test":
                raise
            click.echo(f"skipping {split}: {exc}")
            continue
        videos, missing = plugin.resolve(a)
        items.extend((v.id, v.path) for v in videos)
        known = {f[0] for f in failed}
        failed.extend((vid, "-", f"not found under {plugin.root} ({split})") for vid in missing if vid not in known)
    cache = FrameCache(cache_dir or default_dir, dataset, Preprocessor(eval_preprocess(b["name"], b["pretrained"])),
                       d["max_frames"], d["sample_fps"])
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    click.echo(f"{dataset}: {len(dict(items)):,} videos -> {cache.dir} (F={d['max_frames']}, "
               f"{d['sample_fps']:g} fps, {cache.preprocessor.describe()}), {workers} worker(s)")
    result = prepare_frames(cache, items, workers=workers, progress=progress, desc=f"prepare {dataset}")
    failed.extend(result.failed)
    click.echo(f"prepared {result.written:,} videos ({result.frames:,} frames) in {result.seconds:.1f} s "
               f"({result.frames_per_s:.1f} frames/s); {result.skipped:,} already cached; {len(failed):,} failed")
    for vid, path, reason in failed:
        click.echo(f"  failed {vid}: {reason}")
    if failed:
        raise DataError(f"prepare {dataset}: {len(failed):,} video(s) not cached (listed above); the others are")
