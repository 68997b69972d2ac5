"""The frozen-backbone regime's feature cache: each caption's and video's backbone outputs, computed once.

With ``backbone.frozen=true`` nothing before a method's own modules changes during training, so the text tower's
output (the [EOT] feature and every position's feature) and the image tower's output (per-frame CLS, or what a
method's own tower pass gives: TS2-Net's shifted tokens) are computed once per split and reused by every method,
seed and epoch; the methods' heads train on them.

Stored with Hugging Face ``datasets`` (Arrow files written by ``save_to_disk``, opened memory-mapped by
``load_from_disk``): a split's features are never loaded whole into RAM, a batch reads only its rows, and a
cache folder can be copied to another machine. One folder per (side, key) under ``<cache_dir>/features/``:

- ``text-<key>``: one row per caption, in the split's order: ``id``, ``sentence`` [D], ``words`` [L, D], ``mask`` [L];
- ``video-<key>``: one row per video: ``id``, ``features`` [F, D] (or [F, T, D]), ``mask`` [F].

The key is the sha256 of everything the stored numbers depend on (``key.json`` beside the rows says it in
words): the backbone and a digest of its weights, the precision and device type, the torch version; for texts the
token ids themselves (so the tokenizer, ``max_words`` and the overflow rule); for videos the video files (id,
size, mtime), the decoding parameters (``max_frames``, ``sample_fps``, the preprocess, the decoder version) and
the method's ``video_feature_kind``. Folders are built in a temporary folder renamed into place under a lock
(``bench/data/cache_folder.py``), so concurrent runs neither duplicate the work nor read a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from tvr_bench.bench import progress
from tvr_bench.bench.api.dataset import Split
from tvr_bench.bench.api.state import State, concat_states
from tvr_bench.bench.atomic import atomic_write_text
from tvr_bench.bench.data.cache_folder import materialise
from tvr_bench.bench.data.frame_cache import _decoder_version
from tvr_bench.bench.data.pipeline import FrameStore, TokenizedCaptions

#: bump when the stored layout or what a row means changes: older folders are then never reused
FORMAT_VERSION = 1
KEY_FILE = "key.json"


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): the weights a cached feature came from."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
        h.update(f"{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def features_root(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / "features"


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _files_digest(split: Split) -> str:
    h = hashlib.sha256()
    for v in split.videos:
        st = os.stat(v.path)
        h.update(f"{v.id}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class BackboneIdentity:
    """What every cached feature of one run depends on, whatever the side."""
    name: str
    weights: str  # weights_digest of the CLIP model
    precision: str
    device_type: str

    def as_dict(self) -> dict[str, str]:
        return {"backbone": self.name, "weights_sha256": self.weights, "precision": self.precision,
                "device_type": self.device_type, "torch": torch.__version__, "format_version": str(FORMAT_VERSION)}


def text_key(ident: BackboneIdentity, split: Split, captions: TokenizedCaptions) -> dict[str, Any]:
    return {**ident.as_dict(), "side": "text", "dataset": split.dataset, "split": split.name,
            "caption_ids": hashlib.sha256("\n".join(c.id for c in split.captions).encode()).hexdigest(),
            "tokens_sha256": _tensor_digest(captions.tokens, captions.mask)}


def video_key(ident: BackboneIdentity, split: Split, store: FrameStore, kind: str) -> dict[str, Any]:
    return {**ident.as_dict(), "side": "video", "dataset": split.dataset, "split": split.name,
            "videos_sha256": _files_digest(split), "max_frames": store.max_frames,
            "sample_fps": float(store.sample_fps), "preprocess": store.prep.describe(),
            "decoder": _decoder_version(), "video_feature_kind": kind}


class FeatureTable:
    """One side's cached rows, memory-mapped; ``rows(idx)`` gives torch tensors of those rows only."""

    def __init__(self, folder: Path, columns: tuple[str, ...]):
        import datasets

        self.folder = folder
        self.columns = columns
        self.data = datasets.load_from_disk(str(folder / "rows")).with_format("numpy", columns=list(columns))
        self.ids = datasets.load_from_disk(str(folder / "rows"))["id"]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, idx) -> tuple[torch.Tensor, ...]:
        batch = self.data[idx]
        return tuple(torch.from_numpy(np.ascontiguousarray(batch[c])) for c in self.columns)


TEXT_COLUMNS = ("sentence", "words", "mask")
VIDEO_COLUMNS = ("features", "mask")


def _is_complete(folder: Path, key: str) -> bool:
    try:
        meta = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return meta.get("key") == key and (folder / "rows").is_dir()


def _arrow_features(first: dict[str, np.ndarray]):
    """Fixed-shape Arrow columns (Array2D/3D): a batch of rows reads back as one ndarray per column, fast."""
    import datasets

    cols: dict[str, Any] = {"id": datasets.Value("string")}
    for name, a in first.items():
        shape, dtype = tuple(int(x) for x in a.shape[1:]), str(a.dtype)
        if len(shape) == 1:
            cols[name] = datasets.List(datasets.Value(dtype), length=shape[0])
        else:
            cols[name] = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D}[len(shape)](shape, dtype)
    return datasets.Features(cols)


def _write_rows(tmp: Path, batches: Iterator[dict[str, np.ndarray]], ids: list[str], key: str,
                described: dict[str, Any]) -> None:
    """Stream ``batches`` (column -> [b, ...] arrays) into an Arrow dataset at ``tmp/rows``; never all in RAM."""
    import datasets

    first = next(batches)

    def examples():
        i = 0
        for batch in itertools.chain([first], batches):
            n = len(next(iter(batch.values())))
            for j in range(n):
                yield {"id": ids[i], **{c: a[j] for c, a in batch.items()}}
                i += 1

    build = tmp / "_build"
    with _quiet_datasets():
        ds = datasets.Dataset.from_generator(examples, features=_arrow_features(first), cache_dir=str(build),
                                             fingerprint=key)
        ds.save_to_disk(str(tmp / "rows"))
    del ds
    shutil.rmtree(build, ignore_errors=True)
    atomic_write_text(tmp / KEY_FILE, json.dumps({"key": key, **described}, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def _quiet_datasets():
    """``datasets`` draws its own progress bars; the harness shows one of its own (bench/progress.py)."""
    import datasets

    was = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            datasets.utils.logging.enable_progress_bar()


def _materialise(cache_dir: Path, side: str, described: dict[str, Any], ids: list[str],
                 batches: Callable[[], Iterator[dict[str, np.ndarray]]], columns: tuple[str, ...],
                 log: Callable[[str], None]) -> FeatureTable:
    key = _digest(described)
    target = features_root(cache_dir) / f"{side}-{key[:16]}"
    built = []

    def build(tmp: Path) -> None:
        built.append(True)
        _write_rows(tmp, batches(), ids, key, described)

    folder = materialise(target, lambda f: _is_complete(f, key), build)
    table = FeatureTable(folder, columns)
    if table.ids != ids:  # a folder of the same key holds other rows: never feed a method misaligned features
        raise RuntimeError(f"feature cache {folder} does not hold the rows of {described['dataset']}/"
                           f"{described['split']}; delete the folder")
    log(f"  feature cache {folder}: {'computed' if built else 'reused'} ({len(ids)} {side} rows)")
    return table


@torch.no_grad()
def _text_batches(method, captions: TokenizedCaptions, batch_size: int, device, autocast, name: str):
    n = captions.tokens.shape[0]
    with progress.bar(n, f"cache {name} text features", "caption") as shown:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            with autocast():
                sentence, words = method.backbone.encode_text_tokens(captions.tokens[sl].to(device))
            yield {"sentence": sentence.float().cpu().numpy(), "words": words.float().cpu().numpy(),
                   "mask": captions.mask[sl].to(torch.int8).numpy()}
            shown.update(min(n, start + batch_size) - start)


@torch.no_grad()
def _video_batches(method, split: Split, store: FrameStore, batch_size: int, device, autocast):
    ids = [v.id for v in split.videos]
    with progress.bar(len(ids), f"cache {split.name} video features", "video") as shown:
        for start in range(0, len(ids), batch_size):
            clips = [store.get(vid) for vid in ids[start: start + batch_size]]
            frames = torch.stack([c[0] for c in clips]).to(device)
            mask = torch.stack([c[1] for c in clips])
            with autocast():
                feats = method.video_features(frames)
            yield {"features": feats.float().cpu().numpy(), "mask": mask.to(torch.int8).numpy()}
            shown.update(len(clips))


@dataclass
class SplitFeatures:
    """A split's cached backbone outputs: texts in caption order, videos in video order."""
    split: Split
    texts: FeatureTable
    videos: FeatureTable

    def __post_init__(self) -> None:
        index = {vid: i for i, vid in enumerate(self.videos.ids)}
        self.caption_video_rows = [index[c.video_id] for c in self.split.captions]

    def text_state(self, method, rows, device) -> State:
        sentence, words, mask = (t.to(device) for t in self.texts.rows(rows))
        return method.text_from_features(sentence, words, mask.long())

    def video_state(self, method, rows, device) -> State:
        feats, mask = (t.to(device) for t in self.videos.rows(rows))
        return method.video_from_features(feats, mask.long())


def split_features(method, split: Split, store: FrameStore, captions: TokenizedCaptions, *, cache_dir: Path,
                   ident: BackboneIdentity, batch_size: int, device, autocast,
                   log: Callable[[str], None] = print) -> SplitFeatures:
    """The cached features of ``split`` for ``method``'s backbone, computed on first use (in eval mode)."""
    was_training = method.training
    method.eval()
    try:
        t_desc = text_key(ident, split, captions)
        texts = _materialise(cache_dir, "text", t_desc, [c.id for c in split.captions],
                             lambda: _text_batches(method, captions, batch_size, device, autocast, split.name),
                             TEXT_COLUMNS, log)
        v_desc = video_key(ident, split, store, method.video_feature_kind())
        videos = _materialise(cache_dir, "video", v_desc, [v.id for v in split.videos],
                              lambda: _video_batches(method, split, store, batch_size, device, autocast),
                              VIDEO_COLUMNS, log)
    finally:
        method.train(was_training)
    return SplitFeatures(split, texts, videos)


@torch.no_grad()
def encode_cached_videos(method, feats: SplitFeatures, batch_size: int, device, autocast) -> State:
    """The gallery's video states from cached features (what ``evaluate.encode_videos`` gives from pixels)."""
    n = len(feats.videos)
    out = []
    for start in range(0, n, batch_size):
        with autocast():
            out.append(feats.video_state(method, list(range(start, min(n, start + batch_size))), device))
    return {k: v.float() if v.is_floating_point() else v for k, v in concat_states(out).items()}


@torch.no_grad()
def encode_cached_texts(method, feats: SplitFeatures, start: int, stop: int, batch_size: int, device,
                        autocast) -> State:
    out = []
    for s in range(start, stop, batch_size):
        with autocast():
            out.append(feats.text_state(method, list(range(s, min(stop, s + batch_size))), device))
    return {k: v.float() if v.is_floating_point() else v for k, v in concat_states(out).items()}


class FeaturePairDataset(torch.utils.data.Dataset):
    """Training samples of the frozen regime: every caption's cached text features with its video's."""

    def __init__(self, feats: SplitFeatures):
        self.feats = feats

    def __len__(self) -> int:
        return len(self.feats.split.captions)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]):
        # one Arrow read per side for the whole batch (the DataLoader hands a batch's indices at once)
        sentence, words, tmask = self.feats.texts.rows(indices)
        vfeat, vmask = self.feats.videos.rows([self.feats.caption_video_rows[i] for i in indices])
        tmask, vmask = tmask.long(), vmask.long()
        return [(sentence[j], words[j], tmask[j], vfeat[j], vmask[j]) for j in range(len(indices))]

    @staticmethod
    def encode_batch(method, batch, device) -> tuple[State, State]:
        sentence, words, tmask, vfeat, vmask = (x.to(device) for x in batch)
        return method.text_from_features(sentence, words, tmask), method.video_from_features(vfeat, vmask)
